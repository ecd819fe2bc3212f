"""The contenders of `bench.peers` behind one interface, all fed the same built samples.

- the project's DIN and BaseModel: `export.train`'s own model, optimiser and epoch loop, and
  its calibration on validation users once the epoch is chosen (`export.calibrate`);
- DeepCTR-Torch 0.3.0's DIN, trained with its own `compile("adam", "binary_crossentropy")`
  and `fit`;
- torch-rechub 0.9.0's DIN, trained with its own `CTRTrainer.train_one_epoch`.

Every contender reads the same declared fields with the schema's embedding widths: the
candidate item id and each item-side field, the history of each of them (a behaviour carries
its item's side fields through `Vocabulary.item_side`), and every user and context field.
The peers need the `bench` extra; they are imported only when asked for.

    from bench.peer_models import PeerData, make_contender
    contender = make_contender("deepctr", PeerData.load(samples), seed=0, job=TrainJob(out=...))
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from core.schema import FeatureSchema, FieldSpec
from export.calibrate import calibrate
from export.job import TrainJob, model_config
from export.samples import SPLITS, Batch, SampleSet
from export.train import EVAL_BATCH, TrainConfig, new_model, predict, train_one_epoch

BATCH_SIZE = 128  # for every contender (DeepCTR-Torch's own fit default is 256)
RECHUB_MLP = {"dims": [256, 128]}  # torch-rechub's DIN has no default; its example's value
LABELS = {
    "din": "DIN",
    "base": "BaseModel",
    "deepctr": "DeepCTR-Torch DIN",
    "rechub": "torch-rechub DIN",
}
PROJECT = {"din", "base"}
HIST_LEN = "hist_len"


class FieldSizes(Protocol):
    """What building a peer's feature columns needs: the schema and each field's table size."""

    @property
    def schema(self) -> FeatureSchema: ...

    def vocab_size(self, spec: FieldSpec) -> int: ...


class Contender(Protocol):
    module: nn.Module

    def fit_epoch(self, epoch: int) -> None: ...

    def predict(self, split: str) -> np.ndarray: ...

    def finish(self) -> dict[str, float]:
        """After the epoch is chosen: what the contender's own pipeline does next."""
        ...


@dataclass
class PeerData:
    """The built samples, each split also held in memory, and the peers' named columns."""

    samples: SampleSet
    batches: dict[str, Batch]
    _columns: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, samples: SampleSet) -> PeerData:
        return cls(samples, {split: samples.read(split) for split in SPLITS})

    @property
    def schema(self) -> FeatureSchema:
        return self.samples.schema

    def vocab_size(self, spec: FieldSpec) -> int:
        return len(self.samples.vocab.fields[spec.name])

    def columns(self, split: str) -> dict[str, np.ndarray]:
        if split not in self._columns:
            self._columns[split] = named_columns(self.batches[split], self.samples)
        return self._columns[split]


def hist_name(spec: FieldSpec) -> str:
    return f"hist_{spec.name}"  # the name DeepCTR-Torch's DIN looks up for a history field


def named_columns(batch: Batch, samples: SampleSet) -> dict[str, np.ndarray]:
    """One int32 column per input: each item field of the candidate (N,) and of the history
    (N, L), each user and context field (N,), and the history length (N,)."""
    schema, side = samples.schema, samples.vocab.item_side  # side: (I+1, n_item_fields)
    columns = {HIST_LEN: batch.hist_len.astype(np.int32)}
    for j, spec in enumerate(schema.item):
        columns[spec.name] = side[batch.item, j]
        columns[hist_name(spec)] = side[batch.hist, j]  # padding stays 0: side[0] is all 0
    for j, spec in enumerate(schema.user):
        columns[spec.name] = batch.user_fields[:, j]
    for j, spec in enumerate(schema.context):
        columns[spec.name] = batch.context[:, j]
    n_inputs = 1 + 2 * len(schema.item) + len(schema.user) + len(schema.context)
    if len(columns) != n_inputs:
        raise ValueError(f"a declared field name clashes with hist_* or {HIST_LEN}: {schema}")
    return columns


def chunks(n: int, size: int = EVAL_BATCH) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, start + size)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The peers print devices and progress bars while training: keep them off the tables."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# ---------------------------------------------------------------------------------------------
# The project's models


class ProjectContender:
    """DIN or the BaseModel exactly as `export.train.train_model` builds and trains them."""

    def __init__(self, data: PeerData, name: str, seed: int, job: TrainJob) -> None:
        self.data = data
        self.config = TrainConfig(seed=seed, batch_size=BATCH_SIZE, progress=False)
        torch.manual_seed(seed)
        self.module = new_model(data.samples, model_config(data.samples, name, job))
        self.optimizer = torch.optim.Adam(
            self.module.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )

    def fit_epoch(self, epoch: int) -> None:
        train_one_epoch(self.module, self.optimizer, self.data.samples, self.config, epoch)

    def finish(self) -> dict[str, float]:
        """The project's trainer calibrates on the validation users (export.calibrate)."""
        return calibrate(self.module, self.data.samples)

    def predict(self, split: str) -> np.ndarray:
        batch = self.data.batches[split]
        parts = [predict(self.module, batch.take(part)) for part in chunks(len(batch))]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# ---------------------------------------------------------------------------------------------
# DeepCTR-Torch 0.3.0


