"""Ingest: how fast one worker applies behaviour events, next to how fast the same Redis takes
bare XADDs, and how long an event takes from its XADD to the user's history list under load.

    python -m bench.ingest             # prints a table, writes bench/results/ingest.json
    python -m bench.ingest --quick     # smaller and shorter, to check the script runs

Throughput: N events over U users (each with an event id, one in three with a side field)
are XADDed, then one Worker applies them all (ctr-ingest's own loop, minus the blocking
wait), events/s applied. The references are `redis-benchmark XADD` (a custom command:
redis-benchmark has no XADD test) against the same server, twice: with its defaults (50
clients, one command each in flight) and pipelined (-P 64, the server's bare append rate).
They alternate with the worker, REPEATS times each; the ratios of the medians are reported.

Freshness: ctr-ingest runs as a process while a producer process XADDs RATE events/s over U
users. A probe XADDs one event for a user of its own every PROBE_EVERY_S and polls that
user's list until the event is in it: XADD to visible, p50 and p99.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from bench.common import cpu_model, median, rate, write_json
from core import events, keys
from core.manifest import Manifest
from core.redis_conn import RedisClient, connect_redis
from core.schema import two_field_schema
from devtools.local_redis import LocalRedis, free_port, redis_server_binary, stop_process
from ingest.config import IngestSettings
from ingest.worker import Worker

REPEATS = 3
PROBE_EVERY_S = 0.02
POLL_S = 0.0005  # between the probe's reads: a busy loop would take Redis from the worker


@dataclass(frozen=True)
class Sizes:
    events: int  # per throughput run
    users: int
    xadds: int  # per redis-benchmark run
    rate: int  # producer events/s in the freshness run
    seconds: float  # length of the freshness run


FULL = Sizes(events=100_000, users=10_000, xadds=1_000_000, rate=5_000, seconds=20.0)
QUICK = Sizes(events=10_000, users=1_000, xadds=100_000, rate=5_000, seconds=3.0)


def publish_version(client: RedisClient, ns: str) -> None:
    """A listed version with one item-side field (cat) and the default history length."""
    manifest = Manifest("v1", time.time(), "float32", {}, two_field_schema(), "", [], "")
    client.set(keys.manifest_key(ns, "v1"), manifest.to_json())
    client.zadd(keys.versions_key(ns), {"v1": time.time()})


def make_events(n: int, users: int, seed: int, start: float) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        events.event_fields(
            f"u{rng.randrange(users)}",
            f"i{rng.randrange(50_000)}",
            start + k / 1000,
            f"{seed}-{k}",
            {"cat": f"c{k % 18}"} if k % 3 == 0 else None,
        )
        for k in range(n)
    ]


def add_all(client: RedisClient, ns: str, sent: list[dict[str, str]], chunk: int = 5000) -> None:
    for start in range(0, len(sent), chunk):
        events.add_events(client, ns, sent[start : start + chunk], 1)


# ---------------------------------------------------------------- throughput


def worker_events_per_s(server: LocalRedis, sizes: Sizes, seed: int) -> float:
    client = connect_redis(server.url, timeout_s=30)
    ns = f"bench{seed}"
    try:
        publish_version(client, ns)
        add_all(client, ns, make_events(sizes.events, sizes.users, seed, 1.7e9))
        settings = IngestSettings(redis_url=server.url, namespace=ns, ingest_metrics_port=0)
        worker = Worker(settings, client)
        started = time.perf_counter()
        applied = worker.drain()
        elapsed = time.perf_counter() - started
        assert applied == sizes.events, applied
        return applied / elapsed
    finally:
        client.flushdb()
        client.close()


def xadd_per_s(server: LocalRedis, sizes: Sizes, pipeline: int) -> float:
    """redis-benchmark's requests per second for XADD of a small event, `pipeline` in flight
    per client."""
    command = [redis_benchmark(), "-p", str(server.port), "-n", str(sizes.xadds)]
    command += ["-P", str(pipeline)]
    command += ["-q", "XADD", "bench:stream", "*", "user_id", "u", "item_id", "i", "time", "1"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    server.client().delete("bench:stream")
    return float(re.findall(r"([\d.]+) requests per second", out)[-1])


def redis_benchmark() -> str:
    found = shutil.which("redis-benchmark")
    if found is None:
        raise SystemExit("redis-benchmark is not on PATH (apt-get install redis-tools)")
    return found


def run_throughput(server: LocalRedis, sizes: Sizes) -> dict:
    worker, xadd, pipelined = [], [], []
    for seed in range(REPEATS):
        xadd.append(xadd_per_s(server, sizes, 1))
        pipelined.append(xadd_per_s(server, sizes, 64))
        worker.append(worker_events_per_s(server, sizes, seed))
    return {
        "events": sizes.events,
        "users": sizes.users,
        "worker_events_per_s": worker,
        "xadd_per_s": xadd,
        "xadd_pipelined_per_s": pipelined,
        "ratio": median(worker) / median(xadd),
        "ratio_pipelined": median(worker) / median(pipelined),
    }


# ---------------------------------------------------------------- freshness


def produce(url: str, ns: str, per_s: int, seconds: float, users: int, done) -> None:
    """XADD per_s events a second in 100 pipelined ticks a second, the events built before
    the clock starts; puts the achieved rate on `done`."""
    client = connect_redis(url, timeout_s=10)
    per_tick = per_s // 100
    pool = make_events(int(per_s * seconds), users, seed=1, start=time.time())
    sent, started = 0, time.perf_counter()
    while sent < len(pool):
        events.add_events(client, ns, pool[sent : sent + per_tick], 1)
        sent += per_tick
        time.sleep(max(0.0, sent / per_s - (time.perf_counter() - started)))
    done.put(sent / (time.perf_counter() - started))


def start_worker(server: LocalRedis, ns: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    env |= {"CTR_REDIS_URL": server.url, "CTR_NAMESPACE": ns, "CTR_LOG_LEVEL": "WARNING"}
    env |= {"CTR_INGEST_METRICS_PORT": str(free_port())}
    return subprocess.Popen([sys.executable, "-m", "ingest.cli"], env=env)


def probe_once(client: RedisClient, ns: str, k: int, timeout_s: float = 60.0) -> float:
    """Seconds from the XADD of one event to its arrival at the end of the probe user's list."""
    history, item = keys.history_key(ns, "probe"), f"p{k}".encode()
    started = time.perf_counter()
    events.add_events(client, ns, [events.event_fields("probe", f"p{k}", time.time())], 1)
    while client.lindex(history, -1) != item:
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"probe {k} not applied after {timeout_s} s")
        time.sleep(POLL_S)
    return time.perf_counter() - started


