import numpy as np
import pytest
import torch

from core import keys
from core.events import encode_behaviour
from export.bundle import rebuild_model
from export.live import load_from_samples, load_live_state
from export.publish import publish_bundle
from export.train import predict
from tests.factories import RICH_SCHEMA, publish_with_users, synthetic_bundle
from tests.service import in_process, wait_ready


@pytest.fixture
def published(redis_server, redis_client, ns, bundle, samples):
    manifest = publish_bundle(redis_client, ns, bundle, progress=False)
    load_from_samples(redis_client, ns, samples, progress=False)
    return manifest


@pytest.fixture
def client(redis_server, ns, published):
    with in_process(redis_server.url, ns) as client:
        yield client


def as_items(raw_ids, **overrides) -> list[dict]:
    """Items of raw ids; each override is a list of values (None: not sent) per item."""
    items = [{"item_id": str(i)} for i in raw_ids]
    for name, values in overrides.items():
        for item, value in zip(items, values, strict=True):
            if value is not None:
                item[name] = str(value)
    return items


def score(client, payload, status=200):
    response = client.post("/v1/score", json=payload)
    assert response.status_code == status, response.text
    return response.json()


def metric(client, line: str) -> bool:
    return line in client.get("/metrics").text.splitlines()


def request_of(samples, batch, row: int, chosen: np.ndarray) -> dict:
    """The request holding test sample `row`'s user, history, user fields and context, with
    the items of rows `chosen` as candidates."""
    fields, schema = samples.vocab.fields, samples.schema
    items = fields[schema.item_field.name]
    history = items[batch.hist[row, : batch.hist_len[row]]]
    user = values_of(fields, schema.user, batch.user_fields[row])
    user.pop(schema.user_id_field, None)  # the id itself travels as user_id
    return {
        "user_id": str(samples.vocab.users[batch.user[row]]),
        "user": user,
        "context": values_of(fields, schema.context, batch.context[row]),
        "history": as_items(history),
        "candidates": as_items(items[batch.item[chosen]]),
    }


def values_of(fields: dict, specs, indices: np.ndarray) -> dict:
    return {spec.name: str(fields[spec.name][k]) for spec, k in zip(specs, indices, strict=True)}


def test_scores_equal_offline_pytorch_for_test_samples(client, trained, samples, published):
    batch = samples.read("test", limit=2000)
    complete = (batch.user_fields > 0).all(axis=1) & (batch.context > 0).all(axis=1)
    rng = np.random.default_rng(2)
    worst = 0.0
    for row in rng.choice(np.flatnonzero(complete), 25, replace=False):
        chosen = rng.choice(len(batch), 12, replace=False)
        body = score(client, request_of(samples, batch, row, chosen))
        assert body["version"] == published.version and body["history_source"] == "request"
        want = predict(trained.model, batch.slate(row, chosen))
        worst = max(worst, float(np.abs(np.array(body["scores"]) - want).max()))
    assert worst <= 1e-5


def test_history_from_redis_scores_like_the_same_history_sent(client, redis_client, ns):
    stored = [v.decode() for v in redis_client.lrange(keys.history_key(ns, "1"), 0, -1)]
    candidates = as_items(["50", "181", "1"])
    from_redis = score(client, {"user_id": "1", "candidates": candidates})
    sent = score(client, {"user_id": "1", "history": as_items(stored), "candidates": candidates})
    assert from_redis["history_source"] == "redis" and from_redis["history_length"] == len(stored)
    assert from_redis["scores"] == sent["scores"]


def test_profile_from_redis_scores_like_the_same_values_sent(client, redis_client, ns):
    raw = redis_client.hgetall(keys.profile_key(ns, "1"))
    stored = {k.decode(): v.decode() for k, v in raw.items()}
    assert sorted(stored) == ["age", "gender", "occupation"]
    candidates = as_items(["50", "181", "1"])
    from_redis = score(client, {"user_id": "1", "candidates": candidates})
    sent = score(client, {"user_id": "1", "user": stored, "candidates": candidates})
    half = score(client, {"user_id": "1", "user": {"age": stored["age"]}, "candidates": candidates})
    assert from_redis["scores"] == sent["scores"] == half["scores"]
    other = score(client, {"user_id": "nobody", "candidates": candidates, "user": stored})
    assert other["scores"] != from_redis["scores"]  # same profile, no history


