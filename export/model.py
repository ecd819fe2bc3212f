"""DIN (Zhou et al., KDD 2018) and its sum-pooling BaseModel, in PyTorch.

The network is split in two: `DIN` owns the embedding tables (published as Redis rows) and
`DenseDIN` owns everything after the lookup (published as ONNX). The service runs only the
dense part, on vectors it fetched, so the two halves must agree exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from core import graph

ACTIVATIONS = ("dice", "prelu")
POOLINGS = ("attention", "sum")


@dataclass
class DINConfig:
    n_items: int
    n_cats: int
    item_dim: int = 18
    cat_dim: int = 18
    attention_hidden: list[int] = field(default_factory=lambda: [80, 40])
    mlp_hidden: list[int] = field(default_factory=lambda: [200, 80])
    activation: str = "dice"  # of the top MLP: "dice" or "prelu"
    pooling: str = "attention"  # "attention" is DIN, "sum" is the BaseModel
    softmax: bool = False  # the paper drops it to keep the intensity of interest
    sum_pool_input: bool = True  # DIN's top MLP also sees the sum-pooled history
    max_history: int = 50

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")

    @property
    def goods_dim(self) -> int:
        return self.item_dim + self.cat_dim

    def to_dict(self) -> dict:
        return asdict(self)


class Dice(nn.Module):
    """Data-adaptive PReLU: batch statistics in training, moving averages in inference."""

    def __init__(self, dim: int, eps: float = 1e-8, momentum: float = 0.01) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, eps=eps, momentum=momentum, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            normed = self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        else:  # moving averages, written out so the export holds plain arithmetic
            normed = (x - self.norm.running_mean) * torch.rsqrt(
                self.norm.running_var + self.norm.eps
            )
        gate = torch.sigmoid(normed)
        return gate * x + (1 - gate) * self.alpha * x


class PReLU(nn.Module):
    """PReLU over the last axis (torch's own takes axis 1 as the channel)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((dim,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, self.alpha * x)


def make_activation(name: str, dim: int) -> nn.Module:
    return Dice(dim) if name == "dice" else PReLU(dim)


def make_mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), make_activation(activation, fan_out)]
    return nn.Sequential(*layers)


