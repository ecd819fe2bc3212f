"""Test factories: bundles built without training, and a writer process to kill."""

from __future__ import annotations

import sys

from core.redis_conn import connect_redis
from export.bundle import Bundle
from export.publish import publish_bundle
from export.synthetic import synthetic_bundle as make_synthetic_bundle


def synthetic_bundle(n_items: int, n_cats: int = 5, seed: int = 0) -> Bundle:
    return make_synthetic_bundle(n_items, n_cats=n_cats, seed=seed)


def main() -> None:
    """python -m tests.factories URL NS N_ITEMS: publish a big synthetic bundle (to be killed)."""
    url, ns, n_items = sys.argv[1], sys.argv[2], int(sys.argv[3])
    publish_bundle(connect_redis(url, timeout_s=30), ns, synthetic_bundle(n_items), progress=False)


if __name__ == "__main__":
    main()
