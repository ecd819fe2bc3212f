"""A user's own log, end to end: a schema written for it, samples, training, publishing,
live histories, and scores served over HTTP equal to the PyTorch model's (≤ 1e-5), with and
without user, context and item-side override fields."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from core import keys
from core.redis_conn import connect_redis
from core.schema import load_schema_file
from export.bundle import Bundle, rebuild_model
from export.job import TrainJob, run_training
from export.live import load_from_samples
from export.publish import publish_bundle
from export.samples import build_samples, open_samples
from tests.service import service_process

N_USERS, N_ITEMS, PER_USER = 60, 80, 30
SCHEMA = {
    "data": {
        "log": "events.{fmt}",
        "items": "ads.{fmt}",
        "users": "people.{fmt}",
        "columns": {"user": "uid", "item": "ad_id", "time": "event_time", "label": "clicked"},
    },
    "features": {
        "item": [
            {"name": "ad_id", "dim": 8},
            {"name": "category", "dim": 4},
            {"name": "shop", "dim": 6},
            {"name": "brand", "dim": 4},
        ],
        "user": [{"name": "age_group", "dim": 3}, {"name": "gender", "dim": 2}],
        "context": [{"name": "device", "dim": 3}],
    },
    "history": {"max_length": 20, "behaviours": "all"},
    "split": {"test_fraction": 0.25, "seed": 1},
}


def tables(seed: int = 0) -> dict[str, pa.Table]:
    """Events with a timestamp column and boolean clicks; ads and people side tables."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(N_USERS), PER_USER)
    ads = rng.integers(0, N_ITEMS, len(users))
    shop = rng.integers(0, 10, N_ITEMS)
    likes = rng.integers(0, 10, N_USERS)
    clicked = rng.random(len(users)) < np.where(shop[ads] == likes[users], 0.7, 0.2)
    seconds = 1_700_000_000 + np.arange(len(users)) * 37
    return {
        "events": pa.table(
            {
                "uid": [f"user-{u}" for u in users],
                "ad_id": [f"ad{a}" for a in ads],
                "event_time": pa.array(seconds * 1_000_000, pa.timestamp("us")),
                "clicked": pa.array(clicked),
                "device": rng.choice(["ios", "android", "web"], len(users)),
            }
        ),
        "ads": pa.table(
            {
                "ad_id": [f"ad{a}" for a in range(N_ITEMS)],
                "category": [f"cat{c}" for c in rng.integers(0, 5, N_ITEMS)],
                "shop": [f"shop{s}" for s in shop],
                "brand": rng.integers(100, 104, N_ITEMS),  # integers: served as "100".."103"
            }
        ),
        "people": pa.table(
            {
                "uid": [f"user-{u}" for u in range(N_USERS)],
                "age_group": rng.choice(["18-24", "25-34", "35-44"], N_USERS),
                "gender": rng.choice(["F", "M"], N_USERS),
            }
        ),
    }


def write_log(folder, fmt: str):
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables().items():
        if fmt == "csv":
            pacsv.write_csv(table, folder / f"{name}.csv")
        else:
            pq.write_table(table, folder / f"{name}.parquet")
    text = yaml.safe_dump(SCHEMA).replace("{fmt}", fmt)
    (folder / "schema.yaml").write_text(text)
    return folder / "schema.yaml"


@pytest.fixture(scope="module")
def trained_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own-log")
    schema = write_log(folder / "parquet", "parquet")
    job = TrainJob(
        out=folder / "bundle",
        schema=schema,
        samples_dir=folder / "samples",
        epochs=2,
        baseline=False,
        progress=False,
    )
    torch.set_num_threads(1)
    return run_training(job), open_samples(folder / "samples"), folder


def test_csv_and_parquet_logs_give_the_same_samples(trained_log, tmp_path):
    _, samples, _ = trained_log
    from_csv = build_samples(
        load_schema_file(write_log(tmp_path / "csv", "csv")), tmp_path / "s", progress=False
    )
    for split in ("fit", "valid", "test"):
        a, b = samples.read(split), from_csv.read(split)
        for column in ("user", "item", "hist", "hist_len", "user_fields", "context", "label"):
            assert np.array_equal(getattr(a, column), getattr(b, column)), (split, column)
    assert list(samples.vocab.fields["brand"]) == ["", "100", "101", "102", "103"]


