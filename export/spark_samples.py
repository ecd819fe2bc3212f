"""Training samples built on Spark, for logs beyond one machine: the same samples as
export/samples.py's build_samples, row for row, in the same folder layout.

Spark reads and checks the log, builds the vocabularies and hash-partitions the rows by user.
Each partition then runs the single-machine builder's numpy windows and writes its own shards
{split}/part-NNNNN.parquet, so open_samples() and the trainers read the folder unchanged. The
log and the output folder must be paths that the driver and every executor see (local mode:
this machine's disk; a cluster: a shared mount).

    python -m export.spark_samples examples/synthetic.yaml --out artifacts/samples
    python -m export.spark_samples schema.yaml --out /shared/samples --master spark://host:7077
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial, reduce
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from py4j.protocol import Py4JError
from pyspark import TaskContext
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType

from core.schema import SchemaFile
from export.samples import (
    ROWS_PER_BUCKET,
    SPLITS,
    LogError,
    SampleSet,
    Vocabulary,
    _clear_outputs,
    _log_features,
    _Plan,
    _refuse_type,
    _require,
    _Table,
    _write_meta,
    _write_vocabulary,
    assign_splits,
    data_files,
    open_samples,
    plan_columns,
    refuse_bad_rows,
    write_bucket_rows,
)

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[*]"
SMALL_CONF = {
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}
# DuckDB's names for Spark's types, so that the single builder's checks and messages apply
DUCK_TYPES = {
    "string": "VARCHAR", "tinyint": "TINYINT", "smallint": "SMALLINT", "int": "INTEGER",
    "bigint": "BIGINT", "float": "FLOAT", "double": "DOUBLE", "boolean": "BOOLEAN",
    "date": "DATE", "timestamp": "TIMESTAMP WITH TIME ZONE", "timestamp_ntz": "TIMESTAMP",
    "binary": "BLOB",
}  # fmt: skip
# the file order that breaks ties of a user's rows at one time: (file, split, row in split)
FILE_ORDER = ("_f", "_b", "_m")
# what each partition reports per shard it wrote, for meta.json and item_counts.npy
REPORT = pa.schema([
    ("split", pa.string()), ("shard", pa.string()), ("rows", pa.int64()),
    ("groups", pa.list_(pa.int64())), ("items", pa.list_(pa.int32())),
    ("counts", pa.list_(pa.int64())),
])  # fmt: skip
REPORT_DDL = (
    "split string, shard string, rows bigint, groups array<bigint>, items array<int>, "
    "counts array<bigint>"
)


def start_spark(
    master: str = "local[2]", driver_memory: str = "1g", conf: dict[str, str] | None = None
) -> SparkSession:
    """A Spark session with small defaults (no UI, 4 shuffle partitions); `conf` overrides."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this venv's packages
    builder = SparkSession.builder.master(master).appName("din-samples")
    settings = SMALL_CONF | {"spark.driver.memory": driver_memory}
    if master.startswith("local"):  # a machine whose hostname resolves oddly still starts
        settings |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    for key, value in (settings | (conf or {})).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def build_samples_spark(
    schema_file: SchemaFile,
    out: Path,
    *,
    valid_fraction: float = 0.1,
    max_users: int | None = None,
    spark: SparkSession | None = None,
    partitions: int | None = None,
    master: str = DEFAULT_MASTER,
) -> SampleSet:
    """build_samples on Spark: check the log, then write the same samples, vocabularies and
    live state into `out`. Without `spark`, a session on `master` is started and stopped.
    `partitions`: shards per split (default: one per million log rows)."""
    own = spark is None
    spark = spark or start_spark(master)
    try:
        with _utc(spark):
            return _build(spark, schema_file, Path(out), valid_fraction, max_users, partitions)
    finally:
        if own:
            spark.stop()


@contextmanager
def _utc(spark: SparkSession) -> Iterator[None]:
    """Naive timestamps count as UTC, as in DuckDB's epoch_us."""
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    try:
        yield
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)


def _build(
    spark: SparkSession,
    schema_file: SchemaFile,
    out: Path,
    valid_fraction: float,
    max_users: int | None,
    partitions: int | None,
) -> SampleSet:
    frames, plan, file_ranks = read_checked_log(spark, schema_file)
    _clear_outputs(out)  # only once the log is known to be usable
    rows = _log_rows(spark, frames["log"], plan, schema_file, file_ranks)
    if max_users is not None:
        rows = _first_users(spark, rows, max_users)
    vocab, user_codes, n_rows = _vocabulary(rows, frames, plan, schema_file)
    split_of_user = assign_splits(len(vocab.users), schema_file.split, valid_fraction)
    n_parts = partitions or max(1, math.ceil(n_rows / ROWS_PER_BUCKET))
    job = _WindowJob(schema_file, out, plan, vocab, user_codes, split_of_user)
    written = _write_partitions(spark, rows, n_parts, job)
    _write_vocabulary(out, vocab)
    _write_meta(out, schema_file, written, valid_fraction, max_users, n_parts)
    log.info("samples in %s: %s", out, written["counts"])
    return open_samples(out)


