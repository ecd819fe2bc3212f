"""Train DIN or the BaseModel on built samples, keeping the epoch with the best validation GAUC,
then calibrating its probabilities on the same validation users (export/calibrate.py).

Batches stream from the samples' Parquet shards, so neither the log nor the samples need to fit
in memory. The validation users are a seeded slice of the training users: model selection
never looks at the test users, which only produce the reported metrics.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from export.calibrate import calibrate
from export.metrics import evaluate_scores
from export.model import DIN, EVAL_BATCH, DINConfig, attention_form, to_tensors
from export.samples import Batch, SampleSet

log = logging.getLogger(__name__)
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    epochs: int = 4
    batch_size: int = 128  # the global batch: each of W data-parallel ranks takes 1/W of it
    lr: float = 1e-3
    weight_decay: float = 0.0
    mba_lambda: float = 0.0  # the paper's mini-batch aware L2 on embeddings; 0 = off
    lr_schedule: str = "constant"  # or "cosine": decays to 0 over the epochs
    patience: int | None = None  # stop after this many epochs without a better valid GAUC
    calibrate: bool = True  # refit the logit's scale and shift on validation users (calibrate.py)
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: DIN
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs: list[dict] = field(default_factory=list)  # per epoch, before calibration
    calibration: dict[str, float] = field(default_factory=dict)  # {"scale", "shift"}; {}: none


@torch.no_grad()
def predict(model: DIN, batch: Batch) -> np.ndarray:
    """Click probabilities, in eval mode (Dice uses its moving averages)."""
    model.eval()
    if len(batch) == 0:
        return np.zeros(0, dtype=np.float32)
    return torch.sigmoid(model(*to_tensors(batch))).numpy()


def evaluate(model: DIN, samples: SampleSet, split: str) -> dict[str, float]:
    """AUC, GAUC and logloss over a whole split, streamed in batches."""
    users, labels, scores = [], [], []
    for batch in samples.batches(split, EVAL_BATCH):
        users.append(batch.user)
        labels.append(batch.label)
        scores.append(predict(model, batch))
    if not users:
        return {"auc": float("nan"), "gauc": float("nan"), "logloss": float("nan")}
    return evaluate_scores(*map(np.concatenate, (users, labels, scores)))


def new_model(samples: SampleSet, config: DINConfig) -> DIN:
    return DIN(config, torch.from_numpy(samples.vocab.item_side))


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job (rank 0 of 1 when training alone)."""

    rank: int = 0
    world: int = 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


def train_model(
    samples: SampleSet, config: DINConfig, train_config: TrainConfig, ranks: Ranks = Ranks()
) -> TrainResult:
    """Every rank trains on its own share of each epoch (gradients all-reduced by DDP when
    there are several); the leader alone evaluates and keeps the best epoch. Other ranks
    return a result without metrics."""
    torch.manual_seed(train_config.seed)  # the same initial weights on every rank
    model = new_model(samples, config)
    trained = _data_parallel(model) if ranks.world > 1 else model
    optimizer = torch.optim.Adam(
        trained.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay
    )
    schedule = lr_scheduler(optimizer, train_config)
    if train_config.mba_lambda and ranks.world > 1:
        raise ValueError("the mini-batch aware regulariser trains with one worker only")
    penalty = MbaPenalty.of(samples, train_config.mba_lambda)
    best, best_state, history = None, None, []
    for epoch in range(1, train_config.epochs + 1):
        loss = train_one_epoch(trained, optimizer, samples, train_config, epoch, ranks, penalty)
        schedule.step()
        if not ranks.leader:
            continue
        metrics = {"epoch": epoch, "train_loss": loss, "valid": evaluate(model, samples, "valid")}
        metrics["test"] = evaluate(model, samples, "test")
        history.append(metrics)
        log.info("epoch %d loss=%.4f valid=%s", epoch, loss, _fmt(metrics["valid"]))
        if best is None or _better(metrics["valid"], best["valid"]):
            best, best_state = metrics, copy.deepcopy(model.state_dict())
        elif ranks.world == 1 and _patience_spent(train_config, epoch, best["epoch"]):
            break  # (data-parallel ranks all run every epoch: only the leader evaluates)
    if not ranks.leader:
        return TrainResult(model.eval(), 0, {}, {}, [])
    model.load_state_dict(best_state)
    model.eval()
    if not train_config.calibrate:
        return TrainResult(model, best["epoch"], best["valid"], best["test"], history)
    fitted = calibrate(model, samples)  # a refit of the logit on validation users
    valid, test = evaluate(model, samples, "valid"), evaluate(model, samples, "test")
    return TrainResult(model, best["epoch"], valid, test, history, fitted)


