"""One training job: samples from the schema's log, the served model and, for comparison, the
other one; the training report; the checked bundle saved on disk. `ctr-export train` and `run`
are thin wrappers around it."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.schema import load_schema_file
from export.bundle import Bundle, build_bundle, save_bundle
from export.model import DINConfig
from export.movielens import DEFAULT_DATA_DIR, prepare_movielens
from export.report import make_report
from export.samples import SampleSet, build_samples
from export.train import Ranks, TrainConfig, TrainResult, train_model

log = logging.getLogger(__name__)
LABELS = {"din": "DIN", "base": "BaseModel"}
POOLINGS = {"din": "attention", "base": "sum"}
DEFAULT_SAMPLES = Path("artifacts/samples")


@dataclass
class TrainJob:
    out: Path
    schema: Path | None = None  # None: the MovieLens-100K example, prepared in data_dir
    samples_dir: Path = DEFAULT_SAMPLES
    model: str = "din"  # the one published: "din" or "base"
    epochs: int = 8  # at most: training stops after `patience` epochs without a better one
    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    mba_lambda: float = 0.0
    dropout: float = 0.0
    patience: int | None = 2  # chosen on validation users (docs/quality.md); 0 or None: never
    activation: str = "prelu"
    softmax: bool = False
    calibrate: bool = True  # refit the logit on validation users (export/calibrate.py)
    data_dir: Path = DEFAULT_DATA_DIR
    baseline: bool = True  # also train the other model, for the report
    max_users: int | None = None
    progress: bool = True
    workers: int = 1  # data-parallel processes (torch.distributed); 1 trains in this process

    def __post_init__(self) -> None:
        if self.model not in LABELS:
            raise ValueError(f"--model must be one of {sorted(LABELS)}, got {self.model!r}")
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")

    @property
    def models(self) -> list[str]:
        return [self.model] + ([m for m in LABELS if m != self.model] if self.baseline else [])


def prepare_samples(job: TrainJob) -> SampleSet:
    """Check the schema and the log (refusing bad ones before any training), then build the
    samples. Raises SchemaError or LogError naming the file and key or column."""
    schema_path = job.schema or prepare_movielens(job.data_dir)
    schema_file = load_schema_file(schema_path)
    return build_samples(
        schema_file, job.samples_dir, max_users=job.max_users, progress=job.progress
    )


def run_training(job: TrainJob) -> Bundle:
    """Samples, train, report, export and parity-check, save. With several workers the
    training runs in torchrun's processes and this one waits for their bundle."""
    samples = prepare_samples(job)
    if job.workers > 1:
        from export.distributed import launch_workers

        return launch_workers(job)
    return finish_training(job, samples, train_all(job, samples))


def train_all(job: TrainJob, samples: SampleSet, ranks: Ranks = Ranks()) -> dict[str, TrainResult]:
    """The served model, then the other one for the report (same data, seed and epochs)."""
    train_config = TrainConfig(
        epochs=job.epochs,
        batch_size=job.batch_size,
        lr=job.lr,
        lr_schedule=job.lr_schedule,
        weight_decay=job.weight_decay,
        mba_lambda=job.mba_lambda,
        patience=job.patience or None,
        calibrate=job.calibrate,
        seed=job.seed,
        progress=job.progress,
    )
    return {
        LABELS[name]: train_model(samples, model_config(samples, name, job), train_config, ranks)
        for name in job.models
    }


def finish_training(job: TrainJob, samples: SampleSet, results: dict[str, TrainResult]) -> Bundle:
    """The report, the parity-checked bundle, saved whole or not at all."""
    report = make_report(
        {label: result.epochs for label, result in results.items()},
        {label: result.best_epoch for label, result in results.items()},
        title=(job.schema or Path("MovieLens-100K")).stem,
    )
    served = results[LABELS[job.model]]
    metrics = served_metrics(results, LABELS[job.model]) | {"seed": job.seed}
    bundle = build_bundle(served.model, samples, metrics, report=report)
    save_bundle_atomically(bundle, job.out)
    log.info("bundle and training report saved to %s", job.out)
    return bundle


def save_bundle_atomically(bundle: Bundle, folder: Path) -> None:
    """Write beside the target, then swap folders: a job killed half-way leaves no bundle that
    mixes two trainings."""
    staging = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    save_bundle(bundle, staging)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def model_config(samples: SampleSet, model: str, job: TrainJob) -> DINConfig:
    return DINConfig(
        schema=samples.schema,
        vocab_sizes={name: len(values) for name, values in samples.vocab.fields.items()},
        pooling=POOLINGS[model],
        activation=job.activation,
        softmax=job.softmax,
        dropout=job.dropout,
    )


def served_metrics(results: dict[str, TrainResult], served: str) -> dict:
    """The served model's metrics at its best epoch, and each baseline's as baseline_*."""
    result = results[served]
    metrics = {f"test_{k}": v for k, v in result.test.items()}
    metrics |= {f"valid_{k}": v for k, v in result.valid.items()}
    metrics |= {"best_epoch": result.best_epoch, "model": served}
    metrics |= {f"calibration_{k}": v for k, v in result.calibration.items()}
    for label, other in results.items():
        if label != served:
            metrics |= {f"baseline_test_{k}": v for k, v in other.test.items()}
            metrics["baseline"] = label
    return metrics