# ---------------------------------------------------------------------------------------------
# Reading and checking: the single builder's rules and messages, on Spark's column types


def read_checked_log(
    spark: SparkSession, schema_file: SchemaFile
) -> tuple[dict[str, DataFrame], _Plan, dict[str, int]]:
    """The log and side tables as DataFrames, the plan, and each log file's rank in file order
    (keyed by Spark's file path); raises LogError naming the file and the column."""
    data = schema_file.data
    frames, tables = {}, {}
    for name, path in (("log", data.log), ("items", data.items), ("users", data.users)):
        if path is not None:
            frames[name], tables[name] = _read_table(spark, path)
    plan = plan_columns(schema_file, tables["log"], tables.get("items"), tables.get("users"))
    paths = _check_log_values(frames["log"], plan, schema_file)
    for name, key in (("items", data.item), ("users", data.user)):
        if name in frames:
            _check_side_table(frames[name], tables[name], key, name[:-1])
    return frames, plan, _file_ranks(data.log, paths)


def _read_table(spark: SparkSession, path: Path) -> tuple[DataFrame, _Table]:
    if not path.exists():
        raise LogError(f"{path}: file not found")
    kind, files = data_files(path)
    try:
        if kind == "csv":
            frame = spark.read.options(header=True, inferSchema=True).csv(str(path))
        else:
            frame = spark.read.parquet(*(str(f) for f in files))
    except (PySparkException, Py4JError) as error:
        raise LogError(f"{path}: cannot read the file: {error}") from error
    columns = {f.name: duck_type(f.dataType) for f in frame.schema.fields}
    return frame, _Table(path, "", columns)


def duck_type(spark_type: DataType) -> str:
    name = spark_type.simpleString()
    return name.upper() if name.startswith("decimal") else DUCK_TYPES.get(name, name.upper())


def _null_test(frame: DataFrame, table: _Table, column: str) -> Column:
    test = frame[column].isNull()
    return test | (frame[column] == "") if table.type_of(column) == "VARCHAR" else test


def _check_log_values(frame: DataFrame, plan: _Plan, schema_file: SchemaFile) -> list[str]:
    """Null ids, times and labels, and labels other than 0/1, in one pass over the log, which
    also lists its files."""
    data, table = schema_file.data, plan.log
    nulls = {c: _null_test(frame, table, c) for c in (data.user, data.item, data.time, data.label)}
    if plan.time_kind == "float":
        nulls[data.time] |= F.isnan(frame[data.time].cast("double"))
    label = frame[data.label]
    bad_label = F.first(F.when(~label.cast("double").isin(0, 1), label), ignorenulls=True)
    aggregates = [F.count(F.lit(1)), *map(F.count_if, nulls.values()), bad_label]
    try:
        n_rows, *row, paths = frame.agg(*aggregates, F.collect_set("_metadata.file_path")).first()
    except (PySparkException, Py4JError) as error:
        raise LogError(f"{table.path}: cannot read the rows: {error}") from error
    refuse_bad_rows(
        table.path, data.label, n_rows, dict(zip(nulls, row[:-1], strict=True)), row[-1]
    )
    return paths


def _check_side_table(frame: DataFrame, table: _Table, key: str, what: str) -> None:
    """Null keys, then the smallest duplicated key, in one job."""
    if _require(table, key, f"{what} id") not in ("string", "integer"):
        raise _refuse_type(table, key, "ids must be string or integer")
    null = _null_test(frame, table, key).alias("null")
    keys = frame.groupBy(null, frame[key].cast("string").alias("k")).count()
    duplicated = F.when(~F.col("null") & (F.col("count") > 1), F.col("k"))
    any_null, duplicate = keys.agg(F.max("null"), F.min(duplicated)).first()
    if any_null:
        raise LogError(f"{table.path}: column {key!r}: null keys (must not be null)")
    if duplicate is not None:
        raise LogError(f"{table.path}: column {key!r}: duplicate key {duplicate!r}")


