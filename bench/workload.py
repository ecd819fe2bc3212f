"""The requests every section sends: like the API's example request (a user id, profile
fields, context fields), with T=50 explicit behaviours and C=100 candidate item ids.

Every raw value is one the bundle publishes: item ids from its item table, each user and
context field's value from that field's table. A Zipf stream draws items by popularity rank.

    python -m bench.workload       # prints the start of one body
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import orjson
from pydantic import BaseModel

from app.config import Settings
from app.requests import build_request_models, parse_request
from core import keys
from core.schema import ITEM_ID, FeatureSchema, load_schema_file
from export.bundle import Bundle

T, C = 50, 100
ZIPF_S = 1.1
EXAMPLE_SCHEMA = Path("examples/movielens-100k.yaml")


@dataclass(frozen=True)
class Catalogue:
    """The raw values a request may name, from one bundle."""

    items: np.ndarray  # item ids
    fields: dict[str, np.ndarray]  # profile or context field -> its values
    profile: tuple[str, ...]
    context: tuple[str, ...]
    user_ids: np.ndarray  # the user-id field's values, empty when the schema has none


@dataclass
class Slate:
    history: list[str]  # T raw item ids, oldest first
    candidates: list[str]  # C raw item ids
    user_id: str
    user: dict[str, str]
    context: dict[str, str]


def example_schema() -> FeatureSchema:
    """The MovieLens example's fields, for random-weight bundles (export.synthetic)."""
    return load_schema_file(EXAMPLE_SCHEMA).features


def catalogue_of(bundle: Bundle) -> Catalogue:
    schema = bundle.schema
    named = (*schema.profile_fields, *schema.context)
    uid = schema.user_id_field
    return Catalogue(
        items=bundle.tables[keys.ITEM_TABLE].ids.astype(str),
        fields={f.name: bundle.tables[keys.field_table(f.name)].ids.astype(str) for f in named},
        profile=tuple(f.name for f in schema.profile_fields),
        context=tuple(f.name for f in schema.context),
        user_ids=bundle.tables[keys.field_table(uid)].ids.astype(str) if uid else np.array([]),
    )


def user_side(catalogue: Catalogue, rng: np.random.Generator, k: int) -> dict:
    """A user id, one value per profile field and one per context field."""
    pick = {name: str(rng.choice(values)) for name, values in catalogue.fields.items()}
    ids = catalogue.user_ids
    return {
        "user_id": str(rng.choice(ids)) if len(ids) else f"bench-{k}",
        "user": {name: pick[name] for name in catalogue.profile},
        "context": {name: pick[name] for name in catalogue.context},
    }


def random_slates(catalogue: Catalogue, n: int, seed: int = 0, t: int = T, c: int = C):
    """n slates of distinct random items (history and candidates drawn apart)."""
    rng = np.random.default_rng(seed)
    slates = []
    for k in range(n):
        chosen = rng.choice(catalogue.items, size=t + c, replace=t + c > len(catalogue.items))
        chosen = chosen.tolist()
        slates.append(Slate(chosen[:t], chosen[t:], **user_side(catalogue, rng, k)))
    return slates


class ZipfItems:
    """Item ids drawn with P(rank k) ∝ k^-s over the whole catalogue (ranks shuffled once)."""

    def __init__(self, catalogue: Catalogue, s: float = ZIPF_S, seed: int = 0) -> None:
        self.catalogue = catalogue
        self.rng = np.random.default_rng(seed)
        self.ids = self.rng.permutation(catalogue.items)
        weights = np.arange(1, len(self.ids) + 1, dtype=np.float64) ** -s
        self.p = weights / weights.sum()
        self.drawn = 0

    def slate(self, t: int = T, c: int = C) -> Slate:
        drawn = self.rng.choice(self.ids, size=t + c, p=self.p).tolist()
        self.drawn += 1
        return Slate(drawn[:t], drawn[t:], **user_side(self.catalogue, self.rng, self.drawn))


@cache
def score_model() -> type[BaseModel]:
    """The /v1/score request model with the service's default limits."""
    return build_request_models(Settings()).score


def score_body(slate: Slate) -> bytes:
    return orjson.dumps(
        {
            "user_id": slate.user_id,
            "user": slate.user,
            "context": slate.context,
            "history": [{ITEM_ID: i} for i in slate.history],
            "candidates": [{ITEM_ID: i} for i in slate.candidates],
        }
    )


def score_request(slate: Slate) -> BaseModel:
    return parse_request(score_body(slate), score_model())


if __name__ == "__main__":
    from bench.model import load_bench_model

    body = score_body(random_slates(catalogue_of(load_bench_model().bundle), 1)[0])
    print(body[:300].decode(), "...", f"({len(body)} bytes)")
