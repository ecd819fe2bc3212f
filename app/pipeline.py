"""One score request, start to end: pin the bundle and check the request against its schema,
read the stored history and profile, fetch rows, infer."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from app.bundle import BundleHolder, LoadedBundle
from app.config import Settings
from app.features import FetchStats, RowFetcher, unknown_by_field
from app.inputs import Lookup, build_lookup, gather_inputs
from app.metrics import Metrics
from app.requests import check_fields
from core import graph


class NoModel(RuntimeError):
    pass


@dataclass
class ScoreResult:
    version: str
    scores: list[float]
    history_length: int
    history_source: str
    unknown_ids: dict[str, int]

    def to_dict(self) -> dict:
        return self.__dict__


@dataclass
class Prepared:
    """A request with every row fetched, ready for inference."""

    bundle: LoadedBundle
    inputs: dict[str, np.ndarray]  # one user's graph inputs by name (core/graph.py)
    lookup: Lookup  # the raw values behind them
    stats: FetchStats
    history_source: str
    started: float
    fetched: float

    @property
    def n_candidates(self) -> int:
        return len(self.inputs[graph.CANDIDATES])

    @property
    def history_length(self) -> int:
        return self.lookup.history_length


class ScoringService:
    def __init__(
        self, settings: Settings, holder: BundleHolder, fetcher: RowFetcher, metrics: Metrics
    ) -> None:
        self.settings, self.holder, self.fetcher, self.metrics = settings, holder, fetcher, metrics

    def pinned_bundle(self, user_id: str) -> LoadedBundle:
        """The version this user's request runs on (the canary's, for its share of users):
        read once, so the whole request uses this version."""
        bundle = self.holder.choose(user_id)
        if bundle is None:
            raise NoModel("no model version is loaded yet")
        return bundle

    def pin(self, request) -> LoadedBundle:
        """The version this request runs on, once its field names are checked against that
        version's schema (RequestValidationError otherwise)."""
        bundle = self.pinned_bundle(request.user_id)
        check_fields(request, bundle.manifest.schema, bundle.version)
        return bundle

    def prepare(self, request, bundle: LoadedBundle) -> Prepared:
        """Read the stored user state and fetch every row: all but inference."""
        started = time.perf_counter()
        schema = bundle.manifest.schema
        missing = [f.name for f in schema.profile_fields if f.name not in request.user]
        history_limit = schema.max_history if request.history is None else None
        stored = self.fetcher.read_user(bundle, request.user_id, history_limit, missing)
        lookup = build_lookup(request, schema, stored)
        inputs, stats = gather_inputs(self.fetcher, bundle, lookup)
        source = "redis" if request.history is None else "request"
        return Prepared(bundle, inputs, lookup, stats, source, started, time.perf_counter())

    def finish(self, prepared: Prepared, scores: np.ndarray) -> ScoreResult:
        unknown = self.record(prepared, time.perf_counter())
        return ScoreResult(
            prepared.bundle.version,
            scores.tolist(),
            prepared.history_length,
            prepared.history_source,
            unknown,
        )

    def score(self, request, bundle: LoadedBundle) -> ScoreResult:
        """The whole request in the calling thread (the path without micro-batching)."""
        prepared = self.prepare(request, bundle)
        return self.finish(prepared, bundle.scorer.score(prepared.inputs))

    def record(self, prepared: Prepared, done: float) -> dict[str, int]:
        """Stage timings and fetch counters of a finished request; returns its unknown values
        per field."""
        m, stats, version = self.metrics, prepared.stats, prepared.bundle.version
        m.stage_seconds.labels(stage="fetch", version=version).observe(
            prepared.fetched - prepared.started
        )
        m.stage_seconds.labels(stage="infer", version=version).observe(done - prepared.fetched)
        m.candidates.inc(prepared.n_candidates)
        m.cache_hits.inc(stats.cache_hits)
        m.cache_misses.inc(stats.cache_misses)
        unknown = unknown_by_field(stats)
        for name, count in unknown.items():
            m.oov.labels(field=name).inc(count)
        return unknown
