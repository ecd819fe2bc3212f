"""HTTP end to end through the real service (`uvicorn app.main:app`, devtools.local_service) on each
provider, micro-batching off and on, at concurrency 1, 8 and 32; every request has T=50
behaviours and C=100 candidates. The bundle is export.synthetic's, published to Redis by
export.publish; the load generator is bench.gpu.loadgen (keep-alive, one connection per client).

Those modules are the project's own and may change shape: any failure to import, publish or
start is recorded as a skipped section (or variant) with its error, never raised.

    python -m bench.gpu.service_load --redis-url redis://127.0.0.1:6379/0 --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.gpu.loadgen import new_event_loop, probe, random_bodies, raw_request, run_load
from bench.gpu.runtime import make_session
from bench.gpu.timing import Budget, summarise, time_call

log = logging.getLogger(__name__)
LEVELS = (1, 8, 32)
REQUESTS = {1: 300, 8: 640, 32: 960}
QUICK_REQUESTS = {1: 30, 8: 64, 32: 96}
T, C = 50, 100
N_ITEMS = 5000
N_BODIES = 32
NAMESPACE = "gpucheck"
READY_S = 90.0


@dataclass
class Published:
    onnx: bytes
    item_ids: np.ndarray
    version: str


def publish(redis_url: str) -> Published:
    from core.redis_conn import connect_redis
    from export.publish import publish_bundle
    from export.synthetic import synthetic_bundle

    bundle = synthetic_bundle(N_ITEMS)
    client = connect_redis(redis_url, timeout_s=60.0)
    try:
        manifest = publish_bundle(client, NAMESPACE, bundle, progress=False)
    finally:
        client.close()
    return Published(bundle.onnx, np.asarray(bundle.tables["item"].ids), manifest.version)


def graph_feeds(session, t: int = T, c: int = C) -> dict[str, np.ndarray]:
    """Feeds for one user of any input signature: named axes B, C, T; masks all ones."""
    sizes = {"B": 1, "C": c, "T": t}
    rng = np.random.default_rng(0)
    named = {}
    for value in session.get_inputs():
        shape = [d if isinstance(d, int) else sizes.get(d, 1) for d in value.shape]
        random = rng.standard_normal(shape).astype(np.float32)
        named[value.name] = np.ones(shape, np.float32) if "mask" in value.name else random
    return named


def own_session_run(onnx_bytes: bytes, provider: str, budget: Budget) -> dict:
    """session.run of the published graph itself at (T, C): what HTTP is compared with."""
    session = make_session(onnx_bytes, provider)
    outputs = [o.name for o in session.get_outputs()]
    output = "scores" if "scores" in outputs else outputs[0]
    named = graph_feeds(session)
    return time_call(lambda: session.run([output], named), budget).to_dict()


def load_level(runner: asyncio.Runner, port: int, requests: list[bytes], level: int, total: int):
    runner.run(run_load(port, requests, level, max(total // 4, level)))  # warm-up
    latencies, seconds, errors = runner.run(run_load(port, requests, level, total))
    per_s = len(latencies) / seconds
    stats = summarise(latencies).to_dict()
    rates = {"requests_per_s": per_s, "candidates_per_s": per_s * C, "errors": int(errors)}
    return {"concurrency": level, **stats, **rates}


def check_answer(runner: asyncio.Runner, port: int, request: bytes) -> None:
    """One request must score all C candidates before any timing."""
    status, body = runner.run(probe(port, request))
    if status != 200 or len(body.get("scores", [])) != C:
        raise RuntimeError(f"/v1/score answered {status}: {json.dumps(body)[:300]}")


def run_variant(
    redis_url: str, device: str, batching: str, bodies: list[bytes], totals: dict, log_path: Path
) -> dict:
    from devtools.local_service import LocalService

    settings = {"device": device, "batching": batching}
    service = LocalService(redis_url, NAMESPACE, log_path=log_path, **settings).start()
    try:
        ready = service.wait_ready(READY_S)
        requests = [raw_request(service.port, body) for body in bodies]
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            check_answer(runner, service.port, requests[0])
            levels = [load_level(runner, service.port, requests, c, totals[c]) for c in LEVELS]
    finally:
        service.stop()
    log.info("HTTP %s batching %s: %s", device, batching, [round(x["p50_ms"], 3) for x in levels])
    return settings | {"ready": ready, "levels": levels}


def device_variants(
    redis_url: str, device: str, bodies: list[bytes], totals: dict, log_path: Path
) -> list[dict]:
    """Batching off, then on; a service that never starts is not started twice."""
    variants: list[dict] = []
    for batching in ("off", "on"):
        if variants and "error" in variants[-1]:
            variants.append({"device": device, "batching": batching, **_skip(variants[-1])})
            continue
        try:
            variants.append(run_variant(redis_url, device, batching, bodies, totals, log_path))
        except Exception as error:
            log.warning("HTTP %s batching %s failed: %s", device, batching, error)
            variants.append({"device": device, "batching": batching, "error": _text(error)})
    return variants


def _skip(failed: dict) -> dict:
    return {"error": f"skipped: batching {failed['batching']} failed the same way"}


def _text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:1000]


def run_http(
    redis_url: str, devices: list[str], budget: Budget, quick: bool, log_path: Path
) -> dict:
    """{"status": "ok" | "skipped", ...}: the variants and each provider's own session.run."""
    try:
        published = publish(redis_url)
        bodies = random_bodies(published.item_ids, N_BODIES, T, C)
    except Exception as error:
        log.warning("HTTP section skipped: %s", error)
        return {"status": "skipped", "error": f"publishing the bundle failed: {_text(error)}"}
    totals = QUICK_REQUESTS if quick else REQUESTS
    result: dict = {"status": "ok", "version": published.version, "t": T, "c": C}
    result["session_run"], result["variants"] = {}, []
    for device in devices:
        try:
            result["session_run"][device] = own_session_run(published.onnx, device, budget)
        except Exception as error:
            result["session_run"][device] = {"error": _text(error)}
        result["variants"] += device_variants(redis_url, device, bodies, totals, log_path)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--device", action="append", default=None, help="cpu and/or cuda")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--log", type=Path, default=Path("service.log"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    budget = Budget.quick() if args.quick else Budget.full()
    result = run_http(args.redis_url, args.device or ["cpu"], budget, args.quick, args.log)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
