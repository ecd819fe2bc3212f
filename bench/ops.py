"""Operator timings, under load: how long the ops commands take to start, how many rollbacks
a script gets through, and how fast every replica starts splitting traffic for a canary.

Two uvicorn replicas share one Redis; 8 clients post in a loop throughout.
- start: wall time of `ctr-export COMMAND --help` and of real `versions --json` / `status`
  calls, each from a fresh process, first with the replicas idle (goal: under 0.5 s), then
  again under the clients' load (reported: two cores shared with two busy replicas);
- flips: a script that runs `ctr-export activate` (v1, v2, v1, ...) every 2 s for 25 s,
  counting completed activations (goal: at least 10) and failed requests (goal: 0);
- canary: `ctr-export canary v2 --percent 10`, then the time until each replica reports it
  serves the canary (p50 and worst over the repeats), and the same for `abort`.

    python -m bench.ops [--flip-seconds 25] [--canaries 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import write_json
from bench.report import print_table
from devtools.load import ClientThreads
from devtools.local_redis import LocalRedis
from devtools.local_service import LocalService
from export.canary import abort_canary, start_canary
from export.publish import publish_bundle
from export.synthetic import synthetic_bundle
from export.versions import activate_version

NS, CLIENTS = "ops", 8
CLI = [str(Path(sys.executable).with_name("ctr-export"))]
BODY = {"user_id": "u1", "candidates": [{"item_id": f"s{k}"} for k in range(100)]}


class Load(ClientThreads):
    """CLIENTS threads posting in a loop; counts answers by status."""

    def __init__(self, urls: list[str]) -> None:
        self.urls, self.statuses = urls, []
        super().__init__(CLIENTS)

    def client(self, k: int) -> None:
        with httpx.Client(base_url=self.urls[k % len(self.urls)], timeout=10) as http:
            while not self.stop.is_set():
                body = BODY | {"user_id": f"u{k}-{len(self.statuses)}"}
                self.statuses.append(http.post("/v1/score", json=body).status_code)


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def start_times(env: dict) -> dict[str, float]:
    """Median of 3 fresh processes per command."""
    commands = {f"{c} --help": [c, "--help"] for c in ("activate", "versions", "gc", "canary")}
    commands |= {"versions --json": ["versions", "--json"], "status": ["status"]}
    return {
        name: float(np.median([timed([*CLI, *args], env) for _ in range(3)]))
        for name, args in commands.items()
    }


def flips(env: dict, seconds: float, versions: list[str]) -> tuple[int, list[float]]:
    done, each, deadline = 0, [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        each.append(timed([*CLI, "activate", versions[done % 2]], env))
        done += 1
        time.sleep(max(0.0, 2.0 - (time.monotonic() - tick)))
    return done, each


def serving_canary(url: str) -> str | None:
    return httpx.get(url + "/v1/versions", timeout=5).json().get("serving_canary")


def time_until(urls: list[str], expected: str | None) -> list[float]:
    started, seen = time.monotonic(), {}
    while len(seen) < len(urls):
        for url in urls:
            if url not in seen and serving_canary(url) == expected:
                seen[url] = time.monotonic() - started
        assert time.monotonic() - started < 30, "a replica never followed the canary"
    return list(seen.values())


def canaries(client, urls: list[str], version: str, repeats: int) -> dict[str, list[float]]:
    split, back = [], []
    for _ in range(repeats):
        start_canary(client, NS, version, 10)
        split.append(max(time_until(urls, version)))
        abort_canary(client, NS)
        back.append(max(time_until(urls, None)))
    return {"split": split, "abort": back}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flip-seconds", type=float, default=25.0)
    parser.add_argument("--canaries", type=int, default=10)
    args = parser.parse_args()
    redis = LocalRedis().start()
    client = redis.client()
    v1, v2 = (
        publish_bundle(
            client, NS, synthetic_bundle(2000, seed=s), activate=s == 0, progress=False
        ).version
        for s in (0, 1)
    )
    env = os.environ | {"CTR_REDIS_URL": redis.url, "CTR_NAMESPACE": NS}
    replicas = [LocalService(redis.url, NS, poll_interval_s=1.0).start() for _ in range(2)]
    try:
        for replica in replicas:
            replica.wait_ready(version=v1)
        urls = [r.url for r in replicas]
        started = {"idle": start_times(env)}
        with Load(urls) as load:
            started["under load"] = start_times(env)
            done, each = flips(env, args.flip_seconds, [v2, v1])
            activate_version(client, NS, v1)
            split = canaries(client, urls, v2, args.canaries)
        report(started, done, each, split, load.statuses)
    finally:
        for replica in replicas:
            replica.stop()
        redis.stop()


def report(started, done, each, split, statuses) -> None:
    failed = sum(s != 200 for s in statuses)
    idle, loaded = started["idle"], started["under load"]
    print_table(
        "ops command start (fresh process, median of 3), idle and with 8 clients loading",
        ["command", "idle s", "goal", "under load s"],
        [[name, f"{t:.3f}", "< 0.5", f"{loaded[name]:.3f}"] for name, t in idle.items()],
    )
    print_table(
        "flips and canaries under load (2 replicas, 8 clients)",
        ["what", "value", "goal"],
        [
            ["activations completed (every 2 s)", str(done), ">= 10"],
            ["activate, p50 / max s", f"{np.median(each):.3f} / {max(each):.3f}", ""],
            ["requests / failed", f"{len(statuses)} / {failed}", "0 failed"],
            ["canary -> every replica splits, p50 / max ms", ms(split["split"]), ""],
            ["abort -> every replica back, p50 / max ms", ms(split["abort"]), ""],
        ],
    )
    load = os.getloadavg()[0]
    write_json(
        "ops.json",
        {
            "start_seconds": started,
            "flips": done,
            "activate_seconds": each,
            "requests": len(statuses),
            "failed": failed,
            "canary_split_seconds": split["split"],
            "canary_abort_seconds": split["abort"],
            "load_average": load,
        },
    )


def ms(values: list[float]) -> str:
    return f"{np.median(values) * 1000:.0f} / {max(values) * 1000:.0f}"


if __name__ == "__main__":
    main()
