import numpy as np
from typer.testing import CliRunner

from core import keys
from export.bundle import save_bundle
from export.cli import app
from tests.factories import synthetic_bundle

runner = CliRunner()


def cli(redis_server, ns, *args):
    result = runner.invoke(app, [*args, "--redis-url", redis_server.url, "--namespace", ns])
    return result.exit_code, result.output


def test_publish_activate_rollback_update_and_gc_from_the_command_line(
    redis_server, redis_client, ns, tmp_path
):
    folder = save_bundle(synthetic_bundle(30), tmp_path / "bundle")
    assert cli(redis_server, ns, "publish", str(folder), "--no-progress")[1].strip() == "v1 active"
    code, out = cli(redis_server, ns, "publish", str(folder), "--no-activate", "--no-progress")
    assert code == 0 and "v2 published, not active" in out
    assert cli(redis_server, ns, "versions")[1].split("\n")[:2] == ["* v1", "  v2"]
    assert cli(redis_server, ns, "activate", "v2")[1].strip() == "v2 active (was v1)"
    assert cli(redis_server, ns, "activate", "v1")[0] == 0  # the rollback
    assert redis_client.get(keys.active_key(ns)) == b"v1"

    rows = tmp_path / "rows.npz"
    np.savez(rows, ids=np.array(["s1", "s2"]), rows=np.ones((2, 36), np.float32))
    code, out = cli(redis_server, ns, "update-rows", "--file", str(rows), "--table", "item")
    assert code == 0 and "updated 2 item rows of v1" in out
    assert redis_client.get(keys.row_key(ns, "v1", "item", "s1")) == np.ones(36, "<f4").tobytes()

    cli(redis_server, ns, "publish", str(folder), "--no-activate", "--no-progress")
    code, out = cli(redis_server, ns, "gc", "--keep", "1")
    assert code == 0 and "deleted 0 versions" in out  # v3 newest, v1 active, v2 previous


def test_activating_a_missing_version_fails_with_a_clear_message(redis_server, ns):
    code, out = cli(redis_server, ns, "activate", "v404")
    assert code == 1 and "v404" in out and "no manifest" in out


def test_bad_row_dtype_is_refused(redis_server, ns, tmp_path):
    folder = save_bundle(synthetic_bundle(5), tmp_path / "b")
    code, out = cli(redis_server, ns, "publish", str(folder), "--row-dtype", "int8")
    assert code == 1 and "float16" in out