class ActivationUnit(nn.Module):
    """w(q, k) = MLP([q, k, q-k, q*k]); `split` computes the first layer term by term.

    W·[q, k, q−k, q⊙k] = q·(Wq+Wd) + k·(Wk−Wd) + (q⊙k)·Wp, so the behaviour-only term is
    computed once per behaviour instead of once per (candidate, behaviour) pair.
    """

    def __init__(self, dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.first = nn.Linear(4 * dim, hidden[0])
        self.first_act = PReLU(hidden[0])
        self.rest = make_mlp(hidden, "prelu")
        self.out = nn.Linear(hidden[-1], 1)
        self.split = False

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        # q: (B, C, D) candidates, k: (B, T, D) behaviours -> (B, C, T) weights
        hidden = self._first_split(q, k) if self.split else self._first_full(q, k)
        return self.out(self.rest(self.first_act(hidden))).squeeze(-1)

    def _first_full(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        shape = (q.shape[0], q.shape[1], k.shape[1], q.shape[2])  # (B, C, T, D)
        qe, ke = q.unsqueeze(2).expand(shape), k.unsqueeze(1).expand(shape)
        return self.first(torch.cat([qe, ke, qe - ke, qe * ke], dim=-1))  # (B, C, T, H)

    def _first_split(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        w_q, w_k, w_d, w_p = self.first.weight.chunk(4, dim=1)  # each (H, D)
        per_candidate = q @ (w_q + w_d).T  # (B, C, H)
        per_behaviour = k @ (w_k - w_d).T + self.first.bias  # (B, T, H)
        pairwise = (q.unsqueeze(2) * k.unsqueeze(1)) @ w_p.T  # (B, C, T, H)
        return pairwise + per_candidate.unsqueeze(2) + per_behaviour.unsqueeze(1)


class DenseDIN(nn.Module):
    """Everything after the embedding lookup: attention (or sum) pooling and the top MLP."""

    def __init__(self, config: DINConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.goods_dim
        self.attention = (
            ActivationUnit(dim, config.attention_hidden) if config.pooling == "attention" else None
        )
        n_inputs = 2 + (config.sum_pool_input and self.attention is not None)
        self.mlp = make_mlp([n_inputs * dim, *config.mlp_hidden], config.activation)
        self.head = nn.Linear(config.mlp_hidden[-1], 1)

    def logits(self, cand: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # cand: (B, C, D), hist: (B, T, D), mask: (B, T) float 1 = real behaviour -> (B, C)
        return self.logits_and_weights(cand, hist, mask)[0]

    def logits_and_weights(
        self, cand: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, C) and the weight of each behaviour for each candidate (B, C, T)."""
        summed = (hist * mask.unsqueeze(-1)).sum(dim=1, keepdim=True)  # (B, 1, D)
        summed = summed.expand(-1, cand.shape[1], -1)  # (B, C, D)
        weights = self.attention_weights(cand, hist, mask)  # (B, C, T)
        if self.attention is None:
            features = [cand, summed]
        else:
            features = [cand, weights @ hist]  # (B, C, D) each
            if self.config.sum_pool_input:
                features.append(summed)
        logits = self.head(self.mlp(torch.cat(features, dim=-1))).squeeze(-1)
        return logits, weights

    def attention_weights(
        self, cand: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """What each behaviour contributes to a candidate's pooled interest, (B, C, T); padding
        weighs 0. Sum pooling (the BaseModel) weighs every behaviour 1, whatever the candidate."""
        keep = mask.unsqueeze(1)  # (B, 1, T)
        if self.attention is None:
            return keep.expand(-1, cand.shape[1], -1)
        weights = self.attention(cand, hist)  # (B, C, T)
        if self.config.softmax:
            weights = torch.softmax(weights + (keep - 1.0) * 1e9, dim=-1)
        return weights * keep

    def forward(self, cand: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(cand, hist, mask))


class DIN(nn.Module):
    """Embedding tables plus the dense part; trains on index batches."""

    def __init__(self, config: DINConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.item_dim, padding_idx=0)
        self.cat_emb = nn.Embedding(config.n_cats + 1, config.cat_dim, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.cat_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            self.cat_emb.weight[0].zero_()
        self.dense = DenseDIN(config)

    def goods(self, item: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.item_emb(item), self.cat_emb(cat)], dim=-1)  # (..., D)

    def forward(
        self,
        item: torch.Tensor,
        cat: torch.Tensor,
        hist_item: torch.Tensor,
        hist_cat: torch.Tensor,
        hist_len: torch.Tensor,
    ) -> torch.Tensor:
        # item, cat, hist_len: (B,); hist_item, hist_cat: (B, T) -> logits (B,)
        cand = self.goods(item, cat).unsqueeze(1)  # (B, 1, D)
        hist = self.goods(hist_item, hist_cat)  # (B, T, D)
        steps = torch.arange(hist_item.shape[1], device=hist_len.device)
        mask = (steps.unsqueeze(0) < hist_len.unsqueeze(1)).float()  # (B, T)
        return self.dense.logits(cand, hist, mask).squeeze(1)


class ServingGraph(nn.Module):
    """The exported signature: B users, each with its history once, broadcast over C candidates.

    A single request is a batch of one; the service's micro-batcher pads several into one run.
    The attention weights are a second output: /v1/score does not fetch them, /v1/explain does.
    """

    INPUTS = graph.INPUTS
    OUTPUTS = graph.OUTPUTS

    def __init__(self, dense: DenseDIN) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, candidates: torch.Tensor, history: torch.Tensor, history_mask: torch.Tensor):
        # candidates: (B, C, D), history: (B, T, D), history_mask: (B, T)
        # -> scores (B, C), attention (B, C, T)
        logits, weights = self.dense.logits_and_weights(candidates, history, history_mask)
        return torch.sigmoid(logits), weights
