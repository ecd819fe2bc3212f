"""A synthetic behaviour log with a planted local-activation signal, at any size.

Items belong to fine-grained clusters, and clusters to coarse categories. A user clicks a
candidate with high probability when one of their last few behaviours shares its cluster:
a local match with a few behaviours, which attention can pick out and sum pooling blurs.

    python -c "from export.synthetic import make_synthetic; print(make_synthetic().train)"
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from export.bundle import Bundle, Table
from export.data import Dataset, Samples, _test_users
from export.model import DenseDIN, DINConfig
from export.to_onnx import export_dense_onnx


@dataclass
class SyntheticConfig:
    n_users: int = 2000
    n_items: int = 5000
    n_cats: int = 20
    clusters_per_cat: int = 20
    samples_per_user: int = 20
    max_history: int = 50
    match_window: int = 5  # how many recent behaviours the click depends on
    base_rate: float = 0.15
    match_rate: float = 0.85
    seed: int = 0


def make_synthetic(config: SyntheticConfig | None = None) -> Dataset:
    c = config or SyntheticConfig()
    rng = np.random.default_rng(c.seed)
    n_clusters = c.n_cats * c.clusters_per_cat
    item_cluster = np.concatenate([[0], rng.integers(0, n_clusters, c.n_items)])  # (I+1,)
    item_cat = np.concatenate([[0], item_cluster[1:] // c.clusters_per_cat + 1]).astype(np.int32)
    n = c.n_users * c.samples_per_user
    user = np.repeat(np.arange(c.n_users), c.samples_per_user).astype(np.int32)
    hist_len = rng.integers(1, c.max_history + 1, n).astype(np.int32)
    hist_item = rng.integers(1, c.n_items + 1, (n, c.max_history)).astype(np.int32)
    steps = np.arange(c.max_history)
    hist_item[steps[None, :] >= hist_len[:, None]] = 0
    item = rng.integers(1, c.n_items + 1, n).astype(np.int32)
    recent = (steps[None, :] >= hist_len[:, None] - c.match_window) & (hist_item > 0)
    matching = _matching_item(rng, hist_item, hist_len, item, c.match_window)
    item = np.where(rng.random(n) < 0.5, item, matching)
    matched = ((item_cluster[hist_item] == item_cluster[item][:, None]) & recent).any(axis=1)
    rate = np.where(matched, c.match_rate, c.base_rate)
    samples = Samples(
        user=user,
        item=item,
        cat=item_cat[item],
        hist_item=hist_item,
        hist_cat=item_cat[hist_item],
        hist_len=hist_len,
        label=(rng.random(n) < rate).astype(np.float32),
        timestamp=np.arange(n, dtype=np.int64),
    )
    is_test = _test_users(c.n_users, 0.2, c.seed)[user]
    return Dataset(
        train=samples.take(np.flatnonzero(~is_test)),
        test=samples.take(np.flatnonzero(is_test)),
        user_vocab=np.array([f"u{i}" for i in range(c.n_users)]),
        item_vocab=np.array([""] + [f"i{i}" for i in range(1, c.n_items + 1)]),
        cat_vocab=np.array([""] + [f"c{i}" for i in range(1, c.n_cats + 1)]),
        item_cat=item_cat,
        latest_history={},
    )


def _matching_item(rng, hist_item, hist_len, fallback, window: int) -> np.ndarray:
    """A candidate equal to one of the last behaviours, so that matches are common."""
    pick = np.maximum(hist_len - 1 - rng.integers(0, window, len(hist_len)), 0)
    chosen = hist_item[np.arange(len(hist_len)), pick]
    return np.where(chosen > 0, chosen, fallback).astype(np.int32)


def synthetic_table(n_rows: int, dim: int = 36, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw ids and float32 rows for publish-throughput tests at scale."""
    rows = np.random.default_rng(seed).standard_normal((n_rows, dim)).astype(np.float32)
    return np.char.add("s", np.arange(n_rows).astype(str)), rows


def synthetic_bundle(n_items: int, n_cats: int = 20, seed: int = 0, n_users: int = 0) -> Bundle:
    """An untrained bundle of any size (seeded random rows and weights), for scale and
    serving tests that need rows and a graph, not accuracy; n_users get a stored history."""
    torch.manual_seed(seed)
    config = DINConfig(n_items=n_items, n_cats=n_cats)
    item_ids, item_rows = synthetic_table(n_items, config.goods_dim, seed)
    rng = np.random.default_rng(seed)
    cat_rows = rng.standard_normal((n_cats, config.cat_dim)).astype(np.float32)
    histories = {f"u{k}": rng.choice(item_ids, 50).astype(str).tolist() for k in range(n_users)}
    return Bundle(
        onnx=export_dense_onnx(DenseDIN(config).eval()),
        model_config=config.to_dict(),
        item_dim=config.item_dim,
        max_history=config.max_history,
        tables={
            "item": Table(item_ids, item_rows, item_rows.mean(axis=0)),
            "cat": Table(np.array([f"c{i}" for i in range(n_cats)]), cat_rows, cat_rows.mean(0)),
        },
        histories=histories,
    )
