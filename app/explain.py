"""One explain request: the score request's pinned bundle and rows, plus the attention weights
of every (candidate, behaviour) pair, ranked and labelled with item titles and categories."""

from __future__ import annotations

import time

import numpy as np

from app.features import RowFetcher
from app.schemas import ScoreRequest
from app.scoring import Prepared, ScoringService


class NoAttention(RuntimeError):
    """The pinned version's graph has no attention output (published before it existed)."""


def explain_request(service: ScoringService, request: ScoreRequest) -> dict:
    """The ExplainResponse body, from one inference run that yields scores and weights."""
    prepared = service.prepare(request)
    scorer = prepared.bundle.scorer
    if not scorer.attention:
        raise NoAttention(
            f"{prepared.bundle.version} was exported without attention weights; "
            "train and publish it again with the current exporter to explain it"
        )
    scores, weights = scorer.explain(prepared.candidates, prepared.history, prepared.mask)
    unknown = service.record(prepared, time.perf_counter())
    weights = weights[:, : prepared.history_length]  # (C, T) without the empty-history pad
    metadata = fetch_metadata(service.fetcher, prepared, request)
    history = describe_history(prepared, metadata)
    ranks = np.argsort(-weights, axis=1, kind="stable").tolist()  # heaviest first, ties oldest
    weights = weights.tolist()
    return {
        "version": prepared.bundle.version,
        "pooling": prepared.bundle.manifest.model.get("pooling", "attention"),
        "normalised": bool(prepared.bundle.manifest.model.get("softmax", False)),
        "history_length": prepared.history_length,
        "history_source": prepared.history_source,
        "unknown_ids": unknown,
        "history": history,
        "candidates": [
            describe_candidate(item, metadata, score, ranked(history, row, order))
            for item, score, row, order in zip(
                request.candidates, scores.tolist(), weights, ranks, strict=True
            )
        ],
    }


def fetch_metadata(fetcher: RowFetcher, prepared: Prepared, request: ScoreRequest) -> dict:
    ids = {c.item_id for c in request.candidates} | set(prepared.history_items)
    return fetcher.item_metadata(prepared.bundle, sorted(ids))


def describe_item(item_id: str, category: str | None, metadata: dict) -> dict:
    """Id, category (the request's, else the item's own) and title, as the bundle knows them."""
    known = metadata.get(item_id, {})
    return {
        "item_id": item_id,
        "category": category or known.get("category"),
        "title": known.get("title"),
    }


def describe_history(prepared: Prepared, metadata: dict) -> list[dict]:
    pairs = zip(prepared.history_items, prepared.history_categories, strict=True)
    return [
        {"position": position} | describe_item(item, category, metadata)
        for position, (item, category) in enumerate(pairs)
    ]


def ranked(history: list[dict], weights: list[float], order: list[int]) -> list[dict]:
    return [{**history[k], "weight": weights[k]} for k in order]


def describe_candidate(item, metadata: dict, score: float, behaviours: list[dict]) -> dict:
    described = describe_item(item.item_id, item.category, metadata)
    return described | {"score": score, "behaviours": behaviours}
