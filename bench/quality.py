"""Model quality: DIN vs the sum-pooling BaseModel, and what float16 rows cost in accuracy.

Full MovieLens-100K with its fixed user split (seed 0); each model is trained with seeds 0
and 1 (TrainConfig defaults: 4 epochs, the epoch with the best validation GAUC kept) and
scored on the test users. For DIN, the fp16 change is measured by rounding the item and
category embedding tables to float16 and scoring the test set again. That equals publishing
float16 rows: a served row is the item embedding followed by its category's, each value
rounded on its own, and the ONNX graph matches PyTorch to 1e-5.

    make bench-quality             # or: python -m bench.quality   (about 1.5 minutes)
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from bench.common import write_json
from bench.report import print_table
from export.data import Dataset, load_movielens
from export.job import LABELS, POOLINGS
from export.model import DIN, DINConfig
from export.train import TrainConfig, evaluate, train_model

SEEDS = (0, 1)
MODELS = {LABELS[name]: POOLINGS[name] for name in LABELS}  # {"DIN": "attention", ...}


def train_one(dataset: Dataset, pooling: str, seed: int) -> tuple[DIN, dict]:
    started = time.perf_counter()
    config = DINConfig(n_items=dataset.n_items, n_cats=dataset.n_cats, pooling=pooling)
    result = train_model(dataset, config, TrainConfig(seed=seed, progress=False))
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
        for table in (rounded.item_emb, rounded.cat_emb):
            table.weight.copy_(table.weight.half().float())
    return rounded


def fp16_change(model: DIN, dataset: Dataset, fp32: dict[str, float], seed: int) -> dict:
    fp16 = evaluate(fp16_rows(model), dataset.test)
    return {
        "seed": seed,
        "fp32": fp32,
        "fp16": fp16,
        "delta_auc": fp16["auc"] - fp32["auc"],
        "delta_gauc": fp16["gauc"] - fp32["gauc"],
    }


def run_quality() -> dict:
    dataset = load_movielens(seed=0)
    results: dict = {"models": {name: [] for name in MODELS}, "fp16": []}
    for name, pooling in MODELS.items():
        for seed in SEEDS:
            model, entry = train_one(dataset, pooling, seed)
            results["models"][name].append(entry)
            if name == "DIN":
                results["fp16"].append(fp16_change(model, dataset, entry["test"], seed))
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
    print_table("DIN with float16 item/cat rows", FP16_HEADER, fp16_rows_table(results))
    path = write_json("quality.json", results)
    print(f"\nwrote {path}; total {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
