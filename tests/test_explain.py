import dataclasses

import numpy as np
import onnx
import pytest
import torch

from core import keys
from export.bundle import build_bundle
from export.job import POOLINGS
from export.live import load_from_samples
from export.publish import publish_bundle
from tests.conftest import train_tiny
from tests.service import in_process
from tests.test_service import as_items, score


@pytest.fixture
def published(redis_client, ns, bundle, samples):
    manifest = publish_bundle(redis_client, ns, bundle, progress=False)
    load_from_samples(redis_client, ns, samples, progress=False)
    return manifest


@pytest.fixture
def client(redis_server, ns, published):
    with in_process(redis_server.url, ns, explain_max_candidates=8) as client:
        yield client


def explain(client, payload, status=200):
    response = client.post("/v1/explain", json=payload)
    assert response.status_code == status, response.text
    return response.json()


def test_explain_scores_equal_score_scores(client, published):
    for payload in (
        {"user_id": "1", "candidates": as_items(["50", "181", "1", "no-such-item"])},
        {"user_id": "u", "history": as_items(["1", "50", "7"]), "candidates": as_items(["9"])},
        {"user_id": "nobody", "candidates": as_items(["50", "1"])},
        {
            "user_id": "1",
            "user": {"age": "56+"},
            "context": {"hour": "4"},
            "candidates": as_items(["50", "1"], cat=["Horror", None]),
        },
    ):
        explained = explain(client, payload)
        scored = score(client, payload)
        assert explained["version"] == scored["version"] == published.version
        assert [c["score"] for c in explained["candidates"]] == scored["scores"]
        assert explained["history_length"] == scored["history_length"]
        assert explained["unknown_ids"] == scored["unknown_ids"]


def test_weights_equal_pytorch_attention_on_the_same_rows(client, trained, samples):
    batch, items = samples.read("test", limit=2000), samples.vocab.fields["item_id"]
    rng = np.random.default_rng(3)
    for row in rng.choice(len(batch), 5, replace=False):
        hist_index = batch.hist[row, : batch.hist_len[row]]
        cand_index = np.unique(batch.item[rng.choice(len(batch), 6)])
        body = explain(
            client,
            {
                "user_id": "u",
                "history": as_items(items[hist_index]),
                "candidates": as_items(items[cand_index]),
            },
        )
        got = weight_matrix(body)
        want = pytorch_weights(trained.model, cand_index, hist_index)
        assert got.shape == want.shape == (len(cand_index), len(hist_index))
        assert np.abs(got - want).max() <= 1e-5


def weight_matrix(body: dict) -> np.ndarray:
    matrix = np.full((len(body["candidates"]), body["history_length"]), np.nan)
    for row, candidate in enumerate(body["candidates"]):
        for behaviour in candidate["behaviours"]:
            matrix[row, behaviour["position"]] = behaviour["weight"]
    return matrix


@torch.no_grad()
def pytorch_weights(model, cand_index, hist_index) -> np.ndarray:
    """DIN's activation unit, in its concat form (the exported graph is in its served form),
    on the model's own item rows looked up by index."""
    model.eval()
    assert model.dense.attention.form == "concat"
    cand = model.goods(torch.from_numpy(cand_index).long())  # (C, Di)
    hist = model.goods(torch.from_numpy(hist_index).long())  # (T, Di)
    return model.dense.attention(cand[None], hist[None])[0].numpy()


