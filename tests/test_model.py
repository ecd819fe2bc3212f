import numpy as np
import pytest
import torch

from core.graph import one_user_feeds, user_inputs
from export.model import DIN, DenseDIN, Dice, DINConfig
from export.to_onnx import cpu_session, export_dense_onnx


def random_dense(**overrides) -> DenseDIN:
    torch.manual_seed(0)
    dense = DenseDIN(DINConfig(n_items=10, n_cats=3, **overrides))
    with torch.no_grad():  # give Dice non-trivial moving averages
        for module in dense.modules():
            if isinstance(module, Dice):
                module.norm.running_mean.uniform_(-0.5, 0.5)
                module.norm.running_var.uniform_(0.5, 2.0)
    return dense.eval()


@pytest.mark.parametrize("softmax", [False, True])
def test_split_first_layer_equals_full_concat(softmax):
    dense = random_dense(softmax=softmax)
    cand, hist = torch.randn(2, 7, 36), torch.randn(2, 11, 36)
    mask = (torch.arange(11) < torch.tensor([[4], [11]])).float()
    full = dense(cand, hist, mask)
    dense.attention.split = True
    assert torch.allclose(dense(cand, hist, mask), full, atol=1e-6)


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
    assert DIN(DINConfig(n_items=5, n_cats=2, pooling="sum")).dense.attention is None
    assert DIN(DINConfig(n_items=5, n_cats=2)).dense.attention is not None
    with pytest.raises(ValueError, match="pooling"):
        DINConfig(n_items=5, n_cats=2, pooling="max")


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("pooling", ["attention", "sum"])
def test_onnx_matches_torch_for_any_candidate_and_history_count(split, pooling):
    dense = random_dense(pooling=pooling)
    session = cpu_session(export_dense_onnx(dense, split=split))
    for n_cand, n_hist in [(1, 1), (17, 3), (100, 50), (4, 200)]:
        cand = np.random.default_rng(n_cand).standard_normal((n_cand, 36)).astype(np.float32)
        hist, mask = user_inputs(np.random.default_rng(n_hist).standard_normal((n_hist, 36)))
        got = session.run(None, one_user_feeds(cand, hist, mask))[0][0]
        with torch.no_grad():
            want = dense(*(torch.from_numpy(a)[None] for a in (cand, hist, mask)))[0].numpy()
        assert got.shape == (n_cand,)
        assert np.abs(got - want).max() <= 1e-5


def test_empty_history_is_one_masked_row_and_scores_like_sum_of_nothing():
    dense = random_dense()
    session = cpu_session(export_dense_onnx(dense))
    hist, mask = user_inputs(np.zeros((0, 36), np.float32))
    assert hist.shape == (1, 36) and mask.tolist() == [0.0]
    cand = np.ones((2, 36), np.float32)
    got = session.run(None, one_user_feeds(cand, hist, mask))[0][0]
    other = session.run(None, one_user_feeds(cand, hist + 5, mask))[0][0]
    assert np.allclose(got, other, atol=1e-7)
