"""Sample building and one DIN training epoch on a 20-million-impression synthetic log: wall
time and peak memory of each, next to the log's size on disk and in memory.

    python -m bench.samples                   # 20M impressions (500k users x 40); ~30 min, 2 cores
    python -m bench.samples --quick           # 200k impressions: a smoke test
    python -m bench.samples --impressions 5000000 --train-batches 0   # a whole epoch

The log is written once into bench/results/log-<size>/ (export/logwriter.py) and reused. The
build (export.samples.build_samples) and the epoch (export.train.train_one_epoch over the fit
shards, shuffled, torch.set_num_threads(2)) each run in a child process, so that the peak RSS
(os.wait4's ru_maxrss) is theirs alone. The epoch stops after --train-batches batches (300 by
default; 0: none) and its time is then extrapolated from the rows it trained on, which the
table says. Other programs on the machine slow both: the load average before and after is
recorded. Writes
bench/results/samples.json (samples-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from bench.common import RESULTS_DIR, write_json
from bench.report import print_table

PER_USER = 40
QUICK = 200_000
THREADS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=20_000_000)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK:,} impressions")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--train-batches", type=int, default=300, help="0: the whole epoch")
    parser.add_argument("--child", choices=("build", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--schema", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.impressions = QUICK
    return args


def size_label(impressions: int) -> str:
    return f"{impressions // 1_000_000}m" if impressions >= 1_000_000 else f"{impressions // 1000}k"


# ---------------------------------------------------------------------------------------------
# The log


def ensure_log(impressions: int) -> tuple[Path, dict]:
    """The synthetic log of this size, written on the first run; its schema path and shape."""
    from export.logwriter import write_synthetic_log

    folder = RESULTS_DIR / f"log-{size_label(impressions)}"
    users = impressions // PER_USER
    shape = {"users": users, "items": max(1000, users // 5), "per_user": PER_USER}
    marker = folder / "shape.json"
    if marker.exists() and json.loads(marker.read_text()) == shape:
        return folder / "schema.yaml", shape | {"write_s": None}
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    schema = write_synthetic_log(folder, shape["users"], shape["items"], PER_USER)
    marker.write_text(json.dumps(shape))
    return schema, shape | {"write_s": time.perf_counter() - started}


def log_sizes(folder: Path) -> dict:
    """Bytes on disk of the log's files, and of their Arrow tables (read one file at a time)."""
    files = sorted((folder / "events").glob("*.parquet"))
    return {
        "files": len(files),
        "rows": sum(pq.read_metadata(f).num_rows for f in files),
        "disk_bytes": sum(f.stat().st_size for f in files),
        "arrow_bytes": sum(pq.read_table(f).nbytes for f in files),
    }


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Children: each prints one JSON line; the parent reads its peak RSS from wait4


