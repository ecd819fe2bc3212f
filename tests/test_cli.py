import json
import subprocess
import sys

import numpy as np
import pytest

from core import keys
from core.manifest import Manifest
from export.bundle import save_bundle
from export.cli import app
from export.report import COLOURS, REPORT_IMAGE, REPORT_SUMMARY
from export.synthetic import synthetic_bundle
from tests.conftest import DATA_DIR
from tests.test_report import colour_pixels


@pytest.fixture
def cli(redis_server, ns, capsys):
    """Runs `ctr-export ARGS` in this process against the test's Redis: (status, output)."""

    def invoke(*args):
        code = app([*args, "--redis-url", redis_server.url, "--namespace", ns])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return invoke


def test_publish_activate_rollback_update_and_gc_from_the_command_line(
    cli, redis_client, ns, tmp_path
):
    folder = save_bundle(synthetic_bundle(30), tmp_path / "bundle")
    assert cli("publish", str(folder), "--no-progress")[1].strip() == "v1 active"
    code, out = cli("publish", str(folder), "--no-activate", "--no-progress")
    assert code == 0 and "v2 published, not active" in out
    assert cli("versions")[1].split("\n")[:2] == ["* v1", "  v2"]
    listed = json.loads(cli("versions", "--json")[1])
    assert [(v["version"], v["active"]) for v in listed] == [("v1", True), ("v2", False)]
    assert cli("activate", "v2")[1].strip() == "v2 active (was v1)"
    assert cli("activate", "v1")[0] == 0  # the rollback
    assert redis_client.get(keys.active_key(ns)) == b"v1"

    rows = tmp_path / "rows.npz"
    np.savez(rows, ids=np.array(["s1", "s2"]), rows=np.ones((2, 36), np.float32))
    code, out = cli("update-rows", "--file", str(rows), "--table", "item")
    assert code == 0 and "updated 2 item rows of v1" in out
    assert redis_client.get(keys.row_key(ns, "v1", "item", "s1")) == np.ones(36, "<f4").tobytes()

    cli("publish", str(folder), "--no-activate", "--no-progress", "--row-layout", "buckets")
    assert Manifest.from_json(redis_client.get(keys.manifest_key(ns, "v3"))).row_layout == "buckets"
    code, out = cli("gc", "--keep", "1")
    assert code == 0 and "deleted 0 versions" in out  # v3 newest, v1 active, v2 previous


def test_activating_a_missing_version_fails_with_a_clear_message(cli):
    code, out = cli("activate", "v404")
    assert code == 1 and "v404" in out and "no manifest" in out


def test_bad_row_dtype_is_refused(cli, tmp_path, capsys):
    folder = save_bundle(synthetic_bundle(5), tmp_path / "b")
    code, out = cli("publish", str(folder), "--row-dtype", "int8")
    assert code == 1 and "float16" in out
    code, out = cli("publish", str(folder), "--row-groups", "5000")
    assert code == 1 and "--row-groups must be in 0..1024" in out
    with pytest.raises(SystemExit):
        cli("publish", str(folder), "--row-layout", "blocks")
    assert "--row-layout: invalid choice: 'blocks'" in capsys.readouterr().err


def test_run_trains_both_models_and_publishes_the_training_report(cli, redis_client, ns, tmp_path):
    folder = tmp_path / "bundle"
    args = ["run", "--out", str(folder), "--epochs", "2", "--max-users", "60", "--no-progress"]
    code, out = cli(*args, "--data-dir", str(DATA_DIR))
    assert code == 0 and "v1 active" in out, out
    manifest = Manifest.from_json(redis_client.get(keys.manifest_key(ns, "v1")))
    assert manifest.metrics["model"] == "DIN" and manifest.metrics["baseline"] == "BaseModel"
    assert 0 < manifest.metrics["baseline_test_auc"] < 1
    assert sorted(manifest.report) == [REPORT_SUMMARY, REPORT_IMAGE]
    image = redis_client.get(keys.report_key(ns, "v1", REPORT_IMAGE))
    assert image == (folder / REPORT_IMAGE).read_bytes()
    for colour in COLOURS.values():  # both models' curves are drawn
        assert min(colour_pixels(image, colour)) > 200  # in each of the three panels
    summary = (folder / REPORT_SUMMARY).read_text()
    assert "| DIN |" in summary and "| BaseModel |" in summary


def test_unknown_model_is_refused(tmp_path, capsys):
    assert app(["train", "--model", "wide", "--out", str(tmp_path)]) == 1
    assert "--model must be one of" in capsys.readouterr().err


def test_an_option_out_of_range_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit) as exited:
        app(["canary", "v1", "--percent", "250"])
    assert exited.value.code == 2 and "--percent" in capsys.readouterr().err


def test_the_ops_commands_import_neither_torch_nor_a_cli_framework():
    code = (
        "import sys; from export.cli import build_parser; build_parser(); "
        "import export.versions, export.canary, export.gc, export.update; "
        "print(sorted({'torch', 'sklearn', 'matplotlib', 'typer', 'click'} & set(sys.modules)))"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]"
