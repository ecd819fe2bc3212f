"""Quality experiments on MovieLens-100K: every variant trained with seeds 0 and 1 on the
project's split, the epoch kept by validation GAUC, the variants compared by their mean
VALIDATION GAUC (the test users only report). Writes bench/results/experiments.json and
prints one table; docs/quality.md records the runs.

    python -m bench.experiments                      # every variant (tens of minutes)
    python -m bench.experiments --only full positive+user-id+small-init
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
FORMER_INIT = {"embedding_std": 0.05}  # the tables' initialisation before this study
EPOCHS = 4  # unless a variant says otherwise, with no early stopping
LONGER = {"patience": 2}  # with 8 epochs: stop after 2 without a better validation GAUC
BASE = {"model": "base"}
FORMER_HISTORY = {"max_length": 50, "behaviours": "all"}


def drop_user_id(raw: dict) -> None:
    raw["features"]["user"] = [f for f in raw["features"]["user"] if f["name"] != "user_id"]


# Each change edits the example schema (examples/movielens-100k.yaml) in place.
CHANGES = {
    "example": lambda raw: None,
    "history-50": lambda raw: raw["history"].update(max_length=50),
    # the example before this study: no user-id field, every rated movie in the history
    "no-user-id": lambda raw: (drop_user_id(raw), raw.update(history=FORMER_HISTORY)),
    "all-behaviours": lambda raw: raw.update(history=FORMER_HISTORY),
    "two-fields": lambda raw: raw.update(
        features={"item": raw["features"]["item"][:2]}, history=FORMER_HISTORY
    ),
}
# name -> (schema change, job options, train options, model options). The names say what
# each variant adds to the example before this study ("full"): a user-id field ("user-id"), a
# history of clicked movies only ("positive": up to 50; "positive100": up to 100), the tables
# initialised N(0, 1e-4) ("small-init"), the paper's regulariser ("mba" and its strength),
# and so on. The winner on validation users, now the example's default, is
# "positive100+user-id+small-init+prelu".
VARIANTS: dict[str, tuple[str, dict, dict, dict]] = {
    "two-fields": ("two-fields", {}, {}, FORMER_INIT),
    "full": ("no-user-id", {}, {}, FORMER_INIT),
    "base-full": ("no-user-id", BASE, {}, FORMER_INIT),
    "user-id": ("all-behaviours", {}, {}, FORMER_INIT),
    "base-user-id": ("all-behaviours", BASE, {}, FORMER_INIT),
    "user-id+mba": ("all-behaviours", {}, {"mba_lambda": 0.01}, FORMER_INIT),
    "user-id+dropout": ("all-behaviours", {"dropout": 0.2}, {}, FORMER_INIT),
    "user-id+cosine": ("all-behaviours", {}, {"lr_schedule": "cosine"}, FORMER_INIT),
    "user-id+wd": ("all-behaviours", {}, {"weight_decay": 1e-6}, FORMER_INIT),
    "user-id+small-init": ("all-behaviours", {}, {}, {}),
    "base-user-id+small-init": ("all-behaviours", BASE, {}, {}),
    "user-id+small-init+mba": ("all-behaviours", {}, {"mba_lambda": 0.01}, {}),
    "user-id+small-init+mba0.1": ("all-behaviours", {}, {"mba_lambda": 0.1}, {}),
    "user-id+small-init+mba1": ("all-behaviours", {}, {"mba_lambda": 1.0}, {}),
    "user-id+small-init+softmax": ("all-behaviours", {"softmax": True}, {}, {}),
    "positive+user-id": ("history-50", {}, {}, FORMER_INIT),
    "positive+user-id+small-init": ("history-50", {}, {}, {}),
    "base-positive+user-id+small-init": ("history-50", BASE, {}, {}),
    "positive+user-id+small-init+mba0.1": ("history-50", {}, {"mba_lambda": 0.1}, {}),
    "positive+user-id+small-init+mba1": ("history-50", {}, {"mba_lambda": 1.0}, {}),
    "positive+user-id+small-init+dropout": ("history-50", {"dropout": 0.2}, {}, {}),
    "positive+user-id+small-init+cosine": ("history-50", {}, {"lr_schedule": "cosine"}, {}),
    "positive+user-id+small-init+8ep": ("history-50", {"epochs": 8}, LONGER, {}),
    "base-positive+user-id+small-init+8ep": ("history-50", BASE | {"epochs": 8}, LONGER, {}),
    "positive100+user-id+small-init": ("example", {}, {}, {}),
    "positive100+user-id+small-init+8ep": ("example", {"epochs": 8}, LONGER, {}),
    "base-positive100+user-id+small-init+8ep": ("example", BASE | {"epochs": 8}, LONGER, {}),
    "base-positive100+user-id+small-init": ("example", BASE, {}, {}),
    "positive100+user-id+small-init+mlp256": ("example", {}, {}, {"mlp_hidden": [256, 128]}),
    "positive100+user-id+small-init+att36": ("example", {}, {}, {"attention_hidden": [36]}),
    "positive100+user-id+small-init+bs64": ("example", {}, {"batch_size": 64}, {}),
    "positive100+user-id+small-init+bs256": ("example", {}, {"batch_size": 256}, {}),
    "positive100+user-id+small-init+lr3e-3": ("example", {}, {"lr": 3e-3}, {}),
}
# Every variant above ran with Dice in the top MLP, the default until the last step of this
# study: they keep it, so that each still means what docs/quality.md records of it.
VARIANTS = {
    name: (change, job, train, {"activation": "dice"} | model)
    for name, (change, job, train, model) in VARIANTS.items()
}
# The winner on validation users, now the example's default: PReLU in the top MLP.
VARIANTS["positive100+user-id+small-init+prelu"] = ("example", {}, {}, {"activation": "prelu"})
VARIANTS["positive100+user-id+small-init+prelu+att-dice"] = (
    "example",
    {},
    {},
    {"activation": "prelu", "attention_activation": "dice"},
)


def schema_variant(source: Path, change: str) -> Path:
    """The example schema with one change, written beside the data its paths point at."""
    raw = yaml.safe_load(source.read_text())
    CHANGES[change](raw)
    path = source.parent / f"schema-{change}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_variant(name: str, samples_by_change: dict, folder: Path) -> dict:
    change, job_options, train_options, model_options = VARIANTS[name]
    samples = samples_by_change[change]
    job = TrainJob(out=folder / "unused", **{"epochs": EPOCHS} | job_options)
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
            load_schema_file(schema_variant(source, change)),
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
