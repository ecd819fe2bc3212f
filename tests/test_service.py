import numpy as np
import pytest

from export.publish import publish_bundle
from export.train import predict
from tests.service import in_process


@pytest.fixture
def published(redis_server, redis_client, ns, bundle):
    return publish_bundle(redis_client, ns, bundle, progress=False)


@pytest.fixture
def client(redis_server, ns, published):
    with in_process(redis_server.url, ns) as client:
        yield client


def as_items(raw_ids, cats=None):
    cats = cats if cats is not None else [None] * len(raw_ids)
    return [
        {"item_id": str(i)} | ({"category": str(c)} if c else {})
        for i, c in zip(raw_ids, cats, strict=True)
    ]


def score(client, payload, status=200):
    response = client.post("/v1/score", json=payload)
    assert response.status_code == status, response.text
    return response.json()


def test_scores_equal_offline_pytorch_for_test_samples(client, trained, movielens_slice, published):
    test, vocab = movielens_slice.test, movielens_slice.item_vocab
    chosen = np.random.default_rng(2).choice(len(test), 25, replace=False)
    worst = 0.0
    for row in chosen:
        slate = test.slate(row, chosen)
        history = vocab[test.hist_item[row, : test.hist_len[row]]]
        body = score(
            client,
            {
                "user_id": "u",
                "history": as_items(history),
                "candidates": as_items(vocab[slate.item]),
            },
        )
        assert body["version"] == published.version and body["history_source"] == "request"
        worst = max(
            worst, float(np.abs(np.array(body["scores"]) - predict(trained.model, slate)).max())
        )
    assert worst <= 1e-5


def test_history_from_redis_scores_like_the_same_history_sent(client, redis_client, ns):
    stored = [v.decode() for v in redis_client.lrange(f"{ns}:user:1:hist", 0, -1)]
    candidates = as_items(["50", "181", "1"])
    from_redis = score(client, {"user_id": "1", "candidates": candidates})
    sent = score(client, {"user_id": "1", "history": as_items(stored), "candidates": candidates})
    assert from_redis["history_source"] == "redis" and from_redis["history_length"] == len(stored)
    assert from_redis["scores"] == sent["scores"]


def test_user_without_history_is_scored_not_refused(client):
    body = score(client, {"user_id": "nobody-here", "candidates": as_items(["50", "1"])})
    assert body["history_length"] == 0 and len(body["scores"]) == 2


def test_unknown_ids_use_default_rows_and_are_counted(client):
    body = score(client, {"user_id": "1", "candidates": as_items(["no-such-item", "50"])})
    assert body["unknown_ids"] == 1 and 0 < body["scores"][0] < 1
    assert 'ctr_oov_ids_total{table="item"} 1.0' in client.get("/metrics").text


def test_explicit_category_changes_the_candidate_vector(client, bundle):
    plain = score(client, {"user_id": "1", "candidates": as_items(["50"])})
    recat = score(client, {"user_id": "1", "candidates": as_items(["50"], ["Horror"])})
    same = score(client, {"user_id": "1", "candidates": as_items(["50"], ["Action"])})
    assert plain["scores"] != recat["scores"]
    item_cat = dict(
        zip(bundle.tables["item"].ids, bundle.tables["item"].rows[:, 18:].tolist(), strict=True)
    )["50"]
    cat_rows = dict(zip(bundle.tables["cat"].ids, bundle.tables["cat"].rows.tolist(), strict=True))
    if np.allclose(item_cat, cat_rows["Action"]):
        assert same["scores"] == plain["scores"]


def test_duplicate_candidates_get_equal_scores_and_one_fetch(client):
    body = score(client, {"user_id": "nobody", "candidates": as_items(["7", "7", "8", "7"])})
    assert body["scores"][0] == body["scores"][1] == body["scores"][3]
    assert "ctr_cache_misses_total 2.0" in client.get("/metrics").text


def test_scores_keep_request_order(client):
    ids = ["50", "181", "1", "100"]
    forward = score(client, {"user_id": "1", "candidates": as_items(ids)})["scores"]
    backward = score(client, {"user_id": "1", "candidates": as_items(ids[::-1])})["scores"]
    assert np.allclose(forward, backward[::-1], atol=1e-7)


def test_cache_serves_repeat_requests(client):
    payload = {"user_id": "1", "candidates": as_items(["50", "181"])}
    first = score(client, payload)
    assert score(client, payload) == first
    assert "ctr_cache_hits_total 0.0" not in client.get("/metrics").text


def test_readiness_reports_version_provider_and_redis(client, published):
    body = client.get("/readyz").json()
    assert body == {"ready": True, "version": published.version, "provider": "cpu", "redis": "ok"}
    assert client.get("/healthz").status_code == 200


def test_metrics_expose_stages_candidates_and_version(client, published):
    score(client, {"user_id": "1", "candidates": as_items(["50", "181", "1"])})
    text = client.get("/metrics").text
    for stage in ("fetch", "infer", "total"):
        assert f'ctr_stage_seconds_count{{stage="{stage}"}} 1.0' in text
    assert "ctr_candidates_scored_total 3.0" in text
    assert f'ctr_model_info{{provider="cpu",version="{published.version}"}} 1.0' in text


def test_not_ready_without_any_published_bundle(redis_server, ns):
    with in_process(redis_server.url, ns, ready=False) as client:
        assert client.get("/readyz").status_code == 503
        response = client.post("/v1/score", json={"user_id": "1", "candidates": as_items(["1"])})
        assert response.status_code == 503 and response.json()["error"] == "no_model"


def test_openapi_example_scores_against_the_demo_bundle(client):
    example = client.get("/openapi.json").json()["components"]["schemas"]["ScoreRequest"]
    body = score(client, example["examples"][0])
    assert len(body["scores"]) == len(example["examples"][0]["candidates"])


def test_unknown_ids_are_counted_on_cache_hits_too(client):
    payload = {"user_id": "1", "candidates": as_items(["never-published"])}
    assert score(client, payload)["unknown_ids"] == 1
    assert score(client, payload)["unknown_ids"] == 1


def test_watcher_survives_malformed_events_and_still_swaps(client, redis_client, ns, other_bundle):
    from core import keys
    from tests.service import wait_ready

    for junk in ('{"kind": "rows-updated", "version": "v1"}', "[1]", "not json", '{"kind": 5}'):
        redis_client.publish(keys.events_channel(ns), junk)
    version = publish_bundle(redis_client, ns, other_bundle, progress=False).version
    assert wait_ready(client.get, timeout_s=5, version=version)["version"] == version
