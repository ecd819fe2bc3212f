"""DIN and the BaseModel against the DIN of DeepCTR-Torch 0.3.0 and of torch-rechub 0.9.0, on
the project's own MovieLens-100K samples and user split.

    make bench-peers                   # or: python -m bench.peers   (about 25 min on 2 cores)
    python -m bench.peers --quick      # 150 users, 1 epoch: a smoke test
    python -m bench.peers --epochs 3 --seeds 0,1,2 --models din,deepctr

The samples are built once by the project's pipeline (`prepare_samples`) and every model reads
the same declared fields from them (see bench.peer_models). Each model trains on the fit users
only for up to 8 epochs (the project's own budget), keeps the epoch with the best validation
GAUC (validation users only, the project's rule), then runs what its own pipeline does next
(the project's models: calibration on the same validation users; the peers: nothing), and is
scored once on the test users, with export.metrics; the project's log loss before
calibration is reported too. The models run one
after another in this process with torch.set_num_threads(2) and batch size 128; "train s" is
the wall time of the training epochs alone (no evaluation), so it moves with whatever else the
machine runs. Writes bench/results/peers.json (peers-quick.json with --quick); needs the
`bench` extra.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

# Before torch loads OpenMP: idle threads sleep instead of spinning. On a busy 2-core box two
# spinning threads trained about eight times slower than two passive ones.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from bench.common import RESULTS_DIR, write_json
from bench.peer_models import LABELS, PeerData, make_contender, quiet
from bench.report import print_table
from export.job import TrainJob, prepare_samples
from export.metrics import evaluate_scores
from export.samples import SPLITS

THREADS = 2
SAMPLES_DIR = RESULTS_DIR / "peer-samples"
QUICK_USERS = 150
METRICS = ("auc", "gauc", "logloss")
PEERS = ("deepctr", "rechub")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", default="0,1", help="comma-separated, e.g. 0,1")
    parser.add_argument("--models", default=",".join(LABELS), help=f"subset of {list(LABELS)}")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_USERS} users, 1 epoch")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.models = [m.strip() for m in args.models.split(",")]
    unknown = sorted(set(args.models) - set(LABELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(LABELS)}")
    if args.quick:
        args.epochs = 1
    return args


def build_data(quick: bool) -> tuple[TrainJob, PeerData]:
    job = TrainJob(
        out=RESULTS_DIR / "peer-bundle",  # not written: only the samples are built
        samples_dir=SAMPLES_DIR,
        max_users=QUICK_USERS if quick else None,
        progress=False,
    )
    with quiet():
        samples = prepare_samples(job)
    return job, PeerData.load(samples)


def split_summary(data: PeerData) -> dict:
    """Users and impressions per split, and whether the test users overlap the others."""
    users = {split: set(np.unique(data.batches[split].user).tolist()) for split in SPLITS}
    sizes = {
        split: {
            "users": len(users[split]),
            "impressions": len(data.batches[split]),
            "click_rate": float(data.batches[split].label.mean()),
        }
        for split in SPLITS
    }
    overlap = {
        "test_and_fit": len(users["test"] & users["fit"]),
        "test_and_valid": len(users["test"] & users["valid"]),
        "valid_and_fit": len(users["valid"] & users["fit"]),
    }
    if any(overlap.values()):
        raise RuntimeError(f"the user split leaks: {overlap}")
    return {"sizes": sizes, "overlap": overlap}


def score(contender, data: PeerData, split: str) -> dict[str, float]:
    batch = data.batches[split]
    return evaluate_scores(batch.user, batch.label, contender.predict(split))


def better(candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    """export.train's rule: higher validation GAUC wins; NaN never does."""
    return best is None or (not np.isnan(candidate["gauc"]) and candidate["gauc"] > best["gauc"])


