"""DIN (Zhou et al., KDD 2018) and its sum-pooling BaseModel, in PyTorch.

The network is split in two: `DIN` owns one embedding table per declared field (published as
Redis rows) and `DenseDIN` owns everything after the lookup (published as ONNX). The service
runs only the dense part, on vectors it fetched, so the two halves must agree exactly.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from core import graph
from core.schema import KINDS, FeatureSchema

if TYPE_CHECKING:  # samples read Parquet; the model only needs a batch's arrays
    from export.samples import Batch

ACTIVATIONS = ("dice", "prelu")
POOLINGS = ("attention", "sum")


@dataclass
class DINConfig:
    schema: FeatureSchema
    vocab_sizes: dict[str, int]  # rows of each field's table, index 0 = padding / missing
    attention_hidden: list[int] = field(default_factory=lambda: [80, 40])
    mlp_hidden: list[int] = field(default_factory=lambda: [200, 80])
    activation: str = "prelu"  # of the top MLP: "prelu" or "dice" (docs/quality.md)
    attention_activation: str = "prelu"  # of the activation unit's hidden layers
    pooling: str = "attention"  # "attention" is DIN, "sum" is the BaseModel
    softmax: bool = False  # the paper drops it to keep the intensity of interest
    sum_pool_input: bool = True  # DIN's top MLP also sees the sum-pooled history
    # every table starts near zero (as DeepCTR-Torch's do): chosen on validation users,
    # docs/quality.md; with N(0, 0.05) rows the model fit the training users' ids too early
    embedding_std: float = 1e-4
    dropout: float = 0.0  # after each hidden layer of the top MLP, in training only

    def __post_init__(self) -> None:
        for name in ("activation", "attention_activation"):
            if getattr(self, name) not in ACTIVATIONS:
                raise ValueError(
                    f"{name} must be one of {ACTIVATIONS}, got {getattr(self, name)!r}"
                )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")

    @property
    def goods_dim(self) -> int:
        return self.schema.item_dim

    @property
    def max_history(self) -> int:
        return self.schema.max_history

    def to_dict(self) -> dict:
        return asdict(self) | {"schema": self.schema.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict) -> DINConfig:
        """A saved config; keys this version does not know (or no longer uses) are skipped."""
        known = {f.name for f in fields(cls)}
        settings = {k: v for k, v in raw.items() if k in known}
        return cls(**settings | {"schema": FeatureSchema.from_dict(raw["schema"])})


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

    def served(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


class PReLU(nn.Module):
    """PReLU over the last axis (torch's own takes axis 1 as the channel)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((dim,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, self.alpha * x)

    def served(self, x: torch.Tensor) -> torch.Tensor:
        """The same values as forward in one element-wise kernel instead of three (Greater,
        Mul, Where): max(x, a·x) picks x or a·x exactly as where does when every slope a ≤ 1,
        which is decided once, when the graph is exported."""
        if bool((self.alpha > 1).any()):
            return self.forward(x)
        return torch.maximum(x, self.alpha * x)


def make_activation(name: str, dim: int) -> nn.Module:
    return Dice(dim) if name == "dice" else PReLU(dim)


def make_mlp(sizes: list[int], activation: str, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), make_activation(activation, fan_out)]
        if dropout:  # identity in eval mode, so the export is unchanged
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


FORMS = ("concat", "split", "served")


