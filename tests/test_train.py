import numpy as np
import pytest
import torch

from export.bundle import load_bundle, rebuild_model, save_bundle
from export.to_onnx import PARITY_TOLERANCE, ParityError, check_parity
from export.train import MbaPenalty, feature_counts, predict, to_tensors
from tests.conftest import train_tiny


def test_training_reports_auc_gauc_logloss_and_keeps_best_epoch(samples):
    result = train_tiny(samples, epochs=2, calibrate=False)
    assert len(result.epochs) == 2 and result.calibration == {}
    best = max(result.epochs, key=lambda e: e["valid"]["gauc"])
    assert result.best_epoch == best["epoch"] and result.test == best["test"]
    assert 0.5 < result.test["auc"] < 1 and 0.5 < result.test["gauc"] < 1
    assert 0 < result.test["logloss"] < 1


def test_calibration_lowers_the_validation_log_loss_and_keeps_the_ranking(samples):
    result = train_tiny(samples, epochs=3)
    best = next(e for e in result.epochs if e["epoch"] == result.best_epoch)
    assert result.calibration["scale"] > 0 and result.calibration != {"scale": 1.0, "shift": 0.0}
    assert result.valid["logloss"] < best["valid"]["logloss"]  # the fit's own objective
    for split, metrics in (("valid", result.valid), ("test", result.test)):
        for name in ("auc", "gauc"):
            assert metrics[name] == pytest.approx(best[split][name], abs=1e-6)


def test_training_is_seeded(samples):
    first, again = train_tiny(samples, seed=3), train_tiny(samples, seed=3)
    assert first.test == again.test


def test_bundle_passes_parity_and_round_trips_on_disk(bundle, tmp_path):
    assert bundle.metrics["onnx_parity_max_abs_diff"] <= PARITY_TOLERANCE
    loaded = load_bundle(save_bundle(bundle, tmp_path / "b"))
    assert loaded.onnx == bundle.onnx and loaded.model_config == bundle.model_config
    assert np.array_equal(loaded.tables["item"].rows, bundle.tables["item"].rows)
    assert list(loaded.tables["item"].ids) == list(bundle.tables["item"].ids)
    assert loaded.schema == bundle.schema and set(loaded.tables) == set(bundle.tables)


def test_the_bundle_alone_rebuilds_the_pytorch_model(bundle, trained, samples):
    rebuilt = rebuild_model(bundle)
    test = samples.read("test", limit=300)
    assert np.array_equal(predict(rebuilt, test), predict(trained.model, test))
    assert torch.equal(rebuilt.item_side, trained.model.item_side)


def test_every_schema_field_has_its_table_and_items_carry_their_side_fields(bundle, samples):
    schema = samples.schema
    assert set(bundle.tables) == {"item"} | {f"f:{f.name}" for f in schema.field_tables}
    assert bundle.tables["item"].rows.shape[1] == schema.item_dim == 18 + 18 + 8
    for spec in schema.field_tables:
        table = bundle.tables[f"f:{spec.name}"]
        assert table.rows.shape == (len(samples.vocab.fields[spec.name]) - 1, spec.dim)
    cat = bundle.tables["f:cat"]
    item_row, meta = (
        bundle.tables["item"].rows[0],
        bundle.item_metadata[bundle.tables["item"].ids[0]],
    )
    cat_row = cat.rows[list(cat.ids).index(meta["fields"]["cat"])]
    assert np.array_equal(item_row[18:36], cat_row)


def test_parity_check_fails_loudly_on_a_different_graph(trained, other_bundle, samples):
    try:
        check_parity(trained.model, other_bundle.onnx, samples.read("test", limit=500))
    except ParityError as error:
        assert "differs from PyTorch" in str(error)
    else:
        raise AssertionError("a graph from other weights passed the parity check")


def test_the_mini_batch_aware_penalty_is_l2_on_the_rows_a_batch_reads_over_their_frequency(
    trained, samples
):
    model = trained.model
    batch = samples.read("fit", limit=16)
    counts = feature_counts(samples)
    penalty = MbaPenalty(counts, strength=0.5)
    tensors = to_tensors(batch)
    model.zero_grad()
    value = penalty(model, tensors)
    value.backward()
    item, hist, _, user_fields, context = tensors
    expected, reads = 0.0, model.field_indices(item, hist, user_fields, context)
    for name, indices in reads.items():
        read = sorted(set(indices.tolist()) - {0})
        weights = model.embeddings[name].weight.detach()[read]
        expected += float((weights.pow(2).sum(-1) / counts[name][read].clamp(min=1)).sum())
        gradient = model.embeddings[name].weight.grad
        unread = torch.ones(len(gradient), dtype=torch.bool)
        unread[read] = False
        assert not gradient[unread].any()  # a row the batch does not read is left alone
        assert gradient[read].abs().sum(-1).gt(0).all()
    assert value.item() == pytest.approx(0.5 * expected, rel=1e-5)
    model.zero_grad()