def run_one(key: str, seed: int, data: PeerData, job: TrainJob, epochs: int) -> dict:
    """Train for `epochs`, keep the best validation epoch, score the test users once."""
    contender = make_contender(key, data, seed, job)
    best, best_state, history = None, None, []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        contender.fit_epoch(epoch)
        seconds = time.perf_counter() - started
        valid = score(contender, data, "valid")
        history.append({"epoch": epoch, "valid": valid, "train_seconds": seconds})
        if better(valid, best):
            best, best_state = (
                valid | {"epoch": epoch},
                copy.deepcopy(contender.module.state_dict()),
            )
    contender.module.load_state_dict(best_state)
    before = score(contender, data, "test")
    calibration = contender.finish()
    return {
        "seed": seed,
        "best_epoch": best["epoch"],
        "valid": {k: best[k] for k in METRICS},
        "test": score(contender, data, "test") if calibration else before,
        "calibration": calibration,
        "test_before_calibration": before,
        "train_seconds": sum(e["train_seconds"] for e in history),
        "epochs": history,
    }


def mean_of(runs: list[dict]) -> dict[str, float]:
    means = {k: float(np.mean([r["test"][k] for r in runs])) for k in METRICS}
    means["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
    means["valid_gauc"] = float(np.mean([r["valid"]["gauc"] for r in runs]))
    means["gauc_spread"] = float(np.ptp([r["test"]["gauc"] for r in runs]))
    means["seeds"] = len(runs)
    means["logloss_before_calibration"] = float(
        np.mean([r["test_before_calibration"]["logloss"] for r in runs])
    )
    return means


def gap(a: dict[str, float], b: dict[str, float]) -> dict:
    """a - b in every metric, next to twice the larger seed-to-seed GAUC spread of the two
    (None with a single seed: there is no spread to compare with)."""
    difference = {k: a[k] - b[k] for k in METRICS}
    if min(a["seeds"], b["seeds"]) < 2:
        return difference | {"two_spreads": None, "beyond_noise": None}
    noise = 2 * max(a["gauc_spread"], b["gauc_spread"])
    return difference | {
        "two_spreads": noise,
        "beyond_noise": bool(abs(difference["gauc"]) > noise),
    }


def compare(means: dict[str, dict[str, float]]) -> dict:
    """The best peer (by mean test GAUC); DIN against it and against the BaseModel, each next
    to twice the larger seed-to-seed GAUC spread; DIN's training time against DeepCTR-Torch's."""
    summary: dict = {}
    peers = [LABELS[k] for k in PEERS if LABELS[k] in means]
    if peers:
        best = max(peers, key=lambda name: means[name]["gauc"])
        summary["best_peer"] = {"model": best} | {k: means[best][k] for k in METRICS}
    din, base, deepctr = (means.get(LABELS[k]) for k in ("din", "base", "deepctr"))
    if din and peers:
        summary["din_minus_best_peer"] = gap(din, means[summary["best_peer"]["model"]])
    if din:
        summary["din_logloss_before_calibration"] = din["logloss_before_calibration"]
    if din and base:
        summary["din_minus_base"] = gap(din, base)
    if din and deepctr:
        summary["train_seconds"] = {
            "din": din["train_seconds"],
            "deepctr": deepctr["train_seconds"],
            "din_over_deepctr": din["train_seconds"] / deepctr["train_seconds"],
        }
    return summary


def run_peers(args: argparse.Namespace) -> dict:
    torch.set_num_threads(THREADS)
    job, data = build_data(args.quick)
    results: dict = {
        "setup": {
            "epochs": args.epochs,
            "seeds": args.seeds,
            "quick": args.quick,
            "max_users": job.max_users,
            "torch_threads": THREADS,
            "batch_size": 128,
            "selection": "best validation GAUC, validation users only",
            "load_average_at_start": os.getloadavg()[0],
        },
        "splits": split_summary(data),
        "models": {},
    }
    for key in args.models:
        runs = [run_one(key, seed, data, job, args.epochs) for seed in args.seeds]
        results["models"][LABELS[key]] = {"runs": runs, "mean": mean_of(runs)}
    means = {name: entry["mean"] for name, entry in results["models"].items()}
    results["summary"] = compare(means)
    return results


# ---------------------------------------------------------------------------------------------
# Tables


def split_rows(splits: dict) -> list[list[str]]:
    role = {"fit": "training", "valid": "epoch selection", "test": "reported only"}
    return [
        [
            split,
            str(s["users"]),
            str(s["impressions"]),
            f"{s['click_rate']:.3f}",
            role[split],
        ]
        for split, s in splits["sizes"].items()
    ]


def model_rows(entry: dict) -> list[list[str]]:
    rows = [
        [
            f"seed {r['seed']}",
            f"{r['valid']['gauc']:.4f}",
            *_metrics(r["test"]),
            str(r["best_epoch"]),
            f"{r['train_seconds']:.1f}",
        ]
        for r in entry["runs"]
    ]
    mean = entry["mean"]
    valid = f"{mean['valid_gauc']:.4f}"
    rows.append(["mean", valid, *_metrics(mean), "", f"{mean['train_seconds']:.1f}"])
    return rows


def summary_lines(summary: dict) -> list[str]:
    lines = []
    if "best_peer" in summary:
        best = summary["best_peer"]
        lines.append(
            f"best peer (mean test GAUC): {best['model']}: GAUC {best['gauc']:.4f}, "
            f"logloss {best['logloss']:.4f}"
        )
    for key, label in (("din_minus_best_peer", "best peer"), ("din_minus_base", "BaseModel")):
        if key in summary:
            lines.append(f"DIN - {label}: {_gap(summary[key])}")
    if "din_logloss_before_calibration" in summary:
        lines.append(
            "DIN test logloss before calibration (mean): "
            f"{summary['din_logloss_before_calibration']:.4f}"
        )
    if "train_seconds" in summary:
        t = summary["train_seconds"]
        lines.append(
            f"training seconds (mean per run): DIN {t['din']:.1f} vs DeepCTR-Torch "
            f"{t['deepctr']:.1f} ({t['din_over_deepctr']:.2f}x)"
        )
    return lines


def _metrics(values: dict[str, float]) -> list[str]:
    return [f"{values[k]:.4f}" for k in METRICS]


def _gap(values: dict) -> str:
    signed = ", ".join(f"{k} {values[k]:+.4f}" for k in METRICS)
    if values["two_spreads"] is None:
        return f"{signed}; one seed, no seed spread to compare with"
    verdict = "beyond" if values["beyond_noise"] else "within"
    return f"{signed}; 2x seed spread of GAUC {values['two_spreads']:.4f} -> {verdict} seed noise"


def print_results(results: dict) -> None:
    splits = results["splits"]
    print_table(
        "Splits (users are disjoint across splits)",
        ["split", "users", "impressions", "click rate", "used for"],
        split_rows(splits),
    )
    overlap = splits["overlap"]
    print(
        f"shared users: test&fit {overlap['test_and_fit']}, test&valid "
        f"{overlap['test_and_valid']}, valid&fit {overlap['valid_and_fit']}; every model picks "
        "its epoch by validation GAUC and sees the test users only for the final score"
    )
    setup = results["setup"]
    header = ["run", "valid GAUC", "test AUC", "test GAUC", "logloss", "best epoch", "train s"]
    for name, entry in results["models"].items():
        title = f"{name}: {setup['epochs']} epoch(s), batch 128, {setup['torch_threads']} threads"
        print_table(title, header, model_rows(entry))
    print()
    for line in summary_lines(results["summary"]):
        print(line)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    results = run_peers(args)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["load_average_at_end"] = os.getloadavg()[0]
    print_results(results)
    path = write_json("peers-quick.json" if args.quick else "peers.json", results)
    print(
        f"\nwrote {path}; total {results['total_seconds']:.0f} s; 1-minute load average "
        f"{results['setup']['load_average_at_start']:.1f} at the start, "
        f"{results['load_average_at_end']:.1f} at the end ({os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
