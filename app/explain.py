"""One explain request: the score request's pinned bundle and rows, plus the attention weights
of every (candidate, behaviour) pair, ranked and labelled with item titles and field values."""

from __future__ import annotations

import time

import numpy as np

from app.bundle import LoadedBundle
from app.inputs import Lookup
from app.pipeline import Prepared, ScoringService


class NoAttention(RuntimeError):
    """The pinned version's graph has no attention output (published before it existed)."""


def explain_request(service: ScoringService, request, bundle: LoadedBundle) -> dict:
    """The ExplainResponse body, from one inference run that yields scores and weights."""
    if not bundle.scorer.attention:
        raise NoAttention(
            f"{bundle.version} was exported without attention weights; "
            "train and publish it again with the current exporter to explain it"
        )
    prepared = service.prepare(request, bundle)
    scores, weights = bundle.scorer.explain(prepared.inputs)
    unknown = service.record(prepared, time.perf_counter())
    weights = weights[:, : prepared.history_length]  # (C, T) without the empty-history pad
    items = describe_items(prepared.lookup, fetch_metadata(service, prepared), bundle)
    n_candidates = prepared.n_candidates
    history = [{"position": k} | item for k, item in enumerate(items[n_candidates:])]
    ranks = np.argsort(-weights, axis=1, kind="stable").tolist()  # heaviest first, ties oldest
    return {
        "version": bundle.version,
        "pooling": bundle.manifest.model.get("pooling", "attention"),
        "normalised": bool(bundle.manifest.model.get("softmax", False)),
        "history_length": prepared.history_length,
        "history_source": prepared.history_source,
        "unknown_ids": unknown,
        "history": history,
        "candidates": [
            item | {"score": score, "behaviours": ranked(history, row, order)}
            for item, score, row, order in zip(
                items[:n_candidates], scores.tolist(), weights.tolist(), ranks, strict=True
            )
        ],
    }


def fetch_metadata(service: ScoringService, prepared: Prepared) -> dict[str, dict]:
    return service.fetcher.item_metadata(prepared.bundle, sorted(set(prepared.lookup.items)))


def describe_items(lookup: Lookup, metadata: dict, bundle: LoadedBundle) -> list[dict]:
    """Each candidate then behaviour: id, title, and side-field values (the request's, else
    the item's own as the bundle records it)."""
    names = [f.name for f in bundle.manifest.schema.side_fields]
    described = []
    for k, item_id in enumerate(lookup.items):
        known = metadata.get(item_id, {})
        own = known.get("fields") if isinstance(known.get("fields"), dict) else {}
        given = {name: values[k] for name, values in lookup.overrides.items()}
        values = {name: given.get(name) or own.get(name) for name in names}
        fields = {name: str(value) for name, value in values.items() if value is not None}
        described.append({"item_id": item_id, "fields": fields, "title": known.get("title")})
    return described


def ranked(history: list[dict], weights: list[float], order: list[int]) -> list[dict]:
    return [{**history[k], "weight": weights[k]} for k in order]