def test_changing_a_user_field_changes_the_scores(client):
    def with_age(age: str) -> list[float]:
        payload = {"user_id": "1", "user": {"age": age}, "candidates": as_items(["50", "1"])}
        return score(client, payload)["scores"]

    assert with_age("18-24") != with_age("56+")
    assert with_age("18-24") == with_age("18-24")


def test_context_and_item_side_overrides_change_the_scores(client):
    plain = {"user_id": "1", "context": {"hour": "9"}, "candidates": as_items(["50", "181"])}
    night = plain | {"context": {"hour": "23"}}
    recat = plain | {"candidates": as_items(["50", "181"], cat=["Horror", None])}
    scores = [score(client, p)["scores"] for p in (plain, night, recat)]
    assert scores[0] != scores[1]
    assert scores[2][0] != scores[0][0] and scores[2][1] == scores[0][1]


def test_an_override_with_the_items_own_value_changes_nothing(client, bundle):
    own = bundle.item_metadata["50"]["fields"]
    plain = score(client, {"user_id": "1", "candidates": as_items(["50"])})
    same = score(client, {"user_id": "1", "candidates": [{"item_id": "50", **own}]})
    assert same["scores"] == plain["scores"] and set(own) == {"cat", "year"}


def test_unknown_values_use_default_rows_and_are_counted_per_field(client):
    payload = {
        "user_id": "1",
        "user": {"age": "no-such-age"},
        "context": {"hour": "99"},
        "candidates": as_items(["no-such-item", "50", "1"], cat=[None, "no-such-genre", None]),
    }
    body = score(client, payload)
    assert body["unknown_ids"] == {"item_id": 1, "cat": 1, "age": 1, "hour": 1}
    assert all(0 < s < 1 for s in body["scores"])
    for field in ("item_id", "cat", "age", "hour"):
        assert metric(client, f'ctr_oov_ids_total{{field="{field}"}} 1.0')
    assert score(client, {"user_id": "1", "candidates": as_items(["50"])})["unknown_ids"] == {}


def test_duplicate_candidates_get_equal_scores_and_one_fetch(client):
    body = score(client, {"user_id": "nobody", "candidates": as_items(["7", "7", "8", "7"])})
    assert body["scores"][0] == body["scores"][1] == body["scores"][3]
    assert metric(client, "ctr_cache_misses_total 3.0")  # items 7 and 8, and the user's row


def test_scores_keep_request_order(client):
    ids = ["50", "181", "1", "100"]
    forward = score(client, {"user_id": "1", "candidates": as_items(ids)})["scores"]
    backward = score(client, {"user_id": "1", "candidates": as_items(ids[::-1])})["scores"]
    assert np.allclose(forward, backward[::-1], atol=1e-7)


def test_cache_serves_repeat_requests(client):
    payload = {"user_id": "1", "context": {"hour": "3"}, "candidates": as_items(["50", "181"])}
    first = score(client, payload)
    assert score(client, payload) == first
    assert not metric(client, "ctr_cache_hits_total 0.0")


def test_readiness_reports_version_provider_and_redis(client, published):
    body = client.get("/readyz").json()
    assert body == {
        "ready": True,
        "version": published.version,
        "bundle_uid": published.uid,
        "provider": "cpu",
        "redis": "ok",
    }
    assert client.get("/healthz").status_code == 200


