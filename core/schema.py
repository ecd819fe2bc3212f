"""The declared feature schema: which fields a model reads, how wide each embedding is, and
where the training data comes from. Written by a user as YAML, stored in every manifest.

Every other module derives from it: the trainer's columns and tables, the Redis rows, the
graph's inputs, the request model and the page. No module keeps its own list of fields.

    schema = load_schema_file(Path("examples/movielens-100k.yaml"))
    schema.features.item_dim      # width of one item row: the item-side embeddings, in order
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
KINDS = ("item", "user", "context")
BEHAVIOURS = ("all", "positive")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
ITEM_ID = "item_id"  # the request key of the item id, whatever the item column is called
MAX_DIM = 4096


class SchemaError(ValueError):
    """A schema file or manifest schema that cannot be used; names the file and the key."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


@dataclass(frozen=True)
class FieldSpec:
    name: str
    dim: int


@dataclass(frozen=True)
class FeatureSchema:
    """What a served model reads. `item[0]` is the item id; the other item fields travel with
    the item. `user_id_field` names the user field whose value is the user id itself."""

    item: tuple[FieldSpec, ...]
    user: tuple[FieldSpec, ...] = ()
    context: tuple[FieldSpec, ...] = ()
    max_history: int = 50
    behaviours: str = "all"
    user_id_field: str | None = None

    @property
    def item_field(self) -> FieldSpec:
        return self.item[0]

    @property
    def side_fields(self) -> tuple[FieldSpec, ...]:
        """Item-side fields other than the id: a request may override them per item."""
        return self.item[1:]

    @property
    def profile_fields(self) -> tuple[FieldSpec, ...]:
        """User fields read from the request or the stored profile (not the user id)."""
        return tuple(f for f in self.user if f.name != self.user_id_field)

    @property
    def item_dim(self) -> int:
        return sum(f.dim for f in self.item)

    @property
    def user_dim(self) -> int:
        return sum(f.dim for f in self.user)

    @property
    def context_dim(self) -> int:
        return sum(f.dim for f in self.context)

    @property
    def field_tables(self) -> tuple[FieldSpec, ...]:
        """Fields with a table of their own in Redis: every field but the item id, whose
        embedding is part of the item row."""
        return self.side_fields + self.user + self.context

    def fields_of(self, kind: str) -> tuple[FieldSpec, ...]:
        return getattr(self, kind)

    def offsets(self, kind: str) -> dict[str, slice]:
        """Where each field's embedding sits in the concatenated vector of its kind."""
        spans, start = {}, 0
        for spec in self.fields_of(kind):
            spans[spec.name] = slice(start, start + spec.dim)
            start += spec.dim
        return spans

    def to_dict(self) -> dict:
        fields_ = {kind: [asdict(f) for f in self.fields_of(kind)] for kind in KINDS}
        return {
            "features": fields_,
            "history": {"max_length": self.max_history, "behaviours": self.behaviours},
            "user_id_field": self.user_id_field,
        }

    @classmethod
    def from_dict(cls, raw: Any, source: str = "manifest") -> FeatureSchema:
        """A stored schema. Keys a newer exporter added are ignored (and logged once), so an
        older service still reads it; a schema file, by contrast, refuses unknown keys."""
        raw = _mapping(raw, source, "schema")
        raw = forward_compatible(raw, {"features", "history", "user_id_field"}, "schema")
        return parse_features(raw, source, raw.get("user_id_field"), strict=False)


@dataclass(frozen=True)
class DataSpec:
    """Where the training log and its side tables are, and what their columns are called."""

    log: Path
    user: str
    item: str
    time: str
    label: str
    items: Path | None = None
    users: Path | None = None
    title: str | None = None  # optional display-title column of the items table


@dataclass(frozen=True)
class SplitSpec:
    test_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class SchemaFile:
    """A whole schema file: the data, the features, the split."""

    data: DataSpec
    features: FeatureSchema
    split: SplitSpec = field(default_factory=SplitSpec)
    source: str = "<schema>"


