"""Untrained DIN bundles of any size, for benchmarks that need rows and a graph, not accuracy.

python -c "from bench.bundles import synthetic_bundle; print(synthetic_bundle(100).tables)"
"""

from __future__ import annotations

import numpy as np
import torch

from export.bundle import Bundle, Table
from export.model import DenseDIN, DINConfig
from export.synthetic import synthetic_table
from export.to_onnx import export_dense_onnx


def synthetic_bundle(n_items: int, n_cats: int = 20, seed: int = 0, n_users: int = 0) -> Bundle:
    """Random rows and weights (seeded); n_users get a stored history of 50 random items."""
    torch.manual_seed(seed)
    config = DINConfig(n_items=n_items, n_cats=n_cats)
    item_ids, item_rows = synthetic_table(n_items, config.goods_dim, seed)
    cat_rows = item_rows[:n_cats, config.item_dim :].copy()
    rng = np.random.default_rng(seed)
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
