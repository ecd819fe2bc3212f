import re
import threading

import httpx
import numpy as np

from app.batching import pad_batch, run_group
from app.bundle import load_bundle
from app.scoring import Prepared
from core.graph import user_inputs
from export.publish import publish_bundle
from tests.factories import synthetic_bundle
from tests.service import service_process


def prepared(bundle, n_cand: int, n_hist: int, seed: int) -> Prepared:
    rng = np.random.default_rng(seed)
    history, mask = user_inputs(rng.standard_normal((n_hist, 36)).astype(np.float32))
    cands = rng.standard_normal((n_cand, 36)).astype(np.float32)
    items, cats = ["x"] * n_hist, [None] * n_hist
    return Prepared(bundle, cands, history, mask, None, "request", items, cats, 0.0, 0.0)


def test_a_padded_batch_scores_each_user_like_a_batch_of_one(redis_client, ns):
    version = publish_bundle(redis_client, ns, synthetic_bundle(40), progress=False).version
    bundle = load_bundle(redis_client, ns, version, "cpu", 1)
    shapes = [(3, 7), (10, 1), (1, 0), (5, 50)]
    jobs = [prepared(bundle, c, t, k) for k, (c, t) in enumerate(shapes)]
    cands, hists, masks = pad_batch(jobs)
    assert cands.shape == (4, 10, 36) and hists.shape == (4, 50, 36) and masks[2].sum() == 0
    for job, batched in zip(jobs, run_group(jobs), strict=True):
        alone = bundle.scorer.score(job.candidates, job.history, job.mask)
        assert batched.shape == alone.shape
        assert np.abs(batched - alone).max() <= 1e-6


def test_service_with_batching_gives_the_same_scores_and_coalesces(
    redis_server, redis_client, ns, bundle
):
    publish_bundle(redis_client, ns, bundle, progress=False)
    ids = [str(i) for i in bundle.tables["item"].ids[:60]]
    payloads = [
        {"user_id": str(u), "candidates": [{"item_id": i} for i in ids[u : u + 20 + u]]}
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