def _patience_spent(config: TrainConfig, epoch: int, best_epoch: int) -> bool:
    return config.patience is not None and epoch - best_epoch >= config.patience


def lr_scheduler(optimizer, config: TrainConfig):
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


class MbaPenalty:
    """Mini-batch aware regularisation (Zhou et al. 2018, §4.2, eq. 5): for each batch,
    λ·Σ_j ||w_j||² / n_j over the distinct embedding rows j the batch reads (α_mj = 1), n_j
    being how often row j occurs in the fit split. Rare ids are held back, and the cost does
    not grow with the size of the tables: a row the batch does not read gets no gradient."""

    def __init__(self, counts: dict[str, torch.Tensor], strength: float) -> None:
        self.inverse = {f: 1.0 / c.clamp(min=1.0) for f, c in counts.items()}
        self.strength = strength

    @classmethod
    def of(cls, samples: SampleSet, strength: float) -> MbaPenalty | None:
        return cls(feature_counts(samples), strength) if strength > 0 else None

    def __call__(self, model: DIN, tensors: list[torch.Tensor]) -> torch.Tensor:
        item, hist, _, user_fields, context = tensors
        total = torch.zeros(())
        for name, indices in model.field_indices(item, hist, user_fields, context).items():
            read = torch.unique(indices)  # padding's row is zero and frozen: it adds nothing
            rows = model.embeddings[name](read)
            total = total + (rows.pow(2).sum(-1) * self.inverse[name][read]).sum()
        return self.strength * total


def feature_counts(samples: SampleSet, batch_size: int = 65_536) -> dict[str, torch.Tensor]:
    """How often each value of each field occurs in the fit split (candidates, behaviours,
    user and context fields), in one streamed pass."""
    schema, vocab = samples.schema, samples.vocab
    counts = {name: np.zeros(len(values), np.float64) for name, values in vocab.fields.items()}
    for batch in samples.batches("fit", batch_size):
        items = vocab.item_side[np.concatenate([batch.item, batch.hist[batch.hist > 0]])]
        columns = [(s.name, items[:, j]) for j, s in enumerate(schema.item)]
        columns += [(s.name, batch.user_fields[:, j]) for j, s in enumerate(schema.user)]
        columns += [(s.name, batch.context[:, j]) for j, s in enumerate(schema.context)]
        for name, indices in columns:
            counts[name] += np.bincount(indices, minlength=len(counts[name]))
    return {name: torch.from_numpy(c).float() for name, c in counts.items()}


def _data_parallel(model: DIN) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def _better(candidate: dict[str, float], incumbent: dict[str, float]) -> bool:
    """Higher validation GAUC wins; NaN (no user with both labels) never does."""
    return not np.isnan(candidate["gauc"]) and not candidate["gauc"] <= incumbent["gauc"]


def train_one_epoch(
    model: torch.nn.Module,
    optimizer,
    samples: SampleSet,
    config: TrainConfig,
    epoch: int,
    ranks: Ranks = Ranks(),
    penalty: MbaPenalty | None = None,
) -> float:
    """One pass over this rank's share of the fit split, in a seeded shuffled order; returns
    the mean loss. Ranks may get unequal shares: DDP's Join keeps the all-reduces matched."""
    model.train()
    log.info("epoch %d started (rank %d of %d)", epoch, ranks.rank, ranks.world)
    per_rank = max(1, config.batch_size // ranks.world)  # batch_size is the global batch
    seed = config.seed * 1000 + epoch
    batches = samples.batches("fit", per_rank, seed=seed, rank=ranks.rank, world=ranks.world)
    total_batches = -(-samples.count("fit") // (per_rank * ranks.world))
    show = config.progress and ranks.leader
    bar = tqdm(batches, total=total_batches, desc=f"epoch {epoch}", disable=not show)
    with _joined(model, ranks), attention_form(model, "split"):
        total, seen = _steps(model, optimizer, bar, penalty)
    return total / max(seen, 1)


def _steps(model: torch.nn.Module, optimizer, bar, penalty: MbaPenalty | None) -> tuple[float, int]:
    """Optimiser steps over the batches; returns the summed log loss (without the penalty)."""
    loss_fn = torch.nn.BCEWithLogitsLoss()
    inner = getattr(model, "module", model)  # DDP wraps the model
    total, seen = 0.0, 0
    for batch in bar:
        tensors = to_tensors(batch)
        loss = loss_fn(model(*tensors), torch.tensor(batch.label))
        objective = loss + penalty(inner, tensors) if penalty else loss
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
        total, seen = total + loss.item() * len(batch), seen + len(batch)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return total, seen


def _joined(model: torch.nn.Module, ranks: Ranks):
    if ranks.world == 1:
        return contextlib.nullcontext()
    from torch.distributed.algorithms.join import Join

    return Join([model])


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
