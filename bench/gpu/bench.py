"""The GPU serving check: onnxruntime's CPU and CUDA providers side by side, in one run on one
machine, then the acceptance ratios. Without a working CUDA provider it says so, measures the
CPU side, and records the CUDA side as not measured.

    python -m bench.gpu.bench [--quick] [--out gpu.json] [--redis-url URL] [--no-http]

Sections: session.run of a random-weight dense DIN graph (bench.gpu.micro), HTTP end to end
through the real service (bench.gpu.service_load). bench/gpu/run.sh runs this on the device.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree

import onnxruntime as ort

from bench.gpu.micro import run_micro
from bench.gpu.runtime import CudaStatus, cuda_status, preload_cuda
from bench.gpu.service_load import run_http
from bench.gpu.timing import Budget

log = logging.getLogger(__name__)
GOALS = {
    "cuda_run_p50_ms_T100_C1000": ("<", 1.0),
    "http_p50_over_session_run_T50_C100": ("<=", 1.5),
    "cuda_over_cpu_candidates_per_s_c32_batching_on": (">=", 10.0),
}


def environment(status: CudaStatus) -> dict:
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "onnxruntime": ort.__version__,
        "onnxruntime_path": str(Path(ort.__file__).parent),
        "cuda": status.to_dict(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
    except ImportError:
        env["torch"] = None
    return env


@contextmanager
def redis_url(given: str | None):
    """The given Redis, else a local redis-server of our own for the run."""
    if given:
        yield given
        return
    from devtools.local_redis import LocalRedis

    server = LocalRedis().start()
    try:
        yield server.url
    finally:
        server.stop()


def http_section(args: argparse.Namespace, budget: Budget, devices: list[str]) -> dict:
    try:
        with redis_url(args.redis_url) as url:
            return run_http(url, devices, budget, args.quick, args.service_log)
    except Exception as error:  # no redis-server at all, say
        log.warning("HTTP section skipped: %s", error)
        return {"status": "skipped", "error": f"{type(error).__name__}: {error}"[:1000]}


def pytest_summary(path: Path | None) -> dict | None:
    """Counts and per-test outcomes from pytest's JUnit XML (run.sh runs the tests first)."""
    if path is None or not path.exists():
        return None
    cases = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                outcome, message = name, (found.get("message") or "")[:500]
                break
        cases.append({"name": case.get("name"), "outcome": outcome, "message": message})
    return {"counts": dict(Counter(c["outcome"] for c in cases)), "cases": cases}