TOP_KEYS = {"data", "features", "history", "split"}
HISTORY_KEYS = {"max_length", "behaviours"}
DATA_KEYS = {"log", "columns", "items", "users"}
COLUMN_KEYS = {"user", "item", "time", "label", "title"}


def load_schema_file(path: Path) -> SchemaFile:
    """Read and check a YAML schema file; relative data paths are taken from its folder."""
    import yaml  # the exporter's dependency only: the service reads schemas from manifests

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SchemaError(str(path), "", f"cannot read the file: {error}") from error
    return parse_schema_file(raw, str(path), Path(path).parent)


def parse_schema_file(raw: Any, source: str, base: Path = Path(".")) -> SchemaFile:
    raw = _mapping(raw, source, "")
    _only(raw, TOP_KEYS, source, "")
    for key in ("data", "features"):
        if key not in raw:
            raise SchemaError(source, key, "is required")
    data = parse_data(raw["data"], source, base)
    schema = parse_features(raw, source, None)
    _check_item_column(schema, data, source)
    user_id_field = data.user if any(f.name == data.user for f in schema.user) else None
    schema = FeatureSchema(**{**vars(schema), "user_id_field": user_id_field})
    return SchemaFile(data, schema, parse_split(raw.get("split", {}), source), source)


def parse_data(raw: Any, source: str, base: Path) -> DataSpec:
    raw = _mapping(raw, source, "data")
    _only(raw, DATA_KEYS, source, "data")
    if "log" not in raw or "columns" not in raw:
        raise SchemaError(source, "data", "needs both log and columns")
    columns = _mapping(raw["columns"], source, "data.columns")
    _only(columns, COLUMN_KEYS, source, "data.columns")
    for key in ("user", "item", "time", "label"):
        _name(columns.get(key), source, f"data.columns.{key}", pattern=None)
    paths = {k: _path(raw.get(k), base, source, f"data.{k}") for k in ("log", "items", "users")}
    return DataSpec(
        log=paths["log"],
        items=paths["items"],
        users=paths["users"],
        title=columns.get("title"),
        **{k: columns[k] for k in ("user", "item", "time", "label")},
    )


def parse_features(
    raw: dict, source: str, user_id_field: str | None, *, strict: bool = True
) -> FeatureSchema:
    known = _only if strict else lambda r, allowed, _s, where: forward_compatible(r, allowed, where)
    features = known(
        _mapping(raw.get("features"), source, "features"), set(KINDS), source, "features"
    )
    parsed = {kind: _field_list(features.get(kind, []), source, kind, known) for kind in KINDS}
    if not parsed["item"]:
        raise SchemaError(source, "features.item", "needs at least the item id field")
    names = [f.name for kind in KINDS for f in parsed[kind]]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SchemaError(source, "features", f"duplicate field name {duplicated[0]!r}")
    history = known(
        _mapping(raw.get("history", {}), source, "history"), HISTORY_KEYS, source, "history"
    )
    max_history = history.get("max_length", 50)
    if not isinstance(max_history, int) or isinstance(max_history, bool) or max_history < 1:
        raise SchemaError(
            source, "history.max_length", f"must be an integer ≥ 1, got {max_history!r}"
        )
    behaviours = history.get("behaviours", "all")
    if behaviours not in BEHAVIOURS:
        raise SchemaError(source, "history.behaviours", f"must be one of {BEHAVIOURS}")
    if user_id_field is not None and user_id_field not in {f.name for f in parsed["user"]}:
        raise SchemaError(source, "user_id_field", f"{user_id_field!r} is not a user field")
    return FeatureSchema(
        item=parsed["item"],
        user=parsed["user"],
        context=parsed["context"],
        max_history=max_history,
        behaviours=behaviours,
        user_id_field=user_id_field,
    )


