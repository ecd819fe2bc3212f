"""Section 3, HTTP end to end: a real uvicorn process under a light keep-alive load generator.

Every request carries a user id, profile and context fields, an explicit history of 50 item
ids (so T is exactly 50) and 100 candidate ids. The load generator is one asyncio (uvloop)
process with one keep-alive connection per concurrent client, writing pre-built request bytes
and reading each answer by its Content-Length, so its own cost stays small; that cost is
measured (CPU per request of this process), as are the service's and Redis's CPU per
request, and an httpx.Client run at concurrency 1 shows what a heavier client adds.

    python -m bench.http_load
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.common import REPEATS, RESULTS_DIR, Latency, median, ms, rate, summarise
from bench.servers import running_service
from bench.workload import C, Catalogue, random_slates, score_body

LEVELS = (1, 8, 32)
REQUESTS_PER_RUN = {1: 300, 8: 640, 32: 960}  # spread over the connections
N_PAYLOADS = 32
VARIANTS = {
    "default": {},
    "cache off": {"cache_rows": 0},
    "batching on": {"batching": "on"},
}


@dataclass
class LevelResult:
    concurrency: int
    latency: Latency
    requests_per_s: float
    candidates_per_s: float
    client_cpu_us: float  # load generator CPU per request
    service_cpu_ms: float  # uvicorn process CPU per request
    redis_cpu_us: float  # redis-server CPU per request
    stage_ms: dict[str, float]  # the service's own mean per stage (fetch, infer, total)
    errors: int

    def to_dict(self) -> dict:
        return asdict(self)


def raw_request(port: int, body: bytes) -> bytes:
    head = (
        f"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    raise ValueError(f"no Content-Length in {head[:200]!r}")


async def one_connection(port: int, requests: list[bytes], first: int, n: int, out: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    try:
        for i in range(first, first + n):
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(content_length(head))
            out.append(time.perf_counter() - started)
            errors += not head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    return errors


async def one_run(port: int, requests: list[bytes], concurrency: int, total: int):
    """(latencies, seconds, errors) of `total` requests over `concurrency` connections."""
    latencies: list[float] = []
    per_connection = max(total // concurrency, 1)
    started = time.perf_counter()
    errors = await asyncio.gather(
        *(
            one_connection(port, requests, k * 7, per_connection, latencies)
            for k in range(concurrency)
        )
    )
    return np.array(latencies), time.perf_counter() - started, sum(errors)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_s(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def stage_totals(url: str) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) per stage of the service's ctr_stage_seconds histogram."""
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name in ("ctr_stage_seconds_sum", "ctr_stage_seconds_count"):
                entry = totals.setdefault(sample.labels["stage"], [0.0, 0.0])
                entry[1 if sample.name.endswith("_count") else 0] = sample.value
    return {stage: (total, count) for stage, (total, count) in totals.items()}


def stage_means_ms(before: dict, after: dict) -> dict[str, float]:
    means = {}
    for stage, (total, count) in after.items():
        old_total, old_count = before.get(stage, (0.0, 0.0))
        if count > old_count:
            means[stage] = (total - old_total) / (count - old_count) * 1e3
    return means


