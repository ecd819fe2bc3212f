"""Where one request's time goes, stage by stage, timed in-process with the service's code.

Parse + validate with the configured limits (the route's parse_request on the score model),
pinning the version and checking the field names against its schema (ScoringService.pin), the
event loop's hop to a worker thread and back (run_in_executor of a no-op on a pool), row fetch
+ decode (ScoringService.prepare, cold and warm cache), inference (the bundle's scorer), the
response (ScoringService.finish + orjson), and the score histogram's update
(app.metrics.observe_many, one numpy pass) against one observe() per score. What HTTP p50 adds on
top of their sum is uvicorn, the ASGI route and the sockets.

    python -m bench.stages
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson

from app.metrics import observe_many
from app.requests import parse_request
from bench.common import REPEATS, Latency, ms, summarise, time_calls
from bench.http_load import new_event_loop
from bench.inprocess import DEFAULT_CACHE_ROWS, make_service
from bench.workload import Catalogue, random_slates, score_body, score_model


def thread_hop_latency(hops_per_run: int = 500) -> Latency:
    """One await of a no-op on a worker pool (run_in_executor, as the service's route does),
    inside a uvloop event loop."""
    pool = ThreadPoolExecutor(16)

    async def hops(n: int) -> np.ndarray:
        loop, times = asyncio.get_running_loop(), np.empty(n)
        for i in range(n):
            started = time.perf_counter()
            await loop.run_in_executor(pool, int)
            times[i] = time.perf_counter() - started
        return times

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(hops(50))
            return summarise([runner.run(hops(hops_per_run)) for _ in range(REPEATS)])
    finally:
        pool.shutdown()


def observe_each(histogram, scores: list[float]) -> None:
    """What the service did before app.metrics.observe_many: one observe() per score."""
    for score in scores:
        histogram.observe(score)


def run_stages(client, url: str, ns: str, version: str, catalogue: Catalogue) -> dict:
    body, model = score_body(random_slates(catalogue, 1, seed=5)[0]), score_model()
    request = parse_request(body, model)
    cold = make_service(client, url, ns, version, cache_rows=0)
    warm = make_service(client, url, ns, version, cache_rows=DEFAULT_CACHE_ROWS)
    bundle = warm.pin(request)
    prepared = warm.prepare(request, bundle)
    scores = bundle.scorer.score(prepared.inputs)
    return {
        "parse + validate + limits (parse_request)": time_calls(lambda: parse_request(body, model)),
        "pin + field names (service.pin)": time_calls(lambda: warm.pin(request)),
        "thread hop (event loop -> worker -> back)": thread_hop_latency(),
        "fetch + decode, cache off (prepare)": time_calls(lambda: cold.prepare(request, bundle)),
        "fetch + decode, cache warm (prepare)": time_calls(lambda: warm.prepare(request, bundle)),
        "inference (scorer.score)": time_calls(lambda: bundle.scorer.score(prepared.inputs)),
        "response (finish + orjson.dumps)": time_calls(
            lambda: orjson.dumps(warm.finish(prepared, scores).to_dict())
        ),
        **metrics_stages(warm, version, scores.tolist()),
    }


def metrics_stages(service, version: str, scores: list[float]) -> dict[str, Latency]:
    histogram = service.metrics.scores.labels(version=version)
    return {
        "metrics: ctr_scores, one observe() per score": time_calls(
            lambda: observe_each(histogram, scores)
        ),
        "metrics: ctr_scores bucketed with numpy (observe_many)": time_calls(
            lambda: observe_many(histogram, scores)
        ),
    }


def stage_rows(stages: dict[str, Latency]) -> list[list[str]]:
    return [[name, ms(lat.p50_ms), ms(lat.p99_ms)] for name, lat in stages.items()]


STAGES_HEADER = ["stage of one request (T=50, C=100)", "p50 ms", "p99 ms"]


def stages_table(stages: dict[str, Latency]) -> tuple:
    return "Stages of one request, in-process", STAGES_HEADER, stage_rows(stages)


if __name__ == "__main__":
    from bench.model import load_bench_model
    from bench.report import print_table
    from bench.stack import published_stack
    from bench.workload import catalogue_of

    bench = load_bench_model()
    with published_stack(bench) as stack:
        result = run_stages(*stack.args(), catalogue_of(bench.bundle))
    print_table(*stages_table(result))
