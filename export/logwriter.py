"""A synthetic shop log at any size, written in chunks, with a planted signal for DIN.

Each user has a few favourite shops, and about half of their impressions show an item of one
of them. A click is likely when the candidate's shop is the shop of one of the user's last few
impressions (a local match with a few behaviours, which attention picks out and sum pooling
blurs), and a little likelier when the item's category suits the user's gender. The item's
shop is an item-side field, so the signal only reaches a model that reads side fields.

Users' whole sequences are generated inside one chunk, so clicks can depend on the user's
earlier impressions without holding the log in memory; each chunk is one Parquet file.

    python -m export.logwriter --out data/synthetic --users 100000 --impressions 40
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.schema import example_schema

log = logging.getLogger(__name__)

TEMPLATE = example_schema("synthetic.yaml")
AGES = np.array(["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"])
GENDERS = np.array(["F", "M"])
DEVICES = np.array(["mobile", "desktop", "tablet"])
START = 1_700_000_000  # epoch seconds of the earliest session
FAVOURITES = 3  # shops each user prefers
MATCH_WINDOW = 5  # how many recent impressions the click depends on
BASE_RATE, MATCH_RATE, GENDER_LIFT = 0.08, 0.55, 0.1


@dataclass
class Catalogue:
    """Items, their side fields, and the users' hidden tastes."""

    item_shop: np.ndarray  # (I,) shop of each item
    item_cat: np.ndarray  # (I,)
    item_brand: np.ndarray  # (I,)
    shop_items: np.ndarray  # (I,) item numbers grouped by shop
    shop_start: np.ndarray  # (S+1,) where each shop's items start in shop_items
    user_gender: np.ndarray  # (U,) 0 or 1
    user_age: np.ndarray  # (U,)
    user_device: np.ndarray  # (U,) usual device
    favourites: np.ndarray  # (U, FAVOURITES) preferred shops