class TorchScorer:
    """The offline PyTorch model, fed raw values the way the service resolves them: known
    values through the model's own tables, unknown or absent ones through the default rows."""

    def __init__(self, bundle: Bundle, samples) -> None:
        self.model, self.bundle, self.vocab = rebuild_model(bundle), bundle, samples.vocab
        self.schema = bundle.schema

    def index(self, field: str, value: str | None) -> int | None:
        values = self.vocab.fields[field]
        found = np.flatnonzero(values == value) if value is not None else []
        return int(found[0]) if len(found) and found[0] > 0 else None

    @torch.no_grad()
    def field_row(self, field: str, value: str | None) -> torch.Tensor:
        index = self.index(field, value)
        if index is None:
            return torch.from_numpy(self.bundle.tables[keys.field_table(field)].default)
        return self.model.embeddings[field].weight[index]

    @torch.no_grad()
    def item_row(self, item: dict) -> torch.Tensor:
        index = self.index(self.schema.item_field.name, item["item_id"])
        if index is None:
            row = torch.from_numpy(self.bundle.tables["item"].default).clone()
        else:
            row = self.model.goods(torch.tensor([index]))[0].clone()
        for name, span in self.schema.offsets("item").items():
            if name in item and name != self.schema.item_field.name:
                row[span] = self.field_row(name, item[name])
        return row

    @torch.no_grad()
    def scores(self, request: dict, history: list[dict], profile: dict) -> np.ndarray:
        cand = torch.stack([self.item_row(c) for c in request["candidates"]])[None]
        hist = torch.stack([self.item_row(h) for h in history])[None]
        mask = torch.ones(1, len(history))
        values = profile | request.get("user", {})
        user = torch.cat([self.field_row(f.name, values.get(f.name)) for f in self.schema.user])
        context = request.get("context", {})
        ctx = torch.cat([self.field_row(f.name, context.get(f.name)) for f in self.schema.context])
        return self.model.dense(cand, hist, mask, user[None], ctx[None])[0].numpy()


@pytest.fixture(scope="module")
def served(trained_log, redis_server):
    bundle, samples, _ = trained_log
    client = connect_redis(redis_server.url, timeout_s=5)
    ns = "ownlog"
    publish_bundle(client, ns, bundle, progress=False)
    load_from_samples(client, ns, samples, progress=False)
    with service_process(redis_server.url, ns) as service:
        service.wait_ready()
        yield service, client, ns, TorchScorer(bundle, samples)


def stored_state(client, ns: str, user: str) -> tuple[list[dict], dict]:
    history = [{"item_id": v.decode()} for v in client.lrange(keys.history_key(ns, user), 0, -1)]
    profile = {
        k.decode(): v.decode() for k, v in client.hgetall(keys.profile_key(ns, user)).items()
    }
    return history, profile


REQUESTS = {
    "ids only": {"candidates": [{"item_id": "ad3"}, {"item_id": "ad17"}, {"item_id": "ad40"}]},
    "user and context": {
        "user": {"age_group": "35-44", "gender": "F"},
        "context": {"device": "web"},
        "candidates": [{"item_id": "ad3"}, {"item_id": "ad17"}],
    },
    "overrides": {
        "context": {"device": "ios"},
        "candidates": [{"item_id": "ad3", "shop": "shop7"}, {"item_id": "ad3", "brand": "101"}],
    },
    "unknown values": {
        "user": {"gender": "X"},
        "candidates": [{"item_id": "ad-new"}, {"item_id": "ad5", "category": "cat99"}],
    },
}


@pytest.mark.parametrize("case", REQUESTS)
def test_served_scores_equal_the_pytorch_model(served, case):
    service, client, ns, torch_scorer = served
    request = {"user_id": "user-7"} | REQUESTS[case]
    answer = httpx_post(service.url, "/v1/score", request)
    assert answer.status_code == 200, answer.text
    history, profile = stored_state(client, ns, "user-7")
    assert answer.json()["history_length"] == len(history) > 0
    expected = torch_scorer.scores(request, history, profile)
    assert np.abs(np.array(answer.json()["scores"]) - expected).max() <= 1e-5


def test_an_explicit_history_with_overrides_scores_like_pytorch(served):
    service, _, _, torch_scorer = served
    history = [{"item_id": "ad1"}, {"item_id": "ad2", "shop": "shop3"}, {"item_id": "ad9"}]
    request = {"user_id": "nobody", "history": history, "candidates": [{"item_id": "ad4"}]}
    answer = httpx_post(service.url, "/v1/score", request)
    assert answer.status_code == 200, answer.text
    expected = torch_scorer.scores(request, history, {})
    assert np.abs(np.array(answer.json()["scores"]) - expected).max() <= 1e-5


def test_unknown_field_names_get_a_422_naming_them(served):
    service = served[0]
    cases = {
        ("body", "candidates", 0, "colour"): {"candidates": [{"item_id": "ad1", "colour": "red"}]},
        ("body", "user", "height"): {"user": {"height": "2m"}, "candidates": [{"item_id": "ad1"}]},
        ("body", "context", "hour"): {"context": {"hour": "3"}, "candidates": [{"item_id": "ad1"}]},
    }
    for loc, body in cases.items():
        answer = httpx_post(service.url, "/v1/score", {"user_id": "u"} | body)
        assert answer.status_code == 422
        assert list(loc) in [e["loc"] for e in answer.json()["detail"]], answer.text


def test_changing_a_user_field_changes_the_scores(served):
    service = served[0]
    base = {"user_id": "user-3", "candidates": [{"item_id": "ad3"}, {"item_id": "ad4"}]}
    scores = [
        httpx_post(service.url, "/v1/score", base | {"user": {"gender": g}}).json()["scores"]
        for g in ("F", "M")
    ]
    assert scores[0] != scores[1]


def httpx_post(url: str, path: str, body: dict):
    import httpx

    return httpx.post(url + path, json=body, timeout=10)
