"""Samples from a user's own log: the paper's protocol, the splits, side tables, streaming, the
live state, refusing bad data, and the MovieLens preparer."""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from core.schema import SchemaFile, load_schema_file, parse_schema_file
from export import samples as samples_module
from export.logwriter import write_synthetic_log
from export.movielens import prepare_movielens
from export.samples import (
    SPLITS,
    LogError,
    SampleSet,
    build_samples,
    check_log,
    concat_batches,
    history_windows,
    open_samples,
)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def write(path: Path, columns: dict) -> Path:
    table = pa.table(columns)
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def make_schema(
    folder: Path,
    *,
    log: str = "log.parquet",
    items: str | None = None,
    users: str | None = None,
    item: tuple[str, ...] = (),
    user: tuple[str, ...] = (),
    context: tuple[str, ...] = (),
    max_history: int = 50,
    behaviours: str = "all",
    test_fraction: float = 0.2,
    seed: int = 0,
    title: str | None = None,
) -> SchemaFile:
    columns = {"user": "user", "item": "item", "time": "ts", "label": "y"}
    data = {"log": log, "columns": columns | ({"title": title} if title else {})}
    data |= {k: v for k, v in (("items", items), ("users", users)) if v}
    spec = lambda names: [{"name": n, "dim": 4} for n in names]  # noqa: E731
    raw = {
        "data": data,
        "features": {"item": spec(("item", *item)), "user": spec(user), "context": spec(context)},
        "history": {"max_length": max_history, "behaviours": behaviours},
        "split": {"test_fraction": test_fraction, "seed": seed},
    }
    return parse_schema_file(raw, str(folder / "schema.yaml"), folder)


def build(folder: Path, schema_file: SchemaFile, **options) -> SampleSet:
    return build_samples(schema_file, folder / "out", progress=False, **options)


def every_row(samples: SampleSet):
    return concat_batches([samples.read(split) for split in SPLITS])


def histories(samples: SampleSet) -> dict[tuple[str, str], list[str]]:
    """(raw user, raw item) -> the row's behaviours as raw item ids."""
    rows, items = every_row(samples), samples.vocab.fields[samples.schema.item_field.name]
    found = {}
    for k in range(len(rows)):
        key = (str(samples.vocab.users[rows.user[k]]), str(items[rows.item[k]]))
        found[key] = items[rows.hist[k, : rows.hist_len[k]]].tolist()
        assert (rows.hist[k, rows.hist_len[k] :] == 0).all()
    return found


def tiny_log(folder: Path, name: str = "log.parquet", **extra) -> Path:
    return write(
        folder / name,
        {
            "user": ["a"] * 5 + ["b"] * 3,
            "item": [1, 2, 3, 4, 5, 2, 3, 9],
            "ts": [10, 20, 20, 30, 40, 5, 6, 7],
            "y": [1, 0, 1, 0, 1, 0, 1, 1],
            **extra,
        },
    )


def test_behaviours_are_strictly_earlier_rows_oldest_first_capped(tmp_path):
    tiny_log(tmp_path)
    found = histories(build(tmp_path, make_schema(tmp_path, max_history=2)))
    assert found[("a", "1")] == []
    assert found[("a", "2")] == ["1"] and found[("a", "3")] == ["1"]  # same instant excluded
    assert found[("a", "4")] == ["2", "3"]
    assert found[("a", "5")] == ["3", "4"]  # the last 2, most recent last
    assert found[("b", "9")] == ["2", "3"]


def test_positive_behaviours_count_only_clicked_rows(tmp_path):
    tiny_log(tmp_path)
    found = histories(build(tmp_path, make_schema(tmp_path, behaviours="positive")))
    assert found[("a", "2")] == ["1"] and found[("a", "4")] == ["1", "3"]
    assert found[("a", "5")] == ["1", "3"] and found[("b", "9")] == ["3"]
    capped = histories(build(tmp_path, make_schema(tmp_path, behaviours="positive", max_history=1)))
    assert capped[("a", "5")] == ["3"] and capped[("a", "1")] == []


