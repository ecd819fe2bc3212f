"""Canary traffic in the service: the split, stickiness across replicas, the arms under load,
a refused canary, and the guard that aborts one."""

import time

import numpy as np

from core import keys
from devtools.local_service import LocalService
from export.canary import abort_canary as abort
from export.canary import promote, read_canary, start_canary
from export.publish import publish_bundle
from tests.service import in_process
from tests.test_hot_swap import Load, check_no_mixing, expected_scores, slates

ITEMS = [{"item_id": i} for i in ("50", "181", "1", "100")]


def version_of(client, user: str) -> str:
    response = client.post("/v1/score", json={"user_id": user, "candidates": ITEMS})
    assert response.status_code == 200, response.text
    return response.json()["version"]


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def canary_served(client, version: str) -> bool:
    return client.get("/v1/versions").json()["serving_canary"] == version


def test_a_ten_percent_canary_takes_its_share_and_every_user_sticks_on_both_replicas(
    redis_server, redis_client, ns, bundle, other_bundle
):
    v1 = publish_bundle(redis_client, ns, bundle, progress=False).version
    v2 = publish_bundle(redis_client, ns, other_bundle, activate=False, progress=False).version
    start_canary(redis_client, ns, v2, 10)
    with (
        in_process(redis_server.url, ns) as one,
        in_process(redis_server.url, ns) as two,
    ):
        wait_for(lambda: canary_served(one, v2) and canary_served(two, v2))
        on_canary = [version_of(one, f"user-{k}") == v2 for k in range(4000)]
        assert abs(np.mean(on_canary) - 0.10) <= 0.02
        for user in [f"user-{k}" for k in range(20)]:
            seen = {version_of(replica, user) for replica in (one, two) for _ in range(20)}
            assert len(seen) == 1, user
        page = one.get("/v1/versions").json()
        assert page["canary"] == {"version": v2, "percent": 10.0}
        assert page["arms"][v2]["requests"] >= sum(on_canary) > 0
        assert page["arms"][v1]["requests"] >= len(on_canary) - sum(on_canary)
        assert 0 < page["arms"][v1]["mean_score"] < 1


def test_canary_share_promote_new_canary_abort_under_load_fail_nothing_and_mix_nothing(
    redis_server, redis_client, ns, bundle, other_bundle, trained, other_trained, samples
):
    pairs = slates(samples, n=40)  # test users of their own: each a known id, a row, an arm
    v1 = publish_bundle(redis_client, ns, bundle, progress=False).version
    v2 = publish_bundle(redis_client, ns, other_bundle, activate=False, progress=False).version
    v3 = publish_bundle(redis_client, ns, bundle, activate=False, progress=False).version
    models = {v1: trained.model, v2: other_trained.model, v3: trained.model}
    replicas = [LocalService(redis_server.url, ns).start() for _ in range(2)]
    try:
        for replica in replicas:
            replica.wait_ready(version=v1)
        with Load([r.url for r in replicas], [p for p, _ in pairs]) as load:
            steps = [
                lambda: start_canary(redis_client, ns, v2, 10),
                lambda: start_canary(redis_client, ns, v2, 50),
                lambda: promote(redis_client, ns),
                lambda: start_canary(redis_client, ns, v3, 20),
                lambda: abort(redis_client, ns),
            ]
            for step in steps:
                time.sleep(2.5)
                step()
            time.sleep(2.5)
        check_no_mixing(load.records, expected_scores(models, pairs))
        served = {body["version"] for _, _, _, body, _ in load.records}
        assert served == {v1, v2, v3}
        assert redis_client.get(keys.active_key(ns)) == v2.encode()
        assert read_canary(redis_client, ns) is None
    finally:
        for replica in replicas:
            replica.stop()


def test_a_corrupt_canary_is_refused_and_everyone_stays_on_the_active_version(
    redis_server, redis_client, ns, bundle, other_bundle
):
    v1 = publish_bundle(redis_client, ns, bundle, progress=False).version
    v2 = publish_bundle(redis_client, ns, other_bundle, activate=False, progress=False).version
    redis_client.set(keys.onnx_key(ns, v2), b"not an onnx graph")
    with in_process(redis_server.url, ns) as client:
        start_canary(redis_client, ns, v2, 50)
        wait_for(lambda: "ctr_bundle_refusals_total 1.0" in client.get("/metrics").text)
        assert {version_of(client, f"user-{k}") for k in range(200)} == {v1}


def test_the_guard_aborts_a_canary_that_breaks_its_latency_bound(
    redis_server, redis_client, ns, bundle, other_bundle
):
    publish_bundle(redis_client, ns, bundle, progress=False)
    v2 = publish_bundle(redis_client, ns, other_bundle, activate=False, progress=False).version
    with in_process(redis_server.url, ns, poll_interval_s=0.2) as client:
        start_canary(redis_client, ns, v2, 100, max_p99_ms=0.001)
        wait_for(lambda: canary_served(client, v2))
        for k in range(60):  # past the guard's minimum, every one slower than 1 µs
            version_of(client, f"user-{k}")
        wait_for(lambda: read_canary(redis_client, ns) is None)
        wait_for(lambda: not canary_served(client, v2))
