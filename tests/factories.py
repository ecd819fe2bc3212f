"""Test factories: bundles built without training, and a writer process to kill."""

from __future__ import annotations

import sys

import numpy as np
import torch

from core.redis_conn import connect_redis
from export.bundle import Bundle, Table
from export.model import DenseDIN, DINConfig
from export.publish import publish_bundle
from export.synthetic import synthetic_table
from export.to_onnx import export_dense_onnx


def synthetic_bundle(n_items: int, n_cats: int = 5, seed: int = 0) -> Bundle:
    torch.manual_seed(seed)
    config = DINConfig(n_items=n_items, n_cats=n_cats)
    item_ids, item_rows = synthetic_table(n_items, config.goods_dim, seed)
    cat_ids = np.array([f"c{i}" for i in range(n_cats)])
    cat_rows = item_rows[:n_cats, config.item_dim :].copy()
    return Bundle(
        onnx=export_dense_onnx(DenseDIN(config).eval()),
        model_config=config.to_dict(),
        item_dim=config.item_dim,
        max_history=config.max_history,
        tables={
            "item": Table(item_ids, item_rows, item_rows.mean(axis=0)),
            "cat": Table(cat_ids, cat_rows, cat_rows.mean(axis=0)),
        },
    )


def main() -> None:
    """python -m tests.factories URL NS N_ITEMS: publish a big synthetic bundle (to be killed)."""
    url, ns, n_items = sys.argv[1], sys.argv[2], int(sys.argv[3])
    publish_bundle(connect_redis(url, timeout_s=30), ns, synthetic_bundle(n_items), progress=False)


if __name__ == "__main__":
    main()