def _file_ranks(log_path: Path, spark_paths: list[str]) -> dict[str, int]:
    """Spark's file path (a URI) -> the file's place among the log's sorted files."""
    _, files = data_files(log_path)
    order = {os.path.abspath(f): k for k, f in enumerate(files)}
    return {uri: order[os.path.abspath(unquote(urlparse(uri).path))] for uri in spark_paths}


# ---------------------------------------------------------------------------------------------
# Rows: text ids and values, sort keys, file order


def _log_rows(
    spark: SparkSession,
    frame: DataFrame,
    plan: _Plan,
    schema_file: SchemaFile,
    file_ranks: dict[str, int],
) -> DataFrame:
    """The log as _u, _i (text ids), _t (time sort key), _ts (epoch seconds), _y, the file
    order, and f_<name> (text values, "" as null) of the fields read from the log."""
    data = schema_file.data
    key, seconds = _time_columns(frame[data.time], plan.time_kind)
    columns = [
        frame[data.user].cast("string").alias("_u"),
        frame[data.item].cast("string").alias("_i"),
        key.alias("_t"),
        seconds.alias("_ts"),
        frame[data.label].cast("float").alias("_y"),
        F.col("_metadata.file_path").alias("_path"),
        F.col("_metadata.file_block_start").alias("_b"),
        F.monotonically_increasing_id().alias("_m"),  # increases along a split's rows
    ]
    columns += [_text(frame[n]).alias(f"f_{n}") for n in _log_features(plan, schema_file.features)]
    ranks = spark.createDataFrame(list(file_ranks.items()), "_path string, _f int")
    return frame.select(*columns).join(F.broadcast(ranks), "_path").drop("_path")


def _time_columns(column: Column, kind: str) -> tuple[Column, Column]:
    """(sort key, epoch seconds), as the single builder's _time_sql."""
    if kind == "integer":
        return column.cast("bigint"), column.cast("bigint")
    if kind == "float":
        return column.cast("double"), F.floor(column)
    if kind == "date":
        days = F.unix_date(column).cast("bigint")
        return days * 86_400_000_000, days * 86_400
    micros = F.unix_micros(column.cast("timestamp"))
    return micros, F.floor(micros / 1e6)


def _text(column: Column) -> Column:
    """Raw values as text exactly as written ("25" for an integer); "" counts as missing."""
    text = column.cast("string")
    return F.when(text != "", text)


def _first_users(spark: SparkSession, rows: DataFrame, max_users: int) -> DataFrame:
    kept = rows.select("_u").distinct().orderBy("_u").limit(max_users).toArrow()
    return rows.join(F.broadcast(spark.createDataFrame(kept)), "_u")


def _side_frame(frame: DataFrame, key: str, columns: list[str], title: str | None) -> DataFrame:
    select = [frame[key].cast("string").alias("_k")]
    select += [_text(frame[c]).alias(f"f_{c}") for c in columns]
    if title is not None:
        select.append(_text(frame[title]).alias("_title"))
    return frame.select(*select)


# ---------------------------------------------------------------------------------------------
# Vocabularies: collected on the driver, sorted as numpy sorts str


def _vocabulary(
    rows: DataFrame, frames: dict[str, DataFrame], plan: _Plan, schema_file: SchemaFile
) -> tuple[Vocabulary, dict[str, np.ndarray], int]:
    """The vocabularies, each user's codes of the users-table fields, and the row count."""
    schema = schema_file.features
    users_table = _user_table(rows, frames, plan, schema_file)
    items_table = _item_table(rows, frames, plan, schema_file)
    users = _strings(users_table.column("_u"))
    items = _strings(items_table.column("_i"))
    values = {schema.item_field.name: _with_pad(items)}
    for spec in schema.side_fields:
        values[spec.name] = _distinct(items_table.column(f"f_{spec.name}"))
    logged = [n for n, source in plan.user_sources.items() if source == "log"]
    values |= _log_values(rows, logged + [spec.name for spec in schema.context])
    user_codes = {}
    for name, source in plan.user_sources.items():
        if source == "id":
            values[name] = _with_pad(users)
        elif source == "users":
            values[name] = _distinct(users_table.column(f"f_{name}"))
            user_codes[name] = encode(users_table.column(f"f_{name}"), values[name])
    values = {s.name: values[s.name] for s in (*schema.item, *schema.user, *schema.context)}
    item_side = _item_side(items_table, values, schema_file)
    titles = _titles(items_table) if schema_file.data.title else {}
    log.info("vocabularies: %d users, %d items", len(users), len(items))
    n_rows = int(pc.sum(users_table.column("_n")).as_py())
    return Vocabulary(values, users, item_side, titles), user_codes, n_rows