def test_metrics_expose_stages_candidates_outcomes_and_version(client, published):
    score(client, {"user_id": "1", "candidates": as_items(["50", "181", "1"])})
    text = client.get("/metrics").text
    v = published.version
    for stage in ("fetch", "infer", "total"):
        assert f'ctr_stage_seconds_count{{stage="{stage}",version="{v}"}} 1.0' in text
    assert "ctr_candidates_scored_total 3.0" in text
    assert f'ctr_requests_total{{outcome="ok",route="score",version="{v}"}} 1.0' in text
    assert f'ctr_scores_count{{version="{v}"}} 3.0' in text
    assert f'ctr_model_info{{provider="cpu",version="{published.version}"}} 1.0' in text


def test_not_ready_without_any_published_bundle(redis_server, ns):
    with in_process(redis_server.url, ns, ready=False) as client:
        assert client.get("/readyz").status_code == 503
        response = client.post("/v1/score", json={"user_id": "1", "candidates": as_items(["1"])})
        assert response.status_code == 503 and response.json()["error"] == "no_model"
        assert metric(client, 'ctr_requests_total{outcome="no_model",route="score",version=""} 1.0')


def test_openapi_example_scores_against_the_demo_bundle(client):
    example = client.get("/openapi.json").json()["components"]["schemas"]["ScoreRequest"]
    body = score(client, example["examples"][0])
    assert len(body["scores"]) == len(example["examples"][0]["candidates"])


def test_openapi_names_the_served_versions_fields(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"item_id", "cat", "year"} <= set(schemas["Item"]["properties"])
    request = schemas["ScoreRequest"]["properties"]
    assert set(request["user"]["properties"]) == {"age", "gender", "occupation"}
    assert set(request["context"]["properties"]) == {"hour"}


def test_unknown_ids_are_counted_on_cache_hits_too(client):
    payload = {"user_id": "1", "candidates": as_items(["never-published"])}
    assert score(client, payload)["unknown_ids"] == {"item_id": 1}
    assert score(client, payload)["unknown_ids"] == {"item_id": 1}


def test_watcher_survives_malformed_events_and_still_swaps(client, redis_client, ns, other_bundle):
    for junk in ('{"kind": "rows-updated", "version": "v1"}', "[1]", "not json", '{"kind": 5}'):
        redis_client.publish(keys.events_channel(ns), junk)
    version = publish_bundle(redis_client, ns, other_bundle, progress=False).version
    assert wait_ready(client.get, timeout_s=5, version=version)["version"] == version


@pytest.fixture(scope="module")
def rich():
    return synthetic_bundle(60, schema=RICH_SCHEMA, seed=3)


def test_every_kind_of_field_reaches_the_graph_as_pytorch_reads_it(
    redis_server, redis_client, ns, rich
):
    """A schema with item-side, user-id, profile and context fields: the service's scores
    equal the PyTorch dense part on rows looked up by hand."""
    publish_bundle(redis_client, ns, rich, progress=False)
    load_live_state(redis_client, ns, {}, {"uid3": {"gender": "gender1", "age": "age0"}})
    payload = {
        "user_id": "uid3",  # the user id field's value, looked up in f:uid
        "user": {"age": "age1"},  # wins over the stored age; gender is the stored one
        "history": as_items(["s5", "s9", "s5"], brand=[None, "brand2", "brand4"]),
        "candidates": as_items(["s1", "s2", "s1", "s40"], shop=["shop0", None, None, "shop4"]),
    }
    with in_process(redis_server.url, ns) as client:
        body = score(client, payload)
    want = dense_scores(rich, payload, stored_profile={"gender": "gender1"})
    assert body["unknown_ids"] == {} and body["history_length"] == 3
    assert np.abs(np.array(body["scores"]) - want).max() <= 1e-6
    assert body["scores"][0] != body["scores"][2]  # the override changed candidate 0 only


def test_stored_history_and_profile_reach_the_graph_as_pytorch_reads_them(
    redis_server, redis_client, ns, rich
):
    _, histories, profiles = publish_with_users(redis_client, ns, rich, n_users=2)
    user = "uid1"
    payload = {"user_id": user, "context": {"hour": "hour2"}, "candidates": as_items(["s3", "s7"])}
    with in_process(redis_server.url, ns) as client:
        body = score(client, payload)
    assert body["history_source"] == "redis" and body["history_length"] == rich.max_history
    sent = payload | {"history": as_items(histories[user])}
    want = dense_scores(rich, sent, stored_profile=profiles[user])
    assert np.abs(np.array(body["scores"]) - want).max() <= 1e-6


