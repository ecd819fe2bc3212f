"""Every command that talks to Redis fails in one `error:` line, never a traceback, when Redis
is stopped or refuses the password; --verbose adds the trace. Real processes, real servers."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.local_redis import LocalRedis, free_port
from export.cli import DEFAULT_URL, say_if_nothing_found

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    ["versions"],
    ["status"],
    ["activate", "v1"],
    ["canary", "v1", "--percent", "10"],
    ["promote"],
    ["abort"],
    ["gc", "--keep", "1"],
]


@pytest.fixture(scope="module")
def guarded_redis(tmp_path_factory):
    server = LocalRedis(workdir=tmp_path_factory.mktemp("auth"), password="right-one").start()
    yield server
    server.stop()


def run(command: list[str], **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    return subprocess.run(
        [sys.executable, *command], cwd=ROOT, env=clean | env, capture_output=True, text=True
    )


def assert_one_error_line(done: subprocess.CompletedProcess, port: int, reason: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    prefix = f"error: cannot reach Redis at 127.0.0.1:{port} (set CTR_REDIS_URL): "
    assert lines[0].startswith(prefix), lines[0]
    assert reason in lines[0].lower(), lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_stopped_redis_is_one_error_line(command):
    port = free_port()  # nothing listens there
    done = run(["-m", "export.cli", *command], CTR_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert_one_error_line(done, port, "connect")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_wrong_password_is_one_error_line(guarded_redis, command):
    env = {"CTR_REDIS_URL": guarded_redis.url, "CTR_REDIS_PASSWORD": "wrong-one"}
    done = run(["-m", "export.cli", *command], **env)
    assert_one_error_line(done, guarded_redis.port, "password")
    assert "wrong-one" not in done.stderr


def test_verbose_shows_the_trace():
    port = free_port()
    env = {"CTR_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    done = run(["-m", "export.cli", "--verbose", "versions"], **env)
    assert "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot reach Redis at")


def test_the_worker_refuses_a_wrong_password_in_one_line(guarded_redis):
    env = {"CTR_REDIS_URL": guarded_redis.url, "CTR_REDIS_PASSWORD": "wrong-one"}
    done = run(["-m", "ingest.cli"], **env)
    assert_one_error_line(done, guarded_redis.port, "password")


def test_nothing_found_at_the_default_address_says_so(redis_server, ns, monkeypatch, capsys):
    chosen = run(
        ["-m", "export.cli", "versions", "--namespace", ns], CTR_REDIS_URL=redis_server.url
    )
    assert chosen.returncode == 0 and chosen.stderr == ""  # an address someone chose
    monkeypatch.delenv("CTR_REDIS_URL", raising=False)
    args = argparse.Namespace(redis_url=DEFAULT_URL, namespace=ns)
    say_if_nothing_found(args, [])
    assert "set CTR_REDIS_URL" in capsys.readouterr().err
    say_if_nothing_found(args, ["v1"])
    assert capsys.readouterr().err == ""
