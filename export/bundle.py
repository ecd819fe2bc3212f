"""A model bundle in memory and on local disk: the ONNX bytes, the tables and the metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from export.data import Dataset
from export.model import DIN
from export.to_onnx import check_parity, export_dense_onnx


@dataclass
class Table:
    ids: np.ndarray  # (N,) raw ids as str
    rows: np.ndarray  # (N, D) float32
    default: np.ndarray  # (D,) float32, served for unknown ids


@dataclass
class Bundle:
    onnx: bytes
    model_config: dict
    item_dim: int
    max_history: int
    tables: dict[str, Table]
    histories: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    item_metadata: dict[str, dict] = field(default_factory=dict)  # id -> {title, category}
    demo_users: list[str] = field(default_factory=list)
    demo_items: list[str] = field(default_factory=list)
    report: dict[str, bytes] = field(default_factory=dict)  # training report file -> bytes

    def describe(self) -> dict:
        """What bundle.json holds: everything but the ONNX, the tables and the report."""
        return {key: getattr(self, key) for key in META_FIELDS} | {"report": sorted(self.report)}


META_FIELDS = (
    "model_config",
    "item_dim",
    "max_history",
    "histories",
    "metrics",
    "item_metadata",
    "demo_users",
    "demo_items",
)
DEMO_USERS = 12
DEMO_ITEMS = 12


def extract_tables(model: DIN, dataset: Dataset) -> dict[str, Table]:
    """Item rows are "goods" vectors: the item's embedding followed by its category's."""
    with torch.no_grad():
        items = model.item_emb.weight[1:].numpy()  # (I, item_dim)
        cats = model.cat_emb.weight[1:].numpy()  # (K, cat_dim)
    goods = np.concatenate([items, cats[dataset.item_cat[1:] - 1]], axis=1)  # (I, D)
    mean_cat = cats.mean(axis=0)
    return {
        "item": Table(
            ids=dataset.item_vocab[1:].astype(str),
            rows=np.ascontiguousarray(goods, np.float32),
            default=np.concatenate([items.mean(axis=0), mean_cat]).astype(np.float32),
        ),
        "cat": Table(
            ids=dataset.cat_vocab[1:].astype(str),
            rows=np.ascontiguousarray(cats, np.float32),
            default=mean_cat.astype(np.float32),
        ),
    }


def item_metadata(dataset: Dataset) -> dict[str, dict]:
    """Each item's display title (when the data has one) and its category's raw id."""
    return {
        str(item): {
            "title": dataset.item_titles.get(str(item)),
            "category": str(dataset.cat_vocab[dataset.item_cat[index]]),
        }
        for index, item in enumerate(dataset.item_vocab[1:], start=1)
    }


def demo_users(dataset: Dataset, count: int = DEMO_USERS) -> list[str]:
    """Held-out (test) users with a full-length history, chosen with a fixed seed."""
    users = dataset.user_vocab[np.unique(dataset.test.user)].astype(str)
    long = [u for u in users if len(dataset.latest_history.get(u, [])) >= 10]
    chosen = np.random.default_rng(0).permutation(long)[:count].tolist()
    return sorted(chosen, key=lambda user: (len(user), user))  # numeric ids in numeric order


def demo_items(dataset: Dataset, count: int = DEMO_ITEMS) -> list[str]:
    """The most-watched item of each of the biggest categories: a varied candidate list."""
    counts = np.bincount(dataset.train.item, minlength=len(dataset.item_vocab))
    chosen, seen = [], set()
    for index in np.argsort(-counts, kind="stable"):
        if counts[index] == 0 or len(chosen) == count:
            break
        if dataset.item_cat[index] not in seen:
            seen.add(dataset.item_cat[index])
            chosen.append(str(dataset.item_vocab[index]))
    return chosen


def build_bundle(
    model: DIN,
    dataset: Dataset,
    metrics: dict,
    *,
    split: bool = True,
    report: dict[str, bytes] | None = None,
) -> Bundle:
    """Export and parity-check the dense graph, then gather the tables: fails loudly."""
    onnx_bytes = export_dense_onnx(model.dense, split=split)
    metrics = {**metrics, "onnx_parity_max_abs_diff": check_parity(model, onnx_bytes, dataset.test)}
    return Bundle(
        onnx=onnx_bytes,
        model_config=model.config.to_dict(),
        item_dim=model.config.item_dim,
        max_history=model.config.max_history,
        tables=extract_tables(model, dataset),
        histories=dataset.latest_history,
        metrics=metrics,
        item_metadata=item_metadata(dataset),
        demo_users=demo_users(dataset),
        demo_items=demo_items(dataset),
        report=report or {},
    )


def save_bundle(bundle: Bundle, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(bundle.onnx)
    arrays = {}
    for name, table in bundle.tables.items():
        arrays |= {
            f"{name}_ids": table.ids,
            f"{name}_rows": table.rows,
            f"{name}_default": table.default,
        }
    np.savez(folder / "tables.npz", **arrays)
    for name, content in bundle.report.items():
        (folder / name).write_bytes(content)
    (folder / "bundle.json").write_text(json.dumps(bundle.describe()))
    return folder


def load_bundle(folder: Path) -> Bundle:
    if not (folder / "bundle.json").exists():
        raise FileNotFoundError(f"{folder} holds no bundle (run `ctr-export train` first)")
    meta = json.loads((folder / "bundle.json").read_text())
    report = {name: (folder / name).read_bytes() for name in meta.pop("report", [])}
    with np.load(folder / "tables.npz") as arrays:
        tables = {
            name: Table(arrays[f"{name}_ids"], arrays[f"{name}_rows"], arrays[f"{name}_default"])
            for name in ("item", "cat")
        }
    return Bundle(onnx=(folder / "model.onnx").read_bytes(), tables=tables, report=report, **meta)