def run_level(runner, service, redis_client, requests: list[bytes], concurrency: int):
    total = REQUESTS_PER_RUN[concurrency]
    runner.run(one_run(service.port, requests, concurrency, total // 2))  # warm-up
    runs, rates, errors = [], [], 0
    stages_before = stage_totals(service.url)
    cpu_before = _cpu_now(service, redis_client)
    for _ in range(REPEATS):
        latencies, seconds, failed = runner.run(one_run(service.port, requests, concurrency, total))
        runs.append(latencies)
        rates.append(len(latencies) / seconds)
        errors += failed
    cpu_after = _cpu_now(service, redis_client)
    stages = stage_means_ms(stages_before, stage_totals(service.url))
    served = sum(len(run) for run in runs)
    client_s, service_s, redis_s = (
        (after - before) / served for after, before in zip(cpu_after, cpu_before, strict=True)
    )
    return LevelResult(
        concurrency,
        summarise(runs),
        median(rates),
        median(rates) * C,
        client_s * 1e6,
        service_s * 1e3,
        redis_s * 1e6,
        stages,
        errors,
    )


def _cpu_now(service, redis_client) -> tuple[float, float, float]:
    return time.process_time(), process_cpu_s(service.process.pid), redis_cpu_s(redis_client)


def httpx_latency(url: str, bodies: list[bytes]) -> Latency:
    """Concurrency 1 with httpx.Client keep-alive: the same requests, a heavier client."""
    headers = {"content-type": "application/json"}
    runs = []
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for body in bodies[:10]:
            client.post("/v1/score", content=body, headers=headers)
        for _ in range(REPEATS):
            run = []
            for i in range(REQUESTS_PER_RUN[1]):
                started = time.perf_counter()
                client.post(
                    "/v1/score", content=bodies[i % len(bodies)], headers=headers
                ).raise_for_status()
                run.append(time.perf_counter() - started)
            runs.append(np.array(run))
    return summarise(runs)


def run_variant(stack, bodies: list[bytes], settings: dict, with_httpx: bool) -> dict:
    log_path = RESULTS_DIR / "uvicorn.log"
    client, url, ns, _ = stack.args()
    with (
        running_service(url, ns, log_path, **settings) as service,
        asyncio.Runner(loop_factory=new_event_loop) as runner,
    ):
        requests = [raw_request(service.port, body) for body in bodies]
        levels = [run_level(runner, service, client, requests, c) for c in LEVELS]
        result = {"ready": service.ready, "settings": settings, "levels": levels}
        if with_httpx:
            result["httpx_c1"] = httpx_latency(service.url, bodies)
    return result


def run_http(stack, catalogue: Catalogue) -> dict:
    bodies = [score_body(slate) for slate in random_slates(catalogue, N_PAYLOADS, seed=4)]
    return {
        name: run_variant(stack, bodies, settings, with_httpx=name == "default")
        for name, settings in VARIANTS.items()
    }


def http_rows(result: dict) -> list[list[str]]:
    rows = []
    for name, variant in result.items():
        for level in variant["levels"]:
            rows.append(
                [
                    f"{name}, c={level.concurrency}",
                    ms(level.latency.p50_ms),
                    ms(level.latency.p99_ms),
                    rate(level.requests_per_s),
                    rate(level.candidates_per_s),
                    f"{level.client_cpu_us:.0f}",
                    f"{level.service_cpu_ms:.2f}",
                    f"{level.redis_cpu_us:.0f}",
                    _stage(level, "fetch"),
                    _stage(level, "infer"),
                    _stage(level, "total"),
                    str(level.errors),
                ]
            )
        if "httpx_c1" in variant:
            rows.append(_httpx_row(name, variant["httpx_c1"]))
    return rows


def _httpx_row(name: str, latency: Latency) -> list[str]:
    row = [f"{name}, c=1, httpx.Client", ms(latency.p50_ms), ms(latency.p99_ms)]
    return row + ["-"] * (len(HTTP_HEADER) - len(row))


HTTP_HEADER = [
    "service, concurrency",
    "p50 ms",
    "p99 ms",
    "req/s",
    "cand/s",
    "client µs/req",
    "service ms/req",
    "redis µs/req",
    "svc fetch",
    "svc infer",
    "svc total",
    "errors",
]


def _stage(level: LevelResult, stage: str) -> str:
    return ms(level.stage_ms[stage]) if stage in level.stage_ms else "-"


def http_table(result: dict) -> tuple:
    return "HTTP end to end (uvicorn), T=50 C=100", HTTP_HEADER, http_rows(result)


if __name__ == "__main__":
    from bench.model import load_bench_model
    from bench.report import print_table
    from bench.stack import published_stack
    from bench.workload import catalogue_of

    bench = load_bench_model()
    with published_stack(bench) as stack:
        result = run_http(stack, catalogue_of(bench.bundle))
    print_table(*http_table(result))
