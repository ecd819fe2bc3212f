"""Redis AUTH and TLS, for the exporter CLI and the service; the password never leaks.

Each test starts its own password-protected redis-server with a password made up on the spot.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time

import httpx
import pytest
import redis

from core.redis_conn import connect_redis
from devtools.local_redis import LocalRedis, TlsFiles, redis_server_binaries
from export.bundle import save_bundle
from export.publish import publish_bundle
from tests.service import in_process, service_process

PAYLOAD = {"user_id": "1", "candidates": [{"item_id": "50"}, {"item_id": "181"}]}


@pytest.fixture
def password() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def auth_redis(tmp_path, password):
    """Append-only, so a restart keeps the published bundle."""
    persist = ["--appendonly", "yes"]
    server = LocalRedis(password=password, workdir=tmp_path / "redis", extra_args=persist).start()
    yield server
    server.stop()


@pytest.fixture
def bundle_dir(tmp_path, bundle):
    return save_bundle(bundle, tmp_path / "bundle")


def ctr_export(url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI with only the CTR_* variables given (the URL is always our own server)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    environment |= env | {"CTR_REDIS_URL": url}
    command = [sys.executable, "-m", "export.cli", *args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)


def test_exporter_cli_authenticates_with_a_password_from_env_or_file(
    auth_redis, password, bundle_dir, tmp_path, ns
):
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(password + "\n")
    url, namespace = auth_redis.url, {"CTR_NAMESPACE": ns}
    published = ctr_export(
        url, "publish", str(bundle_dir), **namespace, CTR_REDIS_PASSWORD_FILE=str(secret_file)
    )
    assert published.returncode == 0, published.stderr
    listed = ctr_export(url, "versions", **namespace, CTR_REDIS_PASSWORD=password)
    assert listed.returncode == 0 and listed.stdout.split() == ["*", "v1"], listed.stderr
    for output in (published.stdout + published.stderr, listed.stdout + listed.stderr):
        assert password not in output


def test_exporter_cli_with_a_wrong_password_fails_without_printing_it(auth_redis, ns):
    wrong = secrets.token_urlsafe(24)
    done = ctr_export(auth_redis.url, "versions", CTR_NAMESPACE=ns, CTR_REDIS_PASSWORD=wrong)
    assert done.returncode != 0 and done.stderr.startswith("error: cannot reach Redis at ")
    assert wrong not in done.stdout + done.stderr


@pytest.fixture
def published(auth_redis, password, ns, bundle) -> str:
    client = connect_redis(auth_redis.url, password=password, timeout_s=5.0)
    try:
        return publish_bundle(client, ns, bundle, progress=False).version
    finally:
        client.close()


def test_service_authenticates_with_a_password_or_a_secret_file(
    auth_redis, password, published, ns, tmp_path
):
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(password)
    for option in ({"redis_password": password}, {"redis_password_file": secret_file}):
        with in_process(auth_redis.url, ns, **option) as client:
            assert client.get("/readyz").json()["version"] == published
            assert client.post("/v1/score", json=PAYLOAD).status_code == 200


@pytest.mark.parametrize("given", [None, "wrong"])
def test_service_without_the_right_password_is_not_ready_and_says_why(
    auth_redis, password, published, ns, given
):
    options = {"redis_password": secrets.token_urlsafe(8)} if given else {}
    with in_process(auth_redis.url, ns, ready=False, **options) as client:
        readyz = client.get("/readyz")
        assert readyz.status_code == 503
        assert readyz.json()["redis"] in ("error: AuthenticationError", "error: ResponseError")
        assert client.post("/v1/score", json=PAYLOAD).status_code == 503


def test_password_never_appears_in_logs_or_readiness(auth_redis, password, published, ns, tmp_path):
    log = tmp_path / "service.log"
    with service_process(
        auth_redis.url, ns, log_path=log, redis_password=password, log_level="DEBUG"
    ) as service:
        service.wait_ready(version=published)
        with httpx.Client(base_url=service.url, timeout=10) as client:
            assert client.post("/v1/score", json=PAYLOAD).status_code == 200
            auth_redis.stop()  # errors get logged while Redis is away
            time.sleep(1.0)
            assert client.post("/v1/score", json=PAYLOAD).status_code == 503
            assert password not in client.get("/readyz").text
            auth_redis.start()
            service.wait_ready(version=published)
            assert password not in client.get("/readyz").text + client.get("/metrics").text
    text = log.read_text()
    assert "watcher lost Redis" in text  # the log did record the outage
    assert password not in text


def make_tls_files(folder) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    cert, key, csr = folder / "redis.crt", folder / "redis.key", folder / "redis.csr"
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sign = ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"]
    for command in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=test-ca"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [*sign, "-out", cert, "-days", "1", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return TlsFiles(cert=cert, key=key, ca=ca)


@pytest.fixture
def tls_redis(tmp_path, password):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed, so no certificate can be made")
    tls = make_tls_files(tmp_path / "tls")
    for binary in redis_server_binaries():
        server = LocalRedis(password=password, workdir=tmp_path / "redis", binary=binary, tls=tls)
        try:
            server.start()
        except RuntimeError:  # exits at once on "tls-port": built without TLS
            continue
        yield server
        server.stop()
        return
    pytest.skip("no redis-server found was built with TLS (BUILD_TLS=yes)")


def test_service_and_exporter_work_over_tls_with_auth(tls_redis, password, ns, bundle_dir):
    assert tls_redis.url.startswith("rediss://")
    env = {"CTR_NAMESPACE": ns, "CTR_REDIS_PASSWORD": password}
    published = ctr_export(tls_redis.url, "publish", str(bundle_dir), **env)
    assert published.returncode == 0, published.stderr
    with in_process(tls_redis.url, ns, redis_password=password) as client:
        assert client.get("/readyz").json()["version"] == "v1"
        assert client.post("/v1/score", json=PAYLOAD).status_code == 200
    plain = connect_redis(f"redis://127.0.0.1:{tls_redis.port}/0", password=password)
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        plain.ping()  # the port speaks TLS only
