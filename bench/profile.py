"""Where one HTTP request's time goes inside the service, from a sampling profile.

Starts the real uvicorn service, sends requests one at a time (concurrency 1, T=50, C=100;
`--concurrency N` keeps N in flight)
and samples every thread of the service with py-spy; the samples are grouped into stages
(HTTP protocol, framework, parse + validate, thread hop, row fetch, Redis client, inference,
serialisation) and written with the hottest frames to bench/results/profile.txt. Without
py-spy, pyinstrument profiles the event-loop thread only (not the worker threads).

    python -m bench.profile [--requests 4000] [--concurrency 1]   # py-spy: pip install py-spy
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.common import RESULTS_DIR, ms, summarise
from bench.http_load import new_event_loop, one_run, raw_request, stage_means_ms, stage_totals
from bench.model import load_bench_model
from bench.servers import running_service
from bench.stack import published_stack
from bench.workload import catalogue_of, random_slates, score_body

SAMPLE_RATE = 100
# A sample whose innermost frame is one of these is a thread waiting, not working.
IDLE = (
    "Condition.wait (threading.py",  # a worker thread waiting for its next job
    "Queue.get (queue.py",
    "_worker (concurrent/futures/thread.py",  # a pool thread blocked on its work queue
    "Runner.run (asyncio/runners.py",  # the event loop inside uvloop: epoll, mostly
)
BACKGROUND_THREADS = ("bundle-watcher",)
# First match from the innermost frame outwards decides a working sample's stage.
STAGES = (
    ("inference (onnxruntime)", ("onnxruntime", "app/scorer.py")),
    ("Redis round trip (redis-py, socket)", ("redis/", "hiredis")),
    (
        "row fetch, cache, decode (app)",
        ("app/features.py", "app/inputs.py", "app/cache.py", "core/rows.py"),
    ),
    ("parse + validate (pydantic)", ("pydantic", "app/requests.py")),
    ("serialise response", ("orjson", "json_response", "to_dict", "app/pipeline.py")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("thread hop (worker pool, threading)", ("concurrent/futures", "anyio/", "threading.py")),
    ("HTTP protocol (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("framework (Starlette, FastAPI)", ("starlette/", "fastapi/", "app/api.py")),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop")),
)


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def stage_of(stack: list[str]) -> str:
    """stack: py-spy's frames, thread first, innermost last."""
    if any(name in stack[0] for name in BACKGROUND_THREADS):
        return "background thread"
    if stack[-1].startswith(IDLE):
        return "idle (waiting)"
    for frame in reversed(stack):
        for stage, needles in STAGES:
            if any(needle in frame for needle in needles):
                return stage
    return "other"


def summarise_raw(raw: str) -> tuple[Counter, Counter, int]:
    """(samples per stage, working samples per innermost frame, sampling ticks).

    With --idle every tick samples every thread, so the main thread's samples count ticks.
    """
    stages, leaves, ticks = Counter(), Counter(), 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        stack, count = stack_text.split(";"), int(count_text)
        ticks += count if "MainThread" in stack[0] else 0
        stage = stage_of(stack)
        stages[stage] += count
        if stage not in ("idle (waiting)", "background thread"):
            leaves[stack[-1]] += count
    return stages, leaves, ticks


def report(stages: Counter, leaves: Counter, per_request_s: float, header: list[str]) -> str:
    """Each stage as ms of thread time per request: samples x (seconds per tick per request)."""
    working = sum(leaves.values())
    lines = [*header, "", f"{'stage':<40} {'ms/request':>10} {'of working':>11}"]
    for stage, count in stages.most_common():
        share = f"{count / working:.1%}" if stage in STAGE_NAMES else ""
        lines.append(f"{stage:<40} {count * per_request_s * 1e3:>10.3f} {share:>11}")
    lines += ["", "hottest innermost frames of working samples (self time):"]
    lines += [f"{count / working:>7.1%}  {frame}" for frame, count in leaves.most_common(25)]
    return "\n".join(lines)


STAGE_NAMES = {name for name, _ in STAGES} | {"other"}


def drive(service, bodies: list[bytes], n: int, concurrency: int) -> list[str]:
    """n requests over `concurrency` connections; lines with the client's latency and the
    service's stage means."""
    requests = [raw_request(service.port, body) for body in bodies]
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(one_run(service.port, requests, concurrency, 200))
        before = stage_totals(service.url)
        latencies, seconds, errors = runner.run(one_run(service.port, requests, concurrency, n))
        stages = stage_means_ms(before, stage_totals(service.url))
    latency = summarise([latencies])
    means = ", ".join(f"{stage} {ms(value)}" for stage, value in sorted(stages.items()))
    return [
        f"{n} requests at c={concurrency} while profiled: client p50 {ms(latency.p50_ms)} ms, "
        f"p99 {ms(latency.p99_ms)} ms, {n / seconds:.0f} req/s, {errors} errors",
        f"the service's own stage means (ms, /metrics): {means}",
    ]


def profile_with_py_spy(spy: str, stack, bodies: list[bytes], n: int, concurrency: int) -> str:
    raw_path = RESULTS_DIR / "profile-raw.txt"
    raw_path.unlink(missing_ok=True)
    log_path = RESULTS_DIR / "uvicorn-profile.log"
    with running_service(stack.server.url, stack.ns, log_path) as service:
        command = [spy, "record", "--pid", str(service.process.pid), "--threads", "--idle"]
        command += ["--rate", str(SAMPLE_RATE), "--format", "raw", "--output", str(raw_path)]
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let py-spy attach before the timed requests
        started = time.perf_counter()
        measured = drive(service, bodies, n, concurrency)
        seconds = time.perf_counter() - started
        sampler.send_signal(signal.SIGINT)
        _, err = sampler.communicate(timeout=60)
    if not raw_path.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode()[-2000:]}")
    stages, leaves, ticks = summarise_raw(raw_path.read_text())
    header = [
        f"py-spy {SAMPLE_RATE} Hz, every thread of the service, {ticks} ticks",
        *measured,
        "ms/request = a stage's samples / ticks x wall seconds per request (threads add up);",
        "check inference against the stage means above (the sampler can miss native time)",
    ]
    return report(stages, leaves, seconds / ticks / n, header)


def profile_with_pyinstrument(stack, bodies: list[bytes], n: int, concurrency: int) -> str:
    out = RESULTS_DIR / "profile-pyinstrument.txt"
    python = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(out)]
    log_path = RESULTS_DIR / "uvicorn-profile.log"
    with running_service(stack.server.url, stack.ns, log_path, python=python) as service:
        measured = drive(service, bodies, n, concurrency)
    note = "pyinstrument: the event-loop thread only (worker threads are not sampled)"
    return "\n".join([note, *measured, out.read_text()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=1, help="keep-alive connections")
    args = parser.parse_args()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    bench = load_bench_model()
    bodies = [score_body(s) for s in random_slates(catalogue_of(bench.bundle), 32, seed=4)]
    with published_stack(bench) as stack:
        spy = py_spy()
        if spy:
            text = profile_with_py_spy(spy, stack, bodies, args.requests, args.concurrency)
        else:
            text = profile_with_pyinstrument(stack, bodies, args.requests, args.concurrency)
    (RESULTS_DIR / "profile.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