def test_behaviours_are_ranked_heaviest_first_with_titles_and_fields(client, bundle):
    body = explain(client, {"user_id": "1", "candidates": as_items(["50", "181"])})
    history, metadata = body["history"], bundle.item_metadata
    assert [b["position"] for b in history] == list(range(body["history_length"]))
    assert body["history_length"] > 5 and body["history_source"] == "redis"
    for behaviour in history:
        known = metadata[behaviour["item_id"]]
        assert behaviour["title"] == known["title"]
        assert behaviour["fields"] == {k: v for k, v in known["fields"].items() if v is not None}
    for candidate in body["candidates"]:
        weights = [b["weight"] for b in candidate["behaviours"]]
        assert weights == sorted(weights, reverse=True)
        assert sorted(b["position"] for b in candidate["behaviours"]) == list(range(len(history)))
        assert candidate["title"] == metadata[candidate["item_id"]]["title"]
    assert body["candidates"][0]["title"].startswith("Star Wars")
    assert set(body["candidates"][0]["fields"]) == {"cat", "year"}


def test_overrides_are_shown_and_unknown_items_have_no_title(client, bundle):
    body = explain(
        client,
        {
            "user_id": "u",
            "history": as_items(["50", "no-such-item"], cat=["Horror", None]),
            "candidates": as_items(["another-unknown"], year=["1950s"]),
        },
    )
    own_year = bundle.item_metadata["50"]["fields"]["year"]
    assert body["history"][0]["fields"] == {"cat": "Horror", "year": own_year}
    assert body["history"][1]["title"] is None and body["history"][1]["fields"] == {}
    assert body["candidates"][0]["title"] is None
    assert body["candidates"][0]["fields"] == {"year": "1950s"}
    assert body["unknown_ids"] == {"item_id": 2, "user_id": 1}  # "u" is no trained user


def test_explain_has_its_own_candidate_limit(client):
    many = {"user_id": "1", "candidates": as_items([str(i) for i in range(1, 10)])}
    body = explain(client, many, status=422)
    assert body["detail"][0]["loc"] == ["body", "candidates"]
    assert "at most 8" in body["detail"][0]["msg"]
    assert len(score(client, many)["scores"]) == 9


def test_a_user_without_history_gets_scores_and_no_behaviours(client):
    body = explain(client, {"user_id": "nobody", "candidates": as_items(["50"])})
    assert body["history"] == [] and body["candidates"][0]["behaviours"] == []


def test_base_model_weighs_every_behaviour_one(redis_server, redis_client, ns, samples):
    base = build_bundle(train_tiny(samples, pooling=POOLINGS["base"]).model, samples, {})
    publish_bundle(redis_client, ns, base, progress=False)
    load_from_samples(redis_client, ns, samples, progress=False)
    with in_process(redis_server.url, ns) as client:
        body = explain(client, {"user_id": "1", "candidates": as_items(["50", "1"])})
    assert body["pooling"] == "sum"
    weights = [b["weight"] for c in body["candidates"] for b in c["behaviours"]]
    assert weights and set(weights) == {1.0}


def without_attention_output(onnx_bytes: bytes) -> bytes:
    """The graph as an exporter before attention weights wrote it: scores only."""
    model = onnx.load_model_from_string(onnx_bytes)
    kept = [o for o in model.graph.output if o.name != "attention"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model.SerializeToString()


def test_a_bundle_from_an_older_exporter_scores_and_answers_409_to_explain(
    redis_server, redis_client, ns, bundle
):
    old = dataclasses.replace(bundle, onnx=without_attention_output(bundle.onnx))
    manifest = publish_bundle(redis_client, ns, old, progress=False)
    assert manifest.onnx_attention == ""
    request = {"user_id": "1", "candidates": as_items(["50", "1"])}
    with in_process(redis_server.url, ns) as client:
        body = explain(client, request, status=409)
        assert body["error"] == "no_attention" and manifest.version in body["detail"]
        assert len(score(client, request)["scores"]) == 2


def test_a_corrupt_metadata_record_loses_only_that_title(client, redis_client, ns, published):
    (key,) = keys.item_meta_keys(ns, published.version, ["50"])
    redis_client.set(key, b"not json")
    body = explain(
        client, {"user_id": "u", "history": as_items(["1"]), "candidates": as_items(["50"])}
    )
    assert body["candidates"][0]["title"] is None
    assert body["history"][0]["title"].startswith("Toy Story")
