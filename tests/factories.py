"""Test factories: bundles of any schema built without training, users' live state, and a
writer process to kill."""

from __future__ import annotations

import sys

import numpy as np

from core.redis_conn import RedisClient, connect_redis
from core.schema import FeatureSchema, FieldSpec
from export.bundle import Bundle
from export.live import load_live_state
from export.publish import publish_bundle
from export.synthetic import synthetic_bundle as make_synthetic_bundle

# Every kind of field: item-side fields, a user id field, profile fields, a context field.
RICH_SCHEMA = FeatureSchema(
    item=(FieldSpec("item_id", 8), FieldSpec("shop", 4), FieldSpec("brand", 3)),
    user=(FieldSpec("uid", 4), FieldSpec("age", 3), FieldSpec("gender", 2)),
    context=(FieldSpec("hour", 3),),
    max_history=12,
    user_id_field="uid",
)
# Another schema, for versions that disagree: other item-side and context fields, no user.
OTHER_SCHEMA = FeatureSchema(
    item=(FieldSpec("item_id", 6), FieldSpec("colour", 4)),
    context=(FieldSpec("device", 2),),
    max_history=8,
)


def synthetic_bundle(
    n_items: int, n_cats: int = 5, seed: int = 0, schema: FeatureSchema | None = None
) -> Bundle:
    """Random weights and rows; n_cats values ("{field}0"...) per field other than the item
    id; items are "s0"..."s{n_items-1}"."""
    return make_synthetic_bundle(n_items, n_cats=n_cats, seed=seed, schema=schema)


def synthetic_users(
    bundle: Bundle, n_users: int, seed: int = 0
) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """Users (the user id field's first values, else "u0"...), each with a full history of
    the bundle's items and a value for every profile field, drawn at random."""
    rng = np.random.default_rng(seed)
    items, schema = bundle.tables["item"].ids, bundle.schema
    names = [f.name for f in schema.profile_fields]
    users = [f"u{k}" for k in range(n_users)]
    if schema.user_id_field:
        users = bundle.tables[f"f:{schema.user_id_field}"].ids[:n_users].astype(str).tolist()
    histories, profiles = {}, {}
    for user in users:
        histories[user] = rng.choice(items, bundle.max_history).astype(str).tolist()
        profiles[user] = {n: str(rng.choice(bundle.tables[f"f:{n}"].ids)) for n in names}
    return histories, profiles


def publish_with_users(client: RedisClient, ns: str, bundle: Bundle, n_users: int = 4, **options):
    """Publish (and activate) a bundle and store n_users users' histories and profiles."""
    manifest = publish_bundle(client, ns, bundle, progress=False, **options)
    histories, profiles = synthetic_users(bundle, n_users)
    load_live_state(client, ns, histories, profiles)
    return manifest, histories, profiles


def main() -> None:
    """python -m tests.factories URL NS N_ITEMS: publish a big synthetic bundle (to be killed)."""
    url, ns, n_items = sys.argv[1], sys.argv[2], int(sys.argv[3])
    publish_bundle(connect_redis(url, timeout_s=30), ns, synthetic_bundle(n_items), progress=False)


if __name__ == "__main__":
    main()
