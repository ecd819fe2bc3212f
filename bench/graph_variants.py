"""Local variants of the dense graph: the same trained weights, the same maths, other ops.

Each variant is a torch module built around a trained DenseDIN (no weight is copied or
changed) and exported with the serving signature (core/graph.py), so onnxruntime can time it
against the split export that preceded it. The knobs:

- prelu: `where` (the split form's torch.where(x > 0, x, a·x): Greater + Mul + Where), `prelu_op`
  (ONNX's own PRelu on (pairs, H): one kernel), `relu_min` (relu(x) + a·min(x, 0)).
- first: `split` (the split form's first attention layer: (q⊙k)·Wp, then two broadcast adds of the
  per-candidate and per-behaviour terms over (C, T, H)) or `fused` (behaviour-major: per
  behaviour t, N_t = [diag(k_t)·Wpᵀ + (Wq+Wd)ᵀ ; k_t·(Wk−Wd)ᵀ + b] and hidden_t = [q, 1]·N_t,
  one batched MatMul that also does both adds; (T, C, H) layout, the (T, C) weights
  transposed at the end).
- flat: the attention MLP on 2-D (pairs, H) tensors, so its Linear layers export as Gemm
  (bias fused) instead of MatMul + Add.
- out: `matmul` (the current Linear(H2, 1), an N=1 MatMul), `reduce` (Mul + ReduceSum) or
  `row` (w·hᵀ: M=1, N=pairs).
- top: `concat` (the current top MLP on [cand, pooled, summed, user, context] per candidate)
  or `split` (the per-request part, summed·Ws + user·Wu + context·Wc + b, computed once,
  and Dice's moving averages folded into one scale and shift).

    python -c "from bench.graph_variants import VARIANTS; print(list(VARIANTS))"
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core import graph
from export.model import DenseDIN, Dice, PReLU
from export.to_onnx import export_serving


@dataclass(frozen=True)
class Variant:
    prelu: str = "where"  # where | prelu_op | relu_min | max
    first: str = "split"  # split | fused
    flat: bool = False
    out: str = "matmul"  # matmul | reduce | row
    top: str = "concat"  # concat | split


VARIANTS = {
    "split export (the former one)": Variant(),
    "PReLU as ONNX PRelu": Variant(prelu="prelu_op"),
    "PReLU as relu(x) + a·min(x, 0)": Variant(prelu="relu_min"),
    "PReLU as max(x, a·x)": Variant(prelu="max"),
    "attention out as Mul + ReduceSum": Variant(out="reduce"),
    "attention out as one row (w·hᵀ)": Variant(out="row"),
    "attention MLP flat (Gemm)": Variant(flat=True),
    "first layer fused (behaviour-major)": Variant(first="fused"),
    "top MLP split + Dice folded": Variant(top="split"),
    "max + flat": Variant(prelu="max", flat=True),
    "max + flat + fused": Variant(prelu="max", flat=True, first="fused"),
    "max + flat + fused + row": Variant(prelu="max", flat=True, first="fused", out="row"),
    "max + flat + fused + row + top split": Variant(
        prelu="max", flat=True, first="fused", out="row", top="split"
    ),
}


# "max + flat + fused + row" is what the exporter now publishes (ActivationUnit's `served`
# form in export/model.py); the variants stay here to compare the alternatives with it.


def prelu(x: torch.Tensor, alpha: torch.Tensor, form: str) -> torch.Tensor:
    if form == "prelu_op" and x.dim() == 2:  # ONNX PRelu, slope (H,) over the last axis
        return F.prelu(x, alpha)
    if form == "prelu_op":
        return F.prelu(x.reshape(-1, x.shape[-1]), alpha).reshape(x.shape)
    if form == "relu_min":
        return torch.relu(x) + alpha * torch.clamp(x, max=0.0)
    if form == "max":  # max(x, a·x) picks x or a·x exactly as where does, for every a ≤ 1
        if bool((alpha > 1).any()):
            raise ValueError("max(x, a·x) is PReLU only for slopes a ≤ 1")
        return torch.maximum(x, alpha * x)
    return torch.where(x > 0, x, alpha * x)


class VariantAttention(nn.Module):
    """ActivationUnit's weights, (B, C, D) candidates and (B, T, D) behaviours -> (B, C, T)."""

    def __init__(self, unit: nn.Module, variant: Variant) -> None:
        super().__init__()
        self.unit, self.variant = unit, variant

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        fused = self.variant.first == "fused"
        hidden = self._first_fused(q, k) if fused else self._first_split(q, k)
        shape = hidden.shape  # (B, C, T, H) or, fused, (B, T, C, H)
        if self.variant.flat:
            hidden = hidden.reshape(-1, shape[-1])  # (pairs, H)
        hidden = prelu(hidden, self.unit.first_act.alpha, self.variant.prelu)
        for layer in self.unit.rest:
            if isinstance(layer, PReLU):
                hidden = prelu(hidden, layer.alpha, self.variant.prelu)
            else:
                hidden = layer(hidden)
        scores = self._out(hidden).reshape(shape[:-1])  # (B, C, T) or (B, T, C)
        return scores.transpose(1, 2) if fused else scores

    def _first_split(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The current export's first layer (ActivationUnit._first_split), (B, C, T, H)."""
        first = self.unit.first
        w_q, w_k, w_d, w_p = first.weight.chunk(4, dim=1)  # each (H, D)
        per_candidate = q @ (w_q + w_d).T  # (B, C, H)
        per_behaviour = k @ (w_k - w_d).T + first.bias  # (B, T, H)
        pairwise = (q.unsqueeze(2) * k.unsqueeze(1)) @ w_p.T  # (B, C, T, H)
        return pairwise + per_candidate.unsqueeze(2) + per_behaviour.unsqueeze(1)

    def _first_fused(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The served form's behaviour-major first layer, (B, T, C, H)."""
        return self.unit._first_behaviour_major(q, k)

    def _out(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.unit.out
        if self.variant.out == "reduce":
            return (hidden * out.weight[0]).sum(-1, keepdim=True) + out.bias
        if self.variant.out == "row":  # (1, H2) x (pairs, H2)ᵀ: one long row, not N = 1
            return (F.linear(out.weight, hidden.reshape(-1, hidden.shape[-1])) + out.bias).T
        return out(hidden)


def dice_folded(dice: Dice, x: torch.Tensor) -> torch.Tensor:
    """Dice in eval: sigmoid(x·s + t) gates between x and alpha·x, written as one product."""
    scale = torch.rsqrt(dice.norm.running_var + dice.norm.eps)
    gate = torch.sigmoid(x * scale - dice.norm.running_mean * scale)
    return x * (dice.alpha + gate * (1 - dice.alpha))


class VariantDense(nn.Module):
    """DenseDIN.logits_and_weights with the variant's ops."""

    def __init__(self, dense: DenseDIN, variant: Variant) -> None:
        super().__init__()
        if dense.attention is None:
            raise ValueError("the graph variants need DIN's attention pooling")
        self.dense, self.variant = dense, variant
        self.attention = VariantAttention(dense.attention, variant)

    def forward(self, cand, hist, mask, user=None, context=None):
        keep = mask.unsqueeze(1)  # (B, 1, T)
        weights = self.attention(cand, hist)  # (B, C, T)
        if self.dense.config.softmax:
            weights = torch.softmax(weights + (keep - 1.0) * 1e9, dim=-1)
        weights = weights * keep
        summed = (hist * mask.unsqueeze(-1)).sum(dim=1, keepdim=True)  # (B, 1, Di)
        pooled = weights @ hist  # (B, C, Di)
        if self.variant.top == "split":
            hidden = self._top_split(cand, pooled, summed, user, context)
        else:
            hidden = self._top_concat(cand, pooled, summed, user, context)
        return torch.sigmoid(self.dense.head(hidden).squeeze(-1)), weights

    def _top_concat(self, cand, pooled, summed, user, context) -> torch.Tensor:
        n_cand = cand.shape[1]
        features = [cand, pooled]
        if self.dense.config.sum_pool_input:
            features.append(summed.expand(-1, n_cand, -1))
        for side in (user, context):
            if side is not None:
                features.append(side.unsqueeze(1).expand(-1, n_cand, -1))
        return self.dense.mlp(torch.cat(features, dim=-1))

    def _top_split(self, cand, pooled, summed, user, context) -> torch.Tensor:
        first, dim = self.dense.mlp[0], self.dense.config.goods_dim
        per_request = [summed] if self.dense.config.sum_pool_input else []
        per_request += [side.unsqueeze(1) for side in (user, context) if side is not None]
        w_cand, w_rest = first.weight[:, : 2 * dim], first.weight[:, 2 * dim :]
        shared = torch.cat(per_request, dim=-1) @ w_rest.T + first.bias  # (B, 1, H)
        hidden = torch.cat([cand, pooled], dim=-1) @ w_cand.T + shared  # (B, C, H)
        for layer in list(self.dense.mlp)[1:]:
            hidden = dice_folded(layer, hidden) if isinstance(layer, Dice) else layer(hidden)
        return hidden


class VariantServing(nn.Module):
    """The serving signature (core/graph.py) around a VariantDense."""

    def __init__(self, dense: DenseDIN, variant: Variant) -> None:
        super().__init__()
        self.inner = VariantDense(dense, variant)
        self.input_names = graph.input_names(dense.config.schema)

    def forward(self, *inputs: torch.Tensor):
        named = dict(zip(self.input_names, inputs, strict=True))
        sides = (named.get(graph.USER), named.get(graph.CONTEXT))
        return self.inner(named[graph.CANDIDATES], named[graph.HISTORY], named[graph.MASK], *sides)


def export_variant(dense: DenseDIN, variant: Variant, dtype: torch.dtype = torch.float32) -> bytes:
    return export_serving(VariantServing(dense.eval(), variant).eval(), dense.config.schema, dtype)