def run_child(*args: str) -> dict:
    """Run `python -m bench.samples --child ...`; its JSON result, wall time and peak RSS."""
    env = os.environ | {"OMP_NUM_THREADS": str(THREADS), "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, "-m", "bench.samples", "--child", *args]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, not earlier ones'
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed")
    result = json.loads(output.strip().splitlines()[-1])
    cpu = usage.ru_utime + usage.ru_stime  # next to wall time: the share the machine gave it
    return result | {"process_s": wall, "cpu_s": cpu, "peak_rss_bytes": usage.ru_maxrss * 1024}


def child_build(schema: Path, out: Path) -> dict:
    from core.schema import load_schema_file
    from export.samples import SPLITS, build_samples

    started = time.perf_counter()
    samples = build_samples(load_schema_file(schema), out, progress=False)
    return {
        "wall_s": time.perf_counter() - started,
        "counts": {split: samples.count(split) for split in SPLITS},
        "buckets": samples.meta["buckets"],
    }


class Capped:
    """A SampleSet whose streams stop after `limit` batches (0: none); counts what it handed
    out. train_one_epoch reads only batches() and count()."""

    def __init__(self, samples, limit: int) -> None:
        self.samples, self.limit = samples, limit
        self.rows = self.batches_seen = 0
        self.cut = False

    def count(self, split: str) -> int:
        return self.samples.count(split)

    def batches(self, *args, **options) -> Iterator:
        for batch in self.samples.batches(*args, **options):
            if self.limit and self.batches_seen == self.limit:
                self.cut = True
                return
            yield batch
            self.rows, self.batches_seen = self.rows + len(batch), self.batches_seen + 1


def child_train(samples_dir: Path, batch_size: int, limit: int) -> dict:
    import torch

    from export.model import DINConfig
    from export.samples import open_samples
    from export.train import TrainConfig, new_model, train_one_epoch

    torch.set_num_threads(THREADS)
    samples = open_samples(samples_dir)
    sizes = {name: len(values) for name, values in samples.vocab.fields.items()}
    model = new_model(samples, DINConfig(samples.schema, sizes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    capped = Capped(samples, limit)
    config = TrainConfig(epochs=1, batch_size=batch_size, progress=False)
    started = time.perf_counter()
    loss = train_one_epoch(model, optimizer, capped, config, epoch=1)
    wall = time.perf_counter() - started
    total = samples.count("fit")
    return {
        "wall_s": wall,
        "loss": loss,
        "rows": capped.rows,
        "batches": capped.batches_seen,
        "fit_rows": total,
        "complete": not capped.cut,
        "epoch_s": wall if not capped.cut else wall * total / capped.rows,
        "rows_per_s": capped.rows / wall,
    }


# ---------------------------------------------------------------------------------------------
# The run


def machine() -> dict:
    """lscpu's model name and CPU count (falls back to os.cpu_count)."""
    found = {"cpu": "unknown", "cores": os.cpu_count()}
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return found
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            found["cpu"] = value.strip()
        elif key.strip() == "CPU(s)":
            found["cores"] = int(value.strip())
    return found


def run(args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()
    schema, shape = ensure_log(args.impressions)
    sizes = log_sizes(schema.parent)
    samples_dir = RESULTS_DIR / f"samples-{size_label(args.impressions)}"
    build = run_child("build", "--schema", str(schema), "--samples", str(samples_dir))
    build["samples_bytes"] = folder_bytes(samples_dir)
    train = run_child(
        "train",
        *("--samples", str(samples_dir), "--batch-size", str(args.batch_size)),
        *("--train-batches", str(args.train_batches)),
    )
    return {
        "machine": machine(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "log": shape | sizes | {"schema": str(schema)},
        "build": build,
        "train": train | {"batch_size": args.batch_size, "torch_threads": THREADS},
    }


def mb(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def report(result: dict) -> None:
    log, build, train = result["log"], result["build"], result["train"]
    epoch = f"{train['epoch_s']:.0f} s" + ("" if train["complete"] else " (extrapolated)")
    rows = [
        ["log", f"{log['rows']:,} rows", f"disk {mb(log['disk_bytes'])}", "", ""],
        ["", f"{log['users']:,} users", f"Arrow {mb(log['arrow_bytes'])}", "", ""],
        [
            "build_samples",
            f"{sum(build['counts'].values()):,} rows",
            f"out {mb(build['samples_bytes'])}",
            f"{build['wall_s']:.0f} s",
            mb(build["peak_rss_bytes"]),
        ],
        [
            f"DIN epoch, batch {train['batch_size']}",
            f"{train['rows']:,} of {train['fit_rows']:,} fit rows",
            f"{train['rows_per_s']:,.0f} rows/s",
            epoch,
            mb(train["peak_rss_bytes"]),
        ],
    ]
    cpu = result["machine"]
    title = f"Samples and one epoch ({cpu['cpu']}, {cpu['cores']} CPUs)"
    print_table(title, ["step", "size", "", "wall", "peak RSS"], rows)
    load = result["load_average"]
    print(f"load average (1, 5, 15 min) before {load['before']}, after {load['after']}")


def main() -> None:
    args = parse_args()
    if args.child == "build":
        print(json.dumps(child_build(args.schema, args.samples)))
        return
    if args.child == "train":
        print(json.dumps(child_train(args.samples, args.batch_size, args.train_batches)))
        return
    result = run(args) | {"impressions": args.impressions, "quick": args.quick}
    report(result)
    print(write_json("samples-quick.json" if args.quick else "samples.json", result))


if __name__ == "__main__":
    main()
