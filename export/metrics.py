"""AUC, GAUC (impression-weighted per-user AUC) and logloss."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean per-user AUC weighted by impressions, over users who have both labels."""
    order = np.argsort(users, kind="stable")
    users, labels, scores = users[order], labels[order], scores[order]
    boundaries = np.flatnonzero(np.diff(users)) + 1
    total, weight = 0.0, 0
    for user_labels, user_scores in zip(
        np.split(labels, boundaries), np.split(scores, boundaries), strict=True
    ):
        positives = user_labels.sum()
        if 0 < positives < len(user_labels):
            total += roc_auc_score(user_labels, user_scores) * len(user_labels)
            weight += len(user_labels)
    return total / weight if weight else float("nan")


def logloss(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1]))


def evaluate_scores(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        "auc": auc(labels, scores),
        "gauc": gauc(users, labels, scores),
        "logloss": logloss(labels, scores),
    }
