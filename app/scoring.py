"""One score request, start to end: pin the bundle, resolve history, fetch rows, infer."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from app.bundle import BundleHolder, LoadedBundle
from app.config import Settings
from app.features import FetchStats, RowFetcher, gather_inputs
from app.metrics import Metrics
from app.schemas import ScoreRequest
from core.graph import user_inputs


class NoModel(RuntimeError):
    pass


@dataclass
class ScoreResult:
    version: str
    scores: list[float]
    history_length: int
    history_source: str
    unknown_ids: int

    def to_dict(self) -> dict:
        return self.__dict__


@dataclass
class Prepared:
    """A request with every row fetched, ready for inference."""

    bundle: LoadedBundle
    candidates: np.ndarray  # (C, D)
    history: np.ndarray  # (T, D), T >= 1
    mask: np.ndarray  # (T,)
    stats: FetchStats
    history_source: str
    history_items: list[str]  # the behaviours used, oldest first
    history_categories: list[str | None]  # explicit categories from the request, else None
    started: float
    fetched: float

    @property
    def history_length(self) -> int:
        return len(self.history_items)


class ScoringService:
    def __init__(
        self, settings: Settings, holder: BundleHolder, fetcher: RowFetcher, metrics: Metrics
    ) -> None:
        self.settings, self.holder, self.fetcher, self.metrics = settings, holder, fetcher, metrics

    def pinned_bundle(self) -> LoadedBundle:
        bundle = self.holder.current  # one read: the whole request uses this version
        if bundle is None:
            raise NoModel("no model version is loaded yet")
        return bundle

    def prepare(self, request: ScoreRequest) -> Prepared:
        """Pin the bundle, resolve the history and fetch every row: all but inference."""
        started = time.perf_counter()
        bundle = self.pinned_bundle()
        limit = bundle.manifest.max_history
        if request.history is None:
            hist_items, source = self.fetcher.history(request.user_id, limit), "redis"
            hist_cats: list[str | None] = [None] * len(hist_items)
        else:
            recent = request.history[-limit:] if limit else []
            hist_items, source = [h.item_id for h in recent], "request"
            hist_cats = [h.category for h in recent]
        cand_items = [c.item_id for c in request.candidates]
        cand_cats = [c.category for c in request.candidates]
        inputs = gather_inputs(
            self.fetcher, bundle, cand_items + hist_items, cand_cats + hist_cats, len(cand_items)
        )
        history, mask = user_inputs(inputs.history)
        return Prepared(
            bundle,
            inputs.candidates,
            history,
            mask,
            inputs.stats,
            source,
            hist_items,
            hist_cats,
            started,
            time.perf_counter(),
        )

    def finish(self, prepared: Prepared, scores: np.ndarray) -> ScoreResult:
        unknown = self.record(prepared, time.perf_counter())
        return ScoreResult(
            prepared.bundle.version,
            scores.tolist(),
            prepared.history_length,
            prepared.history_source,
            unknown,
        )

    def score(self, request: ScoreRequest) -> ScoreResult:
        """The whole request in the calling thread (the path without micro-batching)."""
        prepared = self.prepare(request)
        scores = prepared.bundle.scorer.score(prepared.candidates, prepared.history, prepared.mask)
        return self.finish(prepared, scores)

    def record(self, prepared: Prepared, done: float) -> int:
        """Stage timings and fetch counters of a finished request; returns its unknown ids."""
        m, stats = self.metrics, prepared.stats
        m.stage_seconds.labels(stage="fetch").observe(prepared.fetched - prepared.started)
        m.stage_seconds.labels(stage="infer").observe(done - prepared.fetched)
        m.candidates.inc(len(prepared.candidates))
        m.cache_hits.inc(stats.cache_hits)
        m.cache_misses.inc(stats.cache_misses)
        for table, count in stats.unknown.items():
            if count:
                m.oov.labels(table=table).inc(count)
        return sum(stats.unknown.values())
