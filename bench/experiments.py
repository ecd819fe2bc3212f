"""Quality experiments on MovieLens-100K: every variant trained with seeds 0 and 1 on the
project's split, the epoch kept by validation GAUC, the variants compared by their mean
VALIDATION GAUC (the test users only report). Writes bench/results/experiments.json and
prints one table; docs/quality.md records the runs.

    python -m bench.experiments                      # every variant (tens of minutes)
    python -m bench.experiments --only two-fields full user-id
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from bench.common import RESULTS_DIR, write_json
from bench.report import print_table
from core.schema import load_schema_file
from export.job import TrainJob, model_config
from export.movielens import prepare_movielens
from export.samples import build_samples
from export.train import TrainConfig, train_model

SEEDS = (0, 1)
FIELDS = {"user_id": {"name": "user_id", "dim": 18}}
SMALL_INIT = {"embedding_std": 1e-4}  # every table starts near zero, as DeepCTR-Torch's do
LONGER = {"patience": 2}  # with 8 epochs: stop after 2 without a better validation GAUC
# name -> (schema change, job options, train options, model options)
VARIANTS: dict[str, tuple[str, dict, dict, dict]] = {
    "two-fields": ("two-fields", {}, {}, {}),
    "full": ("full", {}, {}, {}),
    "base-full": ("full", {"model": "base"}, {}, {}),
    "user-id": ("user-id", {}, {}, {}),
    "base-user-id": ("user-id", {"model": "base"}, {}, {}),
    "user-id+mba": ("user-id", {}, {"mba_lambda": 0.01}, {}),
    "user-id+dropout": ("user-id", {"dropout": 0.2}, {}, {}),
    "user-id+cosine": ("user-id", {}, {"lr_schedule": "cosine"}, {}),
    "user-id+wd": ("user-id", {}, {"weight_decay": 1e-6}, {}),
    "user-id+small-init": ("user-id", {}, {}, SMALL_INIT),
    "base-user-id+small-init": ("user-id", {"model": "base"}, {}, SMALL_INIT),
    "user-id+small-init+mba": ("user-id", {}, {"mba_lambda": 0.01}, SMALL_INIT),
    "positive+user-id+small-init": ("user-id-positive", {}, {}, SMALL_INIT),
    "base-positive+user-id+small-init": ("user-id-positive", {"model": "base"}, {}, SMALL_INIT),
    "user-id+small-init+softmax": ("user-id", {"softmax": True}, {}, SMALL_INIT),
    "user-id+small-init+mba0.1": ("user-id", {}, {"mba_lambda": 0.1}, SMALL_INIT),
    "user-id+small-init+mba1": ("user-id", {}, {"mba_lambda": 1.0}, SMALL_INIT),
    "positive+user-id+small-init+mba0.1": ("user-id-positive", {}, {"mba_lambda": 0.1}, SMALL_INIT),
    "positive+user-id+small-init+mba1": ("user-id-positive", {}, {"mba_lambda": 1.0}, SMALL_INIT),
    "positive+user-id+small-init+dropout": ("user-id-positive", {"dropout": 0.2}, {}, SMALL_INIT),
    "positive+user-id": ("user-id-positive", {}, {}, {}),
    "positive+user-id+small-init+cosine": (
        "user-id-positive",
        {},
        {"lr_schedule": "cosine"},
        SMALL_INIT,
    ),
    "positive100+user-id+small-init": ("user-id-positive-100", {}, {}, SMALL_INIT),
    "base-positive100+user-id+small-init": (
        "user-id-positive-100",
        {"model": "base"},
        {},
        SMALL_INIT,
    ),
    "positive+user-id+small-init+8ep": ("user-id-positive", {"epochs": 8}, LONGER, SMALL_INIT),
    "base-positive+user-id+small-init+8ep": (
        "user-id-positive",
        {"model": "base", "epochs": 8},
        LONGER,
        SMALL_INIT,
    ),
}


def schema_variant(source: Path, change: str, folder: Path) -> Path:
    """The example schema as is, with only the item id and genre, or with a user-id field
    (and, `user-id-positive`, a history of clicked behaviours only)."""
    raw = yaml.safe_load(source.read_text())
    if change == "two-fields":
        raw["features"] = {"item": raw["features"]["item"][:2]}
    elif change == "user-id":
        raw["features"]["user"].append(FIELDS["user_id"])
    elif change.startswith("user-id-positive"):  # the history holds only clicked behaviours
        raw["features"]["user"].append(FIELDS["user_id"])
        raw["history"]["behaviours"] = "positive"
        if change.endswith("-100"):
            raw["history"]["max_length"] = 100
    path = source.parent / f"schema-{change}.yaml"  # beside the data its paths point at
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_variant(name: str, samples_by_change: dict, folder: Path) -> dict:
    change, job_options, train_options, model_options = VARIANTS[name]
    samples = samples_by_change[change]
    job = TrainJob(out=folder / "unused", **job_options)
    runs = []
    for seed in SEEDS:
        started = time.perf_counter()
        config = TrainConfig(epochs=job.epochs, seed=seed, progress=False, **train_options)
        model = replace(model_config(samples, job.model, job), **model_options)
        result = train_model(samples, model, config)
        runs.append(
            {
                "seed": seed,
                "valid": result.valid,
                "test": result.test,
                "best_epoch": result.best_epoch,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    return {"variant": name, "runs": runs, "mean": means(runs)}


def means(runs: list[dict]) -> dict:
    keys = ("auc", "gauc", "logloss")
    return {
        split: {k: float(np.mean([r[split][k] for r in runs])) for k in keys}
        for split in ("valid", "test")
    }


def table(results: list[dict]) -> list[list[str]]:
    rows = []
    for result in results:
        for run in result["runs"]:
            rows.append(row(f"{result['variant']} s{run['seed']}", run, str(run["best_epoch"])))
        rows.append(row(f"{result['variant']} mean", result["mean"], ""))
    return rows


def row(label: str, values: dict, epoch: str) -> list[str]:
    v, t = values["valid"], values["test"]
    cells = [v["gauc"], t["auc"], t["gauc"], t["logloss"]]
    return [label, *(f"{c:.4f}" for c in cells), epoch]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = RESULTS_DIR / "experiments"
    source = prepare_movielens(Path("data"))
    changes = {VARIANTS[name][0] for name in args.only}
    samples = {
        change: build_samples(
            load_schema_file(schema_variant(source, change, folder)),
            folder / f"samples-{change}",
            progress=False,
        )
        for change in sorted(changes)
    }
    results = []
    for name in args.only:
        results.append(run_variant(name, samples, folder))
        print(f"{name}: {results[-1]['mean']}", flush=True)
        write_json("experiments.json", {"seeds": SEEDS, "results": results})
    header = ["variant", "valid GAUC", "test AUC", "test GAUC", "test logloss", "epoch"]
    print_table(
        "MovieLens-100K, epoch and variant chosen on validation users", header, table(results)
    )


if __name__ == "__main__":
    main()