class ActivationUnit(nn.Module):
    """w(q, k) = MLP([q, k, q-k, q*k]), computed in one of three forms with the same maths:

    - `concat`, the reference: the concatenation, literally, per (candidate, behaviour) pair;
    - `split`, for training: W·[q, k, q−k, q⊙k] = q·(Wq+Wd) + k·(Wk−Wd) + (q⊙k)·Wp, so the
      behaviour-only term is computed once per behaviour, not once per pair;
    - `served`, for the exported graph: fewer, larger kernels (see `_served`).
    """

    def __init__(self, dim: int, hidden: list[int], activation: str = "prelu") -> None:
        super().__init__()
        self.first = nn.Linear(4 * dim, hidden[0])
        self.first_act = make_activation(activation, hidden[0])
        self.rest = make_mlp(hidden, activation)
        self.out = nn.Linear(hidden[-1], 1)
        self.form = "concat"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        # q: (B, C, D) candidates, k: (B, T, D) behaviours -> (B, C, T) weights
        if self.form == "served":
            return self._served(q, k)
        hidden = self._first_split(q, k) if self.form == "split" else self._first_full(q, k)
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

    def _first_behaviour_major(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The split first layer as one batched MatMul that also does both adds: for each
        behaviour t, N_t = [diag(k_t)·Wpᵀ + (Wq+Wd)ᵀ ; k_t·(Wk−Wd)ᵀ + b] and
        hidden(·, t) = [q, 1]·N_t. Returns (B, T, C, H): behaviour-major."""
        w_q, w_k, w_d, w_p = self.first.weight.chunk(4, dim=1)  # each (H, D)
        per_behaviour = k @ (w_k - w_d).T + self.first.bias  # (B, T, H)
        n = k.unsqueeze(-1) * w_p.T + (w_q + w_d).T  # (B, T, D, H)
        n = torch.cat([n, per_behaviour.unsqueeze(2)], dim=2)  # (B, T, D + 1, H)
        q_one = F.pad(q, (0, 1), value=1.0)  # (B, C, D + 1)
        return q_one.unsqueeze(1) @ n  # (B, T, C, H)

    def _served(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """What the exported graph runs, measured 0.6x the split form in onnxruntime
        (docs/performance.md): the behaviour-major first layer; the MLP on 2-D (pairs, H)
        tensors, so each Linear exports as one Gemm with its bias; PReLU as max(x, a·x); the
        output layer as one (1, H) x (H, pairs) product instead of a MatMul with N = 1."""
        hidden = self._first_behaviour_major(q, k)
        shape = hidden.shape  # (B, T, C, H)
        hidden = self.first_act.served(hidden.reshape(-1, shape[-1]))  # (pairs, H)
        for layer in self.rest:
            hidden = layer.served(hidden) if isinstance(layer, PReLU | Dice) else layer(hidden)
        scores = F.linear(self.out.weight, hidden) + self.out.bias  # (1, pairs)
        return scores.reshape(shape[:-1]).transpose(1, 2)  # (B, C, T)


@contextlib.contextmanager
def attention_form(model: nn.Module, form: str):
    """Run every attention unit of `model` in `form` inside the block, then back to concat:
    training uses `split` (about half the work), the export `served`; evaluation and the
    parity checks keep `concat` as their reference."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    units = [m for m in model.modules() if isinstance(m, ActivationUnit)]
    for unit in units:
        unit.form = form
    try:
        yield
    finally:
        for unit in units:
            unit.form = "concat"


class DenseDIN(nn.Module):
    """Everything after the embedding lookup: attention (or sum) pooling and the top MLP,
    whose input is [candidate, pooled interest, sum-pooled history, user, context]."""

    def __init__(self, config: DINConfig) -> None:
        super().__init__()
        self.config = config
        dim, schema = config.goods_dim, config.schema
        self.attention = (
            ActivationUnit(dim, config.attention_hidden, config.attention_activation)
            if config.pooling == "attention"
            else None
        )
        n_goods = 2 + (config.sum_pool_input and self.attention is not None)
        width = n_goods * dim + schema.user_dim + schema.context_dim
        self.mlp = make_mlp([width, *config.mlp_hidden], config.activation, config.dropout)
        self.head = nn.Linear(config.mlp_hidden[-1], 1)

    def logits(self, cand, hist, mask, user=None, context=None) -> torch.Tensor:
        # cand: (B, C, Di), hist: (B, T, Di), mask: (B, T) 1 = real behaviour,
        # user: (B, Du) or None, context: (B, Dc) or None -> (B, C)
        return self.logits_and_weights(cand, hist, mask, user, context)[0]

    def logits_and_weights(
        self,
        cand: torch.Tensor,
        hist: torch.Tensor,
        mask: torch.Tensor,
        user: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, C) and the weight of each behaviour for each candidate (B, C, T)."""
        n_cand = cand.shape[1]
        summed = (hist * mask.unsqueeze(-1)).sum(dim=1, keepdim=True)  # (B, 1, Di)
        summed = summed.expand(-1, n_cand, -1)  # (B, C, Di)
        weights = self.attention_weights(cand, hist, mask)  # (B, C, T)
        if self.attention is None:
            features = [cand, summed]
        else:
            features = [cand, weights @ hist]  # (B, C, Di) each
            if self.config.sum_pool_input:
                features.append(summed)
        for side in (user, context):  # the user once per request, broadcast over candidates
            if side is not None:
                features.append(side.unsqueeze(1).expand(-1, n_cand, -1))  # (B, C, Du|Dc)
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

    def forward(self, cand, hist, mask, user=None, context=None) -> torch.Tensor:
        return torch.sigmoid(self.logits(cand, hist, mask, user, context))


class DIN(nn.Module):
    """One embedding table per schema field, plus the dense part; trains on index batches.

    `item_side` maps an item index to the index of each item-side field (column 0 is the
    item itself), so an item carries its fields wherever it appears, candidate or behaviour.
    """

    def __init__(self, config: DINConfig, item_side: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        schema = config.schema
        self.embeddings = nn.ModuleDict(
            {
                spec.name: nn.Embedding(config.vocab_sizes[spec.name], spec.dim, padding_idx=0)
                for kind in KINDS
                for spec in schema.fields_of(kind)
            }
        )
        for table in self.embeddings.values():
            nn.init.normal_(table.weight, std=config.embedding_std)
            with torch.no_grad():
                table.weight[0].zero_()
        n_items, n_fields = config.vocab_sizes[schema.item_field.name], len(schema.item)
        default_side = torch.zeros(n_items, n_fields, dtype=torch.long)
        self.register_buffer("item_side", default_side if item_side is None else item_side.long())
        self.dense = DenseDIN(config)

    def concat_fields(self, kind: str, indices: torch.Tensor) -> torch.Tensor | None:
        """(..., F) field indices of one kind -> (..., D) their embeddings side by side."""
        specs = self.config.schema.fields_of(kind)
        if not specs:
            return None
        parts = [self.embeddings[s.name](indices[..., j]) for j, s in enumerate(specs)]
        return torch.cat(parts, dim=-1)

    def field_indices(self, item, hist, user_fields, context) -> dict[str, torch.Tensor]:
        """Every embedding row a batch reads, per field (flattened, padding included): what
        the mini-batch aware regulariser penalises."""
        schema = self.config.schema
        items = torch.cat([self.item_side[item], self.item_side[hist].flatten(0, -2)])
        found = {s.name: items[:, j] for j, s in enumerate(schema.item)}
        found |= {s.name: user_fields[:, j] for j, s in enumerate(schema.user)}
        return found | {s.name: context[:, j] for j, s in enumerate(schema.context)}

    def goods(self, item: torch.Tensor) -> torch.Tensor:
        """Item indices (...) -> item rows (..., Di): every item-side field's embedding."""
        return self.concat_fields("item", self.item_side[item])

    def forward(self, item, hist, hist_len, user_fields, context) -> torch.Tensor:
        # item, hist_len: (B,); hist: (B, T); user_fields: (B, Fu); context: (B, Fc) -> (B,)
        cand = self.goods(item).unsqueeze(1)  # (B, 1, Di)
        steps = torch.arange(hist.shape[1], device=hist_len.device)
        mask = (steps.unsqueeze(0) < hist_len.unsqueeze(1)).float()  # (B, T)
        user = self.concat_fields("user", user_fields)  # (B, Du) or None
        ctx = self.concat_fields("context", context)  # (B, Dc) or None
        return self.dense.logits(cand, self.goods(hist), mask, user, ctx).squeeze(1)


EVAL_BATCH = 4096  # samples per forward pass when scoring a whole split


def to_tensors(batch: Batch) -> list[torch.Tensor]:
    """The model's inputs: item, hist, hist_len, user_fields, context as int64 tensors."""
    columns = (batch.item, batch.hist, batch.hist_len, batch.user_fields, batch.context)
    return [torch.tensor(c, dtype=torch.long) for c in columns]  # a copy: batches are read-only


class ServingGraph(nn.Module):
    """The exported signature (core.graph): B users, each with its history, user and context
    rows once, broadcast over its C candidates. A request is a batch of one; the service's
    micro-batcher pads several into one run. The attention weights are a second output:
    /v1/score does not fetch them, /v1/explain does."""

    OUTPUTS = graph.OUTPUTS

    def __init__(self, dense: DenseDIN) -> None:
        super().__init__()
        self.dense = dense
        self.input_names = graph.input_names(dense.config.schema)

    def forward(self, *inputs: torch.Tensor):
        # candidates (B, C, Di), history (B, T, Di), history_mask (B, T)[, user (B, Du)]
        # [, context (B, Dc)] -> scores (B, C), attention (B, C, T)
        named = dict(zip(self.input_names, inputs, strict=True))
        logits, weights = self.dense.logits_and_weights(
            named[graph.CANDIDATES],
            named[graph.HISTORY],
            named[graph.MASK],
            named.get(graph.USER),
            named.get(graph.CONTEXT),
        )
        return torch.sigmoid(logits), weights
