"""Redis losing its data: a replica never scores from missing rows, nor from a bundle published
later under the same name; a frozen Redis gives 503s within the timeout.

A request whose rows are all in the replica's cache and that reads nothing else from Redis
(an explicit history and profile) may still be answered from the cache: those are the loaded
bundle's own rows, so its answer is that bundle's exact score. Every other answer after the
loss is a 503.

Each test owns a redis-server without persistence, so a restart comes back empty, and a
replica (a uvicorn process, default cache) that keeps its loaded graph across the restart.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from core.redis_conn import connect_redis
from devtools.local_redis import LocalRedis
from devtools.local_service import wait_ready
from export.live import load_from_samples
from export.publish import publish_bundle
from tests.service import service_process
from tests.test_faults import MARGIN_S, PAYLOADS, TIMEOUT_S, Load, scores_of

POLL_S = 30.0  # without pub/sub the watcher would notice a loss only this late


@pytest.fixture
def empty_on_restart(tmp_path):
    server = LocalRedis(workdir=tmp_path / "redis").start()
    yield server
    server.stop()


def publish(server: LocalRedis, ns: str, bundle, samples) -> tuple[str, str]:
    """Histories, profiles and the bundle, activated: (version, uid)."""
    client = connect_redis(server.url, timeout_s=5.0)
    try:
        load_from_samples(client, ns, samples, progress=False)
        manifest = publish_bundle(client, ns, bundle, progress=False)
        return manifest.version, manifest.uid
    finally:
        client.close()


def empty_restart(server: LocalRedis) -> None:
    server.stop()
    server.start()
    assert server.client().dbsize() == 0


def wait_for_bundle(client: httpx.Client, uid: str | None, timeout_s: float = 30.0) -> dict:
    """/readyz once it names the bundle `uid` (None: no bundle)."""
    deadline = time.monotonic() + timeout_s
    while (body := client.get("/readyz").json())["bundle_uid"] != uid:
        assert time.monotonic() < deadline, f"still {body}"
        time.sleep(0.05)
    return body


@contextmanager
def replica(server: LocalRedis, ns: str, version: str, **settings) -> Iterator[httpx.Client]:
    """A uvicorn replica serving `version`, and a client of it."""
    with service_process(server.url, ns, **settings) as service:
        service.wait_ready(version=version)
        with httpx.Client(base_url=service.url, timeout=10) as client:
            yield client


@pytest.mark.parametrize("pubsub", [True, False])
def test_an_empty_restart_never_answers_200(empty_on_restart, ns, bundle, samples, pubsub):
    version, _ = publish(empty_on_restart, ns, bundle, samples)
    settings = {"redis_timeout_s": TIMEOUT_S, "pubsub": pubsub, "poll_interval_s": POLL_S}
    with replica(empty_on_restart, ns, version, **settings) as client:
        exact = scores_of(client)  # every row now in the replica's cache
        with Load(str(client.base_url)) as load:
            while not load.records:
                time.sleep(0.01)
            lost = time.monotonic()
            empty_restart(empty_on_restart)
            wait_for_bundle(client, None, timeout_s=5.0)  # dropped at once, not at a poll
            after = len(load.records)
            while len(load.records) < after + 20:
                time.sleep(0.01)
        answers = [(code, body) for started, _, code, body in load.records if started > lost]
        assert answers
        inexact = [b for s, b in answers if s == 200 and b["scores"] not in exact]
        assert inexact == [], "a 200 built from rows that were gone"
        errors = {body["error"] for status, body in answers if status != 200}
        assert errors <= {"redis_unavailable", "version_missing", "no_model"}, errors
        assert client.get("/readyz").json()["ready"] is False


def test_a_reused_name_never_mixes_two_bundles(empty_on_restart, ns, bundle, other_bundle, samples):
    version, uid = publish(empty_on_restart, ns, bundle, samples)
    settings = {"redis_timeout_s": TIMEOUT_S, "pubsub": False, "poll_interval_s": POLL_S}
    with replica(empty_on_restart, ns, version, **settings) as client:
        before = scores_of(client)
        empty_restart(empty_on_restart)
        again, new_uid = publish(empty_on_restart, ns, other_bundle, samples)
        assert again == version and new_uid != uid  # the name came back, the uid did not
        first = client.post("/v1/score", json=PAYLOADS[0])  # reads the user from Redis
        assert first.status_code == 503 and first.json()["error"] == "version_missing"
        wait_for_bundle(client, new_uid, timeout_s=10.0)  # well before the 30 s poll
        after = scores_of(client)
    with replica(empty_on_restart, ns, version) as fresh:
        reference = scores_of(fresh)
    assert after == reference  # the new bundle's own scores, nothing of the old one
    assert after != before


def test_a_frozen_redis_gives_503s_within_the_timeout_then_the_same_scores(
    empty_on_restart, ns, bundle, samples
):
    version, _ = publish(empty_on_restart, ns, bundle, samples)
    with replica(empty_on_restart, ns, version, redis_timeout_s=TIMEOUT_S) as client:
        before = scores_of(client)
        empty_on_restart.process.send_signal(signal.SIGSTOP)
        try:
            for payload in PAYLOADS:
                started = time.perf_counter()
                response = client.post("/v1/score", json=payload)
                elapsed = time.perf_counter() - started
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "redis_unavailable"
                assert elapsed < TIMEOUT_S + MARGIN_S, f"took {elapsed:.2f}s"
        finally:
            empty_on_restart.process.send_signal(signal.SIGCONT)
        wait_ready(client.get, version=version)
        assert scores_of(client) == before
