"""Soak: a real uvicorn service at a fixed request rate, with a hot-swap and a Redis restart.

Its own redis-server keeps an append-only file, so the restart keeps every bundle. Bundles
follow the MovieLens example schema (item-side, user and context fields), with random weights.
Half the requests send their history and profile, half let the service read both from Redis
(loaded once with export.live.load_live_state); every request sends its context; candidates
are random ids of a 20k-item catalogue. At 40% of the run a second bundle is published and
activated; at 60% Redis is stopped for --outage-s seconds and started again on the same port.

    make soak                                   # python -m bench.soak: 5 minutes at 100 req/s
    python -m bench.soak --seconds 60 --rate 50

Prints a table and writes bench/results/soak.json (and the service log next to it).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson

from bench.common import RESULTS_DIR, write_json
from bench.report import print_table
from bench.servers import redis_binaries, start_service
from bench.workload import Catalogue, catalogue_of, example_schema, user_side
from core.redis_conn import connect_redis
from devtools.local_redis import LocalRedis
from export.bundle import Bundle
from export.live import load_live_state
from export.publish import publish_bundle
from export.synthetic import synthetic_bundle, synthetic_histories
from export.versions import activate_version

NAMESPACE = "soak"
N_ITEMS, N_USERS, N_PAYLOADS = 20_000, 2_000, 512
CANDIDATES, HISTORY = 100, 50
WORKERS = 16


@dataclass
class Record:
    due: float  # when the request was scheduled (monotonic)
    latency: float  # seconds from `due` to the answer, so queueing counts
    status: int
    kind: str  # "200", "503 redis_unavailable", "transport ReadTimeout", ...
    version: str | None
    payload: int
    scores: list[float] | None


@dataclass
class Timeline:
    started: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)

    def mark(self, name: str) -> float:
        now = time.monotonic()
        self.events.append((now, name))
        return now

    def at(self, name: str) -> float:
        return next(t for t, n in self.events if n == name)


def make_payloads(catalogue: Catalogue, seed: int = 1) -> list[bytes]:
    """Odd payloads carry history and profile; even ones leave both to Redis."""
    rng = np.random.default_rng(seed)
    payloads = []
    for k in range(N_PAYLOADS):
        ids = rng.choice(N_ITEMS, CANDIDATES + HISTORY, replace=False)
        side = user_side(catalogue, rng, k)
        body = {
            "user_id": f"u{rng.integers(N_USERS)}",
            "context": side["context"],
            "candidates": [{"item_id": f"s{i}"} for i in ids[:CANDIDATES]],
        }
        if k % 2:
            body["history"] = [{"item_id": f"s{i}"} for i in ids[CANDIDATES:]]
            body["user"] = side["user"]
        payloads.append(orjson.dumps(body))
    return payloads


def load_users(client, bundle: Bundle, catalogue: Catalogue) -> None:
    """Every user's history and profile, unversioned: both bundles read them."""
    rng = np.random.default_rng(2)
    histories = synthetic_histories(bundle, N_USERS)
    profiles = {user: user_side(catalogue, rng, 0)["user"] for user in histories}
    load_live_state(client, NAMESPACE, histories, profiles)


