"""A fitted factor model as ranking needs it: its ids and final vectors, without its training code.

Serving a LightGCN fit needs only its final user and item embeddings (scores are their dot products), but its
class lives with the Lightning module and trainer, and importing Lightning took about 10 of the 25 seconds of a
1M-review scoring shard that rescored 9,000 users. :class:`FactorScores` ranks exactly as the model's own class
(the same ``factor_form``, so ``Recommender.recommend`` takes the same path) without importing Lightning; the
artifact it reads is loaded with ``torch.load(weights_only=True)`` as every artifact is, and ranking uses
torch's thread count, so torch itself is still imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rec_orchestration.ml.base import Recommender


class FactorScores(Recommender):
    """Scores ``user_factors[u] @ item_factors.T (+ item_bias)`` of a fitted model, for ranking only."""

    def __init__(self, name: str, user_ids: np.ndarray, item_ids: np.ndarray, user_factors: np.ndarray,
                 item_factors: np.ndarray, item_bias: np.ndarray | None = None) -> None:
        self.name = name
        self.user_ids, self.item_ids = np.asarray(user_ids), np.asarray(item_ids)
        self.user_factors, self.item_factors, self.item_bias = user_factors, item_factors, item_bias

    def fit(self, interactions: Any) -> FactorScores:
        raise TypeError(f"{self.name}'s served form only ranks: fit the model's own class (ml.registry)")

    def score_users(self, user_index: np.ndarray) -> np.ndarray:
        scores = self.user_factors[user_index] @ self.item_factors.T
        return scores if self.item_bias is None else scores + self.item_bias

    def item_vectors(self) -> np.ndarray:
        return self.item_factors

    def factor_form(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self.user_factors, self.item_factors, self.item_bias

    def state_dict(self) -> dict[str, Any]:
        raise TypeError(f"{self.name}'s served form is not saved: its artifact is the model's own state dict")

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], name: str = "lightgcn") -> FactorScores:
        """From the state dict of a model whose scores are ``user_factors @ item_factors.T`` (LightGCN's)."""
        def array(key: str) -> np.ndarray:
            value = state[key]
            return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)

        return cls(name, array("user_ids"), array("item_ids"), array("user_factors").astype(np.float32, copy=False),
                   array("item_factors").astype(np.float32, copy=False))
