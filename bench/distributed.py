"""Training throughput of `ctr-export train --workers N` for N = 1 and 2, with one global batch
size: training samples/s and the test GAUC of each.

    python -m bench.distributed                 # 20k users x 40 impressions, batch 1024
    python -m bench.distributed --quick         # 2k users x 40
    python -m bench.distributed --workers 1,2,4 --batch-size 2048

Each run is the real command (samples, one epoch, evaluation, ONNX export, parity check, bundle)
and `train` builds its samples every time, so the training is timed from its log lines: from
rank 0's "epoch 1 started" to its "epoch 1 loss=", which follows the evaluation of the valid
and test users by rank 0 alone. That evaluation is timed again afterwards in this process on
the same samples, with rank 0's threads (2 for one worker, 1 under torchrun), and subtracted.
On a 2-core machine two workers compete for the same cores as one worker's two threads do;
one worker is also run with OMP_NUM_THREADS=1 (torchrun's setting for each worker), which
tells the cost of torch's intra-op threads on a busy machine from that of the data parallelism.
Writes bench/results/distributed.json (distributed-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.common import RESULTS_DIR, write_json
from bench.report import print_table
from bench.samples import machine

PER_USER = 40
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
STARTED = "epoch 1 started (rank 0 "
ENDED = "epoch 1 loss="


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2,000 users")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--batch-size", type=int, default=1024, help="the global batch")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.quick:
        args.users = 2_000
    return args


def ensure_log(users: int) -> Path:
    from export.logwriter import write_synthetic_log

    folder = RESULTS_DIR / f"log-dist-{users}"
    if (folder / "schema.yaml").exists():
        return folder / "schema.yaml"
    return write_synthetic_log(folder, users, max(1000, users // 5), PER_USER)


def stamp_of(lines: list[str], marker: str) -> datetime:
    """The time of the first log line holding `marker`."""
    for line in lines:
        found = STAMP.match(line)
        if found and marker in line:
            return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")
    raise RuntimeError(f"no log line with {marker!r}")


def train_once(schema: Path, workers: int, threads: int | None, batch_size: int) -> dict:
    """One `ctr-export train` run: its wall time, its train+evaluate interval and metrics.
    threads: OMP_NUM_THREADS for a single worker (None: torch's default, one per core)."""
    name = f"dist-w{workers}" + (f"-t{threads}" if threads else "")
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    command = [
        *(sys.executable, "-m", "export.cli", "train", "--schema", str(schema)),
        *("--out", str(RESULTS_DIR / f"{name}-bundle")),
        *("--samples-dir", str(RESULTS_DIR / f"{name}-samples")),
        *("--workers", str(workers), "--epochs", "1", "--batch-size", str(batch_size)),
        *("--no-baseline", "--no-progress"),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    lines = done.stderr.splitlines()
    interval = stamp_of(lines, ENDED) - stamp_of(lines, STARTED)
    metrics, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{") :])
    return {
        "workers": workers,
        "threads_per_worker": threads or (1 if workers > 1 else os.cpu_count()),
        "command_s": wall,
        "train_and_eval_s": interval.total_seconds(),
        "test_gauc": metrics["test_gauc"],
        "test_auc": metrics["test_auc"],
        "samples_dir": str(RESULTS_DIR / f"{name}-samples"),
    }


def evaluation_seconds(samples_dir: Path, threads: int) -> float:
    """Rank 0's evaluation of the valid and test users, timed alone (weights do not matter)."""
    import torch

    from export.model import DINConfig
    from export.samples import open_samples
    from export.train import evaluate, new_model

    torch.set_num_threads(threads)
    samples = open_samples(samples_dir)
    sizes = {name: len(values) for name, values in samples.vocab.fields.items()}
    model = new_model(samples, DINConfig(samples.schema, sizes))
    started = time.perf_counter()
    for split in ("valid", "test"):
        evaluate(model, samples, split)
    return time.perf_counter() - started


def measure(args: argparse.Namespace) -> dict:
    from export.samples import open_samples

    schema = ensure_log(args.users)
    load_before = os.getloadavg()
    setups = [(w, None) for w in args.workers] + ([(1, 1)] if 1 in args.workers else [])
    runs = [train_once(schema, workers, threads, args.batch_size) for workers, threads in setups]
    for run in runs:
        samples_dir = Path(run["samples_dir"])
        run["fit_rows"] = open_samples(samples_dir).count("fit")
        run["eval_s"] = evaluation_seconds(samples_dir, run["threads_per_worker"])
        run["train_s"] = run["train_and_eval_s"] - run["eval_s"]
        run["samples_per_s"] = run["fit_rows"] / run["train_s"]
    return {
        "machine": machine(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "log": {"users": args.users, "impressions": args.users * PER_USER},
        "batch_size": args.batch_size,
        "runs": runs,
    }


def report(result: dict) -> None:
    rows = [
        [
            f"{run['workers']} x {run['threads_per_worker']} threads",
            f"{run['fit_rows']:,}",
            f"{run['train_s']:.1f}",
            f"{run['samples_per_s']:,.0f}",
            f"{run['test_gauc']:.4f}",
            f"{run['eval_s']:.1f}",
            f"{run['command_s']:.0f}",
        ]
        for run in result["runs"]
    ]
    title = (
        f"ctr-export train, 1 epoch, global batch {result['batch_size']}, "
        f"{result['log']['impressions']:,} impressions ({result['machine']['cpu']}, "
        f"{result['machine']['cores']} CPUs)"
    )
    header = ["workers", "fit rows", "train s", "samples/s", "test GAUC", "eval s", "command s"]
    print_table(title, header, rows)
    load = result["load_average"]
    print(f"load average (1, 5, 15 min) before {load['before']}, after {load['after']}")


def main() -> None:
    args = parse_args()
    result = measure(args)
    report(result)
    print(write_json("distributed-quick.json" if args.quick else "distributed.json", result))


if __name__ == "__main__":
    main()
