"""Model quality: DIN vs the sum-pooling BaseModel, and what float16 rows cost in accuracy.

MovieLens-100K built by the project's own pipeline (`TrainJob` / `prepare_samples`, the
schema's fixed user split); each model is trained with seeds 0 and 1 (the job's defaults:
4 epochs, batch 128, the epoch with the best validation GAUC kept) and scored on the test
users. For DIN, the fp16 change is measured by rounding every embedding table to float16 and
scoring the test set again. That equals publishing float16 rows: a served row is its fields'
embeddings side by side, each value rounded on its own, and the ONNX graph matches PyTorch
to 1e-5.

    make bench-quality             # or: python -m bench.quality   (a few minutes on 2 cores)
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from bench.common import RESULTS_DIR, write_json
from bench.report import print_table
from export.job import LABELS, TrainJob, model_config, prepare_samples
from export.model import DIN
from export.samples import SampleSet
from export.train import TrainConfig, evaluate, train_model

SEEDS = (0, 1)
SAMPLES_DIR = RESULTS_DIR / "quality-samples"


def quality_job(max_users: int | None = None) -> TrainJob:
    return TrainJob(
        out=RESULTS_DIR / "quality-bundle",  # not written: only the samples are built
        samples_dir=SAMPLES_DIR,
        max_users=max_users,
        progress=False,
    )


def train_one(samples: SampleSet, job: TrainJob, name: str, seed: int) -> tuple[DIN, dict]:
    started = time.perf_counter()
    train_config = TrainConfig(
        epochs=job.epochs, seed=seed, batch_size=job.batch_size, progress=False
    )
    result = train_model(samples, model_config(samples, name, job), train_config)
    entry = {
        "seed": seed,
        "test": result.test,
        "best_epoch": result.best_epoch,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result.model, entry


def fp16_rows(model: DIN) -> DIN:
    """A copy whose embedding tables hold float16-rounded values (as float32)."""
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for table in rounded.embeddings.values():
            table.weight.copy_(table.weight.half().float())
    return rounded


def fp16_change(model: DIN, samples: SampleSet, fp32: dict[str, float], seed: int) -> dict:
    fp16 = evaluate(fp16_rows(model), samples, "test")
    return {
        "seed": seed,
        "fp32": fp32,
        "fp16": fp16,
        "delta_auc": fp16["auc"] - fp32["auc"],
        "delta_gauc": fp16["gauc"] - fp32["gauc"],
    }


def run_quality(job: TrainJob | None = None, seeds: tuple[int, ...] = SEEDS) -> dict:
    job = job or quality_job()
    samples = prepare_samples(job)
    results: dict = {"models": {LABELS[name]: [] for name in LABELS}, "fp16": []}
    for name, label in LABELS.items():
        for seed in seeds:
            model, entry = train_one(samples, job, name, seed)
            results["models"][label].append(entry)
            if name == "din":
                results["fp16"].append(fp16_change(model, samples, entry["test"], seed))
    results["means"] = {name: mean_metrics(runs) for name, runs in results["models"].items()}
    results["fp16_mean"] = {
        key: float(np.mean([r[key] for r in results["fp16"]]))
        for key in ("delta_auc", "delta_gauc")
    }
    return results


def mean_metrics(runs: list[dict]) -> dict[str, float]:
    return {
        key: float(np.mean([r["test"][key] for r in runs])) for key in ("auc", "gauc", "logloss")
    }


def model_rows(results: dict) -> list[list[str]]:
    rows = []
    for name, runs in results["models"].items():
        for run in runs:
            test = run["test"]
            rows.append(
                [
                    f"{name} seed {run['seed']}",
                    *_metrics(test),
                    str(run["best_epoch"]),
                    f"{run['seconds']:.0f}",
                ]
            )
        rows.append([f"{name} mean", *_metrics(results["means"][name]), "", ""])
    din, base = results["means"]["DIN"], results["means"]["BaseModel"]
    gain = {key: din[key] - base[key] for key in din}
    rows.append(
        ["DIN - BaseModel", *(f"{gain[k]:+.4f}" for k in ("auc", "gauc", "logloss")), "", ""]
    )
    return rows


def _metrics(values: dict[str, float]) -> list[str]:
    return [f"{values['auc']:.4f}", f"{values['gauc']:.4f}", f"{values['logloss']:.4f}"]


def fp16_rows_table(results: dict) -> list[list[str]]:
    rows = []
    for r in results["fp16"]:
        rows.append(
            [
                f"DIN seed {r['seed']}",
                f"{r['fp32']['auc']:.5f}",
                f"{r['fp16']['auc']:.5f}",
                f"{r['delta_auc']:+.1e}",
                f"{r['fp32']['gauc']:.5f}",
                f"{r['fp16']['gauc']:.5f}",
                f"{r['delta_gauc']:+.1e}",
            ]
        )
    mean = results["fp16_mean"]
    rows.append(["mean", "", "", f"{mean['delta_auc']:+.1e}", "", "", f"{mean['delta_gauc']:+.1e}"])
    return rows


MODEL_HEADER = ["model", "test AUC", "test GAUC", "logloss", "best epoch", "train s"]
FP16_HEADER = ["fp16 rows", "AUC fp32", "AUC fp16", "ΔAUC", "GAUC fp32", "GAUC fp16", "ΔGAUC"]


def main() -> None:
    started = time.perf_counter()
    results = run_quality()
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    print_table("MovieLens-100K test users: DIN vs BaseModel", MODEL_HEADER, model_rows(results))
    print_table("DIN with float16 embedding rows", FP16_HEADER, fp16_rows_table(results))
    path = write_json("quality.json", results)
    print(f"\nwrote {path}; total {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