def import_deepctr() -> types.ModuleType:
    """deepctr_torch.models.din, without running the package's __init__: all it does besides
    importing is start a thread that asks PyPI for a newer version."""
    if "deepctr_torch" not in sys.modules:
        spec = importlib.util.find_spec("deepctr_torch")
        if spec is None:
            raise ModuleNotFoundError("deepctr-torch is not installed: pip install '.[bench]'")
        package = types.ModuleType("deepctr_torch")
        package.__path__ = list(spec.submodule_search_locations or [])
        sys.modules["deepctr_torch"] = package
    import deepctr_torch.models.din as din

    return din


def deepctr_columns(data: FieldSizes) -> list:
    din = import_deepctr()
    schema = data.schema
    sparse = [
        din.SparseFeat(s.name, data.vocab_size(s), embedding_dim=s.dim)
        for s in (*schema.item, *schema.user, *schema.context)
    ]
    history = [
        din.VarLenSparseFeat(
            din.SparseFeat(hist_name(s), data.vocab_size(s), s.dim, embedding_name=s.name),
            maxlen=schema.max_history,
            length_name=HIST_LEN,
        )
        for s in schema.item
    ]
    return sparse + history


class DeepCTRContender:
    """DeepCTR-Torch's DIN with its defaults (attention (64, 16) with Dice, DNN (256, 128) with
    ReLU, init std 1e-4, L2 1e-6 on embeddings, Adam lr 1e-3, summed BCE); one `fit` call per
    epoch, silent (verbose=0 skips its per-batch training metrics)."""

    def __init__(self, data: PeerData, seed: int) -> None:
        din = import_deepctr()
        self.data = data
        item_fields = [s.name for s in data.schema.item]
        self.module = din.DIN(deepctr_columns(data), item_fields, seed=seed, device="cpu")
        self.module.compile("adam", "binary_crossentropy")

    def fit_epoch(self, epoch: int) -> None:
        labels = self.data.batches["fit"].label
        with quiet():
            self.module.fit(
                self.data.columns("fit"), labels, batch_size=BATCH_SIZE, epochs=1, verbose=0
            )

    def finish(self) -> dict[str, float]:
        return {}  # the library has no calibration step

    def predict(self, split: str) -> np.ndarray:
        return self.module.predict(self.data.columns(split), batch_size=EVAL_BATCH).ravel()


# ---------------------------------------------------------------------------------------------
# torch-rechub 0.9.0


class PerFieldRechubDIN(nn.Module):
    """torch-rechub's DIN, its own layers and the same computation, with the lookup done one
    field at a time: its forward stacks a group's embeddings on one axis, which only works
    when every field of the group has the same width, and the schema's widths differ."""

    def __init__(self, din: nn.Module) -> None:
        super().__init__()
        self.din = din

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        din = self.din
        targets = [din.embedding(x, [f])[:, 0] for f in din.target_features]  # (B, D_f) each
        pooled = [
            unit(din.embedding(x, [h])[:, 0], target)  # history (B, L, D_f) -> (B, D_f)
            for unit, h, target in zip(
                din.attention_layers, din.history_features, targets, strict=True
            )
        ]
        others = [din.embedding(x, [f], squeeze_dim=True) for f in din.features]  # (B, D_f)
        mlp_in = torch.cat(pooled + targets + others, dim=1)  # the library's order
        return torch.sigmoid(din.mlp(mlp_in).squeeze(1))


def rechub_din(data: PeerData) -> PerFieldRechubDIN:
    """Tables with padding_idx=0: its attention has no mask, so a padded behaviour must embed
    to zero (and stay zero) to add nothing to the pooled interest."""
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.ranking import DIN

    schema = data.schema
    targets = [
        SparseFeature(s.name, data.vocab_size(s), embed_dim=s.dim, padding_idx=0)
        for s in schema.item
    ]
    history = [
        SequenceFeature(
            hist_name(s),
            data.vocab_size(s),
            embed_dim=s.dim,
            pooling="concat",
            shared_with=s.name,
            padding_idx=0,
        )
        for s in schema.item
    ]
    others = [
        SparseFeature(s.name, data.vocab_size(s), embed_dim=s.dim, padding_idx=0)
        for s in (*schema.user, *schema.context)
    ]
    din = DIN(others, history, targets, mlp_params=RECHUB_MLP, attention_mlp_params={})
    return PerFieldRechubDIN(din)


class RechubContender:
    """torch-rechub's DIN with its defaults (attention unit [36] with Dice, init std 1e-4) and
    its CTRTrainer's (Adam lr 1e-3, weight decay 1e-5, BCE), fed by its TorchDataset."""

    def __init__(self, data: PeerData, seed: int) -> None:
        from torch_rechub.trainers import CTRTrainer
        from torch_rechub.utils.data import TorchDataset

        self.data = data
        torch.manual_seed(seed)
        self.module = rechub_din(data)
        self.trainer = CTRTrainer(self.module, device="cpu")
        dataset = TorchDataset(data.columns("fit"), data.batches["fit"].label)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)

    def fit_epoch(self, epoch: int) -> None:
        with quiet():
            self.trainer.train_one_epoch(self.loader)

    def finish(self) -> dict[str, float]:
        return {}  # the library has no calibration step

    @torch.no_grad()
    def predict(self, split: str) -> np.ndarray:
        self.module.eval()
        columns = self.data.columns(split)
        n = len(self.data.batches[split])
        parts = [
            self.module({k: torch.from_numpy(v[part]) for k, v in columns.items()}).numpy()
            for part in chunks(n)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def make_contender(key: str, data: PeerData, seed: int, job: TrainJob) -> Contender:
    if key in PROJECT:
        return ProjectContender(data, key, seed, job)
    if key == "deepctr":
        return DeepCTRContender(data, seed)
    if key == "rechub":
        return RechubContender(data, seed)
    raise ValueError(f"unknown model {key!r}; choose from {', '.join(LABELS)}")
