"""Fixtures: a real redis-server per session, a unique namespace per test, tiny trained models."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from core.local_redis import LocalRedis
from core.redis_conn import connect_redis
from export.bundle import build_bundle
from export.data import load_movielens
from export.model import DINConfig
from export.report import make_report
from export.train import TrainConfig, train_model

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SLICE_USERS = 120


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = LocalRedis(workdir=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = connect_redis(redis_server.url, timeout_s=5.0)
    yield client
    client.close()


@pytest.fixture
def ns() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def movielens_slice():
    return load_movielens(DATA_DIR, max_users=SLICE_USERS)


def train_tiny(dataset, *, pooling="attention", seed=0, epochs=1, **config):
    torch.set_num_threads(1)
    model_config = DINConfig(
        n_items=dataset.n_items, n_cats=dataset.n_cats, pooling=pooling, **config
    )
    return train_model(dataset, model_config, TrainConfig(epochs=epochs, seed=seed, progress=False))


@pytest.fixture(scope="session")
def trained(movielens_slice):
    return train_tiny(movielens_slice)


@pytest.fixture(scope="session")
def bundle(trained, movielens_slice):
    return build_bundle(trained.model, movielens_slice, {"seed": 0})


@pytest.fixture(scope="session")
def other_trained(movielens_slice):
    """A second model with different weights and activation, for swap tests."""
    return train_tiny(movielens_slice, seed=7, activation="prelu")


@pytest.fixture(scope="session")
def other_bundle(other_trained, movielens_slice):
    return build_bundle(other_trained.model, movielens_slice, {"seed": 7})


@pytest.fixture(scope="session")
def reported_bundle(trained, movielens_slice):
    """The DIN bundle with a training report comparing it to a tiny BaseModel."""
    runs = {"DIN": trained, "BaseModel": train_tiny(movielens_slice, pooling="sum", epochs=2)}
    report = make_report(
        {label: run.epochs for label, run in runs.items()},
        {label: run.best_epoch for label, run in runs.items()},
    )
    metrics = {"seed": 0} | {f"test_{name}": value for name, value in trained.test.items()}
    return build_bundle(trained.model, movielens_slice, metrics, report=report)
