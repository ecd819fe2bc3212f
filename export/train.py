"""Train DIN or the BaseModel on a Dataset, keeping the epoch with the best validation GAUC.

The validation users are a seeded slice of the training users, so the test users are only
ever used for the reported metrics.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from export.data import Dataset, Samples
from export.metrics import evaluate_scores
from export.model import DIN, DINConfig

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 4
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    valid_fraction: float = 0.1
    seed: int = 0
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: DIN
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs: list[dict] = field(default_factory=list)


def to_tensors(samples: Samples) -> list[torch.Tensor]:
    columns = (samples.item, samples.cat, samples.hist_item, samples.hist_cat, samples.hist_len)
    return [torch.from_numpy(np.ascontiguousarray(c)).long() for c in columns]


@torch.no_grad()
def predict(model: DIN, samples: Samples, batch_size: int = 4096) -> np.ndarray:
    """Click probabilities for every sample, in eval mode (Dice uses its moving averages)."""
    model.eval()
    tensors = to_tensors(samples)
    chunks = [
        torch.sigmoid(model(*(t[start : start + batch_size] for t in tensors)))
        for start in range(0, len(samples), batch_size)
    ]
    return torch.cat(chunks).numpy() if chunks else np.zeros(0, dtype=np.float32)


def evaluate(model: DIN, samples: Samples) -> dict[str, float]:
    return evaluate_scores(samples.user, samples.label, predict(model, samples))


def split_validation(train: Samples, fraction: float, seed: int) -> tuple[Samples, Samples]:
    users = np.unique(train.user)
    n_valid = max(1, round(len(users) * fraction))
    chosen = np.random.default_rng(seed + 1).permutation(users)[:n_valid]
    is_valid = np.isin(train.user, chosen)
    return train.take(np.flatnonzero(~is_valid)), train.take(np.flatnonzero(is_valid))


def train_model(dataset: Dataset, config: DINConfig, train_config: TrainConfig) -> TrainResult:
    torch.manual_seed(train_config.seed)
    fit, valid = split_validation(dataset.train, train_config.valid_fraction, train_config.seed)
    model = DIN(config)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay
    )
    best, best_state, history = None, None, []
    for epoch in range(1, train_config.epochs + 1):
        loss = _train_one_epoch(model, optimizer, fit, train_config, epoch)
        metrics = {"epoch": epoch, "train_loss": loss, "valid": evaluate(model, valid)}
        metrics["test"] = evaluate(model, dataset.test)
        history.append(metrics)
        log.info(
            "epoch %d loss=%.4f valid=%s test=%s",
            epoch,
            loss,
            _fmt(metrics["valid"]),
            _fmt(metrics["test"]),
        )
        if best is None or metrics["valid"]["gauc"] > best["valid"]["gauc"]:
            best, best_state = metrics, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best["epoch"], best["valid"], best["test"], history)


def _train_one_epoch(model, optimizer, samples: Samples, config: TrainConfig, epoch: int) -> float:
    model.train()
    generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    order = torch.randperm(len(samples), generator=generator)
    tensors = to_tensors(samples)
    labels = torch.from_numpy(samples.label)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    total, batches = 0.0, range(0, len(samples), config.batch_size)
    bar = tqdm(batches, desc=f"epoch {epoch}", disable=not config.progress, leave=False)
    for start in bar:
        index = order[start : start + config.batch_size]
        loss = loss_fn(model(*(t[index] for t in tensors)), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return total / max(len(samples), 1)


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
