"""One score request, start to end: pin the bundle, resolve history, fetch rows, infer."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.bundle import BundleHolder, LoadedBundle
from app.config import Settings
from app.features import RowFetcher, gather_inputs
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

    def score(self, request: ScoreRequest) -> ScoreResult:
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
        fetched = time.perf_counter()
        history, mask = user_inputs(inputs.history)
        scores = bundle.scorer.score(inputs.candidates, history, mask)
        done = time.perf_counter()
        unknown = self._record(inputs.stats, len(cand_items), started, fetched, done)
        return ScoreResult(bundle.version, scores.tolist(), len(hist_items), source, unknown)

    def _record(self, stats, n_candidates: int, started, fetched, done) -> int:
        m = self.metrics
        m.stage_seconds.labels(stage="fetch").observe(fetched - started)
        m.stage_seconds.labels(stage="infer").observe(done - fetched)
        m.candidates.inc(n_candidates)
        m.cache_hits.inc(stats.cache_hits)
        m.cache_misses.inc(stats.cache_misses)
        for table, count in stats.unknown.items():
            if count:
                m.oov.labels(table=table).inc(count)
        return sum(stats.unknown.values())
