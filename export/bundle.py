"""A model bundle in memory and on local disk: the ONNX bytes, the tables, the checkpoint and
the metadata. Every table and dimension follows from the bundle's feature schema."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import keys
from core.schema import FeatureSchema
from export.model import DIN, DINConfig
from export.samples import SampleSet, Vocabulary
from export.to_onnx import check_parity, export_dense_onnx

PARITY_SAMPLES = 2000


@dataclass
class Table:
    ids: np.ndarray  # (N,) raw ids as str
    rows: np.ndarray  # (N, D) float32
    default: np.ndarray  # (D,) float32, served for unknown ids


@dataclass
class Bundle:
    onnx: bytes
    schema: FeatureSchema
    model_config: dict
    tables: dict[str, Table]  # "item" and one "f:{field}" per other field
    metrics: dict = field(default_factory=dict)
    item_metadata: dict[str, dict] = field(default_factory=dict)  # id -> {title, fields}
    demo_users: list[str] = field(default_factory=list)
    demo_items: list[str] = field(default_factory=list)
    report: dict[str, bytes] = field(default_factory=dict)  # training report file -> bytes
    checkpoint: bytes = b""  # torch.save of the model's state_dict: rebuilds the PyTorch model

    @property
    def max_history(self) -> int:
        return self.schema.max_history

    def describe(self) -> dict:
        """What bundle.json holds: everything but the ONNX, the tables, report and checkpoint."""
        meta = {key: getattr(self, key) for key in META_FIELDS}
        return meta | {"schema": self.schema.to_dict(), "report": sorted(self.report)}


META_FIELDS = ("model_config", "metrics", "item_metadata", "demo_users", "demo_items")
DEMO_USERS = 12
DEMO_ITEMS = 12


def mean_row(rows: np.ndarray) -> np.ndarray:
    """The default row served for unknown values: the mean of the known rows."""
    return rows.mean(axis=0) if len(rows) else np.zeros(rows.shape[1], np.float32)


@torch.no_grad()
def extract_tables(model: DIN, vocab: Vocabulary) -> dict[str, Table]:
    """The item table holds whole item rows (every item-side field's embedding, in schema
    order); every other field has a table of its own embeddings."""
    schema, vocab = model.config.schema, vocab.fields
    items = model.goods(torch.arange(1, len(vocab[schema.item_field.name]))).numpy()  # (I, Di)
    tables = {keys.ITEM_TABLE: _table(vocab[schema.item_field.name], items)}
    for spec in schema.field_tables:
        rows = model.embeddings[spec.name].weight[1:].numpy()  # (n, dim)
        tables[keys.field_table(spec.name)] = _table(vocab[spec.name], rows)
    return tables


def _table(values: np.ndarray, rows: np.ndarray) -> Table:
    rows = np.ascontiguousarray(rows, np.float32)
    return Table(ids=values[1:].astype(str), rows=rows, default=mean_row(rows).astype(np.float32))


def item_metadata(schema: FeatureSchema, vocab: Vocabulary) -> dict[str, dict]:
    """Each item's display title (when the data has one) and its item-side field values."""
    item_ids = vocab.fields[schema.item_field.name][1:].astype(str)
    side = {
        spec.name: vocab.fields[spec.name][vocab.item_side[1:, j]].astype(str)
        for j, spec in enumerate(schema.item)
        if j > 0
    }
    return {
        item: {
            "title": vocab.titles.get(item),
            "fields": {name: values[k] or None for name, values in side.items()},
        }
        for k, item in enumerate(item_ids)
    }


def demo_users(samples: SampleSet, count: int = DEMO_USERS) -> list[str]:
    """Held-out (test) users with at least 10 behaviours, chosen with a fixed seed."""
    batches = samples.batches("test", 65_536)
    long = np.unique(np.concatenate([b.user[b.hist_len >= 10] for b in batches] or [[]]))
    long = long.astype(np.int64)
    chosen = np.random.default_rng(0).permutation(samples.vocab.users[long])[:count].tolist()
    return sorted(map(str, chosen), key=lambda user: (len(user), user))  # numeric ids in order