def _user_table(
    rows: DataFrame, frames: dict[str, DataFrame], plan: _Plan, schema_file: SchemaFile
) -> pa.Table:
    """One row per log user, sorted: its row count and its users-table field values."""
    table = rows.groupBy("_u").agg(F.count(F.lit(1)).alias("_n"))
    names = [n for n, source in plan.user_sources.items() if source == "users"]
    if names:
        side = _side_frame(frames["users"], schema_file.data.user, names, None)
        table = table.join(side, table["_u"] == side["_k"], "left").drop("_k")
    return _sorted(table.toArrow(), "_u")


def _item_table(
    rows: DataFrame, frames: dict[str, DataFrame], plan: _Plan, schema_file: SchemaFile
) -> pa.Table:
    """One row per log item, sorted: its side values from the items table, else its latest
    non-null value in the log (by time, then file order), and its title."""
    data, side = schema_file.data, [s.name for s in schema_file.features.side_fields]
    from_log = [n for n in side if plan.item_sources[n] == "log"]
    order = F.struct("_t", *FILE_ORDER)
    latest = [
        F.max_by(f"f_{n}", F.when(F.col(f"f_{n}").isNotNull(), order)).alias(f"f_{n}")
        for n in from_log
    ]
    table = rows.groupBy("_i").agg(*latest) if latest else rows.select("_i").distinct()
    if plan.items is not None:
        from_items = [n for n in side if plan.item_sources[n] == "items"]
        extra = _side_frame(frames["items"], data.item, from_items, data.title)
        table = table.join(extra, table["_i"] == extra["_k"], "left").drop("_k")
    return _sorted(table.toArrow(), "_i")


