"""Training samples from a user's own log, out of core, following the DIN paper's protocol.

Every log row is a sample (an impression). Its behaviours are the same user's rows with a
strictly earlier time (all of them, or only the clicked ones), oldest first, capped to the
schema's `max_history`. Users are split into fit/valid/test with seeded permutations, so no
user is in two splits.

DuckDB reads and checks the log, builds the vocabularies, encodes every row and partitions the
rows by user into Parquet buckets (spilling to disk), so the log never has to fit in memory.
Each bucket is then sorted by (user, time, file order), windowed with vectorised numpy, and
written in a seeded order (so a row group mixes many users) to Parquet shards
{split}/part-NNNNN.parquet that training streams row group by row group.

    python -m export.samples examples/synthetic.yaml --out artifacts/samples
    python -m export.samples examples/synthetic.yaml --check     # validate the log only
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from core.schema import DataSpec, FeatureSchema, SchemaFile, SplitSpec

log = logging.getLogger(__name__)

PAD = 0  # index 0 of every vocabulary is padding / missing; real values start at 1
SPLITS = ("fit", "valid", "test")
FORMAT = 1  # of the samples folder; open_samples refuses others
ROW_GROUP_ROWS = 65_536
ROWS_PER_BUCKET = 1_000_000  # a bucket takes about 1 GB of memory at max_history 50
WINDOW_ROWS = 131_072  # rows windowed at once inside a bucket, bounding the (rows, L) matrices
SHUFFLE_ROW_GROUPS = 4
MEMORY_FRACTION = 0.25  # of physical memory, for DuckDB; numpy works after DuckDB is closed

INTEGER_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
}  # fmt: skip
FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
OUTPUTS = (
    *SPLITS, "latest", "vocab", "meta.json", "users.parquet",
    "item_side.npy", "item_counts.npy", "titles.parquet",
)  # fmt: skip


class LogError(ValueError):
    """A log or side table that cannot be used; names the file and the column or key."""


# ---------------------------------------------------------------------------------------------
# Public data types


@dataclass
class Vocabulary:
    fields: dict[str, np.ndarray]  # field -> (n+1,) raw str values, [0] = "" is padding/missing
    users: np.ndarray  # (U,) raw user ids, sorted; Batch.user indexes it
    item_side: np.ndarray  # (I+1, n_item_fields) int32; column 0 is the item index itself
    titles: dict[str, str] = field(default_factory=dict)  # raw item id -> display title


@dataclass
class Batch:
    """Numpy columns, one row per impression. Histories are left-aligned, oldest first."""

    user: np.ndarray  # (N,) int32, index into Vocabulary.users
    item: np.ndarray  # (N,) int32, candidate item index
    hist: np.ndarray  # (N, L) int32 behaviour item indices, 0 = padding
    hist_len: np.ndarray  # (N,) int32
    user_fields: np.ndarray  # (N, Fu) int32, schema order, 0 = missing
    context: np.ndarray  # (N, Fc) int32, schema order, 0 = missing
    label: np.ndarray  # (N,) float32 in {0, 1}
    timestamp: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.label)

    def take(self, index: np.ndarray | slice) -> Batch:
        return Batch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def slate(self, row: int, candidates: np.ndarray) -> Batch:
        """Row `row`'s user, history, user fields and context paired with the items (and
        labels) of the `candidates` rows: what one scoring request holds."""
        slate = self.take(np.full(len(candidates), row))
        slate.item, slate.label = self.item[candidates], self.label[candidates]
        return slate


def empty_batch(max_history: int, n_user_fields: int = 0, n_context: int = 0) -> Batch:
    return Batch(
        user=np.zeros(0, np.int32),
        item=np.zeros(0, np.int32),
        hist=np.zeros((0, max_history), np.int32),
        hist_len=np.zeros(0, np.int32),
        user_fields=np.zeros((0, n_user_fields), np.int32),
        context=np.zeros((0, n_context), np.int32),
        label=np.zeros(0, np.float32),
        timestamp=np.zeros(0, np.int64),
    )


def concat_batches(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return Batch(
        **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Batch)}
    )


@dataclass
class SampleSet:
    """A built samples folder, opened: the schema, the vocabularies and the split shards."""

    folder: Path
    schema: FeatureSchema
    vocab: Vocabulary
    meta: dict = field(default_factory=dict, repr=False)

    def count(self, split: str) -> int:
        return int(self.meta["counts"][_check_split(split)])

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        seed: int | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> Iterator[Batch]:
        """Stream a split. seed=None: file order. With a seed: row groups in a seeded order,
        rows mixed in a buffer of a few row groups. Rank `rank` of `world` reads the rank-th
        of `world` equal contiguous stretches of that order (the same for every rank), so
        the shares are disjoint, complete and differ in size by at most one row."""
        if batch_size < 1 or not 0 <= rank < world:
            raise ValueError(
                f"need batch_size >= 1 and 0 <= rank < world, got {batch_size}, {rank}, {world}"
            )
        units = self._row_groups(split)
        if seed is not None:
            units = [units[k] for k in np.random.default_rng(seed).permutation(len(units))]
        parts = self._read_units(_rank_share(units, rank, world))
        if seed is None:
            return _rebatch(parts, batch_size)
        rng = np.random.default_rng([seed, rank])
        return _shuffle_rebatch(parts, batch_size, rng, SHUFFLE_ROW_GROUPS * ROW_GROUP_ROWS)

    def read(self, split: str, limit: int | None = None) -> Batch:
        """The split's first `limit` rows (all when None), in file order, in memory."""
        parts, seen = [], 0
        for part in self._read_units(self._row_groups(split)):
            parts.append(part)
            seen += len(part)
            if limit is not None and seen >= limit:
                break
        if not parts:
            return empty_batch(
                self.schema.max_history, len(self.schema.user), len(self.schema.context)
            )
        batch = concat_batches(parts)
        return batch if limit is None else batch.take(np.arange(min(limit, len(batch))))

    def item_counts(self) -> np.ndarray:
        """(I+1,) int64 impressions of each item index in the fit split."""
        return np.load(self.folder / "item_counts.npy")

    def latest(
        self, batch_users: int = 10_000
    ) -> Iterator[tuple[list[str], list[list[str]], dict[str, list[str | None]]]]:
        """Live state at the end of the log, in chunks: raw user ids, each user's most recent
        behaviours (raw item ids, oldest first, same rule and cap as training) and each
        profile field's latest raw value per user (None when missing)."""
        items = self.vocab.fields[self.schema.item_field.name]
        profile = [f.name for f in self.schema.profile_fields]
        for name in self.meta["latest"]:
            for chunk in pq.ParquetFile(self.folder / "latest" / name).iter_batches(batch_users):
                hist = _fixed_list_numpy(chunk.column("hist"), self.schema.max_history)  # (n, L)
                lengths = chunk.column("hist_len").to_numpy()
                raw = items[hist].tolist()
                histories = [row[:n] for row, n in zip(raw, lengths.tolist(), strict=True)]
                users = self.vocab.users[chunk.column("user").to_numpy()].tolist()
                values = {
                    f: _decode_optional(self.vocab.fields[f], chunk.column(f"user.{f}"))
                    for f in profile
                }
                yield users, histories, values

    def _row_groups(self, split: str) -> list[tuple[str, int, slice]]:
        """(shard, row group, rows of it) of every row group of the split, in file order."""
        shards = self.meta["shards"][_check_split(split)]
        return [
            (f"{split}/{name}", k, slice(0, size))
            for name, _, sizes in shards
            for k, size in enumerate(sizes)
        ]

    def _read_units(self, units: list[tuple[str, int, slice]]) -> Iterator[Batch]:
        files: dict[str, pq.ParquetFile] = {}
        for path, group, rows in units:
            if path not in files:
                files[path] = pq.ParquetFile(self.folder / path)
            table = files[path].read_row_group(group)
            yield batch_from_arrow(table.slice(rows.start, rows.stop - rows.start), self.schema)