class Load:
    """WORKERS threads sending payloads on a fixed schedule: request k is due at t0 + k/rate."""

    def __init__(self, url: str, payloads: list[bytes], rate: float, seconds: float) -> None:
        self.url, self.payloads, self.rate = url, payloads, rate
        self.total = int(rate * seconds)
        self.records: list[Record] = []
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.t0 = 0.0

    def run(self) -> None:
        self.t0 = time.monotonic()
        threads = [threading.Thread(target=self._work) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _take(self) -> int | None:
        with self._lock:
            k = next(self._next)
        return k if k < self.total else None

    def _work(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while (k := self._take()) is not None:
                due = self.t0 + k / self.rate
                time.sleep(max(0.0, due - time.monotonic()))
                self.records.append(self._send(client, due, k % len(self.payloads)))

    def _send(self, client: httpx.Client, due: float, index: int) -> Record:
        headers = {"content-type": "application/json"}
        try:
            response = client.post("/v1/score", content=self.payloads[index], headers=headers)
        except httpx.HTTPError as error:
            kind = f"transport {type(error).__name__}"
            return Record(due, time.monotonic() - due, 0, kind, None, index, None)
        latency, body = time.monotonic() - due, response.json()
        if response.status_code != 200:
            kind = f"{response.status_code} {body.get('error')}"
            return Record(due, latency, response.status_code, kind, None, index, None)
        return Record(due, latency, 200, "200", body["version"], index, body["scores"])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample_rss(pid: int, every_s: float, stop: threading.Event, out: list[float]) -> None:
    while not stop.wait(every_s):
        out.append(round(rss_mib(pid), 1))


def run_events(server: LocalRedis, client, seconds: float, outage_s: float, timeline: Timeline):
    """The hot-swap at 40% of the run, the Redis outage at 60%."""
    time.sleep(0.4 * seconds)
    second = synthetic_bundle(N_ITEMS, seed=1, schema=example_schema())
    version = publish_bundle(client, NAMESPACE, second, activate=False, progress=False).version
    timeline.mark("swap")
    activate_version(client, NAMESPACE, version)
    time.sleep(max(0.0, timeline.started + 0.6 * seconds - time.monotonic()))
    timeline.mark("redis_down")
    server.stop()
    time.sleep(outage_s)
    server.start()
    timeline.mark("redis_up")


def soak(seconds: float, rate: float, outage_s: float, workdir: Path) -> dict:
    log_path = RESULTS_DIR / "soak-service.log"
    with ExitStack() as stack:
        binary = redis_binaries()[0]
        server = LocalRedis(workdir=workdir, extra_args=["--appendonly", "yes"], binary=binary.path)
        server.start()
        stack.callback(server.stop)
        client = stack.enter_context(connect_redis(server.url, timeout_s=30.0))
        bundle = synthetic_bundle(N_ITEMS, seed=0, schema=example_schema())
        first = publish_bundle(client, NAMESPACE, bundle, progress=False).version
        catalogue = catalogue_of(bundle)
        load_users(client, bundle, catalogue)
        service = start_service(server.url, NAMESPACE, log_path)
        stack.callback(service.stop)
        pid = service.process.pid
        load, timeline = Load(service.url, make_payloads(catalogue), rate, seconds), Timeline()
        event_args = (server, client, seconds, outage_s, timeline)
        events = threading.Thread(target=run_events, args=event_args)
        rss, done = [rss_mib(pid)], threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(pid, seconds / 10, done, rss))
        timeline.started = time.monotonic()
        for thread in (events, sampler):
            thread.start()
        load.run()
        events.join()
        done.set()
        rss.append(rss_mib(pid))
    return {"redis_server": binary.version} | report(load, timeline, first, rss, seconds, rate)


def report(load: Load, timeline: Timeline, first: str, rss: list[float], seconds, rate) -> dict:
    records = sorted(load.records, key=lambda r: r.due)
    down, up, swap = timeline.at("redis_down"), timeline.at("redis_up"), timeline.at("swap")
    failed = [r for r in records if r.status != 200]
    outside = [r for r in failed if not down <= r.due <= up]
    latencies = np.array([r.latency for r in records]) * 1e3
    ok_latencies = np.array([r.latency for r in records if r.status == 200]) * 1e3
    return {
        "seconds": seconds,
        "rate_per_s": rate,
        "requests": len(records),
        "achieved_rate_per_s": len(records) / (records[-1].due - records[0].due),
        "by_kind": dict(Counter(r.kind for r in records).most_common()),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "p50_ok_ms": float(np.percentile(ok_latencies, 50)),
        "p99_ok_ms": float(np.percentile(ok_latencies, 99)),
        "max_ms": float(latencies.max()),
        "rss_start_mib": rss[0],
        "rss_end_mib": rss[-1],
        "rss_warm_mib": rss[1],  # after the first tenth: buffers, caches and threads are up
        "rss_growth_after_warmup": rss[-1] / rss[1] - 1,
        "rss_samples_mib": rss,  # start, every tenth of the run, end
        "redis_down_s": [round(down - load.t0, 2), round(up - load.t0, 2)],
        "swap_at_s": round(swap - load.t0, 2),
        "errors_in_down_window": len(failed) - len(outside),
        "errors_outside_down_window": len(outside),
        "errors_only_while_redis_down": not outside,
        "versions": dict(Counter(r.version for r in records if r.version)),
        "old_version_after_swap_s": _old_version_tail(records, first, swap),
        "scores_stable_per_version": _scores_stable(records),
    }


def _old_version_tail(records: list[Record], first: str, swap: float) -> float:
    """How long after activation the old version was still answering (0 if never)."""
    late = [r.due + r.latency - swap for r in records if r.version == first and r.due > swap]
    return round(max(late, default=0.0), 3)


def _scores_stable(records: list[Record]) -> bool:
    """Every answer to the same payload from the same version is identical (also across the
    restart: the bundle came back from the append-only file)."""
    seen: dict[tuple[str, int], list[float]] = {}
    for r in records:
        if r.scores is not None and seen.setdefault((r.version, r.payload), r.scores) != r.scores:
            return False
    return True


def table(result: dict) -> tuple:
    rows = [[kind, str(count)] for kind, count in result["by_kind"].items()]
    rows += [
        ["latency p50 / p99 ms (all)", f"{result['p50_ms']:.1f} / {result['p99_ms']:.1f}"],
        ["latency p50 / p99 ms (200s)", f"{result['p50_ok_ms']:.1f} / {result['p99_ok_ms']:.1f}"],
        ["latency max ms", f"{result['max_ms']:.0f}"],
        ["RSS start / end MiB", f"{result['rss_start_mib']:.0f} / {result['rss_end_mib']:.0f}"],
        ["RSS growth after warm-up", f"{100 * result['rss_growth_after_warmup']:.1f}%"],
        ["hot-swap at s", str(result["swap_at_s"])],
        ["old version answered until (s after swap)", str(result["old_version_after_swap_s"])],
        ["redis down from / to s", " / ".join(map(str, result["redis_down_s"]))],
        ["errors outside the redis-down window", str(result["errors_outside_down_window"])],
        ["scores stable per version and payload", str(result["scores_stable_per_version"])],
    ]
    title = (
        f"Soak: {result['requests']} requests in {result['seconds']:.0f} s at "
        f"{result['rate_per_s']:.0f} req/s (achieved {result['achieved_rate_per_s']:.1f}), "
        f"redis {result['redis_server']}"
    )
    return title, ["", "value"], rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--outage-s", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-redis-") as workdir:
        result = soak(args.seconds, args.rate, args.outage_s, Path(workdir))
    print_table(*table(result))
    print(f"wrote {write_json('soak.json', result)}")


if __name__ == "__main__":
    main()
