"""The signature of the exported dense graph, shared by the exporter and the service."""

from __future__ import annotations

import numpy as np

INPUTS = ("candidates", "history", "history_mask")  # (B, C, D), (B, T, D), (B, T)
OUTPUT = "scores"  # (B, C): B users, each with its own C candidates and T behaviours
ATTENTION = "attention"  # (B, C, T): each behaviour's weight for each candidate, 0 on padding
OUTPUTS = (OUTPUT, ATTENTION)


def user_inputs(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph's user side: an empty history becomes one masked zero row."""
    if len(history) == 0:
        return np.zeros((1, history.shape[1]), np.float32), np.zeros(1, np.float32)
    return np.ascontiguousarray(history, np.float32), np.ones(len(history), np.float32)


def one_user_feeds(candidates: np.ndarray, history: np.ndarray, mask: np.ndarray) -> dict:
    """Feeds for a batch of one: (C, D), (T, D), (T,) gain a leading axis (views, no copy)."""
    return dict(zip(INPUTS, (candidates[None], history[None], mask[None]), strict=True))