def _rank_share(
    units: list[tuple[str, int, slice]], rank: int, world: int
) -> list[tuple[str, int, slice]]:
    """Rank `rank`'s contiguous stretch of the rows of `units`: at most two row groups are
    read in part, and a split with fewer row groups than ranks still feeds every rank."""
    sizes = np.array([rows.stop - rows.start for _, _, rows in units], np.int64)  # (G,)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    total = int(ends[-1]) if len(units) else 0
    low, high = total * rank // world, total * (rank + 1) // world
    share = []
    for (path, group, _), start, end in zip(units, starts.tolist(), ends.tolist(), strict=True):
        if end > low and start < high:
            share.append((path, group, slice(max(low, start) - start, min(high, end) - start)))
    return share


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _decode_optional(values: np.ndarray, codes: pa.Array) -> list[str | None]:
    index = codes.to_numpy()
    decoded = values[index].astype(object)
    decoded[index == PAD] = None
    return decoded.tolist()


def _rebatch(parts: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Fixed-size batches out of row groups of any size; the last one may be short."""
    pending = None
    for part in parts:
        pending = part if pending is None else concat_batches([pending, part])
        full = len(pending) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield pending.take(slice(start, start + batch_size))
        pending = pending.take(slice(full, None))
    if pending is not None and len(pending):
        yield pending


def _shuffle_rebatch(
    parts: Iterable[Batch], batch_size: int, rng: np.random.Generator, buffer_rows: int
) -> Iterator[Batch]:
    """Shuffled batches: rows are mixed across the row groups held in a buffer."""
    buffer, held = [], 0
    for part in parts:
        buffer.append(part)
        held += len(part)
        if held >= buffer_rows:
            mixed = concat_batches(buffer)
            mixed = mixed.take(rng.permutation(len(mixed)))
            full = len(mixed) // batch_size * batch_size
            for start in range(0, full, batch_size):
                yield mixed.take(slice(start, start + batch_size))
            buffer = [mixed.take(slice(full, None))]
            held = len(buffer[0])
    if held:
        mixed = concat_batches(buffer)
        yield from _rebatch([mixed.take(rng.permutation(len(mixed)))], batch_size)


# ---------------------------------------------------------------------------------------------
# Sample shards <-> Batch


def batch_to_arrow(batch: Batch, schema: FeatureSchema) -> pa.Table:
    length = schema.max_history
    columns = {
        "user": pa.array(batch.user, pa.int32()),
        "item": pa.array(batch.item, pa.int32()),
        "hist": pa.FixedSizeListArray.from_arrays(
            pa.array(batch.hist.reshape(-1), pa.int32()), length
        ),
        "hist_len": pa.array(batch.hist_len, pa.int32()),
        "label": pa.array(batch.label, pa.float32()),
        "timestamp": pa.array(batch.timestamp, pa.int64()),
    }
    for j, spec in enumerate(schema.user):
        columns[f"user.{spec.name}"] = pa.array(batch.user_fields[:, j], pa.int32())
    for j, spec in enumerate(schema.context):
        columns[f"context.{spec.name}"] = pa.array(batch.context[:, j], pa.int32())
    return pa.table(columns)


def batch_from_arrow(table: pa.Table, schema: FeatureSchema) -> Batch:
    def column(name: str) -> np.ndarray:
        return _writable(table.column(name))

    n = table.num_rows
    return Batch(
        user=column("user"),
        item=column("item"),
        hist=_fixed_list_numpy(table.column("hist"), schema.max_history),
        hist_len=column("hist_len"),
        user_fields=_stack([column(f"user.{s.name}") for s in schema.user], n),
        context=_stack([column(f"context.{s.name}") for s in schema.context], n),
        label=column("label"),
        timestamp=column("timestamp"),
    )


def _writable(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numpy copy that callers may modify (and torch.from_numpy accepts without warning)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.to_numpy(zero_copy_only=False, writable=True)


def _fixed_list_numpy(column: pa.ChunkedArray | pa.Array, length: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return _writable(column.flatten()).reshape(-1, length)  # (n, L); flatten honours offsets


def _stack(columns: list[np.ndarray], n: int) -> np.ndarray:
    if not columns:
        return np.zeros((n, 0), np.int32)
    return np.stack(columns, axis=1).astype(np.int32, copy=False)  # (n, F)


# ---------------------------------------------------------------------------------------------
# Reading and checking the log


@dataclass(frozen=True)
class _Table:
    """A readable data file: its path, a DuckDB table expression, and its column types."""

    path: Path
    sql: str
    columns: dict[str, str]

    def type_of(self, column: str) -> str:
        return self.columns[column]


@dataclass(frozen=True)
class _Plan:
    """Where every field's values come from, after the log and side tables were checked."""

    log: _Table
    items: _Table | None
    users: _Table | None
    item_sources: dict[str, str]  # side field -> "items" | "log"
    user_sources: dict[str, str]  # user field -> "id" | "log" | "users"
    time_kind: str


def check_log(schema_file: SchemaFile) -> None:
    """Refuse a log or side table that cannot be used, before any training: raises LogError
    naming the file and the column or key."""
    with (
        tempfile.TemporaryDirectory(prefix="din-check-") as scratch,
        _connect(Path(scratch)) as con,
    ):
        _plan_log(schema_file, con)


@contextmanager
def _connect(work: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    work.mkdir(parents=True, exist_ok=True)
    config = {"memory_limit": _memory_limit(), "temp_directory": str(work / "spill")}
    con = duckdb.connect(str(work / "build.duckdb"), config=config)
    try:
        yield con
    finally:
        con.close()


def _memory_limit() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return f"{max(1 << 30, int(total * MEMORY_FRACTION)) >> 20}MB"


def _plan_log(schema_file: SchemaFile, con: duckdb.DuckDBPyConnection) -> _Plan:
    data = schema_file.data
    log_table = _open_table(con, data.log)
    items = _open_table(con, data.items) if data.items else None
    users = _open_table(con, data.users) if data.users else None
    plan = plan_columns(schema_file, log_table, items, users)
    _check_log_values(con, log_table, data, plan.time_kind)
    if items is not None:
        _check_side_table(con, items, data.item, "item")
    if users is not None:
        _check_side_table(con, users, data.user, "user")
    return plan


def plan_columns(
    schema_file: SchemaFile, log_table: _Table, items: _Table | None, users: _Table | None
) -> _Plan:
    """The checks that need only the column types (any engine's, named as DuckDB names them):
    raises LogError, else says where every field's values come from."""
    data, schema = schema_file.data, schema_file.features
    time_kind = _check_log_columns(log_table, data)
    item_sources = _item_sources(schema, data, log_table, items)
    user_sources = _user_sources(schema, data, log_table, users)
    for spec in schema.context:
        _check_feature(log_table, spec.name, "context field")
    return _Plan(log_table, items, users, item_sources, user_sources, time_kind)


def _open_table(con: duckdb.DuckDBPyConnection, path: Path) -> _Table:
    if not path.exists():
        raise LogError(f"{path}: file not found")
    sql = _table_sql(path)
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {sql}").fetchall()
    except duckdb.Error as error:
        raise LogError(f"{path}: cannot read the file: {error}") from error
    return _Table(path, sql, {row[0]: row[1] for row in described})


def _table_sql(path: Path) -> str:
    kind, files = data_files(path)
    if kind == "csv":
        return f"read_csv({_literal(str(path))}, header = true)"
    if path.is_dir():
        return f"read_parquet([{', '.join(_literal(str(p)) for p in files)}])"
    return f"read_parquet({_literal(str(path))})"


def data_files(path: Path) -> tuple[str, list[Path]]:
    """("parquet" or "csv", the files) of a data path. A folder's files are sorted: that is the
    file order which breaks ties between a user's rows at the same time."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise LogError(f"{path}: the folder holds no .parquet files")
        return "parquet", files
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet", [path]
    if name.endswith((".csv", ".csv.gz")):
        return "csv", [path]
    raise LogError(f"{path}: unsupported format: use .parquet, .csv or a folder of .parquet files")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _kind(duck_type: str) -> str:
    """The coarse kind of a DuckDB column type: what the checks accept or refuse."""
    base = duck_type.split("(")[0].strip()
    if base == "VARCHAR" or base.startswith("ENUM"):
        return "string"
    if base in INTEGER_TYPES:
        return "integer"
    if base in FLOAT_TYPES or base == "DECIMAL":
        return "float"
    if base == "BOOLEAN":
        return "boolean"
    if base.startswith("TIMESTAMP"):
        return "timestamp"
    return "date" if base == "DATE" else "other"


def _require(table: _Table, column: str, role: str) -> str:
    if column not in table.columns:
        found = ", ".join(list(table.columns)[:20])
        raise LogError(f"{table.path}: column {column!r} ({role}) not found; columns: {found}")
    return _kind(table.type_of(column))


def _refuse_type(table: _Table, column: str, needed: str) -> LogError:
    found = table.type_of(column)
    return LogError(f"{table.path}: column {column!r}: {needed}, found {found}")


def _check_log_columns(table: _Table, data: DataSpec) -> str:
    for column, role in ((data.user, "user id"), (data.item, "item id")):
        if _require(table, column, role) not in ("string", "integer"):
            raise _refuse_type(table, column, "ids must be string or integer")
    time_kind = _require(table, data.time, "time")
    if time_kind not in ("integer", "float", "timestamp", "date"):
        raise _refuse_type(table, data.time, "time must be integer, float, timestamp or date")
    if _require(table, data.label, "label") not in ("integer", "boolean", "float"):
        raise _refuse_type(table, data.label, "the label must be integer, boolean or float 0/1")
    return time_kind


def _check_feature(table: _Table, column: str, role: str) -> None:
    kind = _require(table, column, role)
    if kind == "float":
        raise _refuse_type(
            table,
            column,
            "features must be string, integer or boolean (bucket numeric values first)",
        )
    if kind not in ("string", "integer", "boolean"):
        raise _refuse_type(table, column, "features must be string, integer or boolean")


def _item_sources(
    schema: FeatureSchema, data: DataSpec, log_table: _Table, items: _Table | None
) -> dict[str, str]:
    """Side values come from the items table when it has the column, else from the log."""
    sources = {}
    for spec in schema.side_fields:
        source = "items" if items is not None and spec.name in items.columns else "log"
        table = items if source == "items" else log_table
        if source == "log" and spec.name not in log_table.columns:
            where = f"neither the log nor {items.path} has it" if items else "no items table given"
            raise LogError(
                f"{log_table.path}: column {spec.name!r} (item field) not found; {where}"
            )
        _check_feature(table, spec.name, "item field")
        sources[spec.name] = source
    if data.title is not None:
        if items is None:
            raise LogError(f"{data.log}: column {data.title!r} (title): no items table given")
        if _require(items, data.title, "title") not in ("string", "integer"):
            raise _refuse_type(items, data.title, "titles must be strings")
    return sources


def _user_sources(
    schema: FeatureSchema, data: DataSpec, log_table: _Table, users: _Table | None
) -> dict[str, str]:
    """User values come from the log row when the log has the column, else the users table."""
    sources = {}
    for spec in schema.user:
        if spec.name == schema.user_id_field:
            sources[spec.name] = "id"
            continue
        source = "log" if spec.name in log_table.columns else "users"
        if source == "users" and (users is None or spec.name not in users.columns):
            where = f"neither the log nor {users.path} has it" if users else "no users table given"
            raise LogError(
                f"{log_table.path}: column {spec.name!r} (user field) not found; {where}"
            )
        _check_feature(log_table if source == "log" else users, spec.name, "user field")
        sources[spec.name] = source
    return sources


def _check_log_values(
    con: duckdb.DuckDBPyConnection, table: _Table, data: DataSpec, time_kind: str
) -> None:
    """Null ids, times and labels, and labels other than 0/1, in one pass over the log."""
    nulls = {
        c: _null_test(c, table.type_of(c)) for c in (data.user, data.item, data.time, data.label)
    }
    if time_kind == "float":
        nulls[data.time] += f" OR isnan(CAST({_quote(data.time)} AS DOUBLE))"
    label = f"CAST({_quote(data.label)} AS DOUBLE)"
    counts = ", ".join(f"count(*) FILTER (WHERE {test})" for test in nulls.values())
    bad_label = f"any_value({_quote(data.label)}) FILTER (WHERE {label} NOT IN (0, 1))"
    query = f"SELECT count(*), {counts}, {bad_label} FROM {table.sql}"
    try:
        n_rows, *row = con.execute(query).fetchone()
    except duckdb.Error as error:
        raise LogError(f"{table.path}: cannot read the rows: {error}") from error
    refuse_bad_rows(
        table.path, data.label, n_rows, dict(zip(nulls, row[:-1], strict=True)), row[-1]
    )


def refuse_bad_rows(
    path: Path, label: str, n_rows: int, null_counts: dict[str, int], bad_label: object
) -> None:
    """LogError for an empty log, null ids, times or labels, or a label outside {0, 1}: the
    one wording both builders (DuckDB and Spark) use for what their row scan counted."""
    if n_rows == 0:
        raise LogError(f"{path}: the log has no rows")
    for column, count in null_counts.items():
        if count:
            raise LogError(f"{path}: column {column!r}: {count} null values (must not be null)")
    if bad_label is not None:
        raise LogError(f"{path}: column {label!r}: values must be 0 or 1, found {bad_label}")


def _null_test(column: str, duck_type: str) -> str:
    test = f"{_quote(column)} IS NULL"
    return f"({test} OR {_quote(column)} = '')" if _kind(duck_type) == "string" else test


def _check_side_table(con: duckdb.DuckDBPyConnection, table: _Table, key: str, what: str) -> None:
    if _require(table, key, f"{what} id") not in ("string", "integer"):
        raise _refuse_type(table, key, "ids must be string or integer")
    nulls = con.execute(
        f"SELECT count(*) FROM {table.sql} WHERE {_null_test(key, table.type_of(key))}"
    )
    if nulls.fetchone()[0]:
        raise LogError(f"{table.path}: column {key!r}: null keys (must not be null)")
    duplicate = con.execute(
        f"SELECT CAST({_quote(key)} AS VARCHAR) FROM {table.sql} "
        f"GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 1"
    ).fetchone()
    if duplicate:
        raise LogError(f"{table.path}: column {key!r}: duplicate key {duplicate[0]!r}")


# ---------------------------------------------------------------------------------------------
# Building: load, vocabularies, partition, window, write


def build_samples(
    schema_file: SchemaFile,
    out: Path,
    *,
    valid_fraction: float = 0.1,
    max_users: int | None = None,
    progress: bool = True,
    buckets: int | None = None,
) -> SampleSet:
    """Check the log, then write the fit/valid/test samples, vocabularies and live state into
    `out` (replacing a previous build there). `max_users`: only the first N user ids."""
    out, work = Path(out), Path(out) / "_work"
    shutil.rmtree(work, ignore_errors=True)  # a crashed build's leftovers
    try:
        with _connect(work) as con:
            plan = _plan_log(schema_file, con)
            _clear_outputs(out)  # only once the log is known to be usable
            n_rows = _load_log(con, plan, schema_file, max_users)
            vocab = _build_vocabulary(con, plan, schema_file)
            n_buckets = buckets or max(1, math.ceil(n_rows / ROWS_PER_BUCKET))
            _partition_rows(con, plan, schema_file.features, n_buckets, work / "buckets")
        split_of_user = assign_splits(len(vocab.users), schema_file.split, valid_fraction)
        written = _write_buckets(work / "buckets", out, schema_file, vocab, split_of_user, progress)
        _write_vocabulary(out, vocab)
        _write_meta(out, schema_file, written, valid_fraction, max_users, n_buckets)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("samples in %s: %s", out, written["counts"])
    return open_samples(out)


def _clear_outputs(out: Path) -> None:
    """Remove a previous build's files (only ours: the folder may hold other things)."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def assign_splits(n_users: int, split: SplitSpec, valid_fraction: float) -> np.ndarray:
    """(U,) int8 split of each user index: 0 fit, 1 valid, 2 test. The test users are the
    first round(U * test_fraction) of a seeded permutation; the validation users a seeded
    slice of the rest."""
    codes = np.zeros(n_users, np.int8)
    order = np.random.default_rng(split.seed).permutation(n_users)  # (U,)
    n_test = round(n_users * split.test_fraction)
    codes[order[:n_test]] = 2
    rest = np.flatnonzero(codes == 0)  # (U - n_test,) sorted user indices
    if len(rest):
        n_valid = max(1, round(len(rest) * valid_fraction))
        codes[rest[np.random.default_rng(split.seed + 1).permutation(len(rest))[:n_valid]]] = 1
    return codes


def _load_log(
    con: duckdb.DuckDBPyConnection, plan: _Plan, schema_file: SchemaFile, max_users: int | None
) -> int:
    """Copy the log into DuckDB as text ids and feature values. The table's rowid keeps the
    file order, which breaks ties between rows of the same user at the same time."""
    user = _quote(schema_file.data.user)
    where = ""
    if max_users is not None:
        kept = f"SELECT DISTINCT CAST({user} AS VARCHAR) AS u FROM {plan.log.sql}"
        kept += f" ORDER BY u LIMIT {int(max_users)}"
        where = f" WHERE CAST({user} AS VARCHAR) IN ({kept})"
    select = ", ".join(_log_select(plan, schema_file))
    con.execute("SET preserve_insertion_order = true")
    try:
        con.execute(f"CREATE TABLE log AS SELECT {select} FROM {plan.log.sql}{where}")
    except duckdb.Error as error:  # e.g. a CSV value that does not fit the sniffed type
        raise LogError(f"{plan.log.path}: cannot read the rows: {error}") from error
    con.execute("SET preserve_insertion_order = false")  # later steps carry rowid explicitly
    n_rows = con.execute("SELECT count(*) FROM log").fetchone()[0]
    log.info("log %s: %d rows", schema_file.data.log, n_rows)
    return n_rows


def _log_select(plan: _Plan, schema_file: SchemaFile) -> list[str]:
    data = schema_file.data
    key, seconds = _time_sql(_quote(data.time), plan.time_kind)
    select = [f"CAST({_quote(data.user)} AS VARCHAR) AS _u"]
    select += [f"CAST({_quote(data.item)} AS VARCHAR) AS _i", f"{key} AS _t", f"{seconds} AS _ts"]
    select.append(f"CAST({_quote(data.label)} AS FLOAT) AS _y")
    for name in _log_features(plan, schema_file.features):
        select.append(f"{_text_sql(_quote(name))} AS {_quote('f_' + name)}")
    return select


def _log_features(plan: _Plan, schema: FeatureSchema) -> list[str]:
    names = [name for name, source in plan.item_sources.items() if source == "log"]
    names += [name for name, source in plan.user_sources.items() if source == "log"]
    return names + [spec.name for spec in schema.context]


def _time_sql(column: str, kind: str) -> tuple[str, str]:
    """(sort key, epoch seconds) expressions: the key keeps sub-second order for ties."""
    if kind == "integer":
        return f"CAST({column} AS BIGINT)", f"CAST({column} AS BIGINT)"
    if kind == "float":
        return f"CAST({column} AS DOUBLE)", f"CAST(floor({column}) AS BIGINT)"
    stamp = f"CAST({column} AS TIMESTAMP)" if kind == "date" else column
    return f"epoch_us({stamp})", f"CAST(floor(epoch({stamp})) AS BIGINT)"


def _text_sql(column: str) -> str:
    """Raw values as text exactly as written ("25" for an integer); "" counts as missing."""
    return f"NULLIF(CAST({column} AS VARCHAR), '')"


def _side_sql(table: _Table, key: str, columns: list[str]) -> str:
    select = [f"CAST({_quote(key)} AS VARCHAR) AS _k"]
    select += [f"{_text_sql(_quote(c))} AS {_quote('f_' + c)}" for c in columns]
    return f"(SELECT {', '.join(select)} FROM {table.sql})"


def _build_vocabulary(
    con: duckdb.DuckDBPyConnection, plan: _Plan, schema_file: SchemaFile
) -> Vocabulary:
    """Every field's sorted values, from the values the samples actually hold."""
    schema = schema_file.features
    _create_index(con, "v_user", "SELECT DISTINCT _u AS value FROM log", start=0)
    _create_index(con, "v_item", "SELECT DISTINCT _i AS value FROM log", start=1)
    _create_item_table(con, plan, schema_file)
    _create_user_table(con, plan, schema_file)
    for name, table in _field_sources(plan, schema).items():
        _create_index(con, f"v_{name}", f"SELECT DISTINCT f_{name} AS value FROM {table}")
    users = _fetch_values(con, "v_user")
    values = {}
    for spec in (*schema.item, *schema.user, *schema.context):
        if spec.name == schema.item_field.name:
            values[spec.name] = np.concatenate([[""], _fetch_values(con, "v_item")])
        elif plan.user_sources.get(spec.name) == "id":
            values[spec.name] = np.concatenate([[""], users])
        else:
            values[spec.name] = np.concatenate([[""], _fetch_values(con, f"v_{spec.name}")])
    log.info(
        "vocabularies: %d users, %d items", len(users), len(values[schema.item_field.name]) - 1
    )
    return Vocabulary(values, users, _item_side(con, schema), _titles(con, schema_file))


def _field_sources(plan: _Plan, schema: FeatureSchema) -> dict[str, str]:
    """The DuckDB table whose f_<field> column holds each non-id field's values."""
    sources = {spec.name: "item_table" for spec in schema.side_fields}
    for name, source in plan.user_sources.items():
        if source != "id":
            sources[name] = "user_table" if source == "users" else "log"
    return sources | {spec.name: "log" for spec in schema.context}


def _create_index(con: duckdb.DuckDBPyConnection, name: str, distinct: str, start: int = 1) -> None:
    """A vocabulary table (value, idx): values sorted bytewise, as numpy sorts str."""
    con.execute(
        f"CREATE TABLE {name} AS SELECT value, "
        f"CAST(row_number() OVER (ORDER BY value) + {start - 1} AS INTEGER) AS idx "
        f"FROM ({distinct}) WHERE value IS NOT NULL"
    )


def _arrow(con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    relation = con.sql(query)
    fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table  # DuckDB 1.x
    return fetch()


def _fetch_values(con: duckdb.DuckDBPyConnection, table: str) -> np.ndarray:
    column = _arrow(con, f"SELECT value FROM {table} ORDER BY idx").column(0)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=str)


def _create_item_table(
    con: duckdb.DuckDBPyConnection, plan: _Plan, schema_file: SchemaFile
) -> None:
    """One row per log item: its side values from the items table, else its latest value in
    the log (by time, then file order; nulls skipped)."""
    data, side = schema_file.data, [s.name for s in schema_file.features.side_fields]
    from_items = [n for n in side if plan.item_sources[n] == "items"]
    from_log = [n for n in side if plan.item_sources[n] == "log"]
    select = ["v.idx", "v.value"] + [f"{'it' if n in from_items else 'lg'}.f_{n}" for n in side]
    joins = ""
    if plan.items is not None:
        titles = [data.title] if data.title else []
        table = _side_sql(plan.items, data.item, from_items + titles)
        joins += f" LEFT JOIN {table} it ON it._k = v.value"
        if data.title:
            select.append(f"it.{_quote('f_' + data.title)} AS _title")
    if from_log:
        latest = ", ".join(
            f"max_by(f_{n}, (_t, rowid)) FILTER (WHERE f_{n} IS NOT NULL) AS f_{n}"
            for n in from_log
        )
        joins += f" LEFT JOIN (SELECT _i, {latest} FROM log GROUP BY _i) lg ON lg._i = v.value"
    con.execute(f"CREATE TABLE item_table AS SELECT {', '.join(select)} FROM v_item v{joins}")


def _create_user_table(
    con: duckdb.DuckDBPyConnection, plan: _Plan, schema_file: SchemaFile
) -> None:
    """One row per log user with the user fields that come from the users table."""
    names = [n for n, source in plan.user_sources.items() if source == "users"]
    select = ", ".join(["v.idx", "v.value"] + [f"us.f_{n}" for n in names])
    join = ""
    if names:
        table = _side_sql(plan.users, schema_file.data.user, names)
        join = f" LEFT JOIN {table} us ON us._k = v.value"
    con.execute(f"CREATE TABLE user_table AS SELECT {select} FROM v_user v{join}")


def _item_side(con: duckdb.DuckDBPyConnection, schema: FeatureSchema) -> np.ndarray:
    side = [s.name for s in schema.side_fields]
    codes = ", ".join(["t.idx"] + [f"COALESCE(v_{n}.idx, 0)" for n in side])
    joins = "".join(f" LEFT JOIN v_{n} ON v_{n}.value = t.f_{n}" for n in side)
    table = _arrow(con, f"SELECT {codes} FROM item_table t{joins}")
    n_items = table.num_rows
    item_side = np.zeros((n_items + 1, 1 + len(side)), np.int32)  # (I+1, n_item_fields)
    rows = table.column(0).to_numpy()
    for j in range(table.num_columns):
        item_side[rows, j] = table.column(j).to_numpy()
    return item_side


def _titles(con: duckdb.DuckDBPyConnection, schema_file: SchemaFile) -> dict[str, str]:
    if schema_file.data.title is None:
        return {}
    rows = con.execute("SELECT value, _title FROM item_table WHERE _title IS NOT NULL").fetchall()
    return dict(rows)


def _partition_rows(
    con: duckdb.DuckDBPyConnection, plan: _Plan, schema: FeatureSchema, n_buckets: int, folder: Path
) -> None:
    """Encode every row and write it to the Parquet bucket of its user (user index modulo the
    bucket count), so that each bucket holds whole users and fits in memory."""
    select = ["vu.idx AS user", "vi.idx AS item", "l._t AS tkey", "l._ts AS timestamp"]
    select += ["l._y AS label", "l.rowid AS row"]
    joins = " JOIN v_user vu ON vu.value = l._u JOIN v_item vi ON vi.value = l._i"
    if "users" in plan.user_sources.values():
        _create_user_codes(con, plan)
        joins += " JOIN user_codes uc ON uc.idx = vu.idx"
    for spec in schema.user:
        column = _quote(f"user.{spec.name}")
        source = plan.user_sources[spec.name]
        if source == "id":
            select.append(f"vu.idx + 1 AS {column}")
        elif source == "users":
            select.append(f"uc.f_{spec.name} AS {column}")
        else:
            select.append(f"COALESCE(v_{spec.name}.idx, 0) AS {column}")
            joins += f" LEFT JOIN v_{spec.name} ON v_{spec.name}.value = l.f_{spec.name}"
    for spec in schema.context:
        select.append(f"COALESCE(v_{spec.name}.idx, 0) AS {_quote('context.' + spec.name)}")
        joins += f" LEFT JOIN v_{spec.name} ON v_{spec.name}.value = l.f_{spec.name}"
    select.append(f"vu.idx % {n_buckets} AS bucket")
    query = f"SELECT {', '.join(select)} FROM log l{joins}"
    con.execute(
        f"COPY ({query}) TO {_literal(str(folder))} (FORMAT parquet, PARTITION_BY (bucket))"
    )


def _create_user_codes(con: duckdb.DuckDBPyConnection, plan: _Plan) -> None:
    """The users-table fields of each user, encoded once per user rather than once per row."""
    names = [n for n, source in plan.user_sources.items() if source == "users"]
    codes = ", ".join(["t.idx"] + [f"COALESCE(v_{n}.idx, 0) AS f_{n}" for n in names])
    joins = "".join(f" LEFT JOIN v_{n} ON v_{n}.value = t.f_{n}" for n in names)
    con.execute(f"CREATE TABLE user_codes AS SELECT {codes} FROM user_table t{joins}")


# ---------------------------------------------------------------------------------------------
# Windows: vectorised over rows sorted by (user, time, file order)


def instant_bounds(user: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by (user, time): where each row's user starts, and where the run of
    its user's rows at its exact time starts (same-time rows are not behaviours)."""
    n = len(user)
    first_of_user = np.searchsorted(user, user, side="left")  # (N,)
    new_instant = np.ones(n, bool)
    new_instant[1:] = (user[1:] != user[:-1]) | (time[1:] != time[:-1])
    first_of_instant = np.maximum.accumulate(np.where(new_instant, np.arange(n), 0))  # (N,)
    return first_of_user, first_of_instant


def window_positions(
    positions: np.ndarray, begin: np.ndarray, end: np.ndarray, max_history: int
) -> tuple[np.ndarray, np.ndarray]:
    """The last `max_history` of the sorted `positions` within [begin, end) of each row, as
    (index (N, L) int64, length (N,) int32); columns at and after `length` are padding.
    Counting positions below a bound is a searchsorted, so any behaviours rule (all rows,
    clicked rows only) is just a different array of positions."""
    lo = np.searchsorted(positions, begin)  # (N,) first eligible position >= begin
    hi = np.searchsorted(positions, end)  # (N,) first eligible position >= end
    length = np.minimum(hi - lo, max_history).astype(np.int32)
    steps = np.arange(max_history)
    last = max(len(positions) - 1, 0)
    take = np.minimum((hi - length)[:, None] + steps[None, :], last)  # (N, L)
    index = positions[take] if len(positions) else np.zeros_like(take)
    return index, length


def history_windows(
    user: np.ndarray, time: np.ndarray, eligible: np.ndarray, max_history: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's behaviours among rows sorted by (user, time): the eligible rows of the same
    user with a strictly earlier time, the last `max_history` of them."""
    begin, end = instant_bounds(user, time)
    return window_positions(np.flatnonzero(eligible), begin, end, max_history)


def gather_history(item: np.ndarray, index: np.ndarray, length: np.ndarray) -> np.ndarray:
    steps = np.arange(index.shape[1])
    return np.where(steps[None, :] < length[:, None], item[index], PAD).astype(np.int32)


def _eligible(label: np.ndarray, behaviours: str) -> np.ndarray:
    return label == 1 if behaviours == "positive" else np.ones(len(label), bool)


def _bucket_columns(folder: Path) -> dict[str, np.ndarray]:
    """A bucket's rows, in any order."""
    table = pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("*.parquet"))])
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _sort_rows(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows sorted by (user, time, file order)."""
    order = np.lexsort((columns["row"], columns["tkey"], columns["user"]))  # (N,)
    return {name: values[order] for name, values in columns.items()}


def _bucket_samples(columns: dict[str, np.ndarray], schema: FeatureSchema) -> Batch:
    user, item, n = columns["user"], columns["item"], len(columns["user"])
    begin, end = instant_bounds(user, columns["tkey"])
    positions = np.flatnonzero(_eligible(columns["label"], schema.behaviours))
    hist = np.zeros((n, schema.max_history), np.int32)  # (N, L)
    hist_len = np.zeros(n, np.int32)
    # windowed in slices: the (rows, L) int64 positions are a bucket's memory peak
    for start in range(0, n, WINDOW_ROWS):
        rows = slice(start, start + WINDOW_ROWS)
        index, length = window_positions(positions, begin[rows], end[rows], schema.max_history)
        hist[rows], hist_len[rows] = gather_history(item, index, length), length
    return Batch(
        user=user.astype(np.int32),
        item=item.astype(np.int32),
        hist=hist,
        hist_len=hist_len,
        user_fields=_stack([columns[f"user.{s.name}"] for s in schema.user], n),
        context=_stack([columns[f"context.{s.name}"] for s in schema.context], n),
        label=columns["label"].astype(np.float32),
        timestamp=columns["timestamp"].astype(np.int64),
    )


def _latest_state(batch: Batch, schema: FeatureSchema) -> pa.Table:
    """Each user's live state at the end of the log, from a bucket's sorted rows: all of the
    user's rows can be behaviours, and each profile field's latest non-missing value."""
    starts = np.flatnonzero(np.r_[True, batch.user[1:] != batch.user[:-1]])  # (U_b,)
    ends = np.r_[starts[1:], len(batch)]  # (U_b,)
    positions = np.flatnonzero(_eligible(batch.label, schema.behaviours))
    index, length = window_positions(positions, starts, ends, schema.max_history)
    hist = gather_history(batch.item, index, length)  # (U_b, L)
    columns = {
        "user": pa.array(batch.user[starts], pa.int32()),
        "hist": pa.FixedSizeListArray.from_arrays(pa.array(hist.reshape(-1)), schema.max_history),
        "hist_len": pa.array(length, pa.int32()),
    }
    for j, spec in enumerate(schema.user):
        if spec in schema.profile_fields:
            codes = _latest_present(batch.user_fields[:, j], starts, ends)
            columns[f"user.{spec.name}"] = pa.array(codes, pa.int32())
    return pa.table(columns)


def _latest_present(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per user segment [start, end): the last non-missing code, or 0."""
    present = np.flatnonzero(codes != PAD)
    if not len(present):
        return np.zeros(len(starts), np.int32)
    last = present[np.maximum(np.searchsorted(present, ends) - 1, 0)]  # (U_b,) position
    found = (last >= starts) & (last < ends)
    return np.where(found, codes[last], PAD).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Writing and opening a samples folder


def _write_buckets(
    folder: Path,
    out: Path,
    schema_file: SchemaFile,
    vocab: Vocabulary,
    split_of_user: np.ndarray,
    progress: bool,
) -> dict:
    """Window each bucket; write its live state and its rows to the shards of their users'
    splits. Returns the shard list and the row counts, for meta.json."""
    written = {"shards": {s: [] for s in SPLITS}, "latest": []}
    item_counts = np.zeros(len(vocab.item_side), np.int64)  # (I+1,)
    for name in (*SPLITS, "latest"):
        (out / name).mkdir(parents=True, exist_ok=True)
    buckets = sorted(folder.glob("bucket=*"), key=lambda p: int(p.name.split("=")[1]))
    for path in tqdm(buckets, desc="buckets", unit="bucket", disable=not progress):
        shard, entries, fit_items = _write_bucket(path, out, schema_file, split_of_user)
        for name, entry in entries.items():
            written["shards"][name].append(entry)
        written["latest"].append(shard)
        item_counts += np.bincount(fit_items, minlength=len(item_counts))
    np.save(out / "item_counts.npy", item_counts)
    written["counts"] = {s: sum(rows for _, rows, _ in written["shards"][s]) for s in SPLITS}
    return written


def _write_bucket(
    path: Path, out: Path, schema_file: SchemaFile, split_of_user: np.ndarray
) -> tuple[str, dict[str, list], np.ndarray]:
    """One bucket, in its own frame so that its arrays are freed before the next is read."""
    bucket = int(path.name.split("=")[1])
    return write_bucket_rows(_bucket_columns(path), bucket, out, schema_file, split_of_user)


def write_bucket_rows(
    columns: dict[str, np.ndarray],
    bucket: int,
    out: Path,
    schema_file: SchemaFile,
    split_of_user: np.ndarray,
) -> tuple[str, dict[str, list], np.ndarray]:
    """Window a bucket's encoded rows (whole users, in any order; the columns _partition_rows
    writes) and write its live state and its split shards. Returns its shard name, its
    entries [file, rows, rows per row group] per split, and the items of its fit rows."""
    shard, schema = f"part-{bucket:05d}.parquet", schema_file.features
    columns = _sort_rows(columns)  # rebound, then deleted: a bucket's columns are big
    batch = _bucket_samples(columns, schema)
    del columns
    pq.write_table(_latest_state(batch, schema), out / "latest" / shard)
    rng = np.random.default_rng([schema_file.split.seed, bucket])
    entries, fit_items = {}, np.zeros(0, np.int32)
    for name, part in _split_rows(batch, split_of_user, rng):
        entries[name] = [shard, len(part), _write_shard(out / name / shard, part, schema)]
        fit_items = part.item if name == "fit" else fit_items
    return shard, entries, fit_items


def _split_rows(
    batch: Batch, split_of_user: np.ndarray, rng: np.random.Generator
) -> Iterator[tuple[str, Batch]]:
    """The bucket's non-empty splits, one at a time, each in a seeded order so that a row
    group mixes many users (the bucket is sorted by user)."""
    order = rng.permutation(len(batch))  # (N,)
    split = split_of_user[batch.user[order]]  # (N,)
    for code, name in enumerate(SPLITS):
        rows = order[split == code]
        if len(rows):
            yield name, batch.take(rows)


def _write_shard(path: Path, batch: Batch, schema: FeatureSchema) -> list[int]:
    table = batch_to_arrow(batch, schema)
    # no dictionaries: the index columns are near-unique per row group, so they only cost time
    pq.write_table(
        table, path, row_group_size=ROW_GROUP_ROWS, use_dictionary=False, compression="zstd"
    )
    metadata = pq.read_metadata(path)
    return [metadata.row_group(k).num_rows for k in range(metadata.num_row_groups)]


def _write_vocabulary(out: Path, vocab: Vocabulary) -> None:
    (out / "vocab").mkdir(parents=True, exist_ok=True)
    for name, values in vocab.fields.items():
        pq.write_table(
            pa.table({"value": pa.array(values, pa.string())}), out / "vocab" / f"{name}.parquet"
        )
    pq.write_table(pa.table({"value": pa.array(vocab.users, pa.string())}), out / "users.parquet")
    np.save(out / "item_side.npy", vocab.item_side)
    titles = pa.table({"item": list(vocab.titles), "title": list(vocab.titles.values())})
    pq.write_table(titles, out / "titles.parquet")


def _write_meta(
    out: Path, schema_file: SchemaFile, written: dict, valid_fraction: float, max_users, buckets
) -> None:
    data = schema_file.data
    meta = {
        "format": FORMAT,
        "schema": schema_file.features.to_dict(),
        "source": schema_file.source,
        "data": {k: str(v) if isinstance(v, Path) else v for k, v in vars(data).items()},
        "split": {"test_fraction": schema_file.split.test_fraction, "seed": schema_file.split.seed},
        "valid_fraction": valid_fraction,
        "max_users": max_users,
        "buckets": buckets,
        "row_group_rows": ROW_GROUP_ROWS,
        **written,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def open_samples(folder: Path) -> SampleSet:
    """Open a folder written by build_samples (in any process)."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder}: no samples here (meta.json missing); run build_samples")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{folder}: samples format {meta.get('format')}, expected {FORMAT}; rebuild"
        )
    schema = FeatureSchema.from_dict(meta["schema"], str(meta_path))
    return SampleSet(folder, schema, _read_vocabulary(folder, schema), meta)


def _read_vocabulary(folder: Path, schema: FeatureSchema) -> Vocabulary:
    names = [s.name for s in (*schema.item, *schema.user, *schema.context)]
    values = {name: _read_strings(folder / "vocab" / f"{name}.parquet") for name in names}
    titles = pq.read_table(folder / "titles.parquet")
    return Vocabulary(
        fields=values,
        users=_read_strings(folder / "users.parquet"),
        item_side=np.load(folder / "item_side.npy"),
        titles=dict(
            zip(titles.column("item").to_pylist(), titles.column("title").to_pylist(), strict=True)
        ),
    )


def _read_strings(path: Path) -> np.ndarray:
    column = pq.read_table(path).column("value")
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=str)


def main() -> None:
    import argparse

    from core.schema import load_schema_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("schema", type=Path, help="the schema YAML file")
    parser.add_argument("--out", type=Path, default=Path("artifacts/samples"))
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--check", action="store_true", help="validate the log only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    schema_file = load_schema_file(args.schema)
    if args.check:
        check_log(schema_file)
        log.info("%s: the log and side tables are usable", schema_file.data.log)
        return
    samples = build_samples(schema_file, args.out, max_users=args.max_users)
    log.info("built %s", {split: samples.count(split) for split in SPLITS})


if __name__ == "__main__":
    main()
