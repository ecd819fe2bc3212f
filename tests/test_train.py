import numpy as np

from export.bundle import load_bundle, save_bundle
from export.to_onnx import PARITY_TOLERANCE, ParityError, check_parity
from tests.conftest import train_tiny


def test_training_reports_auc_gauc_logloss_and_keeps_best_epoch(movielens_slice):
    result = train_tiny(movielens_slice, epochs=2)
    assert len(result.epochs) == 2
    best = max(result.epochs, key=lambda e: e["valid"]["gauc"])
    assert result.best_epoch == best["epoch"] and result.test == best["test"]
    assert 0.5 < result.test["auc"] < 1 and 0.5 < result.test["gauc"] < 1
    assert 0 < result.test["logloss"] < 1


def test_training_is_seeded(movielens_slice):
    first, again = train_tiny(movielens_slice, seed=3), train_tiny(movielens_slice, seed=3)
    assert first.test == again.test


def test_bundle_passes_parity_and_round_trips_on_disk(bundle, tmp_path):
    assert bundle.metrics["onnx_parity_max_abs_diff"] <= PARITY_TOLERANCE
    loaded = load_bundle(save_bundle(bundle, tmp_path / "b"))
    assert loaded.onnx == bundle.onnx and loaded.model_config == bundle.model_config
    assert np.array_equal(loaded.tables["item"].rows, bundle.tables["item"].rows)
    assert list(loaded.tables["item"].ids) == list(bundle.tables["item"].ids)


def test_parity_check_fails_loudly_on_a_different_graph(trained, other_bundle, movielens_slice):
    try:
        check_parity(trained.model, other_bundle.onnx, movielens_slice.test)
    except ParityError as error:
        assert "differs from PyTorch" in str(error)
    else:
        raise AssertionError("a graph from other weights passed the parity check")
