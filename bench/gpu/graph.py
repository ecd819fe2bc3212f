"""A random-weight dense DIN graph as ONNX bytes, built here so the GPU check needs nothing from
export/: the maths of export.model.DenseDIN with the split first attention layer.

    python -c "from bench.gpu.graph import dense_onnx; print(len(dense_onnx()))"

Inputs candidates (B, C, D), history (B, T, D) and history_mask (B, T); output scores (B, C).
Dice runs on fixed moving averages (inference form); the top MLP also sees the sum-pooled
history, as DIN's default configuration does.
"""

from __future__ import annotations

import io
import itertools
import warnings

import numpy as np
import torch
from torch import nn

DIM = 36  # item_dim 18 + cat_dim 18
ATTENTION_HIDDEN = (80, 40)
MLP_HIDDEN = (200, 80)
OPSET = 17
INPUTS = ("candidates", "history", "history_mask")
OUTPUT = "scores"
DYNAMIC_AXES = {
    "candidates": {0: "B", 1: "C"},
    "history": {0: "B", 1: "T"},
    "history_mask": {0: "B", 1: "T"},
    "scores": {0: "B", 1: "C"},
}


class PReLU(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((dim,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, self.alpha * x)


class Dice(nn.Module):
    """Dice at inference: a sigmoid gate on the input normalised by fixed statistics."""

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.register_buffer("mean", torch.randn(dim) * 0.1)
        self.register_buffer("var", torch.rand(dim) + 0.5)
        self.alpha = nn.Parameter(torch.randn(dim) * 0.1)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid((x - self.mean) * torch.rsqrt(self.var + self.eps))
        return gate * x + (1 - gate) * self.alpha * x


class Attention(nn.Module):
    """w(q, k) = MLP([q, k, q-k, q*k]) with the first layer split term by term."""

    def __init__(self, dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.first = nn.Linear(4 * dim, hidden[0])
        self.first_act = PReLU(hidden[0])
        self.second = nn.Linear(hidden[0], hidden[1])
        self.second_act = PReLU(hidden[1])
        self.out = nn.Linear(hidden[1], 1)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        # q (B, C, D) candidates, k (B, T, D) behaviours -> (B, C, T)
        w_q, w_k, w_d, w_p = self.first.weight.chunk(4, dim=1)
        per_candidate = q @ (w_q + w_d).T  # (B, C, H)
        per_behaviour = k @ (w_k - w_d).T + self.first.bias  # (B, T, H)
        pairwise = (q.unsqueeze(2) * k.unsqueeze(1)) @ w_p.T  # (B, C, T, H)
        hidden = pairwise + per_candidate.unsqueeze(2) + per_behaviour.unsqueeze(1)
        hidden = self.second_act(self.second(self.first_act(hidden)))
        return self.out(hidden).squeeze(-1)


class DenseDIN(nn.Module):
    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.attention = Attention(dim, ATTENTION_HIDDEN)
        sizes = (3 * dim, *MLP_HIDDEN)
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out), Dice(fan_out)]
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(MLP_HIDDEN[-1], 1)

    def forward(self, cand: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # cand (B, C, D), hist (B, T, D), mask (B, T) -> scores (B, C)
        summed = (hist * mask.unsqueeze(-1)).sum(dim=1, keepdim=True)
        summed = summed.expand(-1, cand.shape[1], -1)
        weights = self.attention(cand, hist) * mask.unsqueeze(1)  # (B, C, T)
        features = torch.cat([cand, weights @ hist, summed], dim=-1)
        return torch.sigmoid(self.head(self.mlp(features)).squeeze(-1))


class Half(nn.Module):
    """The same graph in fp16 inside, fp32 at its edges (same feeds, same output type)."""

    def __init__(self, inner: DenseDIN) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, cand: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.inner(cand.half(), hist.half(), mask.half()).float()


def dense_model(seed: int = 0, dim: int = DIM) -> DenseDIN:
    torch.manual_seed(seed)
    return DenseDIN(dim).eval()


def dense_onnx(
    seed: int = 0,
    dim: int = DIM,
    *,
    fp16: bool = False,
    static: tuple[int, int, int] | None = None,
) -> bytes:
    """ONNX bytes of the seeded model; `static` = (B, T, C) fixes every shape (CUDA graphs)."""
    model: nn.Module = dense_model(seed, dim)
    if fp16:
        model = Half(model).eval()
    b, t, c = static or (2, 5, 3)
    example = tuple(torch.from_numpy(a) for a in random_inputs(b, t, c, dim))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            buffer,
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes=None if static else DYNAMIC_AXES,
        )
    return buffer.getvalue()


def random_inputs(
    b: int, t: int, c: int, dim: int = DIM, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates (B, C, D), histories (B, T, D) and masks (B, T); user b keeps T - b % T
    behaviours, so padding is exercised whenever B > 1."""
    rng = np.random.default_rng(seed)
    candidates = rng.standard_normal((b, c, dim), dtype=np.float32) * 0.5
    history = rng.standard_normal((b, t, dim), dtype=np.float32) * 0.5
    lengths = t - np.arange(b) % t
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)
    return candidates, history, mask


def feeds(inputs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip(INPUTS, inputs, strict=True))


def torch_scores(inputs: tuple[np.ndarray, ...], seed: int = 0) -> np.ndarray:
    """The PyTorch model's scores, the reference the ONNX graph must match."""
    with torch.no_grad():
        tensors = [torch.from_numpy(a) for a in inputs]
        return dense_model(seed, inputs[0].shape[-1])(*tensors).numpy()