def demo_items(samples: SampleSet, count: int = DEMO_ITEMS) -> list[str]:
    """The most-shown items, one per value of the first side field when there is one: a
    varied candidate list."""
    counts, vocab = samples.item_counts(), samples.vocab
    group = vocab.item_side[:, 1] if vocab.item_side.shape[1] > 1 else np.arange(len(counts))
    chosen, seen = [], set()
    for index in np.argsort(-counts, kind="stable"):
        if counts[index] == 0 or len(chosen) == count:
            break
        if group[index] not in seen:
            seen.add(group[index])
            chosen.append(str(vocab.fields[samples.schema.item_field.name][index]))
    return chosen


def state_bytes(model: DIN) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def build_bundle(
    model: DIN,
    samples: SampleSet,
    metrics: dict,
    *,
    report: dict[str, bytes] | None = None,
) -> Bundle:
    """Export and parity-check the dense graph, then gather the tables: fails loudly."""
    onnx_bytes = export_dense_onnx(model.dense)
    parity = check_parity(model, onnx_bytes, samples.read("test", limit=PARITY_SAMPLES))
    return Bundle(
        onnx=onnx_bytes,
        schema=model.config.schema,
        model_config=model.config.to_dict(),
        tables=extract_tables(model, samples.vocab),
        metrics={**metrics, "onnx_parity_max_abs_diff": parity},
        item_metadata=item_metadata(samples.schema, samples.vocab),
        demo_users=demo_users(samples),
        demo_items=demo_items(samples),
        report=report or {},
        checkpoint=state_bytes(model),
    )


def rebuild_model(bundle: Bundle) -> DIN:
    """The PyTorch model a bundle was exported from, from the bundle alone."""
    state = torch.load(io.BytesIO(bundle.checkpoint), weights_only=True)
    model = DIN(DINConfig.from_dict(bundle.model_config), state["item_side"])
    model.load_state_dict(state)
    return model.eval()


TABLES_FILE, ONNX_FILE, CHECKPOINT_FILE, META_FILE = (
    "tables.npz",
    "model.onnx",
    "model.pt",
    "bundle.json",
)


def save_bundle(bundle: Bundle, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ONNX_FILE).write_bytes(bundle.onnx)
    (folder / CHECKPOINT_FILE).write_bytes(bundle.checkpoint)
    arrays = {}
    for index, table in enumerate(bundle.tables.values()):
        arrays |= {f"{index}_ids": table.ids, f"{index}_rows": table.rows}
        arrays[f"{index}_default"] = table.default
    np.savez(folder / TABLES_FILE, **arrays)
    for name, content in bundle.report.items():
        (folder / name).write_bytes(content)
    meta = bundle.describe() | {"tables": list(bundle.tables)}
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder


def load_bundle(folder: Path) -> Bundle:
    if not (folder / META_FILE).exists():
        raise FileNotFoundError(f"{folder} holds no bundle (run `ctr-export train` first)")
    meta = json.loads((folder / META_FILE).read_text())
    report = {name: (folder / name).read_bytes() for name in meta.pop("report", [])}
    with np.load(folder / TABLES_FILE) as arrays:
        tables = {
            name: Table(arrays[f"{k}_ids"], arrays[f"{k}_rows"], arrays[f"{k}_default"])
            for k, name in enumerate(meta.pop("tables"))
        }
    return Bundle(
        onnx=(folder / ONNX_FILE).read_bytes(),
        schema=FeatureSchema.from_dict(meta.pop("schema"), str(folder / META_FILE)),
        tables=tables,
        report=report,
        checkpoint=(folder / CHECKPOINT_FILE).read_bytes(),
        **meta,
    )
