"""The bundle manifest: everything the service needs to serve a version, written last."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from core import keys
from core.schema import FeatureSchema, forward_compatible

ROW_DTYPES = ("float32", "float16")  # little-endian; core/rows.py encodes and decodes them
PROBE_ROWS = 64
UID_LENGTH = 32  # hex digits of uuid4: 122 random bits


def new_uid() -> str:
    return uuid.uuid4().hex


FORMAT = 2  # 2: the feature schema; a format-1 manifest (two fixed id fields) is refused
BUCKETS_FORMAT = 3  # 2 with rows in hash buckets: a reader that knows only 2 must refuse it
FORMATS = (FORMAT, BUCKETS_FORMAT)
FORMAT_NOTES = {1: "format 1 predates feature schemas: train and publish that model again"}


@dataclass
class TableSpec:
    rows: int
    dim: int
    default_row: list[float]
    buckets: int = 0  # hash buckets holding the rows (core/row_store.py); 0: a key per row


@dataclass
class Manifest:
    version: str
    created_at: float
    row_dtype: str
    tables: dict[str, TableSpec]
    schema: FeatureSchema
    onnx_sha256: str
    onnx_inputs: list[str]
    onnx_output: str
    onnx_attention: str = ""  # the graph output holding attention weights; "" = none
    model: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    probe_ids: dict[str, list[str]] = field(default_factory=dict)  # rows checked at load
    probe_sha256: str = ""  # over the probe rows' bytes, tables in sorted order
    item_metadata: int = 0  # items with a title/fields record (keys.item_meta_keys)
    report: dict[str, str] = field(default_factory=dict)  # training report file -> sha256
    demo_users: list[str] = field(default_factory=list)  # users worth showing in the UI
    demo_items: list[str] = field(default_factory=list)  # candidates worth showing in the UI
    row_groups: int = 0  # rows hash-tagged into this many slot groups (keys.row_keys); 0: none
    # Random at publish, never reused: a version name can come back after Redis loses its
    # data, its uid cannot. Replicas compare it, never the name, to tell bundles apart.
    uid: str = ""
    format: int = FORMAT

    @property
    def row_layout(self) -> str:
        """ "buckets" when the rows live in hash buckets, else "keys" (one string per row)."""
        return "buckets" if any(spec.buckets for spec in self.tables.values()) else "keys"

    @property
    def max_history(self) -> int:
        return self.schema.max_history

    def default_row(self, table: str):
        import numpy as np  # the ops commands read manifests without numpy

        return np.asarray(self.tables[table].default_row, dtype=np.float32)

    def to_json(self) -> str:
        raw = asdict(self) | {"schema": self.schema.to_dict()}
        return json.dumps(raw, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Fields this version does not know are ignored at every level (a newer exporter
        may add some); a format it cannot read is refused with the reason."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") not in FORMATS:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(FORMAT_NOTES.get(found, f"unsupported manifest format {found!r}"))
        tables = raw.get("tables")
        if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
            raise ValueError("manifest tables must map names to specs")
        raw["tables"] = {
            name: known_fields(TableSpec, spec, f"tables.{name}") for name, spec in tables.items()
        }
        raw["schema"] = FeatureSchema.from_dict(raw.get("schema"))
        return known_fields(cls, raw, "manifest")


def known_fields(cls, raw: dict, where: str):
    """cls built from the keys it declares; the others (a newer exporter's) are left out and
    logged once."""
    return cls(**forward_compatible(raw, {f.name for f in fields(cls)}, where))


def expected_tables(schema: FeatureSchema) -> dict[str, int]:
    """Every table a version of this schema holds, with its row width."""
    tables = {keys.ITEM_TABLE: schema.item_dim}
    return tables | {keys.field_table(f.name): f.dim for f in schema.field_tables}


def validate_manifest(manifest: Manifest) -> None:
    """Raise ValueError when the manifest is internally inconsistent."""
    if not isinstance(manifest.uid, str) or len(manifest.uid) != UID_LENGTH:
        raise ValueError("the manifest has no bundle uid (published by an older din-serving)")
    if manifest.row_dtype not in ROW_DTYPES:
        raise ValueError(f"row_dtype {manifest.row_dtype!r} is not one of {ROW_DTYPES}")
    groups = manifest.row_groups
    if type(groups) is not int or not 0 <= groups <= keys.MAX_GROUPS:
        raise ValueError(f"row_groups {groups!r} is not in 0..{keys.MAX_GROUPS}")
    expected = expected_tables(manifest.schema)
    if set(manifest.tables) != set(expected):
        raise ValueError(
            f"tables {sorted(manifest.tables)} differ from the schema's {sorted(expected)}"
        )
    for name, spec in manifest.tables.items():
        if spec.dim != expected[name]:
            raise ValueError(f"{name} rows are {spec.dim} wide, the schema says {expected[name]}")
        if len(spec.default_row) != spec.dim:
            raise ValueError(f"default row of {name} has {len(spec.default_row)} values")
        if type(spec.buckets) is not int or spec.buckets < 0:
            raise ValueError(f"{name} buckets {spec.buckets!r} is not a count")
    if len({spec.buckets > 0 for spec in manifest.tables.values()}) > 1:
        raise ValueError("tables mix row layouts: all or none must be in buckets")
    expected_format = BUCKETS_FORMAT if manifest.row_layout == "buckets" else FORMAT
    if manifest.format != expected_format:
        raise ValueError(f"a {manifest.row_layout} manifest is format {expected_format}")


def probe_digest(rows_by_table: dict[str, list[bytes]]) -> str:
    digest = hashlib.sha256()
    for table in sorted(rows_by_table):
        for row in rows_by_table[table]:
            digest.update(row)
    return digest.hexdigest()
