"""Where one request's time goes, stage by stage, timed in-process with the service's code.

Parse + validate (the route's parse_score_request), the configured limits, the event loop's
hop to a worker thread and back (run_in_executor of a no-op on a pool), row fetch + decode
(ScoringService.prepare, cold and warm cache), inference (the bundle's scorer), and the
response (ScoringService.finish + orjson). What HTTP p50 adds on top of their sum is uvicorn,
the ASGI route and the sockets.

    python -m bench.stages
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson

from app.config import Settings
from app.limits import check_limits, parse_score_request
from bench.common import REPEATS, Latency, ms, summarise, time_calls
from bench.http_load import new_event_loop
from bench.inprocess import DEFAULT_CACHE_ROWS, make_service
from bench.workload import random_slates, score_body


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


def run_stages(client, url: str, ns: str, version: str, item_ids) -> dict[str, Latency]:
    body = score_body(random_slates(item_ids, 1, seed=5)[0])
    request = parse_score_request(body)
    settings = Settings(redis_url=url, namespace=ns)
    cold = make_service(client, url, ns, version, cache_rows=0)
    warm = make_service(client, url, ns, version, cache_rows=DEFAULT_CACHE_ROWS)
    prepared = warm.prepare(request)
    scorer = prepared.bundle.scorer
    scores = scorer.score(prepared.candidates, prepared.history, prepared.mask)
    return {
        "parse + validate (JSON body)": time_calls(lambda: parse_score_request(body)),
        "check_limits": time_calls(lambda: check_limits(request, settings)),
        "thread hop (event loop -> worker -> back)": thread_hop_latency(),
        "fetch + decode, cache off (prepare)": time_calls(lambda: cold.prepare(request)),
        "fetch + decode, cache warm (prepare)": time_calls(lambda: warm.prepare(request)),
        "inference (scorer.score)": time_calls(
            lambda: scorer.score(prepared.candidates, prepared.history, prepared.mask)
        ),
        "response (finish + orjson.dumps)": time_calls(
            lambda: orjson.dumps(warm.finish(prepared, scores).to_dict())
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

    bench = load_bench_model()
    with published_stack(bench) as stack:
        result = run_stages(*stack.args(), bench.bundle.tables["item"].ids)
    print_table(*stages_table(result))