def parse_split(raw: Any, source: str) -> SplitSpec:
    raw = _mapping(raw, source, "split")
    _only(raw, {"test_fraction", "seed"}, source, "split")
    fraction = raw.get("test_fraction", 0.2)
    if not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise SchemaError(source, "split.test_fraction", f"must be in (0, 1), got {fraction!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SchemaError(source, "split.seed", f"must be an integer, got {seed!r}")
    return SplitSpec(float(fraction), seed)


def _field_list(raw: Any, source: str, kind: str, known=None) -> tuple[FieldSpec, ...]:
    known = known or _only
    key = f"features.{kind}"
    if not isinstance(raw, list):
        raise SchemaError(source, key, "must be a list of {name, dim}")
    specs = []
    for index, entry in enumerate(raw):
        where = f"{key}[{index}]"
        entry = known(_mapping(entry, source, where), {"name", "dim"}, source, where)
        name = _name(entry.get("name"), source, f"{where}.name", pattern=NAME)
        if name == ITEM_ID and not (kind == "item" and index == 0):
            raise SchemaError(source, f"{where}.name", f"{ITEM_ID!r} names the item id only")
        dim = entry.get("dim")
        if not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim <= MAX_DIM:
            raise SchemaError(
                source, f"{where}.dim", f"must be an integer in 1..{MAX_DIM}, got {dim!r}"
            )
        specs.append(FieldSpec(name, dim))
    return tuple(specs)


def _check_item_column(schema: FeatureSchema, data: DataSpec, source: str) -> None:
    if schema.item_field.name != data.item:
        raise SchemaError(
            source,
            "features.item[0].name",
            f"the first item field is the item id and must be named like data.columns.item "
            f"({data.item!r}), got {schema.item_field.name!r}",
        )


def _mapping(raw: Any, source: str, key: str) -> dict:
    if not isinstance(raw, dict):
        raise SchemaError(source, key or "<top>", f"must be a mapping, got {type(raw).__name__}")
    return raw


def _only(raw: dict, allowed: set[str], source: str, where: str) -> dict:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise SchemaError(source, key, f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return raw


_LOGGED_UNKNOWN: set[str] = set()


def forward_compatible(raw: dict, allowed: set[str], where: str) -> dict:
    """raw without the keys this version does not know; each such key is logged once."""
    for key in sorted(str(k) for k in raw if k not in allowed):
        if f"{where}.{key}" not in _LOGGED_UNKNOWN:
            _LOGGED_UNKNOWN.add(f"{where}.{key}")
            log.warning("ignoring %s.%s: written by a newer exporter", where, key)
    return {k: v for k, v in raw.items() if k in allowed}


def _name(value: Any, source: str, key: str, pattern: re.Pattern | None) -> str:
    if not isinstance(value, str) or not value:
        raise SchemaError(source, key, f"must be a non-empty string, got {value!r}")
    if pattern is not None and not pattern.fullmatch(value):
        raise SchemaError(source, key, f"{value!r} must match {pattern.pattern}")
    return value


def _path(value: Any, base: Path, source: str, key: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SchemaError(source, key, f"must be a path, got {value!r}")
    path = Path(value)
    return path if path.is_absolute() else base / path


def example_schema(name: str) -> Path:
    """A shipped example schema: examples/ in a source tree, else where the package
    installed it ({prefix}/share/din-serving/examples)."""
    import sys

    for folder in (
        Path(__file__).resolve().parent.parent / "examples",
        Path(sys.prefix) / "share" / "din-serving" / "examples",
    ):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"the example schema {name} is not installed")


def two_field_schema(item_dim: int = 18, cat_dim: int = 18, max_history: int = 50) -> FeatureSchema:
    """The first round's layout: an item id and its category, no user or context fields."""
    return FeatureSchema(
        item=(FieldSpec(ITEM_ID, item_dim), FieldSpec("cat", cat_dim)), max_history=max_history
    )
