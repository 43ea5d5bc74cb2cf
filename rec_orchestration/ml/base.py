"""One API for every recommender: fit, recommend, save (state dict) and load."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rec_orchestration.ml.interactions import Interactions


@dataclass(frozen=True)
class Recommendations:
    """Top-k per user: ``items[u]`` and ``scores[u]`` (external ids), best first."""

    user_ids: np.ndarray
    items: list[np.ndarray]
    scores: list[np.ndarray]

    def to_rows(self) -> list[tuple[Any, Any, int, float]]:
        """``(user_id, item_id, rank, score)`` rows, rank starting at 1."""
        return [
            (user, item, rank, float(score))
            for user, items, scores in zip(self.user_ids.tolist(), self.items, self.scores, strict=True)
            for rank, (item, score) in enumerate(zip(items.tolist(), scores.tolist(), strict=True), start=1)
        ]


class Recommender(ABC):
    """Base class of the project's models (same shape as benfred/implicit's ``RecommenderBase``)."""

    name: str

    @abstractmethod
    def fit(self, interactions: Interactions) -> Recommender: ...

    @abstractmethod
    def recommend(self, user_ids: np.ndarray, k: int,
                  exclude: Mapping[Any, np.ndarray] | None = None) -> Recommendations:
        """Top ``k`` items for each user, leaving out ``exclude[user]`` (e.g. what they already rated)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Tensors (and plain numbers) that fully describe the fitted model; safe for weights_only loads."""

    @classmethod
    @abstractmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Recommender: ...
