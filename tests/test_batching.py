import re
import threading

import httpx
import numpy as np

from app.batching import pad_batch, run_group
from app.bundle import load_version
from app.inputs import Lookup
from app.pipeline import Prepared
from core import graph
from export.live import load_from_samples
from export.publish import publish_bundle
from tests.factories import RICH_SCHEMA, synthetic_bundle
from tests.service import service_process


def prepared(bundle, n_cand: int, n_hist: int, seed: int) -> Prepared:
    """Random rows of every input the bundle's graph takes, for one user."""
    rng = np.random.default_rng(seed)
    schema = bundle.manifest.schema
    history, mask = graph.user_inputs(rng.standard_normal((n_hist, schema.item_dim), np.float32))
    inputs = {
        graph.CANDIDATES: rng.standard_normal((n_cand, schema.item_dim), np.float32),
        graph.HISTORY: history,
        graph.MASK: mask,
        graph.USER: rng.standard_normal(schema.user_dim, np.float32),
        graph.CONTEXT: rng.standard_normal(schema.context_dim, np.float32),
    }
    lookup = Lookup(["x"] * (n_cand + n_hist), {}, {}, {}, n_cand)
    return Prepared(bundle, inputs, lookup, None, "request", 0.0, 0.0)


def test_a_padded_batch_scores_each_user_like_a_batch_of_one(redis_client, ns):
    bundle = synthetic_bundle(40, schema=RICH_SCHEMA)
    version = publish_bundle(redis_client, ns, bundle, progress=False).version
    loaded = load_version(redis_client, ns, version, "cpu", 1)
    shapes = [(3, 7), (10, 1), (1, 0), (5, 12)]
    jobs = [prepared(loaded, c, t, k) for k, (c, t) in enumerate(shapes)]
    feeds = pad_batch(jobs)
    item_dim, user_dim = RICH_SCHEMA.item_dim, RICH_SCHEMA.user_dim
    assert feeds[graph.CANDIDATES].shape == (4, 10, item_dim)
    assert feeds[graph.HISTORY].shape == (4, 12, item_dim) and feeds[graph.MASK][2].sum() == 0
    assert feeds[graph.USER].shape == (4, user_dim)
    assert feeds[graph.CONTEXT].shape == (4, RICH_SCHEMA.context_dim)
    for job, batched in zip(jobs, run_group(jobs), strict=True):
        alone = loaded.scorer.score(job.inputs)
        assert batched.shape == alone.shape
        assert np.abs(batched - alone).max() <= 1e-6


def test_service_with_batching_gives_the_same_scores_and_coalesces(
    redis_server, redis_client, ns, bundle, samples
):
    publish_bundle(redis_client, ns, bundle, progress=False)
    load_from_samples(redis_client, ns, samples, progress=False)
    ids = [str(i) for i in bundle.tables["item"].ids[:60]]
    ages = bundle.tables["f:age"].ids
    payloads = [
        {
            "user_id": str(u),
            "user": {"age": str(ages[u % len(ages)])},
            "context": {"hour": str(u)},
            "candidates": [{"item_id": i} for i in ids[u : u + 20 + u]],
        }
        for u in range(1, 9)
    ]
    with service_process(redis_server.url, ns, batching="off") as plain:
        plain.wait_ready()
        with httpx.Client(base_url=plain.url) as client:
            want = [client.post("/v1/score", json=p).json()["scores"] for p in payloads]
    with service_process(redis_server.url, ns, batching="on", batch_wait_ms=5) as batched:
        batched.wait_ready()
        got: dict[int, list] = {}

        def post(k: int) -> None:
            with httpx.Client(base_url=batched.url) as client:
                for _ in range(5):
                    got[k] = client.post("/v1/score", json=payloads[k]).json()["scores"]

        threads = [threading.Thread(target=post, args=(k,)) for k in range(len(payloads))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = httpx.get(f"{batched.url}/metrics").text
    for k, scores in got.items():
        assert np.abs(np.array(scores) - np.array(want[k])).max() <= 1e-5
    runs = float(re.search(r"ctr_batch_requests_count (\S+)", metrics).group(1))
    assert 0 < runs < 5 * len(payloads)  # some runs served several requests
