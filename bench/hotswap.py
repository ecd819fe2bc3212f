"""How fast every replica follows an activation under load, with pub/sub and by polling alone.

Two uvicorn replicas share one Redis; 8 clients post in a loop while v1 and v2 are activated
in turn. The two versions are random-weight bundles of the MovieLens example schema; every
request carries a user id, profile and context fields, 50 behaviours and 100 candidates (as
in bench.workload), and the history of its user is also stored (export.live.load_live_state).
For each activation and replica: the time to the first response from the new
version, and to the last response from the old one (after which the replica runs on the new
version only). Also the skew between replicas, and whether any request failed.

    python -m bench.hotswap [--swaps 10] [--gap 1.5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

from bench.common import write_json
from bench.report import print_table
from bench.servers import redis_binaries, redis_server
from bench.workload import catalogue_of, example_schema, random_slates, score_body
from devtools.load import ClientThreads
from devtools.local_service import LocalService
from export.live import load_live_state
from export.publish import publish_bundle
from export.synthetic import synthetic_bundle, synthetic_histories
from export.versions import activate_version

NAMESPACE, CLIENTS, N_ITEMS = "swap", 8, 2000


class Load(ClientThreads):
    """CLIENTS threads posting in a loop; records (time, url, status, version)."""

    def __init__(self, urls: list[str], payload: dict) -> None:
        self.urls, self.payload = urls, payload
        self.records: list[tuple[float, str, int, str | None]] = []
        super().__init__(CLIENTS)

    def client(self, k: int) -> None:
        url = self.urls[k % len(self.urls)]
        with httpx.Client(base_url=url, timeout=10) as http:
            while not self.stop.is_set():
                answer = http.post("/v1/score", json=self.payload)
                version = answer.json().get("version") if answer.status_code == 200 else None
                self.records.append((time.monotonic(), url, answer.status_code, version))


def switch_times(records, url: str, new: str, at: float, until: float) -> tuple[float, float]:
    """(first new-version answer, last old-version answer) after `at`, in seconds."""
    window = [(t, v) for t, u, _, v in records if u == url and at <= t < until]
    first_new = min((t for t, v in window if v == new), default=float("nan"))
    last_old = max((t for t, v in window if v != new), default=at)
    return first_new - at, last_old - at


def run_mode(client, urls: list[str], versions: list[str], payload: dict, swaps, gap) -> dict:
    activations = []
    with Load(urls, payload) as load:
        time.sleep(gap)
        for k in range(swaps):
            version = versions[(k + 1) % 2]
            activations.append((time.monotonic(), version))
            activate_version(client, NAMESPACE, version)
            time.sleep(gap)
    return summarise(load.records, urls, activations, gap)


def summarise(records, urls, activations, gap) -> dict:
    first, last, skew = [], [], []
    for at, version in activations:
        per_replica = [switch_times(records, url, version, at, at + gap) for url in urls]
        first += [f for f, _ in per_replica]
        last += [max(new, old) for new, old in per_replica]
        skew.append(max(f for f, _ in per_replica) - min(f for f, _ in per_replica))
    failed = sum(status != 200 for _, _, status, _ in records)
    ms = lambda xs, q: float(np.nanpercentile(np.array(xs) * 1e3, q))  # noqa: E731
    return {
        "requests": len(records),
        "failed": failed,
        "activations": len(activations),
        "first_new_p50_ms": ms(first, 50),
        "first_new_max_ms": ms(first, 100),
        "switched_p50_ms": ms(last, 50),
        "switched_max_ms": ms(last, 100),
        "replica_skew_p50_ms": ms(skew, 50),
        "replica_skew_max_ms": ms(skew, 100),
    }


def publish_pair(client) -> tuple[list[str], dict]:
    """v1 (active) and v2, the stored history of one user, and that user's request body."""
    bundles = [synthetic_bundle(N_ITEMS, seed=s, schema=example_schema()) for s in (0, 1)]
    versions = [
        publish_bundle(client, NAMESPACE, b, activate=k == 0, progress=False).version
        for k, b in enumerate(bundles)
    ]
    slate = random_slates(catalogue_of(bundles[0]), 1)[0]
    slate.user_id = "u0"
    load_live_state(client, NAMESPACE, synthetic_histories(bundles[0], 1))
    return versions, orjson.loads(score_body(slate))


def run_replicas(server, client, settings: dict, versions, payload, args) -> dict:
    logs = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    replicas = [
        LocalService(server.url, NAMESPACE, log_path=logs / f"r{k}.log", **settings)
        for k in range(2)
    ]
    try:
        for replica in replicas:
            replica.start().wait_ready()
        activate_version(client, NAMESPACE, versions[0])
        time.sleep(1.5)
        urls = [r.url for r in replicas]
        return run_mode(client, urls, versions, payload, args.swaps, args.gap)
    finally:
        for replica in replicas:
            replica.stop()


MODES = {"pub/sub": {}, "polling only (1 s)": {"pubsub": "false", "poll_interval_s": 1.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--gap", type=float, default=1.5, help="seconds between activations")
    args = parser.parse_args()
    with redis_server(redis_binaries()[0]) as (server, client):
        versions, payload = publish_pair(client)
        results = {
            mode: run_replicas(server, client, settings, versions, payload, args)
            for mode, settings in MODES.items()
        }
    print_table(
        "Hot-swap under load (2 replicas, 8 clients)",
        ["mode", *next(iter(results.values())).keys()],
        [
            [m, *(f"{v:.1f}" if isinstance(v, float) else str(v) for v in r.values())]
            for m, r in results.items()
        ],
    )
    write_json("hotswap.json", results)


if __name__ == "__main__":
    main()
