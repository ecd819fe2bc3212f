"""Data-parallel training on torch.distributed: one process per worker, each training on its
own share of the built samples, gradients all-reduced; rank 0 evaluates, keeps the best
epoch, exports, checks parity and saves the bundle. Tables stay replicated on every rank.

ctr-export train --workers 2                       # torchrun --standalone on this machine
# On a cluster every pod runs the same entry point under torchrun, with a rendezvous:
torchrun --nnodes 4 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
    -m export.distributed artifacts/samples/job.json
# Or under any launcher that sets MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE:
python -m export.distributed artifacts/samples/job.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from export.bundle import Bundle, load_bundle
from export.job import TrainJob, finish_training, train_all
from export.samples import open_samples
from export.train import Ranks

log = logging.getLogger(__name__)
JOB_FILE = "job.json"
TIMEOUT = timedelta(minutes=30)  # a rank waiting on a dead peer gives up after this


class TrainingFailed(RuntimeError):
    pass


def write_job(job: TrainJob) -> Path:
    """The job as JSON beside its samples, so every rank (on any pod) reads the same one."""
    path = job.samples_dir / JOB_FILE
    fields = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(job).items()}
    path.write_text(json.dumps(fields))
    return path


def read_job(path: Path) -> TrainJob:
    raw = json.loads(Path(path).read_text())
    paths = {"out", "schema", "samples_dir", "data_dir"}
    return TrainJob(**{k: Path(v) if k in paths and v is not None else v for k, v in raw.items()})


def launch_workers(job: TrainJob) -> Bundle:
    """torchrun with one process per worker on this machine; any failed rank fails the job
    (no restarts) and no bundle is written."""
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
        f"--nproc-per-node={job.workers}",
        "--max-restarts=0",
        *("-m", "export.distributed", str(write_job(job))),
    ]
    log.info("training on %d workers: %s", job.workers, " ".join(command))
    done = subprocess.run(command, env=os.environ | {"OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise TrainingFailed(
            f"a training worker failed (torchrun exit {done.returncode}); nothing was saved"
        )
    return load_bundle(job.out)


def backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def run_rank(job: TrainJob) -> None:
    """One rank of the job; torchrun (or another launcher) set the environment."""
    dist.init_process_group(backend(), timeout=TIMEOUT)
    ranks = Ranks(dist.get_rank(), dist.get_world_size())
    try:
        torch.set_num_threads(1)
        samples = open_samples(job.samples_dir)
        results = train_all(job, samples, ranks)
        if ranks.leader:
            finish_training(job, samples, results)
    finally:
        dist.destroy_process_group()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_rank(read_job(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