def run_freshness(server: LocalRedis, sizes: Sizes) -> dict:
    client, ns = connect_redis(server.url, timeout_s=30), "fresh"
    publish_version(client, ns)
    worker = start_worker(server, ns)
    done = multiprocessing.get_context("spawn").Queue()
    args = (server.url, ns, sizes.rate, sizes.seconds, sizes.users, done)
    producer = multiprocessing.get_context("spawn").Process(target=produce, args=args)
    try:
        probe_once(client, ns, -1)  # the worker is up and the script loaded
        producer.start()
        seconds = []
        while producer.is_alive():
            seconds.append(probe_once(client, ns, len(seconds)))
            time.sleep(PROBE_EVERY_S)
        produced = done.get(timeout=10)
    finally:
        producer.join(timeout=10)
        stop_process(worker, timeout_s=10)
    [group] = client.xinfo_groups(events.stream_key(ns, 0, 1))
    client.close()
    values = np.array(seconds) * 1000
    return {
        "producer_events_per_s": produced,
        "probes": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
        "behind_after": int(group["lag"] or 0) + int(group["pending"]),
    }


# ---------------------------------------------------------------- report


def print_table(result: dict) -> None:
    t, f = result["throughput"], result["freshness"]
    print(f"CPU: {result['cpu']}, {result['cpus']} CPUs; redis-server {result['redis']}")
    print(f"{'measure':<44} {'value':>14}")
    rates = [
        ("worker, events/s applied (median)", t["worker_events_per_s"]),
        ("redis-benchmark XADD, /s (median)", t["xadd_per_s"]),
        ("redis-benchmark XADD -P 64, /s (median)", t["xadd_pipelined_per_s"]),
    ]
    for label, values in rates:
        print(f"{label:<44} {rate(median(values)):>14}")
    print(f"{'ratio to XADD (goal >= 0.5)':<44} {t['ratio']:>14.3f}")
    print(f"{'ratio to XADD -P 64 (goal >= 0.5)':<44} {t['ratio_pipelined']:>14.3f}")
    print(f"{'producer load, events/s':<44} {rate(f['producer_events_per_s']):>14}")
    print(f"{'XADD to history, p50 ms':<44} {f['p50_ms']:>14.2f}")
    print(f"{'XADD to history, p99 ms':<44} {f['p99_ms']:>14.2f}")
    print(f"{'probes':<44} {f['probes']:>14}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller and shorter runs")
    sizes = QUICK if parser.parse_args().quick else FULL
    binary = redis_server_binary()
    server = LocalRedis().start()
    try:
        print(f"throughput: {REPEATS} x ({sizes.events} events, {sizes.xadds} XADDs)")
        throughput = run_throughput(server, sizes)
        print(f"freshness: {sizes.rate} events/s for {sizes.seconds} s")
        result = {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "redis": f"{server.client().info('server')['redis_version']} ({binary})",
            "throughput": throughput,
            "freshness": run_freshness(server, sizes),
        }
    finally:
        server.stop()
    print_table(result)
    print(f"wrote {write_json('ingest.json', result)}")


if __name__ == "__main__":
    main()
