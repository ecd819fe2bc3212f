"""The signature of the exported dense graph, shared by the exporter and the service.

candidates (B, C, Di) and history (B, T, Di) hold item rows: the item-side fields'
embeddings, concatenated. history_mask (B, T) marks real behaviours. user (B, Du) and
context (B, Dc) are inputs only when the schema declares such fields.
"""

from __future__ import annotations

import numpy as np

from core.schema import FeatureSchema

CANDIDATES, HISTORY, MASK, USER, CONTEXT = (
    "candidates",
    "history",
    "history_mask",
    "user",
    "context",
)
OUTPUT = "scores"  # (B, C): B users, each with its own C candidates and T behaviours
ATTENTION = "attention"  # (B, C, T): each behaviour's weight for each candidate, 0 on padding
OUTPUTS = (OUTPUT, ATTENTION)


def input_names(schema: FeatureSchema) -> tuple[str, ...]:
    names = (CANDIDATES, HISTORY, MASK)
    return names + ((USER,) if schema.user else ()) + ((CONTEXT,) if schema.context else ())


def user_inputs(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph's user side: an empty history becomes one masked zero row."""
    if len(history) == 0:
        return np.zeros((1, history.shape[1]), np.float32), np.zeros(1, np.float32)
    return np.ascontiguousarray(history, np.float32), np.ones(len(history), np.float32)


def one_user_feeds(names: tuple[str, ...] | list[str], inputs: dict[str, np.ndarray]) -> dict:
    """Feeds for a batch of one: each named input, (C, Di), (T, Di), (T,), (Du,), (Dc,), gains
    a leading axis (views, no copy). Inputs the graph does not take are left out."""
    return {name: inputs[name][None] for name in names}
