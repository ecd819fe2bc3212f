import numpy as np
import pytest
import torch

from core import graph
from core.graph import one_user_feeds, user_inputs
from core.schema import FeatureSchema, FieldSpec, two_field_schema
from export.model import DIN, FORMS, DenseDIN, Dice, DINConfig, attention_form
from export.to_onnx import cpu_session, export_dense_onnx

TWO_FIELDS = two_field_schema()
SIZES = {"item_id": 11, "cat": 4}
RICH = FeatureSchema(
    item=(FieldSpec("item_id", 8), FieldSpec("cat", 4), FieldSpec("shop", 4)),
    user=(FieldSpec("age", 3), FieldSpec("gender", 2)),
    context=(FieldSpec("hour", 5),),
)
RICH_SIZES = {"item_id": 9, "cat": 4, "shop": 5, "age": 4, "gender": 3, "hour": 25}


def random_dense(schema=TWO_FIELDS, **overrides) -> DenseDIN:
    torch.manual_seed(0)
    sizes = SIZES if schema is TWO_FIELDS else RICH_SIZES
    dense = DenseDIN(DINConfig(schema, sizes, **overrides))
    with torch.no_grad():  # give Dice non-trivial moving averages
        for module in dense.modules():
            if isinstance(module, Dice):
                module.norm.running_mean.uniform_(-0.5, 0.5)
                module.norm.running_var.uniform_(0.5, 2.0)
    return dense.eval()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("attention_activation", ["prelu", "dice"])
def test_every_attention_form_equals_the_concat_reference(form, softmax, attention_activation):
    dense = random_dense(softmax=softmax, attention_activation=attention_activation)
    cand, hist = torch.randn(2, 7, 36), torch.randn(2, 11, 36)
    mask = (torch.arange(11) < torch.tensor([[4], [11]])).float()
    full = dense(cand, hist, mask)
    with attention_form(dense, form):
        assert torch.allclose(dense(cand, hist, mask), full, atol=1e-6)
    assert dense.attention.form == "concat"  # back to the reference after the block


def test_the_served_prelu_keeps_its_values_for_slopes_above_one():
    dense = random_dense()
    with torch.no_grad():  # max(x, a·x) would pick a·x for positive x when a > 1
        dense.attention.first_act.alpha.uniform_(0.5, 2.0)
    cand, hist, mask = torch.randn(1, 5, 36), torch.randn(1, 9, 36), torch.ones(1, 9)
    full = dense(cand, hist, mask)
    with attention_form(dense, "served"):
        assert torch.allclose(dense(cand, hist, mask), full, atol=1e-6)


def test_an_unknown_attention_form_is_refused():
    dense = random_dense()
    with pytest.raises(ValueError, match="form must be one of"), attention_form(dense, "fast"):
        pass


@pytest.mark.parametrize("pooling", ["attention", "sum"])
def test_padded_behaviours_do_not_change_the_score(pooling):
    dense = random_dense(pooling=pooling)
    cand, hist = torch.randn(1, 3, 36), torch.randn(1, 4, 36)
    padded = torch.cat([hist, torch.randn(1, 6, 36)], dim=1)
    mask = torch.tensor([[1.0] * 4 + [0.0] * 6])
    assert torch.allclose(dense(cand, hist, torch.ones(1, 4)), dense(cand, padded, mask), atol=1e-6)


def test_dice_uses_moving_averages_in_eval_not_the_batch():
    dice = Dice(4)
    dice.train()
    for _ in range(50):
        dice(torch.randn(64, 4) * 3 + 1)
    dice.eval()
    x = torch.randn(8, 4)
    alone = dice(x[:1])
    assert torch.allclose(dice(x)[:1], alone, atol=1e-6)
    assert not torch.allclose(dice.norm.running_mean, torch.zeros(4))


def test_base_model_has_no_attention_and_din_does():
    assert DIN(DINConfig(TWO_FIELDS, SIZES, pooling="sum")).dense.attention is None
    assert DIN(DINConfig(TWO_FIELDS, SIZES)).dense.attention is not None
    with pytest.raises(ValueError, match="pooling"):
        DINConfig(TWO_FIELDS, SIZES, pooling="max")


def test_an_item_carries_every_item_side_field_in_schema_order():
    side = torch.tensor([[0, 0, 0], [1, 2, 3], [2, 1, 1]])
    model = DIN(DINConfig(RICH, RICH_SIZES | {"item_id": 3}), side)
    row = model.goods(torch.tensor([1]))[0]
    parts = [model.embeddings[n].weight[i] for n, i in (("item_id", 1), ("cat", 2), ("shop", 3))]
    assert row.shape == (RICH.item_dim,) and torch.equal(row, torch.cat(parts))


def test_user_and_context_fields_change_the_score():
    model = DIN(DINConfig(RICH, RICH_SIZES), torch.zeros(9, 3, dtype=torch.long)).eval()
    item, hist, length = torch.tensor([1]), torch.tensor([[2, 3]]), torch.tensor([2])
    base = model(item, hist, length, torch.tensor([[1, 1]]), torch.tensor([[4]]))
    other_user = model(item, hist, length, torch.tensor([[2, 1]]), torch.tensor([[4]]))
    other_hour = model(item, hist, length, torch.tensor([[1, 1]]), torch.tensor([[9]]))
    assert base != other_user and base != other_hour


def random_inputs(schema, n_cand: int, n_hist: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n_cand * 1000 + n_hist)
    hist, mask = user_inputs(rng.standard_normal((n_hist, schema.item_dim)))
    return {
        graph.CANDIDATES: rng.standard_normal((n_cand, schema.item_dim)).astype(np.float32),
        graph.HISTORY: hist,
        graph.MASK: mask,
        graph.USER: rng.standard_normal(schema.user_dim).astype(np.float32),
        graph.CONTEXT: rng.standard_normal(schema.context_dim).astype(np.float32),
    }


@pytest.mark.parametrize("schema", [TWO_FIELDS, RICH], ids=["two-fields", "rich"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("pooling", ["attention", "sum"])
def test_onnx_matches_torch_for_any_candidate_and_history_count(schema, form, pooling):
    dense = random_dense(schema, pooling=pooling)
    session = cpu_session(export_dense_onnx(dense, form=form))
    names = graph.input_names(schema)
    assert [i.name for i in session.get_inputs()] == list(names)
    for n_cand, n_hist in [(1, 1), (17, 3), (100, 50), (4, 200)]:
        inputs = random_inputs(schema, n_cand, n_hist)
        got = session.run(None, one_user_feeds(names, inputs))[0][0]
        with torch.no_grad():
            tensors = [torch.from_numpy(inputs[name])[None] for name in names]
            want = torch.sigmoid(dense.logits(*tensors))[0].numpy()
        assert got.shape == (n_cand,)
        assert np.abs(got - want).max() <= 1e-5


def test_empty_history_is_one_masked_row_and_scores_like_sum_of_nothing():
    dense = random_dense()
    session = cpu_session(export_dense_onnx(dense))
    hist, mask = user_inputs(np.zeros((0, 36), np.float32))
    assert hist.shape == (1, 36) and mask.tolist() == [0.0]
    names = graph.input_names(TWO_FIELDS)
    inputs = {graph.CANDIDATES: np.ones((2, 36), np.float32), graph.MASK: mask}
    got = session.run(None, one_user_feeds(names, inputs | {graph.HISTORY: hist}))[0][0]
    other = session.run(None, one_user_feeds(names, inputs | {graph.HISTORY: hist + 5}))[0][0]
    assert np.allclose(got, other, atol=1e-7)
