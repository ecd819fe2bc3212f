"""Samples built on Spark (local mode) are the single-machine builder's, row for row, and a bad
log is refused with the same errors. Skips where pyspark or Java is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java", allow_module_level=True)

from core.schema import load_schema_file
from export.logwriter import write_synthetic_log
from export.samples import SPLITS, LogError, SampleSet, build_samples
from export.spark_samples import build_samples_spark, start_spark
from tests.test_samples import BAD_LOGS, good_columns, make_schema, write

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")
# a short-lived JVM on tiny data: quick JIT, 2 shuffle partitions, no re-planning
TINY = {
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    "spark.sql.shuffle.partitions": "2",
    "spark.sql.adaptive.enabled": "false",
}


@pytest.fixture(scope="module")
def spark():
    session = start_spark("local[2]", "1g", TINY)
    yield session
    session.stop()


def sorted_rows(samples: SampleSet, split: str) -> np.ndarray:
    """(N, columns) int64: every column of every row, sorted by the whole row."""
    rows = samples.read(split)
    columns = [rows.user, rows.item, rows.hist_len, rows.label, rows.timestamp]
    matrix = np.column_stack(
        [np.asarray(c, np.int64) for c in columns] + [rows.hist, rows.user_fields, rows.context]
    ).astype(np.int64)
    return matrix[np.lexsort(matrix.T[::-1])]


def live_state(samples: SampleSet) -> dict:
    state = {}
    for users, histories, profile in samples.latest():
        for k, user in enumerate(users):
            state[user] = (histories[k], {name: values[k] for name, values in profile.items()})
    return state


def assert_same_samples(single: SampleSet, spark: SampleSet) -> None:
    assert spark.vocab.users.tolist() == single.vocab.users.tolist()
    assert list(spark.vocab.fields) == list(single.vocab.fields)
    for name, values in single.vocab.fields.items():
        assert spark.vocab.fields[name].tolist() == values.tolist(), name
    assert np.array_equal(spark.vocab.item_side, single.vocab.item_side)
    assert spark.vocab.titles == single.vocab.titles
    assert np.array_equal(spark.item_counts(), single.item_counts())
    for split in SPLITS:
        assert spark.count(split) == single.count(split), split
        assert np.array_equal(sorted_rows(spark, split), sorted_rows(single, split)), split
    assert live_state(spark) == live_state(single)


def test_spark_builds_the_single_machine_samples_of_a_synthetic_log(spark, tmp_path):
    schema_path = write_synthetic_log(
        tmp_path / "log", n_users=300, n_items=400, impressions_per_user=20, rows_per_file=2000
    )
    schema_file = load_schema_file(schema_path)
    single = build_samples(schema_file, tmp_path / "single", progress=False)
    built = build_samples_spark(schema_file, tmp_path / "spark", spark=spark, partitions=3)
    assert_same_samples(single, built)
    assert len(built.meta["shards"]["fit"]) == 3 and built.meta["engine"] == "spark"


def tied_log(folder: Path, suffix: str) -> None:
    """Two files whose rows tie in time within and across files: file order breaks the ties,
    for the histories and for the latest log value of an item's brand."""
    first = {
        "user": ["a", "a", "10", "9", "a", "b", "10"],
        "item": [1, 2, 3, 1, 4, 2, 5],
        "ts": [5, 5, 1, 7, 9, 3, 1],
        "y": [1, 1, 0, 1, 1, 1, 1],
        "brand": ["x", "p", None, "", "q", "r", "s"],
        "age": [30, None, 41, 20, 31, 50, 41],
        "hour": [1, 2, 3, 4, 5, 6, 7],
    }
    second = {
        "user": ["a", "b", "10", "a", "9", "b", "c"],
        "item": [2, 1, 2, 5, 4, 4, 1],
        "ts": [5, 3, 1, 9, 7, 8, 2],
        "y": [1, 0, 1, 0, 1, 1, 0],
        "brand": ["y", "z", "t", "u", None, "w", "v"],
        "age": [None, 51, 41, 31, 21, None, 60],
        "hour": [2, 3, 4, 5, 6, 7, 8],
    }
    if suffix == ".csv":
        write(folder / "log.csv", {k: first[k] + second[k] for k in first})
        return
    (folder / "events").mkdir()
    for name, columns in (("part-0.parquet", first), ("part-1.parquet", second)):
        write(
            folder / "events" / name, columns | {"ts": pa.array(columns["ts"], pa.timestamp("s"))}
        )
    write(folder / "users.parquet", {"user": ["a", "9", "zz"], "gender": ["F", "M", "F"]})
    write(
        folder / "items.parquet",
        {"item": [1, 2, 7], "cat": ["c1", None, "c7"], "t": ["A", "B", "G"]},
    )


TIED = {
    "parquet folder, positive, side tables": dict(
        log="events",
        items="items.parquet",
        users="users.parquet",
        item=("cat", "brand"),
        user=("user", "age", "gender"),
        context=("hour",),
        behaviours="positive",
        max_history=2,
        title="t",
    ),
    "csv, all behaviours, first users": dict(
        log="log.csv", item=("brand",), user=("age",), context=("hour",), max_history=3
    ),
}


@pytest.mark.parametrize("case", TIED, ids=list(TIED))
def test_spark_breaks_time_ties_by_file_order_like_the_single_builder(spark, tmp_path, case):
    options = TIED[case]
    tied_log(tmp_path, Path(options["log"]).suffix)
    schema_file = make_schema(tmp_path, **options)
    max_users = 3 if options["log"] == "log.csv" else None
    single = build_samples(schema_file, tmp_path / "single", progress=False, max_users=max_users)
    built = build_samples_spark(schema_file, tmp_path / "spark", spark=spark, max_users=max_users)
    assert_same_samples(single, built)
    assert len(built.vocab.users) == (3 if max_users else 5)


@pytest.mark.parametrize("case", ["missing column", "float id", "null user", "label 0.5"])
def test_a_bad_log_is_refused_naming_the_file_and_column(spark, tmp_path, case):
    change, file, message = BAD_LOGS[case]
    columns = {k: v for k, v in (good_columns() | change).items() if v is not None}
    write(tmp_path / "log.parquet", columns)
    with pytest.raises(LogError, match=f"{file}.*{message}"):
        build_samples_spark(make_schema(tmp_path, context=("hour",)), tmp_path / "out", spark=spark)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_a_bad_side_table_is_refused_naming_the_file_and_column(spark, tmp_path):
    write(tmp_path / "log.parquet", good_columns())
    write(tmp_path / "items.parquet", {"item": [1, 3, 3], "cat": ["x", "y", "z"]})
    schema_file = make_schema(tmp_path, items="items.parquet", item=("cat",))
    with pytest.raises(LogError, match=r"items.parquet: column 'item': duplicate key '3'"):
        build_samples_spark(schema_file, tmp_path / "out", spark=spark)
    with pytest.raises(LogError, match=r"nope.parquet: file not found"):
        build_samples_spark(
            make_schema(tmp_path, log="nope.parquet"), tmp_path / "out", spark=spark
        )
