"""The requests every section sends: T=50 explicit behaviours and C=100 candidate item ids.

Ids are raw ids of the published bundle; a Zipf stream draws them by popularity rank.

    python -c "from bench.workload import score_body; print(score_body(['1', '2'], ['3'])[:80])"
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from app.schemas import ScoreRequest

T, C = 50, 100
ZIPF_S = 1.1


@dataclass
class Slate:
    history: list[str]  # T raw item ids, oldest first
    candidates: list[str]  # C raw item ids


def random_slates(item_ids: np.ndarray, n: int, seed: int = 0, t: int = T, c: int = C):
    """n slates of distinct random items (history and candidates drawn apart)."""
    rng = np.random.default_rng(seed)
    slates = []
    for _ in range(n):
        chosen = rng.choice(item_ids, size=t + c, replace=False).astype(str).tolist()
        slates.append(Slate(chosen[:t], chosen[t:]))
    return slates


class ZipfItems:
    """Item ids drawn with P(rank k) ∝ k^-s over the whole catalogue (ranks shuffled once)."""

    def __init__(self, item_ids: np.ndarray, s: float = ZIPF_S, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.ids = self.rng.permutation(item_ids.astype(str))
        weights = np.arange(1, len(item_ids) + 1, dtype=np.float64) ** -s
        self.p = weights / weights.sum()

    def slate(self, t: int = T, c: int = C) -> Slate:
        drawn = self.rng.choice(self.ids, size=t + c, p=self.p).tolist()
        return Slate(drawn[:t], drawn[t:])


def score_request(slate: Slate, user_id: str = "bench") -> ScoreRequest:
    return ScoreRequest.model_validate_json(score_body(slate, user_id))


def score_body(slate: Slate, user_id: str = "bench") -> bytes:
    return orjson.dumps(
        {
            "user_id": user_id,
            "history": [{"item_id": i} for i in slate.history],
            "candidates": [{"item_id": i} for i in slate.candidates],
        }
    )
