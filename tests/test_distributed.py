"""Data-parallel training on real torch.distributed processes (gloo on CPU, torchrun)."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from export.bundle import load_bundle
from export.logwriter import write_synthetic_log

SMALL_LOG = {"n_users": 240, "n_items": 300, "impressions_per_user": 30}


@pytest.fixture(scope="module")
def schema_path(tmp_path_factory) -> Path:
    return write_synthetic_log(tmp_path_factory.mktemp("log"), **SMALL_LOG)


def train_command(schema: Path, out: Path, *args: str) -> list[str]:
    samples = out.parent / f"{out.name}-samples"
    return [
        *(sys.executable, "-m", "export.cli", "train", "--schema", str(schema)),
        *("--out", str(out), "--samples-dir", str(samples), "--no-baseline", "--no-progress"),
        *args,
    ]


def train(schema: Path, out: Path, *args: str):
    done = subprocess.run(train_command(schema, out, *args), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_bundle(out)


@pytest.mark.timeout(900)
def test_two_workers_train_a_bundle_that_passes_parity_and_matches_one_worker(
    schema_path, tmp_path
):
    common = ("--epochs", "2", "--batch-size", "128")
    alone = [train(schema_path, tmp_path / f"w1-s{s}", *common, "--seed", str(s)) for s in (0, 1)]
    pair = train(schema_path, tmp_path / "w2", *common, "--seed", "0", "--workers", "2")
    assert pair.metrics["onnx_parity_max_abs_diff"] <= 1e-5
    gaucs = [b.metrics["test_gauc"] for b in alone]
    spread = max(abs(gaucs[0] - gaucs[1]), 0.01)
    assert abs(pair.metrics["test_gauc"] - np.mean(gaucs)) <= 2 * spread
    assert pair.metrics["test_gauc"] > 0.5  # it learned something of the planted signal


def process_table() -> dict[int, tuple[int, bytes, list[bytes]]]:
    """pid -> (parent pid, command line, environment) of every process we can read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry.name)] = (parent, command, environ)
    return table


def worker_pids(ancestor: int) -> dict[int, int]:
    """rank -> pid of the training workers descending from `ancestor`, read from /proc."""
    table = process_table()
    found = {}
    for pid, (_, command, environ) in table.items():
        parent = pid
        while parent in table and parent != ancestor:
            parent = table[parent][0]
        ranks = [v for v in environ if v.startswith(b"RANK=")]
        if parent == ancestor and b"export.distributed" in command and ranks:
            found[int(ranks[0][5:])] = pid
    return found


def watch_for(stream, marker: str, seen: threading.Event) -> None:
    """Read a child's output to its end (so it never blocks on a full pipe), flagging a line."""
    for line in stream:
        if marker in line:
            seen.set()


@pytest.mark.timeout(600)
def test_a_killed_worker_fails_the_job_quickly_and_saves_nothing(schema_path, tmp_path):
    out = tmp_path / "killed"
    command = train_command(schema_path, out, "--epochs", "200", "--workers", "2")
    job = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    training = threading.Event()
    threading.Thread(target=watch_for, args=(job.stderr, "(rank 1 of 2)", training)).start()
    try:
        assert training.wait(timeout=240), "rank 1 never started training"
        os.kill(worker_pids(job.pid)[1], signal.SIGKILL)
        started = time.monotonic()
        code = job.wait(timeout=120)
        assert code != 0
        assert time.monotonic() - started < 120
        assert not (out / "bundle.json").exists() and not out.exists()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
