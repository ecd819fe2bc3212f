"""The bundle manifest: everything the service needs to serve a version, written last."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from core import keys
from core.rows import DTYPES

ROW_DTYPES = tuple(DTYPES)  # ("float32", "float16")
PROBE_ROWS = 64
FORMAT = 1


@dataclass
class TableSpec:
    rows: int
    dim: int
    default_row: list[float]


@dataclass
class Manifest:
    version: str
    created_at: float
    row_dtype: str
    tables: dict[str, TableSpec]
    item_dim: int  # the item part of an item row; the rest is its category's vector
    max_history: int
    onnx_sha256: str
    onnx_inputs: list[str]
    onnx_output: str
    onnx_attention: str = ""  # the graph output holding attention weights; "" = none
    model: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    probe_ids: dict[str, list[str]] = field(default_factory=dict)  # rows checked at load
    probe_sha256: str = ""  # over the probe rows' bytes, tables in sorted order
    item_metadata: int = 0  # items with a title/category record (keys.item_meta_keys)
    report: dict[str, str] = field(default_factory=dict)  # training report file -> sha256
    demo_users: list[str] = field(default_factory=list)  # users worth showing in the UI
    demo_items: list[str] = field(default_factory=list)  # candidates worth showing in the UI
    format: int = FORMAT

    @property
    def goods_dim(self) -> int:
        return self.tables["item"].dim

    def default_row(self, table: str) -> np.ndarray:
        return np.asarray(self.tables[table].default_row, dtype=np.float32)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"unsupported manifest format {found!r}")
        tables = raw.get("tables")
        if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
            raise ValueError("manifest tables must map names to specs")
        raw["tables"] = {name: TableSpec(**spec) for name, spec in tables.items()}
        known = {f.name for f in fields(cls)}  # fields added later are optional, so a newer
        return cls(**{k: v for k, v in raw.items() if k in known})  # manifest still loads


def validate_manifest(manifest: Manifest) -> None:
    """Raise ValueError when the manifest is internally inconsistent."""
    if manifest.row_dtype not in ROW_DTYPES:
        raise ValueError(f"row_dtype {manifest.row_dtype!r} is not one of {ROW_DTYPES}")
    if manifest.max_history < 1:
        raise ValueError(f"max_history must be at least 1, got {manifest.max_history}")
    if set(manifest.tables) != {"item", "cat"}:
        raise ValueError(f"tables must be item and cat, got {sorted(manifest.tables)}")
    item, cat = manifest.tables["item"], manifest.tables["cat"]
    if item.dim != manifest.item_dim + cat.dim:
        raise ValueError(f"item rows are {item.dim} wide, expected item_dim + cat dim")
    for name, spec in manifest.tables.items():
        if len(spec.default_row) != spec.dim:
            raise ValueError(f"default row of {name} has {len(spec.default_row)} values")


def probe_digest(rows_by_table: dict[str, list[bytes]]) -> str:
    digest = hashlib.sha256()
    for table in sorted(rows_by_table):
        for row in rows_by_table[table]:
            digest.update(row)
    return digest.hexdigest()


def read_probe_digest(client, ns: str, manifest: Manifest) -> str | None:
    """sha256 over a version's probe rows as stored (one pipelined round trip), or None when
    any of them is missing. The exporter writes it into the manifest; the service checks it."""
    pipe = client.pipeline(transaction=False)
    for table, ids in manifest.probe_ids.items():
        for key in keys.row_keys(ns, manifest.version, table, ids):
            pipe.get(key)
    values = iter(pipe.execute())
    rows = {table: [next(values) for _ in ids] for table, ids in manifest.probe_ids.items()}
    if any(v is None for found in rows.values() for v in found):
        return None
    return probe_digest(rows)