@torch.no_grad()
def dense_scores(bundle, payload: dict, stored_profile: dict) -> np.ndarray:
    """What the bundle's PyTorch model gives for the request, rows looked up by hand."""
    schema = bundle.schema
    rows = {name: dict(zip(t.ids, t.rows, strict=True)) for name, t in bundle.tables.items()}
    defaults = {name: t.default for name, t in bundle.tables.items()}

    def item_row(item: dict) -> np.ndarray:
        row = rows["item"][item["item_id"]].copy()
        for name, span in schema.offsets("item").items():
            if name in item and name != "item_id":
                row[span] = rows[f"f:{name}"][item[name]]
        return row

    def vector(specs, values: dict) -> np.ndarray:
        parts = [
            rows[f"f:{s.name}"].get(values.get(s.name), defaults[f"f:{s.name}"]) for s in specs
        ]
        return np.concatenate(parts)

    user_values = {"uid": payload["user_id"]} | stored_profile | payload.get("user", {})
    tensors = [
        np.stack([item_row(c) for c in payload["candidates"]])[None],
        np.stack([item_row(h) for h in payload["history"]])[None],
        np.ones((1, len(payload["history"])), np.float32),
        vector(schema.user, user_values)[None],
        vector(schema.context, payload.get("context", {}))[None],
    ]
    model = rebuild_model(bundle)
    logits = model.dense.logits(*(torch.from_numpy(np.asarray(t, np.float32)) for t in tensors))
    return torch.sigmoid(logits)[0].numpy()


def test_a_request_reads_redis_in_one_pipeline_then_one_mget(redis_server, redis_client, ns, rich):
    """Stored history and profile in one round trip, then every row (items, an override, the
    user id, profile and context fields) in one MGET: commands counted by the server."""
    publish_with_users(redis_client, ns, rich, n_users=1)
    payload = {
        "user_id": "uid0",
        "user": {"age": "age3"},  # gender is read from the stored profile
        "context": {"hour": "hour1"},
        "candidates": as_items(["s1", "s2", "s2"], shop=["shop1", None, "shop2"]),
    }
    with in_process(redis_server.url, ns, cache_rows=0) as client:
        redis_client.config_resetstat()
        score(client, payload)
        calls = {
            name.removeprefix("cmdstat_"): stats["calls"]
            for name, stats in redis_client.info("commandstats").items()
        }
    assert calls["mget"] == 1 and calls["lrange"] == 1 and calls["hmget"] == 1


def test_side_fields_stored_with_behaviours_score_like_the_same_overrides_sent(
    redis_server, redis_client, ns, rich
):
    """Ingested behaviours may carry item-side values (core/events.py); those the version
    declares replace the item's own, others (another version's fields) are ignored."""
    publish_bundle(redis_client, ns, rich, progress=False)
    stored = [("s4", {}), ("s8", {"shop": "shop2"}), ("s4", {"brand": "brand1", "colour": "x"})]
    entries = [encode_behaviour(item, side) for item, side in stored]
    redis_client.rpush(keys.history_key(ns, "uid2"), *entries)
    candidates = as_items(["s1", "s2"])
    sent = [
        {"item_id": item} | {k: v for k, v in side.items() if k != "colour"}
        for item, side in stored
    ]
    with in_process(redis_server.url, ns) as client:
        from_redis = score(client, {"user_id": "uid2", "candidates": candidates})
        explicit = score(client, {"user_id": "uid2", "history": sent, "candidates": candidates})
        plain = score(
            client,
            {"user_id": "uid2", "history": as_items(["s4", "s8", "s4"]), "candidates": candidates},
        )
    assert from_redis["history_length"] == 3 and from_redis["unknown_ids"] == {}
    assert from_redis["scores"] == explicit["scores"] != plain["scores"]