def write_synthetic_log(
    folder: Path,
    n_users: int = 10_000,
    n_items: int = 20_000,
    impressions_per_user: int = 40,
    seed: int = 0,
    format: str = "parquet",
    rows_per_file: int = 1_000_000,
) -> Path:
    """Write events (a folder of Parquet files, or events.csv), items and users tables and
    schema.yaml into `folder`; return the schema's path."""
    if format not in ("parquet", "csv"):
        raise ValueError(f"format must be 'parquet' or 'csv', got {format!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    catalogue = make_catalogue(rng, n_users, n_items)
    _write_table(item_table(catalogue), folder / f"items.{format}")
    _write_table(user_table(catalogue), folder / f"users.{format}")
    log_path = _write_events(folder, catalogue, rng, impressions_per_user, format, rows_per_file)
    return _write_schema(folder, log_path.name, format)


def make_catalogue(rng: np.random.Generator, n_users: int, n_items: int) -> Catalogue:
    n_shops = max(4, n_items // 40)
    n_cats = max(2, min(40, n_shops // 4))
    item_shop = rng.permutation(np.arange(n_items) % n_shops)  # every shop has items
    shop_cat = rng.integers(0, n_cats, n_shops)  # a shop mostly sells one category
    stray = rng.random(n_items) < 0.1
    item_cat = np.where(stray, rng.integers(0, n_cats, n_items), shop_cat[item_shop])
    shop_items = np.argsort(item_shop, kind="stable")  # (I,)
    shop_start = np.searchsorted(item_shop[shop_items], np.arange(n_shops + 1))  # (S+1,)
    return Catalogue(
        item_shop=item_shop,
        item_cat=item_cat,
        item_brand=rng.integers(0, max(2, n_items // 200), n_items),
        shop_items=shop_items,
        shop_start=shop_start,
        user_gender=rng.integers(0, 2, n_users),
        user_age=rng.integers(0, len(AGES), n_users),
        user_device=rng.integers(0, len(DEVICES), n_users),
        favourites=rng.integers(0, n_shops, (n_users, FAVOURITES)),
    )


def item_table(c: Catalogue) -> pa.Table:
    ids = np.arange(len(c.item_shop))
    return pa.table(
        {
            "item_id": _names("i", ids),
            "shop": _names("s", c.item_shop),
            "cat": _names("c", c.item_cat),
            "brand": _names("b", c.item_brand),
        }
    )


def user_table(c: Catalogue) -> pa.Table:
    ids = np.arange(len(c.user_gender))
    return pa.table(
        {"user_id": _names("u", ids), "age": AGES[c.user_age], "gender": GENDERS[c.user_gender]}
    )


def _names(prefix: str, numbers: np.ndarray) -> np.ndarray:
    return np.char.add(prefix, numbers.astype(str))


def impressions(
    c: Catalogue, rng: np.random.Generator, users: np.ndarray, per_user: int
) -> pa.Table:
    """The whole sequences of `users`, chronological per user."""
    shape = (len(users), per_user)
    item = _candidates(c, rng, users, shape)  # (u, T)
    ts = (
        START
        + rng.integers(0, 30 * 86_400, (len(users), 1))
        + rng.integers(1, 7_200, shape).cumsum(1)
    )
    rate = BASE_RATE + (MATCH_RATE - BASE_RATE) * _recent_shop_match(c.item_shop[item])
    rate += GENDER_LIFT * (c.item_cat[item] % 2 == c.user_gender[users][:, None])  # (u, T)
    usual = c.user_device[users][:, None]
    device = np.where(rng.random(shape) < 0.8, usual, rng.integers(0, len(DEVICES), shape))
    return pa.table(
        {
            "user_id": _names("u", np.repeat(users, per_user)),
            "item_id": _names("i", item.ravel()),
            "ts": ts.ravel(),
            "clicked": (rng.random(shape) < rate).ravel().astype(np.int8),
            "hour": (ts.ravel() // 3600 % 24).astype(np.int8),
            "device": DEVICES[device.ravel()],
        }
    )


def _candidates(c: Catalogue, rng: np.random.Generator, users: np.ndarray, shape) -> np.ndarray:
    """Half the candidates from one of the user's favourite shops, half from anywhere."""
    shop = c.favourites[users[:, None], rng.integers(0, FAVOURITES, shape)]  # (u, T)
    size = c.shop_start[shop + 1] - c.shop_start[shop]
    favourite = c.shop_items[c.shop_start[shop] + (rng.random(shape) * size).astype(np.int64)]
    anywhere = rng.integers(0, len(c.item_shop), shape)
    return np.where(rng.random(shape) < 0.5, favourite, anywhere)  # (u, T)


def _recent_shop_match(shop: np.ndarray) -> np.ndarray:
    """(u, T) whether each impression's shop is the shop of one of the previous few."""
    matched = np.zeros(shop.shape, bool)
    for lag in range(1, min(MATCH_WINDOW, shop.shape[1] - 1) + 1):
        matched[:, lag:] |= shop[:, lag:] == shop[:, :-lag]
    return matched


def _chunks(
    c: Catalogue, rng: np.random.Generator, per_user: int, rows_per_file: int
) -> Iterator[pa.Table]:
    """The log in chunks of whole users, about rows_per_file rows each."""
    n_users = len(c.user_gender)
    users_per_chunk = max(1, rows_per_file // per_user)
    for start in range(0, n_users, users_per_chunk):
        users = np.arange(start, min(start + users_per_chunk, n_users))
        yield impressions(c, rng, users, per_user)


def _write_events(
    folder: Path,
    c: Catalogue,
    rng: np.random.Generator,
    per_user: int,
    format: str,
    rows_per_file: int,
) -> Path:
    """Parquet: a folder with one file per chunk. CSV: one file, appended chunk by chunk."""
    chunks = _chunks(c, rng, per_user, rows_per_file)
    if format == "csv":
        path = folder / "events.csv"
        first = next(chunks)
        with pacsv.CSVWriter(path, first.schema) as writer:
            writer.write_table(first)
            for table in chunks:
                writer.write_table(table)
    else:
        path = folder / "events"
        path.mkdir(exist_ok=True)
        for stale in path.glob("part-*.parquet"):  # from an earlier, larger run
            stale.unlink()
        for number, table in enumerate(chunks):
            pq.write_table(table, path / f"part-{number:05d}.parquet")
    log.info("wrote %d impressions to %s", len(c.user_gender) * per_user, path)
    return path


def _write_table(table: pa.Table, path: Path) -> None:
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)


def _write_schema(folder: Path, log_name: str, format: str) -> Path:
    import yaml  # the exporter's dependency only

    schema = yaml.safe_load(TEMPLATE.read_text())
    schema["data"] |= {"log": log_name, "items": f"items.{format}", "users": f"users.{format}"}
    path = folder / "schema.yaml"
    header = f"# written by export.logwriter from {TEMPLATE.name}\n"
    path.write_text(header + yaml.safe_dump(schema, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--impressions", type=int, default=40, help="per user")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    schema = write_synthetic_log(
        args.out, args.users, args.items, args.impressions, args.seed, args.format
    )
    log.info("schema: %s", schema)


if __name__ == "__main__":
    main()
