"""The graph inputs of one request: which raw values it reads, which rows those are, and the
arrays built from them.

An item row is the concatenation of the item's item-side field embeddings; a request may give
an item-side field's value per item, whose row from the field's own table then replaces that
slice. The user and context vectors are their fields' rows concatenated in schema order; a
field without a value keeps its default row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.bundle import LoadedBundle
from app.features import FetchStats, RowFetcher, StoredUser
from core import graph, keys
from core.rows import decode_rows
from core.schema import ITEM_ID, FeatureSchema


@dataclass
class Lookup:
    """The raw values one request reads."""

    items: list[str]  # item ids: candidates, then behaviours oldest first
    overrides: dict[str, list[str | None]]  # side field -> value per item, for fields given
    user: dict[str, str]  # user field -> raw value (the user id field's is the user id)
    context: dict[str, str]
    n_candidates: int

    @property
    def history_length(self) -> int:
        return len(self.items) - self.n_candidates


def build_lookup(request, schema: FeatureSchema, stored: StoredUser) -> Lookup:
    """The request's values; the stored history and profile fill what the request lacks."""
    if request.history is not None:
        behaviours = request.history[-schema.max_history :]
        history = [h[ITEM_ID] for h in behaviours]
    else:  # stored behaviours carry the side fields they were ingested with, if any
        behaviours, history = stored.sides, stored.history
    user = {schema.user_id_field: request.user_id} if schema.user_id_field else {}
    return Lookup(
        items=[c[ITEM_ID] for c in request.candidates] + history,
        overrides=side_overrides(request.candidates + behaviours, schema),
        user=user | stored.profile | request.user,
        context=dict(request.context),
        n_candidates=len(request.candidates),
    )


def side_overrides(items: list[dict], schema: FeatureSchema) -> dict[str, list[str | None]]:
    """Per side field of the schema that any item sets: its value per item, None where not
    set. Names the schema does not declare (a stored behaviour may carry another version's)
    are left out."""
    named = set().union(*items)  # usually just item_id: no per-item work at all
    return {
        spec.name: [item.get(spec.name) for item in items]
        for spec in schema.side_fields
        if spec.name in named
    }


def wanted_rows(lookup: Lookup) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """The distinct values to fetch per table, and each item's index into its table's list."""
    ids, index = distinct(lookup.items)
    wanted, where = {keys.ITEM_TABLE: ids}, {keys.ITEM_TABLE: index}
    for name, values in lookup.overrides.items():
        table = keys.field_table(name)
        wanted[table], where[table] = distinct([v for v in values if v is not None])
    for name, value in (lookup.user | lookup.context).items():
        wanted[keys.field_table(name)] = [value]
    return wanted, where


def distinct(values: list[str]) -> tuple[list[str], np.ndarray]:
    """The distinct values in first-seen order, and each value's index among them: a dict
    pass, half the time of np.unique's sort of a string array (and less time holding the
    GIL, which the other requests' threads wait on)."""
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(v, len(index)) for v in values), np.intp, len(values))
    return list(index), inverse


def gather_inputs(
    fetcher: RowFetcher, bundle: LoadedBundle, lookup: Lookup
) -> tuple[dict[str, np.ndarray], FetchStats]:
    """One user's graph inputs, (C, Di), (T, Di), (T,), and (Du,), (Dc,) when the schema has
    such fields, from one fetch of every row the request needs."""
    wanted, where = wanted_rows(lookup)
    fetched, stats = fetcher.fetch_tables(bundle, wanted)
    rows = {table: decode(bundle, table, values) for table, values in fetched.items()}
    goods = rows[keys.ITEM_TABLE][where[keys.ITEM_TABLE]]  # (C + T, Di), a fresh array
    spans = bundle.offsets["item"]
    for name, per_item in lookup.overrides.items():
        table = keys.field_table(name)
        given = np.fromiter((v is not None for v in per_item), bool, len(per_item))
        goods[given, spans[name]] = rows[table][where[table]]  # (N given, d) into its slice
    history, mask = graph.user_inputs(goods[lookup.n_candidates :])
    inputs = {graph.CANDIDATES: goods[: lookup.n_candidates], graph.HISTORY: history}
    inputs[graph.MASK] = mask
    schema = bundle.manifest.schema
    if schema.user:
        inputs[graph.USER] = field_vector(bundle, "user", lookup.user, rows)
    if schema.context:
        inputs[graph.CONTEXT] = field_vector(bundle, "context", lookup.context, rows)
    return inputs, stats


def field_vector(bundle: LoadedBundle, kind: str, values: dict, rows: dict) -> np.ndarray:
    """(D,) for one kind: each given field's row in its slice, default rows elsewhere."""
    vector = bundle.defaults[kind].copy()
    spans = bundle.offsets[kind]
    for name in values:
        vector[spans[name]] = rows[keys.field_table(name)][0]
    return vector


def decode(bundle: LoadedBundle, table: str, values: list[bytes]) -> np.ndarray:
    return decode_rows(values, bundle.manifest.row_dtype, bundle.manifest.tables[table].dim)
