"""Calibration: a Platt scaling of the logit, fitted on the validation users after the epoch
is chosen, and folded into the model's last layer.

Selecting the epoch by validation GAUC keeps the best ranking, which is often an epoch whose
probabilities are already over-confident. An ads system bids with the CTR itself, so the
trainer refits two numbers, logit' = a · logit + b (1/4 ≤ a ≤ 4), to minimise the validation log
loss, and writes them into the head's weights: the served graph, the checkpoint and every
parity test see one ordinary model. a > 0 keeps the order of every user's scores, so AUC
and GAUC do not change; only the log loss does.
"""

from __future__ import annotations

import numpy as np
import torch

from export.model import DIN, EVAL_BATCH, to_tensors
from export.samples import SampleSet

# a stays within [1/4, 4]: a model with no signal on the validation users would otherwise
# shrink every logit towards the base rate until float32 scores tie and the ranking is lost
SCALE_RANGE = (0.25, 4.0)


@torch.no_grad()
def split_logits(model: DIN, samples: SampleSet, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of a whole split, in eval mode."""
    model.eval()
    logits, labels = [], []
    for batch in samples.batches(split, EVAL_BATCH):
        logits.append(model(*to_tensors(batch)).double().numpy())
        labels.append(batch.label)
    if not logits:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(logits), np.concatenate(labels).astype(np.float64)


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the log loss of sigmoid(a · logit + b), a in SCALE_RANGE."""
    z, y = torch.from_numpy(logits), torch.from_numpy(labels)
    low, high = SCALE_RANGE
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)  # (u, b); u = 0: a = 1

    def scale_of(u: torch.Tensor) -> torch.Tensor:
        return low * (high / low) ** torch.sigmoid(u)  # from low to high, 1 at u = 0

    optimizer = torch.optim.LBFGS([params], max_iter=100, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(scale_of(params[0]) * z + params[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(scale_of(params[0].detach())), float(params[1].detach())


@torch.no_grad()
def fold_into_head(model: DIN, scale: float, shift: float) -> None:
    """The head's output becomes scale · output + shift."""
    head = model.dense.head
    head.weight.mul_(scale)
    head.bias.mul_(scale).add_(shift)


def calibrate(model: DIN, samples: SampleSet) -> dict[str, float]:
    """Fit on the validation split and fold into the model; {} when there is nothing to fit
    (no validation sample, or a single label)."""
    logits, labels = split_logits(model, samples, "valid")
    if len(np.unique(labels)) < 2:
        return {}
    scale, shift = fit_platt(logits, labels)
    fold_into_head(model, scale, shift)
    return {"scale": scale, "shift": shift}
