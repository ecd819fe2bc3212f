import numpy as np

from export.data import build_dataset, load_split, save_splits
from export.metrics import gauc
from export.synthetic import SyntheticConfig, make_synthetic


def tiny_log():
    users = np.array(["a"] * 5 + ["b"] * 3)
    items = np.array(["1", "2", "3", "4", "5", "2", "3", "9"])
    ratings = np.array([5, 1, 4, 3, 5, 2, 4, 5], dtype=np.float32)
    times = np.array([10, 20, 20, 30, 40, 5, 6, 7])
    genres = {"1": "Drama", "2": "Comedy", "3": "Drama", "4": "Action", "5": "Comedy"}
    return users, items, (ratings >= 4).astype(np.float32), times, genres


def test_history_holds_only_strictly_earlier_ratings_capped():
    users, items, labels, times, genres = tiny_log()
    data = build_dataset(users, items, labels, times, genres, max_history=2, test_fraction=0.0)
    s = data.train
    raw = data.item_vocab
    pairs = zip(data.user_vocab[s.user], raw[s.item], strict=True)
    rows = {pair: k for k, pair in enumerate(pairs)}
    hist = lambda key: list(raw[s.hist_item[rows[key], : s.hist_len[rows[key]]]])  # noqa: E731
    assert hist(("a", "1")) == []
    assert hist(("a", "2")) == ["1"] and hist(("a", "3")) == ["1"]  # same instant excluded
    assert hist(("a", "4")) == ["2", "3"]
    assert hist(("a", "5")) == ["3", "4"]  # capped at the last 2, most recent last
    assert s.hist_item[rows[("a", "1")]].tolist() == [0, 0]
    assert s.label[rows[("a", "2")]] == 0 and s.label[rows[("a", "3")]] == 1


def test_category_is_first_genre_and_unknown_when_missing():
    users, items, labels, times, genres = tiny_log()
    data = build_dataset(users, items, labels, times, genres, test_fraction=0.0)
    cat_of = {data.item_vocab[i]: data.cat_vocab[data.item_cat[i]] for i in range(1, 7)}
    assert cat_of["1"] == "Drama" and cat_of["4"] == "Action" and cat_of["9"] == "unknown"


def test_split_is_by_user_and_seeded(movielens_slice):
    train_users = set(movielens_slice.train.user.tolist())
    test_users = set(movielens_slice.test.user.tolist())
    assert train_users and test_users and not train_users & test_users
    assert abs(len(test_users) / (len(train_users) + len(test_users)) - 0.2) < 0.02


def test_full_movielens_protocol_sizes(movielens_slice):
    s = movielens_slice.train
    assert s.hist_item.shape[1] == 50 and s.hist_len.max() == 50
    assert set(np.unique(s.label)) == {0.0, 1.0}
    steps = np.arange(50)
    assert (s.hist_item[steps[None, :] >= s.hist_len[:, None]] == 0).all()
    assert (s.hist_item[steps[None, :] < s.hist_len[:, None]] > 0).all()


def test_saved_splits_round_trip(movielens_slice, tmp_path):
    train_path, test_path = save_splits(movielens_slice, tmp_path)
    loaded = load_split(test_path)
    assert np.array_equal(loaded.hist_item, movielens_slice.test.hist_item)
    assert np.array_equal(loaded.label, movielens_slice.test.label)
    with np.load(train_path) as archive:
        assert archive["item_vocab"][1] == movielens_slice.item_vocab[1]


def test_synthetic_generator_plants_a_learnable_signal():
    data = make_synthetic(SyntheticConfig(n_users=200, n_items=500, samples_per_user=10))
    assert len(data.train) + len(data.test) == 2000
    assert 0.2 < data.train.label.mean() < 0.8
    assert data.item_cat[data.train.item].tolist() == data.train.cat.tolist()


def test_gauc_weights_users_by_impressions_and_skips_one_label_users():
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.5, 0.5])
    # user 0: AUC 0.75 over 4 impressions, user 1: AUC 0 over 2, user 2 has one label only
    assert abs(gauc(users, labels, scores) - (0.75 * 4 + 0.0 * 2) / 6) < 1e-12


def test_titles_carry_the_year_and_decode_accents(movielens_slice):
    titles = movielens_slice.item_titles
    assert titles["50"] == "Star Wars (1977)"
    assert titles["1233"] == "Nénette et Boni (1996)"
    assert len(titles) == 1682
