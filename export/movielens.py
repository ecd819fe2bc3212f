"""MovieLens-100K as a training log plus item and user tables, ready for build_samples.

The ratings come from the recbole==1.2.1 wheel (downloaded once with pip). Every rating is an
impression, labelled 1 when the rating is 4 or 5. Items get their first genre, release decade
and "Title (year)"; users their MovieLens-1M age bucket, gender and occupation.

    python -m export.movielens --data-dir data     # writes data/ml-100k/schema.yaml and tables
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.schema import example_schema

log = logging.getLogger(__name__)

RECBOLE = "recbole==1.2.1"
INSIDE_WHEEL = "recbole/dataset_example/ml-100k/ml-100k.{}"
RAW_FILES = ("inter", "item", "user")
DEFAULT_DATA_DIR = Path("data")
EXAMPLE_SCHEMA = example_schema("movielens-100k.yaml")
TABLES = ("events.parquet", "items.parquet", "users.parquet")
AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])  # the MovieLens-1M age groups
AGE_BUCKETS = np.array(["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"])
WEEKDAYS = np.array(["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"])  # 1970-01-01 was a Thursday


class DataUnavailable(RuntimeError):
    pass


def prepare_movielens(data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """Write {data_dir}/ml-100k/{events,items,users}.parquet and schema.yaml (once; later
    calls only refresh the schema copy) and return the schema's path."""
    folder = Path(data_dir) / "ml-100k"
    if not all((folder / name).exists() for name in TABLES):
        raw = fetch_movielens(Path(data_dir))
        pq.write_table(read_events(raw), folder / "events.parquet")
        pq.write_table(read_items(raw), folder / "items.parquet")
        pq.write_table(read_users(raw), folder / "users.parquet")
        log.info("MovieLens-100K tables written to %s", folder)
    schema = folder / "schema.yaml"
    if not schema.exists() or schema.read_bytes() != EXAMPLE_SCHEMA.read_bytes():
        shutil.copyfile(EXAMPLE_SCHEMA, schema)
    return schema


def fetch_movielens(data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """Extract ml-100k.{inter,item,user} from the recbole wheel into data_dir, downloading once."""
    target = data_dir / "ml-100k"
    if all((target / f"ml-100k.{ext}").exists() for ext in RAW_FILES):
        return target
    wheel = _download_wheel(data_dir / "wheels")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for ext in RAW_FILES:
            (target / f"ml-100k.{ext}").write_bytes(archive.read(INSIDE_WHEEL.format(ext)))
    log.info("MovieLens-100K extracted to %s", target)
    return target


def _download_wheel(wheel_dir: Path) -> Path:
    found = sorted(wheel_dir.glob("recbole-1.2.1-*.whl"))
    if found:
        return found[0]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", RECBOLE, "-d"]
    log.info("downloading MovieLens-100K (inside the %s wheel)", RECBOLE)
    done = subprocess.run([*command, str(wheel_dir)], capture_output=True, text=True)
    found = sorted(wheel_dir.glob("recbole-1.2.1-*.whl"))
    if done.returncode != 0 or not found:
        raise DataUnavailable(
            f"could not download {RECBOLE} from the package index to get MovieLens-100K; "
            f"place recbole-1.2.1-py3-none-any.whl in {wheel_dir} or fix pip's access. "
            f"pip said: {done.stderr.strip()[-400:]}"
        )
    return found[0]


def _read_rows(path: Path) -> list[list[str]]:
    """Tab-separated rows after the header. The wheel's copy is UTF-8 (GroupLens' original
    is Latin-1; both are accepted)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return [line.split("\t") for line in text.splitlines()[1:] if line.strip()]


def read_events(folder: Path) -> pa.Table:
    """One row per rating: user_id, item_id, ts (epoch seconds), label, hour and weekday."""
    table = np.array(_read_rows(folder / "ml-100k.inter"), dtype=object)  # (N, 4)
    ts = table[:, 3].astype(float).astype(np.int64)  # (N,)
    return pa.table(
        {
            "user_id": table[:, 0].astype(str),
            "item_id": table[:, 1].astype(str),
            "ts": ts,
            "label": (table[:, 2].astype(float) >= 4).astype(np.int8),
            "hour": (ts // 3600 % 24).astype(np.int8),
            "weekday": WEEKDAYS[ts // 86400 % 7],
        }
    )


def read_items(folder: Path) -> pa.Table:
    """item_id, cat (first genre or "unknown"), year (release decade or "unknown"), title."""
    ids, cats, decades, titles = [], [], [], []
    for row in _read_rows(folder / "ml-100k.item"):
        item, title, year, classes = [*row, "", "", ""][:4]
        title, year = title.strip(), year.strip()
        ids.append(item)
        cats.append((classes.split() or ["unknown"])[0])
        decades.append(f"{int(year) // 10 * 10}s" if year.isdigit() else "unknown")
        titles.append(f"{title} ({year})" if year and year not in title else title)
    return pa.table({"item_id": ids, "cat": cats, "year": decades, "title": titles})


def read_users(folder: Path) -> pa.Table:
    """user_id, age (MovieLens-1M bucket), gender, occupation."""
    rows = np.array([row[:4] for row in _read_rows(folder / "ml-100k.user")], dtype=object)
    ages = rows[:, 1].astype(int)  # (U,)
    return pa.table(
        {
            "user_id": rows[:, 0].astype(str),
            "age": AGE_BUCKETS[np.searchsorted(AGE_EDGES, ages, side="right")],
            "gender": rows[:, 2].astype(str),
            "occupation": rows[:, 3].astype(str),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log.info("schema: %s", prepare_movielens(args.data_dir))


if __name__ == "__main__":
    main()
