import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from app.metrics import SCORE_BUCKETS, observe_many


def test_observe_many_counts_like_one_observe_per_value():
    values = [*np.random.default_rng(0).random(500).tolist(), 0.0, 0.05, 1.0]
    texts = []
    for bulk in (False, True):
        registry = CollectorRegistry()
        histogram = Histogram("s", "scores", ["v"], buckets=SCORE_BUCKETS, registry=registry)
        child = histogram.labels(v="a")
        if bulk:
            observe_many(child, values)
        else:
            for value in values:
                child.observe(value)
        texts.append(
            [
                line
                for line in generate_latest(registry).decode().splitlines()
                if "_bucket" in line or "_count" in line
            ]
        )
    assert texts[0] == texts[1]
