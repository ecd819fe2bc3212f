"""MovieLens-100K as DIN samples, following the paper's protocol.

Every rating is a sample, labelled 1 when the rating is 4 or 5. Its behaviours are the
movies the user rated strictly earlier, oldest first, capped at the last `max_history`.
A movie's category is its first genre. Users are split 80/20 with a seeded permutation.

    python -m export.data --save-splits data/splits
"""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RECBOLE = "recbole==1.2.1"
INSIDE_WHEEL = "recbole/dataset_example/ml-100k/ml-100k.{}"
DEFAULT_DATA_DIR = Path("data")
PAD = 0  # index 0 of every vocabulary is padding; real ids start at 1


class DataUnavailable(RuntimeError):
    pass


@dataclass
class Samples:
    """One split. Histories are left-aligned: positions [0, hist_len) hold behaviours."""

    user: np.ndarray  # (N,) int32, index into Dataset.user_vocab
    item: np.ndarray  # (N,) int32, candidate item index
    cat: np.ndarray  # (N,) int32, candidate category index
    hist_item: np.ndarray  # (N, L) int32, 0 = padding
    hist_cat: np.ndarray  # (N, L) int32, 0 = padding
    hist_len: np.ndarray  # (N,) int32
    label: np.ndarray  # (N,) float32, 1 = rating >= 4
    timestamp: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.label)

    def take(self, index: np.ndarray) -> Samples:
        return Samples(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def slate(self, row: int, candidates: np.ndarray) -> Samples:
        """Sample `row`'s user and history, paired with the items of the `candidates` rows:
        what one scoring request holds, as samples a model can predict."""
        slate = self.take(np.full(len(candidates), row))
        slate.item, slate.cat = self.item[candidates], self.cat[candidates]
        return slate


@dataclass
class Dataset:
    train: Samples
    test: Samples
    user_vocab: np.ndarray  # (U,) raw user ids
    item_vocab: np.ndarray  # (I+1,) raw item ids, [0] = ""
    cat_vocab: np.ndarray  # (K+1,) raw category names, [0] = ""
    item_cat: np.ndarray  # (I+1,) int32, category index of each item
    latest_history: dict[str, list[str]]  # raw user id -> raw item ids, most recent last
    item_titles: dict[str, str] = field(default_factory=dict)  # raw item id -> display title

    @property
    def n_items(self) -> int:
        return len(self.item_vocab) - 1

    @property
    def n_cats(self) -> int:
        return len(self.cat_vocab) - 1


def fetch_movielens(data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """Extract ml-100k.{inter,item} from the recbole wheel into data_dir, downloading once."""
    target = data_dir / "ml-100k"
    if all((target / f"ml-100k.{ext}").exists() for ext in ("inter", "item")):
        return target
    wheel = _download_wheel(data_dir / "wheels")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for ext in ("inter", "item", "user"):
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


def read_ratings(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, rating, timestamp) columns as raw-id strings and numbers."""
    rows = [line.split("\t") for line in (folder / "ml-100k.inter").read_text().splitlines()[1:]]
    table = np.array(rows, dtype=object)
    users, items = table[:, 0].astype(str), table[:, 1].astype(str)
    return users, items, table[:, 2].astype(np.float32), table[:, 3].astype(float).astype(np.int64)


def read_items(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Raw item id -> first genre ("unknown" when none is listed), and -> "Title (year)".

    ml-100k.item rows are item_id, movie_title, release_year, class (genres). The wheel's copy
    is UTF-8 (GroupLens' original is Latin-1; both are accepted)."""
    raw = (folder / "ml-100k.item").read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    genres, titles = {}, {}
    for line in text.splitlines()[1:]:
        item, title, year, classes = [*line.split("\t"), "", "", ""][:4]
        genres[item] = (classes.split() or ["unknown"])[0]
        title, year = title.strip(), year.strip()
        titles[item] = f"{title} ({year})" if year and year not in title else title
    return genres, titles


def build_dataset(
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    timestamps: np.ndarray,
    item_category: dict[str, str],
    *,
    item_titles: dict[str, str] | None = None,
    max_history: int = 50,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Turn an interaction log into DIN samples, vectorised over all rows."""
    user_vocab, user_idx = np.unique(users, return_inverse=True)
    item_raw, item_idx = np.unique(items, return_inverse=True)
    item_vocab = np.concatenate([[""], item_raw])
    item_idx = (item_idx + 1).astype(np.int32)
    cat_of_item = np.array([item_category.get(i, "unknown") for i in item_raw])
    cat_raw, cat_idx = np.unique(cat_of_item, return_inverse=True)
    item_cat = np.concatenate([[PAD], cat_idx + 1]).astype(np.int32)

    order = np.lexsort((np.arange(len(users)), timestamps, user_idx))
    user_idx, item_idx = user_idx[order], item_idx[order]
    labels, timestamps = labels[order], timestamps[order]
    history = _history_windows(user_idx, timestamps, max_history)
    hist_item = np.where(history.mask, item_idx[history.index], PAD).astype(np.int32)
    everything = Samples(
        user=user_idx.astype(np.int32),
        item=item_idx,
        cat=item_cat[item_idx],
        hist_item=hist_item,
        hist_cat=item_cat[hist_item],
        hist_len=history.length,
        label=labels.astype(np.float32),
        timestamp=timestamps,
    )
    is_test = _test_users(len(user_vocab), test_fraction, seed)[everything.user]
    return Dataset(
        train=everything.take(np.flatnonzero(~is_test)),
        test=everything.take(np.flatnonzero(is_test)),
        user_vocab=user_vocab,
        item_vocab=item_vocab,
        cat_vocab=np.concatenate([[""], cat_raw]),
        item_cat=item_cat,
        latest_history=_latest_histories(user_idx, item_idx, user_vocab, item_vocab, max_history),
        item_titles=item_titles or {},
    )


@dataclass
class _Windows:
    index: np.ndarray  # (N, L) row index of each behaviour
    mask: np.ndarray  # (N, L) bool
    length: np.ndarray  # (N,) int32


def _history_windows(user: np.ndarray, timestamp: np.ndarray, max_history: int) -> _Windows:
    """For rows sorted by (user, time): the window of strictly earlier rows of the same user."""
    n = len(user)
    first_of_user = np.searchsorted(user, user, side="left")
    user_time = user.astype(np.int64) * (1 << 40) + timestamp
    first_of_instant = np.searchsorted(user_time, user_time, side="left")
    begin = np.maximum(first_of_user, first_of_instant - max_history)
    length = (first_of_instant - begin).astype(np.int32)
    steps = np.arange(max_history)
    index = np.minimum(begin[:, None] + steps[None, :], max(n - 1, 0))  # (N, L)
    return _Windows(index=index, mask=steps[None, :] < length[:, None], length=length)


def _test_users(n_users: int, test_fraction: float, seed: int) -> np.ndarray:
    shuffled = np.random.default_rng(seed).permutation(n_users)
    is_test = np.zeros(n_users, dtype=bool)
    is_test[shuffled[: round(n_users * test_fraction)]] = True
    return is_test


def _latest_histories(user_idx, item_idx, user_vocab, item_vocab, max_history):
    boundaries = np.flatnonzero(np.diff(user_idx)) + 1
    histories = {}
    for chunk_users, chunk_items in zip(
        np.split(user_idx, boundaries), np.split(item_idx, boundaries), strict=True
    ):
        if len(chunk_users):
            recent = item_vocab[chunk_items[-max_history:]]
            histories[str(user_vocab[chunk_users[0]])] = [str(i) for i in recent]
    return histories


def load_movielens(
    data_dir: Path = DEFAULT_DATA_DIR,
    *,
    max_history: int = 50,
    seed: int = 0,
    max_users: int | None = None,
) -> Dataset:
    """The full set, or the ratings of the first `max_users` user ids (a small real slice)."""
    folder = fetch_movielens(data_dir)
    users, items, ratings, timestamps = read_ratings(folder)
    if max_users is not None:
        keep = np.isin(users, np.unique(users)[:max_users])
        users, items, ratings, timestamps = (
            users[keep],
            items[keep],
            ratings[keep],
            timestamps[keep],
        )
    labels = (ratings >= 4).astype(np.float32)
    genres, titles = read_items(folder)
    return build_dataset(
        users,
        items,
        labels,
        timestamps,
        genres,
        item_titles=titles,
        max_history=max_history,
        seed=seed,
    )


def save_splits(dataset: Dataset, folder: Path) -> list[Path]:
    """Write train.npz and test.npz: the split's columns plus the vocabularies."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {
        "user_vocab": dataset.user_vocab,
        "item_vocab": dataset.item_vocab,
        "cat_vocab": dataset.cat_vocab,
        "item_cat": dataset.item_cat,
    }
    paths = []
    for name, split in (("train", dataset.train), ("test", dataset.test)):
        columns = {f.name: getattr(split, f.name) for f in fields(split)}
        path = folder / f"{name}.npz"
        np.savez_compressed(path, **columns, **vocab)
        paths.append(path)
    return paths


def load_split(path: Path) -> Samples:
    with np.load(path) as archive:
        return Samples(**{f.name: archive[f.name] for f in fields(Samples)})


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--save-splits", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data = load_movielens(args.data_dir, seed=args.seed)
    for written in save_splits(data, args.save_splits):
        print(written)