def _log_values(rows: DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """The distinct values of the fields read row by row from the log, in one job."""
    if not names:
        return {}
    parts = [rows.select(F.lit(n).alias("field"), F.col(f"f_{n}").alias("value")) for n in names]
    distinct = reduce(DataFrame.unionByName, parts).where("value IS NOT NULL").distinct()
    found = distinct.toArrow()
    fields = _strings(found.column("field"))
    values = _strings(found.column("value"))
    return {n: _with_pad(np.unique(values[fields == n])) for n in names}


def _item_side(table: pa.Table, values: dict[str, np.ndarray], schema_file: SchemaFile):
    side = schema_file.features.side_fields
    item_side = np.zeros((table.num_rows + 1, 1 + len(side)), np.int32)  # (I+1, n_item_fields)
    item_side[1:, 0] = np.arange(1, table.num_rows + 1)
    for j, spec in enumerate(side, start=1):
        item_side[1:, j] = encode(table.column(f"f_{spec.name}"), values[spec.name])
    return item_side


def _titles(table: pa.Table) -> dict[str, str]:
    present = table.filter(pc.is_valid(table.column("_title")))
    return dict(
        zip(present.column("_i").to_pylist(), present.column("_title").to_pylist(), strict=True)
    )


def _sorted(table: pa.Table, column: str) -> pa.Table:
    return table.take(pc.sort_indices(table, [(column, "ascending")]))  # bytewise, as numpy


def _strings(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=str)


def _distinct(column: pa.ChunkedArray) -> np.ndarray:
    present = pc.drop_null(column)
    return _with_pad(np.unique(_strings(present)) if len(present) else np.zeros(0, str))


def _with_pad(values: np.ndarray) -> np.ndarray:
    return np.concatenate([np.array([""]), values])  # index 0 is padding / missing


def encode(values: pa.ChunkedArray | pa.Array, vocabulary: np.ndarray) -> np.ndarray:
    """(N,) int32 codes of raw values in a vocabulary whose [0] is padding; null -> 0."""
    index = pc.index_in(values, value_set=pa.array(vocabulary[1:], pa.string()))
    return pc.fill_null(pc.add(index, 1), 0).to_numpy().astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Windows: each partition holds whole users and runs the single builder's numpy code


@dataclass
class _WindowJob:
    """What every partition needs, broadcast once."""

    schema_file: SchemaFile
    out: Path
    plan: _Plan
    vocab: Vocabulary
    user_codes: dict[str, np.ndarray]  # users-table field -> (U,) codes
    split_of_user: np.ndarray  # (U,) int8


def _write_partitions(spark: SparkSession, rows: DataFrame, n_parts: int, job: _WindowJob) -> dict:
    """Hash-partition the rows by user, window and write each partition where it runs; return
    the shard list, the live-state shards and the counts, for meta.json."""
    for name in (*SPLITS, "latest"):
        (job.out / name).mkdir(parents=True, exist_ok=True)
    shared = spark.sparkContext.broadcast(job)
    try:
        report = (
            rows.repartition(n_parts, "_u")
            .mapInArrow(partial(_window_partition, shared), REPORT_DDL)
            .toArrow()
        )
    finally:
        shared.unpersist()
    written, item_counts = _summarise(report, len(job.vocab.item_side))
    np.save(job.out / "item_counts.npy", item_counts)
    return written


def _window_partition(shared, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    job: _WindowJob = shared.value
    batches = list(batches)
    if not sum(batch.num_rows for batch in batches):
        return
    table = pa.Table.from_batches(batches)
    bucket = TaskContext.get().partitionId()
    columns = _encode_rows(table, job)
    shard, entries, fit_items = write_bucket_rows(
        columns, bucket, job.out, job.schema_file, job.split_of_user
    )
    yield _report(shard, entries, fit_items)


def _encode_rows(table: pa.Table, job: _WindowJob) -> dict[str, np.ndarray]:
    """A partition's rows as the single builder's bucket columns."""
    schema, values = job.schema_file.features, job.vocab.fields
    user = encode(table.column("_u"), _with_pad(job.vocab.users)) - 1  # (N,) from 0
    columns = {
        "user": user,
        "item": encode(table.column("_i"), values[schema.item_field.name]),
        "tkey": table.column("_t").to_numpy(),
        "timestamp": table.column("_ts").to_numpy(),
        "label": table.column("_y").to_numpy(),
        "row": _file_order(table),
    }
    for spec in schema.user:
        source = job.plan.user_sources[spec.name]
        if source == "id":
            codes = user + 1
        elif source == "users":
            codes = job.user_codes[spec.name][user]
        else:
            codes = encode(table.column(f"f_{spec.name}"), values[spec.name])
        columns[f"user.{spec.name}"] = codes
    for spec in schema.context:
        columns[f"context.{spec.name}"] = encode(table.column(f"f_{spec.name}"), values[spec.name])
    return columns


def _file_order(table: pa.Table) -> np.ndarray:
    """(N,) int64 rank of each row in file order within the partition."""
    keys = [table.column(name).to_numpy() for name in reversed(FILE_ORDER)]
    rank = np.empty(table.num_rows, np.int64)
    rank[np.lexsort(keys)] = np.arange(table.num_rows)
    return rank


def _report(shard: str, entries: dict[str, list], fit_items: np.ndarray) -> pa.RecordBatch:
    """One row per shard written: the live state's, then each split's with its row count, its
    row group sizes and, for fit, its items' counts (sparse: a partition holds few items)."""
    items, counts = np.unique(fit_items, return_counts=True)
    rows = [("latest", shard, 0, [], [], [])]
    for split, (_, n, groups) in entries.items():
        fit = split == "fit"
        rows.append((split, shard, n, groups, items if fit else [], counts if fit else []))
    columns = zip(*rows, strict=True)
    return pa.RecordBatch.from_arrays(
        [pa.array(list(c), f.type) for c, f in zip(columns, REPORT, strict=True)], schema=REPORT
    )


def _summarise(report: pa.Table, n_items: int) -> tuple[dict, np.ndarray]:
    """meta.json's shards, latest and counts, and item_counts, from the partitions' reports."""
    rows = sorted(report.to_pylist(), key=lambda r: r["shard"])
    written = {"shards": {s: [] for s in SPLITS}, "latest": []}
    item_counts = np.zeros(n_items, np.int64)  # (I+1,)
    for row in rows:
        if row["split"] == "latest":
            written["latest"].append(row["shard"])
            continue
        written["shards"][row["split"]].append([row["shard"], row["rows"], row["groups"]])
        np.add.at(item_counts, np.array(row["items"], np.int64), np.array(row["counts"]))
    written["counts"] = {s: sum(n for _, n, _ in written["shards"][s]) for s in SPLITS}
    written["engine"] = "spark"
    return written, item_counts


def main() -> None:
    import argparse

    from core.schema import load_schema_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("schema", type=Path, help="the schema YAML file")
    parser.add_argument("--out", type=Path, default=Path("artifacts/samples"))
    parser.add_argument("--master", default=DEFAULT_MASTER, help="Spark master URL")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--partitions", type=int, default=None, help="shards per split")
    parser.add_argument("--max-users", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spark = start_spark(args.master, args.driver_memory)
    try:
        samples = build_samples_spark(
            load_schema_file(args.schema),
            args.out,
            max_users=args.max_users,
            spark=spark,
            partitions=args.partitions,
        )
    finally:
        spark.stop()
    log.info("built %s", {split: samples.count(split) for split in SPLITS})


if __name__ == "__main__":
    main()
