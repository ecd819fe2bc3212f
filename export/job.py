"""One training job: the served model and, for comparison, the other one; the training report;
the checked bundle saved on disk. `ctr-export train` and `run` are thin wrappers around it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from export.bundle import Bundle, build_bundle, save_bundle
from export.data import DEFAULT_DATA_DIR, Dataset, load_movielens, save_splits
from export.model import DINConfig
from export.report import make_report
from export.train import TrainConfig, TrainResult, train_model

log = logging.getLogger(__name__)
LABELS = {"din": "DIN", "base": "BaseModel"}
POOLINGS = {"din": "attention", "base": "sum"}


@dataclass
class TrainJob:
    out: Path
    model: str = "din"  # the one published: "din" or "base"
    epochs: int = 4
    seed: int = 0
    activation: str = "dice"
    softmax: bool = False
    data_dir: Path = DEFAULT_DATA_DIR
    splits_dir: Path | None = None
    baseline: bool = True  # also train the other model, for the report
    max_users: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model not in LABELS:
            raise ValueError(f"--model must be one of {sorted(LABELS)}, got {self.model!r}")

    @property
    def models(self) -> list[str]:
        return [self.model] + ([m for m in LABELS if m != self.model] if self.baseline else [])


def run_training(job: TrainJob) -> Bundle:
    """Train, report, export and parity-check, save. Raises DataUnavailable without data."""
    dataset = load_movielens(job.data_dir, seed=0, max_users=job.max_users)
    if job.splits_dir:
        for path in save_splits(dataset, job.splits_dir):
            log.info("wrote %s", path)
    train_config = TrainConfig(epochs=job.epochs, seed=job.seed, progress=job.progress)
    results = {
        LABELS[name]: train_model(dataset, model_config(dataset, name, job), train_config)
        for name in job.models
    }
    report = make_report(
        {label: result.epochs for label, result in results.items()},
        {label: result.best_epoch for label, result in results.items()},
    )
    served = results[LABELS[job.model]]
    metrics = summarise(results, LABELS[job.model]) | {"seed": job.seed}
    bundle = build_bundle(served.model, dataset, metrics, report=report)
    save_bundle(bundle, job.out)
    log.info("bundle and training report saved to %s", job.out)
    return bundle


def model_config(dataset: Dataset, model: str, job: TrainJob) -> DINConfig:
    return DINConfig(
        n_items=dataset.n_items,
        n_cats=dataset.n_cats,
        pooling=POOLINGS[model],
        activation=job.activation,
        softmax=job.softmax,
    )


def summarise(results: dict[str, TrainResult], served: str) -> dict:
    """The served model's metrics at its best epoch, and each baseline's as baseline_*."""
    result = results[served]
    metrics = {f"test_{k}": v for k, v in result.test.items()}
    metrics |= {f"valid_{k}": v for k, v in result.valid.items()}
    metrics |= {"best_epoch": result.best_epoch, "model": served}
    for label, other in results.items():
        if label != served:
            metrics |= {f"baseline_test_{k}": v for k, v in other.test.items()}
            metrics["baseline"] = label
    return metrics
