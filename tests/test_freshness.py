"""Freshness end to end: events posted to the service, applied by the ingest worker, are in
the very next score that reads the history from Redis."""

import numpy as np

from export.publish import publish_bundle
from ingest.config import IngestSettings
from ingest.worker import Worker
from tests.service import in_process


def test_posted_events_are_in_the_next_scores_history(redis_server, redis_client, ns, bundle):
    publish_bundle(redis_client, ns, bundle, progress=False)
    items = [str(i) for i in bundle.tables["item"].ids[:6]]
    candidates = [{"item_id": i} for i in items[3:]]
    behaviours = [
        {"user_id": "fresh-user", "item_id": item, "time": 1_733_059_200 + k, "event_id": f"e{k}"}
        for k, item in enumerate(items[:3])
    ]
    settings = IngestSettings(redis_url=redis_server.url, namespace=ns, ingest_metrics_port=0)
    with in_process(redis_server.url, ns) as client:
        before = client.post("/v1/score", json={"user_id": "fresh-user", "candidates": candidates})
        assert before.json()["history_length"] == 0
        posted = client.post("/v1/events", json={"events": behaviours})
        assert posted.status_code == 202 and posted.json() == {"accepted": 3}
        assert Worker(settings, client=redis_client).drain() == 3
        fresh = client.post("/v1/score", json={"user_id": "fresh-user", "candidates": candidates})
        explicit = client.post(
            "/v1/score",
            json={
                "user_id": "fresh-user",
                "candidates": candidates,
                "history": [{"item_id": b["item_id"]} for b in behaviours],
            },
        )
    assert fresh.json()["history_source"] == "redis"
    assert fresh.json()["history_length"] == explicit.json()["history_length"] == 3
    assert np.array_equal(fresh.json()["scores"], explicit.json()["scores"])
    assert not np.array_equal(fresh.json()["scores"], before.json()["scores"])


def test_a_bad_event_gets_a_422_naming_the_field(redis_server, redis_client, ns, bundle):
    publish_bundle(redis_client, ns, bundle, progress=False)
    with in_process(redis_server.url, ns) as client:
        answer = client.post(
            "/v1/events",
            json={"events": [{"user_id": "u", "item_id": "1", "time": 1, "colour": "red"}]},
        )
    assert answer.status_code == 422
    assert ["body", "events", 0, "colour"] in [e["loc"] for e in answer.json()["detail"]]
