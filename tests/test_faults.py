"""Redis outages and slowness: 503s bounded by the timeout, recovery without a restart.

Every test owns its redis-server (with an append-only file, so a restart keeps the bundle).
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from core.redis_conn import connect_redis
from devtools.load import ClientThreads
from devtools.local_redis import LocalRedis
from export.live import load_from_samples
from export.publish import publish_bundle
from tests.service import in_process, service_process

TIMEOUT_S = 0.3
MARGIN_S = 0.7  # scheduling slack on a busy 2-core box; a hang would take seconds
SLOW_S = 2.0
FROM_REDIS = {"user_id": "1", "candidates": [{"item_id": i} for i in ("50", "181", "1")]}
EXPLICIT = {
    "user_id": "u",
    "user": {"age": "25-34", "gender": "F"},
    "context": {"hour": "20"},
    "history": [{"item_id": i} for i in ("1", "2", "3", "4")],
    "candidates": [{"item_id": i} for i in ("50", "181", "7", "no-such-item")],
}
PAYLOADS = (FROM_REDIS, EXPLICIT)


@pytest.fixture
def fault_redis(tmp_path):
    server = LocalRedis(workdir=tmp_path / "redis", extra_args=["--appendonly", "yes"]).start()
    yield server
    server.stop()


@pytest.fixture
def version(fault_redis, ns, bundle, samples) -> str:
    client = connect_redis(fault_redis.url, timeout_s=5.0)
    try:
        load_from_samples(client, ns, samples, progress=False)  # histories and profiles
        return publish_bundle(client, ns, bundle, progress=False).version
    finally:
        client.close()


def timed_post(client, payload: dict) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.post("/v1/score", json=payload)
    return time.perf_counter() - started, response


def scores_of(client) -> list[list[float]]:
    bodies = [client.post("/v1/score", json=p) for p in PAYLOADS]
    assert all(r.status_code == 200 for r in bodies), [r.text for r in bodies]
    return [r.json()["scores"] for r in bodies]


def assert_redis_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "redis_unavailable"
    assert response.headers["retry-after"] == "1"


class Load(ClientThreads):
    """Threads posting the payloads in a loop; records (start, elapsed, status, body)."""

    def __init__(self, url: str, threads: int = 2) -> None:
        self.url = url
        self.records: list[tuple[float, float, int, dict]] = []
        super().__init__(threads)

    def client(self, k: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                payload = PAYLOADS[k % len(PAYLOADS)]
                started = time.monotonic()
                elapsed, response = timed_post(client, payload)
                self.records.append((started, elapsed, response.status_code, response.json()))
                k += 1


def test_redis_outage_under_load_gives_fast_503s_and_recovers_without_restart(
    fault_redis, ns, version
):
    with service_process(
        fault_redis.url, ns, redis_timeout_s=TIMEOUT_S, cache_rows=0, poll_interval_s=0.5
    ) as service:
        service.wait_ready(version=version)
        with httpx.Client(base_url=service.url, timeout=10) as client:
            before = scores_of(client)
            with Load(service.url) as load:
                time.sleep(1.0)
                down = time.monotonic()
                fault_redis.stop()
                time.sleep(1.5)
                ready = client.get("/readyz")
                fault_redis.start()
                up = time.monotonic()
                time.sleep(1.5)
            assert ready.status_code == 503 and ready.json()["redis"].startswith("error")
            assert ready.json()["version"] == version  # the bundle stays loaded
            assert scores_of(client) == before
            assert client.get("/readyz").status_code == 200
    check_outage_records(load.records, down, up)


def check_outage_records(records, down: float, up: float) -> None:
    failed = [r for r in records if r[2] != 200]
    assert failed, "stopping Redis failed no request"
    for started, _, status, body in failed:
        assert status == 503 and body["error"] == "redis_unavailable", body
        assert down - 0.1 <= started <= up, "a request failed outside the outage"
    slowest = max(elapsed for _, elapsed, _, _ in records)
    assert slowest < TIMEOUT_S + MARGIN_S, f"a request took {slowest:.2f}s"
    print(
        f"\nrequests={len(records)} 503s={len(failed)}"
        f" slowest 503={1000 * max(r[1] for r in failed):.1f} ms slowest={1000 * slowest:.1f} ms"
    )
    assert any(started > up for started, *_ in records), "no request after the restart"


def test_service_started_while_redis_is_down_becomes_ready_when_it_returns(
    fault_redis, ns, version
):
    fault_redis.stop()
    with in_process(fault_redis.url, ns, ready=False, redis_timeout_s=TIMEOUT_S) as client:
        time.sleep(0.5)
        readyz = client.get("/readyz")
        assert readyz.status_code == 503 and readyz.json()["version"] is None
        elapsed, response = timed_post(client, FROM_REDIS)
        assert response.status_code == 503 and elapsed < TIMEOUT_S + MARGIN_S
        fault_redis.start()
        deadline = time.monotonic() + 5
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.05)
        assert client.get("/readyz").json()["version"] == version
        assert all(len(s) > 0 for s in scores_of(client))


def sleep_server(server: LocalRedis) -> threading.Thread:
    """DEBUG SLEEP blocks the whole server from another connection."""
    admin = server.client(socket_timeout=SLOW_S + 5)
    thread = threading.Thread(target=admin.execute_command, args=("DEBUG", "SLEEP", SLOW_S))
    thread.start()
    time.sleep(0.1)
    return thread


def pause_clients(server: LocalRedis) -> threading.Thread:
    """CLIENT PAUSE ALL holds every other client's commands; the server itself keeps running."""
    server.client().execute_command("CLIENT", "PAUSE", int(SLOW_S * 1000), "ALL")
    thread = threading.Thread(target=time.sleep, args=(SLOW_S,))
    thread.start()
    return thread


@pytest.mark.parametrize("slow_down", [sleep_server, pause_clients])
def test_slow_redis_gives_503_within_the_timeout_then_correct_scores(
    fault_redis, ns, version, slow_down
):
    with in_process(fault_redis.url, ns, redis_timeout_s=TIMEOUT_S, cache_rows=0) as client:
        before = scores_of(client)
        slow = slow_down(fault_redis)
        for payload in PAYLOADS:
            elapsed, response = timed_post(client, payload)
            assert_redis_unavailable(response)
            assert elapsed < TIMEOUT_S + MARGIN_S, f"took {elapsed:.2f}s"
        started = time.perf_counter()
        readyz = client.get("/readyz")
        assert readyz.status_code == 503 and time.perf_counter() - started < TIMEOUT_S + MARGIN_S
        slow.join()
        assert scores_of(client) == before  # no reply of a timed-out command is read later