@pytest.mark.parametrize("positive", [False, True])
def test_vectorised_windows_match_a_row_by_row_reference(positive):
    rng = np.random.default_rng(3)
    user = np.sort(rng.integers(0, 20, 600))
    time = rng.integers(0, 15, 600)
    order = np.lexsort((time, user))
    user, time = user[order], time[order]
    eligible = rng.random(600) < 0.5 if positive else np.ones(600, bool)
    index, length = history_windows(user, time, eligible, 4)
    for k in range(600):
        earlier = [
            j for j in range(600) if user[j] == user[k] and time[j] < time[k] and eligible[j]
        ]
        expected = earlier[-4:]
        assert index[k, : length[k]].tolist() == expected


def test_split_is_by_user_seeded_and_disjoint(tmp_path):
    users = [f"u{k:03d}" for k in range(300)]
    write(
        tmp_path / "log.parquet",
        {"user": users * 2, "item": ["x", "y"] * 300, "ts": [1] * 600, "y": [0, 1] * 300},
    )
    samples = build(tmp_path, make_schema(tmp_path, seed=5), valid_fraction=0.1)
    held = {s: set(samples.vocab.users[samples.read(s).user].tolist()) for s in SPLITS}
    assert not held["fit"] & held["valid"] and not held["fit"] & held["test"]
    assert not held["valid"] & held["test"] and set().union(*held.values()) == set(users)
    expected_test = set(np.array(users)[np.random.default_rng(5).permutation(300)[:60]].tolist())
    assert held["test"] == expected_test and len(held["valid"]) == 24
    assert samples.count("test") == 120 and samples.count("fit") == 2 * len(held["fit"])
    other = build(tmp_path, make_schema(tmp_path, seed=6))
    assert set(other.vocab.users[other.read("test").user].tolist()) != held["test"]


def test_max_users_keeps_the_first_user_ids(tmp_path):
    tiny_log(tmp_path)
    samples = build(tmp_path, make_schema(tmp_path), max_users=1)
    assert samples.vocab.users.tolist() == ["a"] and len(every_row(samples)) == 5


def test_item_side_values_from_items_table_else_latest_in_log(tmp_path):
    tiny_log(
        tmp_path,
        cat=["q"] * 8,  # ignored: the items table has cat
        brand=["b1", "old", "b3", "b4", "b5", "new", "b3", None],  # item 2: "new" is latest
    )
    write(
        tmp_path / "items.parquet",
        {"item": [1, 2, 3, 4, 5, 7], "cat": ["D", "C", "D", None, "C", "X"]},
    )
    schema = make_schema(tmp_path, items="items.parquet", item=("cat", "brand"))
    vocab = build(tmp_path, schema).vocab
    side = {
        item: [
            vocab.fields[f][vocab.item_side[k, j]] for j, f in enumerate(("item", "cat", "brand"))
        ]
        for k, item in enumerate(vocab.fields["item"])
    }
    assert side["1"] == ["1", "D", "b1"] and side["2"] == ["2", "C", "old"]
    assert side["4"] == ["4", "", "b4"]  # null in the items table: missing
    assert side["9"] == ["9", "", ""]  # not in the items table, null brand in the log
    assert vocab.fields["cat"].tolist() == ["", "C", "D"]  # only values of items in the log
    assert vocab.item_side[0].tolist() == [0, 0, 0]


def test_latest_log_value_breaks_time_ties_by_file_order(tmp_path):
    tiny_log(tmp_path, brand=["b1", "x", "y", "b4", "b5", "z", "b3", None])
    vocab = build(tmp_path, make_schema(tmp_path, item=("brand",))).vocab
    item2 = vocab.fields["item"].tolist().index("2")
    assert vocab.fields["brand"][vocab.item_side[item2, 1]] == "x"  # t=20 (a) beats t=5 (b)