def save(path: Path, result: dict) -> None:
    """Written after each section, so a run cut short still leaves what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def find(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def verdict(name: str, value: float | None, note: str) -> dict:
    sign, goal = GOALS[name]
    passed = None
    if value is not None:
        passed = {"<": value < goal, "<=": value <= goal, ">=": value >= goal}[sign]
    return {"name": name, "value": value, "goal": f"{sign} {goal}", "pass": passed, "note": note}


def cuda_run_p50(micro: dict, cuda: bool) -> dict:
    name = "cuda_run_p50_ms_T100_C1000"
    cell = find(micro["single"], provider="cuda", method="run", t=100, c=1000)
    if not cuda or cell is None or cell.get("p50_ms") is None:
        return verdict(name, None, "not measured: CUDA provider unavailable or failed")
    return verdict(name, cell["p50_ms"], "session.run, numpy in and out, B=1")


def http_level(http: dict, device: str, batching: str, concurrency: int) -> dict | None:
    variant = find(http.get("variants", []), device=device, batching=batching)
    return find(variant.get("levels", []), concurrency=concurrency) if variant else None


def http_over_run(http: dict, device: str) -> dict:
    name = "http_p50_over_session_run_T50_C100"
    level = http_level(http, device, "off", 1)
    own = http.get("session_run", {}).get(device, {})
    if level is None or "p50_ms" not in own:
        return verdict(name, None, f"not measured on {device}: {http.get('error', 'no data')}")
    note = f"{device}, concurrency 1, batching off, over the same graph's session.run"
    return verdict(name, level["p50_ms"] / own["p50_ms"], note)


def cuda_over_cpu(http: dict) -> dict:
    name = "cuda_over_cpu_candidates_per_s_c32_batching_on"
    cuda, cpu = http_level(http, "cuda", "on", 32), http_level(http, "cpu", "on", 32)
    if cuda is None or cpu is None:
        return verdict(name, None, "not measured: needs HTTP on both providers")
    return verdict(name, cuda["candidates_per_s"] / cpu["candidates_per_s"], "HTTP, c=32")


def acceptance(micro: dict, http: dict, cuda: bool) -> list[dict]:
    device = "cuda" if cuda else "cpu"
    return [cuda_run_p50(micro, cuda), http_over_run(http, device), cuda_over_cpu(http)]


HEADER = f"{'provider':8} {'method':17} {'B':>3} {'T':>4} {'C':>5} {'p50 ms':>9} {'p99 ms':>9}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_micro(micro: dict) -> None:
    for title, rows in (("one user per call", micro["single"]), ("batching", micro["batching"])):
        print(f"\nsession.run, {title} (CPU intra-op threads: {micro['cpu_threads']})")
        print(HEADER)
        for row in rows:
            print_row(row)


def print_row(row: dict) -> None:
    """One cell; its max abs diff against the CPU provider's scores, or its error."""
    diff = row.get("max_abs_diff")
    tail = row["error"] if row.get("error") else ("" if diff is None else f"diff {diff:.2e}")
    print(
        f"{row['provider']:8} {row['method']:17} {row['b']:3d} {row['t']:4d} {row['c']:5d} "
        f"{_ms(row.get('p50_ms')):>9} {_ms(row.get('p99_ms')):>9}  {tail}"
    )


def print_http(http: dict) -> None:
    print(f"\nHTTP end to end (T=50, C=100): {http['status']} {http.get('error', '')}")
    for variant in http.get("variants", []):
        head = f"{variant['device']:4} batching {variant['batching']:3}"
        if "error" in variant:
            print(f"{head}  {variant['error']}")
        for level in variant.get("levels", []):
            print(
                f"{head} c={level['concurrency']:<3d} p50 {level['p50_ms']:8.3f} ms  p99 "
                f"{level['p99_ms']:8.3f} ms  {level['candidates_per_s']:12,.0f} cand/s  "
                f"errors {level['errors']}"
            )


def print_acceptance(checks: list[dict], status: CudaStatus) -> None:
    print(f"\nCUDA: {'available on ' if status.available else 'UNAVAILABLE: '}{status.reason}")
    for check in checks:
        value = "-" if check["value"] is None else f"{check['value']:.3f}"
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[check["pass"]]
        print(f"{mark:4}  {check['name']} = {value} (goal {check['goal']}; {check['note']})")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (a dry run on CPU)")
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    parser.add_argument("--redis-url", default=None, help="else a redis-server of our own")
    parser.add_argument("--service-log", type=Path, default=None, help="uvicorn's log")
    parser.add_argument("--cpu-threads", type=int, default=1, help="CPU provider intra-op")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--pytest-xml", type=Path, default=None, help="folded into the JSON")
    args = parser.parse_args()
    args.service_log = args.service_log or args.out.with_name("service.log")
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.perf_counter()
    preload_cuda()
    status = cuda_status()
    if not status.available:
        log.warning("CUDA execution provider unavailable: %s", status.reason)
    result: dict = {"environment": environment(status), "quick": args.quick}
    result["tests"] = pytest_summary(args.pytest_xml)
    budget = Budget.quick() if args.quick else Budget.full()
    result["session_run"] = micro = run_micro(budget, args.cpu_threads, status.available)
    save(args.out, result)
    devices = ["cuda", "cpu"] if status.available else ["cpu"]
    skipped = {"status": "skipped", "error": "--no-http"}
    result["http"] = http = skipped if args.no_http else http_section(args, budget, devices)
    result["acceptance"] = checks = acceptance(micro, http, status.available)
    result["seconds"] = time.perf_counter() - started
    save(args.out, result)
    print_micro(micro)
    print_http(http)
    print_acceptance(checks, status)
    print(f"\nwrote {args.out} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
