"""Section 2, the in-process path: ScoringService.pin + score on a real Redis, no HTTP.

Cold means no row cache (every request fetches its 150 rows in one MGET); warm means every
row is already cached. The Zipf stream (s=1.1 over all items) shows the hit ratio a popular-
item skew gives, for no cache, a cache of 10% of the catalogue, and the default size.

    python -m bench.inprocess
"""

from __future__ import annotations

import time

import numpy as np

from app.bundle import BundleHolder, load_version
from app.cache import RowCache
from app.config import Settings
from app.features import RowFetcher
from app.metrics import Metrics
from app.pipeline import ScoringService
from bench.common import REPEATS, Latency, ms, summarise, time_calls
from bench.workload import Catalogue, ZipfItems, random_slates, score_request

DEFAULT_CACHE_ROWS = Settings.model_fields["cache_rows"].default
ZIPF_WARMUP, ZIPF_PER_REPEAT = 300, 300


def make_service(client, url: str, ns: str, version: str, cache_rows: int) -> ScoringService:
    holder = BundleHolder()
    holder.swap(load_version(client, ns, version, "cpu", 1))
    settings = Settings(redis_url=url, namespace=ns, cache_rows=cache_rows, device="cpu")
    fetcher = RowFetcher(client, ns, RowCache(cache_rows))
    return ScoringService(settings, holder, fetcher, Metrics())


def score(service: ScoringService, request) -> object:
    """What the route runs for one parsed request: pin the version, then score on it."""
    return service.score(request, service.pin(request))


def run_inprocess(client, url: str, ns: str, version: str, catalogue: Catalogue) -> dict:
    request = score_request(random_slates(catalogue, 1, seed=1)[0])
    cold = make_service(client, url, ns, version, cache_rows=0)
    warm = make_service(client, url, ns, version, cache_rows=DEFAULT_CACHE_ROWS)
    results = {
        "cold": time_calls(lambda: score(cold, request)),
        "warm": time_calls(lambda: score(warm, request)),
    }
    tenth = len(catalogue.items) // 10
    sizes = {"none": 0, "10% of items": tenth, "default": DEFAULT_CACHE_ROWS}
    zipf = {
        label: zipf_stream(make_service(client, url, ns, version, rows), catalogue) | {"rows": rows}
        for label, rows in sizes.items()
    }
    return {"latency": results, "zipf": zipf}


def zipf_stream(service: ScoringService, catalogue: Catalogue) -> dict:
    """Warm up on ZIPF_WARMUP requests, then time REPEATS runs of ZIPF_PER_REPEAT."""
    stream = ZipfItems(catalogue)
    total = ZIPF_WARMUP + ZIPF_PER_REPEAT * REPEATS
    requests = [score_request(stream.slate()) for _ in range(total)]
    for request in requests[:ZIPF_WARMUP]:
        score(service, request)
    hits_before, misses_before = cache_counts(service)
    runs = []
    for r in range(REPEATS):
        chunk = requests[ZIPF_WARMUP + r * ZIPF_PER_REPEAT :][:ZIPF_PER_REPEAT]
        runs.append(np.array([_timed(score, service, request) for request in chunk]))
    hits_after, misses_after = cache_counts(service)
    hits, misses = hits_after - hits_before, misses_after - misses_before
    return {"latency": summarise(runs), "hit_ratio": hits / max(hits + misses, 1)}


def cache_counts(service: ScoringService) -> tuple[float, float]:
    registry = service.metrics.registry
    hits = registry.get_sample_value("ctr_cache_hits_total") or 0.0
    return hits, registry.get_sample_value("ctr_cache_misses_total") or 0.0


def _timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def inprocess_rows(result: dict) -> list[list[str]]:
    rows = []
    labels = {"cold": "cold (cache_rows=0)", "warm": "warm (every row cached)"}
    for key, latency in result["latency"].items():
        name = f"T=50 C=100, {labels[key]}"
        rows.append([name, ms(latency.p50_ms), ms(latency.p99_ms), "-"])
    for label, entry in result["zipf"].items():
        latency: Latency = entry["latency"]
        name = f"Zipf s=1.1, cache {label} ({entry['rows']:,} rows)"
        rows.append([name, ms(latency.p50_ms), ms(latency.p99_ms), f"{entry['hit_ratio']:.1%}"])
    return rows


INPROCESS_HEADER = ["workload", "p50 ms", "p99 ms", "hit ratio"]


def inprocess_table(result: dict) -> tuple:
    title = "In-process path: ScoringService.score on a real Redis"
    return title, INPROCESS_HEADER, inprocess_rows(result)


if __name__ == "__main__":
    from bench.model import load_bench_model
    from bench.report import print_table
    from bench.stack import published_stack
    from bench.workload import catalogue_of

    bench = load_bench_model()
    with published_stack(bench) as stack:
        result = run_inprocess(*stack.args(), catalogue_of(bench.bundle))
    print_table(*inprocess_table(result))