def test_user_fields_from_log_rows_else_users_table_and_the_user_id_field(tmp_path):
    tiny_log(tmp_path, age=[30, 30, 31, None, 31, 20, 20, 21])
    write(tmp_path / "users.parquet", {"user": ["a", "c"], "age": [99, 98], "gender": ["F", "M"]})
    schema = make_schema(tmp_path, users="users.parquet", user=("user", "age", "gender"))
    assert schema.features.user_id_field == "user"
    samples = build(tmp_path, schema)
    rows, fields = every_row(samples), samples.vocab.fields
    decoded = {
        name: fields[name][rows.user_fields[:, j]]
        for j, name in enumerate(("user", "age", "gender"))
    }
    assert (decoded["user"] == samples.vocab.users[rows.user]).all()
    assert (rows.user_fields[:, 0] == rows.user + 1).all()
    by_time = dict(zip(rows.timestamp.tolist(), decoded["age"].tolist(), strict=True))
    assert by_time[10] == "30" and by_time[30] == "" and by_time[7] == "21"  # the row's own value
    gender = dict(
        zip(samples.vocab.users[rows.user].tolist(), decoded["gender"].tolist(), strict=True)
    )
    assert gender == {"a": "F", "b": ""}  # b has no users-table row: missing
    assert fields["gender"].tolist() == ["", "F"] and "99" not in fields["age"]


def test_context_fields_per_row_and_missing_values_are_zero(tmp_path):
    tiny_log(tmp_path, hour=["1", "", None, "4", "5", "1", "7", "8"], vip=[True, False] * 4)
    samples = build(tmp_path, make_schema(tmp_path, context=("hour", "vip")))
    rows = every_row(samples)
    hour = dict(
        zip(
            rows.timestamp.tolist(),
            samples.vocab.fields["hour"][rows.context[:, 0]].tolist(),
            strict=True,
        )
    )
    assert hour[10] == "1" and hour[5] == "1" and hour[30] == "4"
    assert rows.context[rows.timestamp == 20, 0].tolist() == [0, 0]  # "" and null
    assert samples.vocab.fields["vip"].tolist() == ["", "false", "true"]


def test_timestamps_become_epoch_seconds(tmp_path):
    stamps = pa.array([0, 1_500, 1_500, 90_000_000], pa.timestamp("ms"))
    write(
        tmp_path / "log.parquet",
        {
            "user": ["a"] * 4,
            "item": ["1", "2", "3", "4"],
            "ts": stamps,
            "y": [True, False, True, True],
        },
    )
    samples = build(tmp_path, make_schema(tmp_path))
    rows = every_row(samples)
    assert sorted(rows.timestamp.tolist()) == [0, 1, 1, 90_000]
    found = histories(samples)
    assert found[("a", "3")] == ["1"] and found[("a", "4")] == ["1", "2", "3"]


