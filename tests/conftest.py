"""Fixtures: a real redis-server per session, a unique namespace per test, samples of a
MovieLens-100K slice under the example schema, tiny trained models."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from core.redis_conn import connect_redis
from core.schema import load_schema_file
from devtools.local_redis import LocalRedis, LocalRedisCluster
from export.bundle import build_bundle
from export.job import POOLINGS
from export.model import DINConfig
from export.movielens import prepare_movielens
from export.report import make_report
from export.samples import build_samples
from export.train import TrainConfig, train_model

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SLICE_USERS = 120


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = LocalRedis(workdir=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster():
    """Three cluster-enabled masters on loopback, for the modules that test Redis Cluster."""
    server = LocalRedisCluster().start()
    yield server
    server.stop()


@pytest.fixture
def cluster_client(cluster):
    client = connect_redis(cluster.url, cluster=True, timeout_s=5.0)
    yield client
    client.close()


@pytest.fixture
def redis_client(redis_server):
    client = connect_redis(redis_server.url, timeout_s=5.0)
    yield client
    client.close()


@pytest.fixture
def ns() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def movielens_schema():
    """The MovieLens-100K example schema (item side, user and context fields), data prepared."""
    return load_schema_file(prepare_movielens(DATA_DIR))


@pytest.fixture(scope="session")
def samples(movielens_schema, tmp_path_factory):
    """Samples of the first SLICE_USERS users of MovieLens-100K under the example schema."""
    folder = tmp_path_factory.mktemp("samples")
    return build_samples(movielens_schema, folder, max_users=SLICE_USERS, progress=False)


def train_tiny(samples, *, pooling="attention", seed=0, epochs=1, calibrate=True, **config):
    torch.set_num_threads(1)
    sizes = {name: len(values) for name, values in samples.vocab.fields.items()}
    model_config = DINConfig(samples.schema, sizes, pooling=pooling, **config)
    train_config = TrainConfig(epochs=epochs, seed=seed, calibrate=calibrate, progress=False)
    return train_model(samples, model_config, train_config)


@pytest.fixture(scope="session")
def trained(samples):
    return train_tiny(samples)


@pytest.fixture(scope="session")
def bundle(trained, samples):
    return build_bundle(trained.model, samples, {"seed": 0})


@pytest.fixture(scope="session")
def other_trained(samples):
    """A second model with different weights and activation, for swap tests."""
    return train_tiny(samples, seed=7, activation="dice")


@pytest.fixture(scope="session")
def other_bundle(other_trained, samples):
    return build_bundle(other_trained.model, samples, {"seed": 7})


@pytest.fixture(scope="session")
def reported_bundle(trained, samples):
    """The DIN bundle with a training report comparing it to a tiny BaseModel."""
    runs = {"DIN": trained, "BaseModel": train_tiny(samples, pooling=POOLINGS["base"], epochs=2)}
    report = make_report(
        {label: run.epochs for label, run in runs.items()},
        {label: run.best_epoch for label, run in runs.items()},
    )
    metrics = {"seed": 0} | {f"test_{name}": value for name, value in trained.test.items()}
    return build_bundle(trained.model, samples, metrics, report=report)
