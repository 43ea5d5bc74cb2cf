"""Weighted popularity, time-decayed or plain: the baselines every model must beat and the cold-start fallback.

score(item) = sum over its interactions of ``weight * 0.5 ** (age_days / half_life_days)``, where age is
measured back from the newest interaction in the data (not from the wall clock, so a model fitted
on last year's data is the same model whenever it is fitted). With ``half_life_days=None`` nothing
decays: every interaction counts its weight (plain most-popular, registry model ``popularity_plain``;
the decayed one is ``popularity``). Which of the two is the stronger baseline depends on the data: decay
helps where popularity shifts, and on data spanning years a short half-life throws most of the signal
away. ``ml/champion.py`` compares the champion with the better of the two on the holdout, and the
pipeline publishes that one as the fallback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rec_orchestration.ml.base import Recommendations, Recommender
from rec_orchestration.ml.defaults import POPULARITY
from rec_orchestration.ml.interactions import Interactions

SECONDS_PER_DAY = 86_400.0


class PopularityRecommender(Recommender):
    name = "popularity"

    def __init__(self, half_life_days: float | None = POPULARITY["half_life_days"]) -> None:
        if half_life_days is not None and half_life_days <= 0:
            raise ValueError("half_life_days must be positive (or None: no decay)")
        self.half_life_days = half_life_days
        self.item_ids: np.ndarray = np.array([])
        self.item_scores: np.ndarray = np.array([])

    @property
    def params(self) -> dict[str, Any]:
        """The constructor's parameters, as the other models keep them."""
        return {"half_life_days": self.half_life_days}

    def fit(self, interactions: Interactions) -> PopularityRecommender:
        if len(interactions) == 0:
            raise ValueError("cannot fit popularity on zero interactions")
        weights = np.asarray(interactions.weight, dtype=np.float64)
        if self.half_life_days is not None:
            age_days = (interactions.timestamp.max() - interactions.timestamp) / SECONDS_PER_DAY
            weights = weights * np.power(0.5, age_days / self.half_life_days)
        scores = np.bincount(interactions.item_index, weights=weights, minlength=interactions.n_items)
        self.item_ids = interactions.item_ids
        self.item_scores = scores
        return self

    def score_users(self, user_index: np.ndarray) -> np.ndarray:
        return np.tile(self.item_scores, (len(user_index), 1))

    def ranking(self) -> tuple[np.ndarray, np.ndarray]:
        """All items, most popular first (ties broken by item id for determinism)."""
        order = np.lexsort((self.item_ids, -self.item_scores))
        return self.item_ids[order], self.item_scores[order]

    def recommend(self, user_ids: np.ndarray, k: int,
                  exclude: Mapping[Any, np.ndarray] | None = None) -> Recommendations:
        ranked_items, ranked_scores = self.ranking()
        items_out, scores_out = [], []
        for user in user_ids:
            seen = exclude.get(user) if exclude is not None else None
            if seen is None or not len(seen):
                items_out.append(ranked_items[:k])
                scores_out.append(ranked_scores[:k])
                continue
            window = k + len(seen)  # the top k unseen items are always within this prefix
            keep = ~np.isin(ranked_items[:window], seen)
            items_out.append(ranked_items[:window][keep][:k])
            scores_out.append(ranked_scores[:window][keep][:k])
        return Recommendations(np.asarray(user_ids), items_out, scores_out)

    def ranking_by_category(self, item_categories: Mapping[Any, Sequence[Any]],
                            top: int | None = None) -> list[tuple[Any, Any, int, float]]:
        """``(category, item, rank, score)``: items ranked within each of their categories, best first."""
        items, scores = self.ranking()
        per_category: dict[Any, list[tuple[Any, float]]] = {}
        for item, score in zip(items.tolist(), scores.tolist(), strict=True):
            for category in item_categories.get(item, ()):
                ranked = per_category.setdefault(category, [])
                if top is None or len(ranked) < top:
                    ranked.append((item, score))
        return [(category, item, rank, score)
                for category, ranked in per_category.items()
                for rank, (item, score) in enumerate(ranked, start=1)]

    def state_dict(self) -> dict[str, Any]:
        import torch

        return {
            "half_life_days": None if self.half_life_days is None else float(self.half_life_days),
            "item_ids": torch.as_tensor(self.item_ids.astype(np.int64)),
            "item_scores": torch.as_tensor(self.item_scores.astype(np.float64)),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PopularityRecommender:
        half_life = state["half_life_days"]
        model = cls(half_life_days=None if half_life is None else float(half_life))
        model.item_ids = state["item_ids"].cpu().numpy()
        model.item_scores = state["item_scores"].cpu().numpy()
        return model