def test_csv_parquet_and_a_folder_give_identical_samples(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    columns = {
        "user": rng.integers(0, 40, n),
        "item": np.char.add("i", rng.integers(0, 30, n).astype(str)),
        "ts": rng.integers(0, 50, n),
        "y": rng.integers(0, 2, n),
        "hour": rng.integers(0, 24, n),
    }
    write(tmp_path / "log.parquet", columns)
    write(tmp_path / "log.csv", columns)
    (tmp_path / "parts").mkdir()
    for k, rows in enumerate(np.array_split(np.arange(n), 3)):
        write(
            tmp_path / "parts" / f"p{k}.parquet",
            {name: values[rows] for name, values in columns.items()},
        )
    built = []
    for log in ("log.parquet", "log.csv", "parts"):
        schema = make_schema(tmp_path, log=log, context=("hour",), max_history=5)
        built.append(build_samples(schema, tmp_path / f"out-{log}", progress=False, buckets=2))
    for other in built[1:]:
        for name in built[0].vocab.fields:
            assert built[0].vocab.fields[name].tolist() == other.vocab.fields[name].tolist()
        for split in SPLITS:
            first, second = built[0].read(split), other.read(split)
            for column in ("user", "item", "hist", "hist_len", "context", "label", "timestamp"):
                assert np.array_equal(getattr(first, column), getattr(second, column)), column


def streaming_samples(tmp_path, monkeypatch) -> SampleSet:
    monkeypatch.setattr(samples_module, "ROW_GROUP_ROWS", 16)
    n = 1000
    users = np.repeat(np.arange(100), 10)
    write(
        tmp_path / "log.parquet",
        {"user": users, "item": np.arange(n) % 37, "ts": np.arange(n), "y": np.arange(n) % 2},
    )
    return build(tmp_path, make_schema(tmp_path, max_history=3), buckets=4)


def stream_keys(samples, **options) -> list[int]:
    batches = list(samples.batches("fit", 50, **options))
    assert all(len(b) == 50 for b in batches[:-1]) and all(len(b) for b in batches)
    return np.concatenate([b.timestamp for b in batches]).tolist()  # timestamps are row ids


def test_batches_stream_every_row_once_deterministic_per_seed(tmp_path, monkeypatch):
    samples = streaming_samples(tmp_path, monkeypatch)
    everything = samples.read("fit").timestamp.tolist()
    assert len(everything) == samples.count("fit") > 500
    assert (
        len(
            pq.ParquetFile(next((tmp_path / "out" / "fit").glob("*.parquet"))).metadata.to_dict()[
                "row_groups"
            ]
        )
        > 1
    )
    assert stream_keys(samples) == everything  # no seed: file order
    shuffled = stream_keys(samples, seed=1)
    assert sorted(shuffled) == sorted(everything) and shuffled != everything
    assert stream_keys(samples, seed=1) == shuffled and stream_keys(samples, seed=2) != shuffled


@pytest.mark.parametrize("seed", [None, 3])
def test_ranks_get_disjoint_balanced_shares_that_cover_the_split(tmp_path, monkeypatch, seed):
    samples = streaming_samples(tmp_path, monkeypatch)
    shares = [stream_keys(samples, seed=seed, rank=r, world=3) for r in range(3)]
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert sorted(chain(*shares)) == sorted(samples.read("fit").timestamp.tolist())


def test_every_rank_gets_rows_when_there_are_fewer_row_groups_than_ranks(tmp_path):
    users = np.repeat(np.arange(50), 4)
    columns = {
        "user": users,
        "item": np.arange(200) % 7,
        "ts": np.arange(200),
        "y": np.arange(200) % 2,
    }
    write(tmp_path / "log.parquet", columns)
    samples = build(tmp_path, make_schema(tmp_path), buckets=1)
    assert len(samples.meta["shards"]["fit"]) == 1 and len(samples.meta["shards"]["fit"][0][2]) == 1
    shares = [stream_keys(samples, seed=0, rank=r, world=4) for r in range(4)]
    assert {len(share) for share in shares} <= {
        samples.count("fit") // 4,
        samples.count("fit") // 4 + 1,
    }
    assert sorted(chain(*shares)) == sorted(samples.read("fit").timestamp.tolist())


def test_read_limit_slate_and_item_counts(tmp_path):
    users = np.repeat(["a", "b", "c", "d", "e"], 4)
    write(
        tmp_path / "log.parquet",
        {"user": users, "item": np.arange(20) % 6, "ts": np.arange(20), "y": np.arange(20) % 2},
    )
    samples = build(tmp_path, make_schema(tmp_path, test_fraction=0.2))
    fit = samples.read("fit")
    assert len(samples.read("fit", limit=2)) == min(2, len(fit))
    slate = fit.slate(0, np.arange(len(fit)))
    assert (slate.user == fit.user[0]).all() and (slate.hist == fit.hist[0]).all()
    assert slate.item.tolist() == fit.item.tolist() and slate.context.shape == (len(fit), 0)
    counts = samples.item_counts()
    assert counts.shape == (len(samples.vocab.fields["item"]),) and counts.sum() == len(fit)
    assert np.array_equal(counts, np.bincount(fit.item, minlength=len(counts)))


def test_latest_state_is_taken_at_the_end_of_the_log(tmp_path):
    tiny_log(tmp_path, age=[30, 30, 31, None, None, 20, None, None])
    reopened = open_samples(
        build(tmp_path, make_schema(tmp_path, user=("age",), max_history=3)).folder
    )
    chunks = list(reopened.latest(batch_users=1))
    assert [len(users) for users, _, _ in chunks] == [1, 1]
    users = list(chain(*(u for u, _, _ in chunks)))
    behaviours = dict(zip(users, chain(*(h for _, h, _ in chunks)), strict=True))
    ages = dict(zip(users, chain(*(p["age"] for _, _, p in chunks)), strict=True))
    assert behaviours == {"a": ["3", "4", "5"], "b": ["2", "3", "9"]}  # every row counts
    assert ages == {"a": "31", "b": "20"}  # the latest non-missing value
    positive = build(tmp_path, make_schema(tmp_path, behaviours="positive"))
    assert next(positive.latest())[1] == [["1", "3", "5"], ["3", "9"]]


def test_latest_profile_is_none_when_never_known(tmp_path):
    tiny_log(tmp_path)
    write(tmp_path / "users.parquet", {"user": ["a"], "gender": ["F"]})
    samples = build(tmp_path, make_schema(tmp_path, users="users.parquet", user=("user", "gender")))
    users, _, profile = next(samples.latest())
    assert users == ["a", "b"] and profile == {"gender": ["F", None]}  # no user-id field


def test_titles_come_from_the_items_table(tmp_path):
    tiny_log(tmp_path)
    write(tmp_path / "items.parquet", {"item": [1, 2, 7], "name": ["One", "Two", "Seven"]})
    schema = make_schema(tmp_path, items="items.parquet", title="name")
    assert build(tmp_path, schema).vocab.titles == {"1": "One", "2": "Two"}


# --- refusing bad data: each error names the file and the column ---------------------------


def good_columns() -> dict:
    return {
        "user": ["a", "a", "b"],
        "item": [1, 2, 3],
        "ts": [1, 2, 3],
        "y": [0, 1, 1],
        "hour": ["1", "2", "3"],
    }


BAD_LOGS = {
    "missing column": ({"hour": None}, "log.parquet", "'hour'"),
    "float id": ({"user": [1.5, 2.5, 3.5]}, "log.parquet", "'user': ids must be string or integer"),
    "string time": ({"ts": ["x", "y", "z"]}, "log.parquet", "'ts': time must be"),
    "string label": ({"y": ["0", "1", "1"]}, "log.parquet", "'y': the label must be"),
    "float feature": (
        {"hour": [1.0, 2.0, 3.0]},
        "log.parquet",
        "'hour'.*bucket numeric values first",
    ),
    "null user": ({"user": ["a", None, "b"]}, "log.parquet", "'user': 1 null values"),
    "null item": ({"item": [1, None, 3]}, "log.parquet", "'item': 1 null values"),
    "null time": ({"ts": [1, None, 3]}, "log.parquet", "'ts': 1 null values"),
    "null label": ({"y": [0, None, 1]}, "log.parquet", "'y': 1 null values"),
    "label 2": ({"y": [0, 2, 1]}, "log.parquet", "'y': values must be 0 or 1, found 2"),
    "label 0.5": ({"y": [0, 0.5, 1]}, "log.parquet", "'y': values must be 0 or 1, found 0.5"),
}


@pytest.mark.parametrize("case", BAD_LOGS, ids=list(BAD_LOGS))
def test_bad_logs_are_refused_naming_the_file_and_column(tmp_path, case):
    change, file, message = BAD_LOGS[case]
    columns = {k: v for k, v in (good_columns() | change).items() if v is not None}
    write(tmp_path / "log.parquet", columns)
    schema = make_schema(tmp_path, context=("hour",))
    with pytest.raises(LogError, match=f"{file}.*{message}"):
        check_log(schema)
    with pytest.raises(LogError, match=message):
        build(tmp_path, schema)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(LogError, match=r"nope.parquet: file not found"):
        check_log(make_schema(tmp_path, log="nope.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogError, match=r"empty: the folder holds no .parquet files"):
        check_log(make_schema(tmp_path, log="empty"))
    write(tmp_path / "log.parquet", good_columns())
    with pytest.raises(LogError, match=r"items.parquet: file not found"):
        check_log(make_schema(tmp_path, items="items.parquet", item=("cat",)))


def test_bad_side_tables_are_refused_naming_the_file_and_column(tmp_path):
    write(tmp_path / "log.parquet", good_columns())
    write(tmp_path / "items.parquet", {"item": [1, 3, 3], "cat": ["x", "y", "z"]})
    with pytest.raises(LogError, match=r"items.parquet: column 'item': duplicate key '3'"):
        check_log(make_schema(tmp_path, items="items.parquet", item=("cat",)))
    write(tmp_path / "users.parquet", {"user": ["a", None], "age": [1, 2]})
    with pytest.raises(LogError, match=r"users.parquet: column 'user': null keys"):
        check_log(make_schema(tmp_path, users="users.parquet", user=("age",)))
    write(tmp_path / "users.parquet", {"id": ["a"], "age": [1]})
    with pytest.raises(LogError, match=r"users.parquet: column 'user' \(user id\) not found"):
        check_log(make_schema(tmp_path, users="users.parquet", user=("age",)))
    with pytest.raises(LogError, match=r"log.parquet: column 'gender' \(user field\) not found"):
        check_log(make_schema(tmp_path, users="users.parquet", user=("gender",)))
    with pytest.raises(LogError, match=r"log.parquet: column 'brand' \(item field\) not found"):
        check_log(make_schema(tmp_path, item=("brand",)))
    write(tmp_path / "items.parquet", {"item": [1], "price": [1.5]})
    with pytest.raises(
        LogError, match=r"items.parquet: column 'price'.*bucket numeric values first"
    ):
        check_log(make_schema(tmp_path, items="items.parquet", item=("price",)))


# --- the example logs -------------------------------------------------------------------------


def test_synthetic_log_plants_a_shop_signal_through_a_side_field(tmp_path):
    schema_path = write_synthetic_log(
        tmp_path / "syn", n_users=300, n_items=600, impressions_per_user=30, rows_per_file=3000
    )
    assert len(list((tmp_path / "syn" / "events").glob("*.parquet"))) == 3
    samples = build_samples(load_schema_file(schema_path), tmp_path / "out", progress=False)
    rows, shop = every_row(samples), samples.vocab.item_side[:, 1]
    assert len(rows) == 9000 and samples.schema.side_fields[0].name == "shop"
    steps = np.arange(rows.hist.shape[1])
    recent = (steps >= rows.hist_len[:, None] - 5) & (steps < rows.hist_len[:, None])
    matched = ((shop[rows.hist] == shop[rows.item][:, None]) & recent).any(axis=1)
    assert rows.label[matched].mean() > rows.label[~matched].mean() + 0.3
    csv_path = write_synthetic_log(
        tmp_path / "csv", n_users=300, n_items=600, impressions_per_user=30, format="csv"
    )
    assert load_schema_file(csv_path).data.log.name == "events.csv"
    check_log(load_schema_file(csv_path))


def test_movielens_preparer_writes_tables_and_a_schema(tmp_path):
    schema_path = prepare_movielens(DATA_DIR)
    assert schema_path == DATA_DIR / "ml-100k" / "schema.yaml"
    assert prepare_movielens(DATA_DIR) == schema_path  # a re-run only checks the files
    items = pq.read_table(schema_path.parent / "items.parquet").to_pydict()
    users = pq.read_table(schema_path.parent / "users.parquet").to_pydict()
    assert items["title"][0] == "Toy Story (1995)" and items["cat"][0] == "Animation"
    assert set(items["year"]) >= {"1990s", "1950s"}
    assert set(users["age"]) <= {"<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"}
    schema = load_schema_file(schema_path)
    samples = build_samples(schema, tmp_path / "ml", max_users=60, progress=False)
    assert len(samples.vocab.users) == 60 and samples.count("test") > 0
    rows = samples.read("fit")
    longest = schema.features.max_history
    assert longest == 100 and rows.hist.shape[1] == longest and rows.hist_len.max() == longest
    assert set(np.unique(rows.label)) == {0.0, 1.0} and (rows.user_fields > 0).all()
    assert any("é" in title for title in samples.vocab.titles.values())
