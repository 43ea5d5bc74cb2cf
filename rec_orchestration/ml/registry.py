"""Every model the project trains, by name, with the defaults the pipeline uses.

The defaults were chosen on a validation split carved out of the training data of ml-100k
(``bench/model_quality.py --tune``: the best validation nDCG@10 of each model's grid), never on a test
split; the pipeline's config may override any of them. LightGCN's learning rate and L2 were chosen
on its own validation split (10 % of each user's training positives, nDCG@20), and it picks its
epoch count by early stopping on that split.
"""

from __future__ import annotations

from typing import Any

from rec_orchestration.ml.base import Recommender

MODEL_NAMES: tuple[str, ...] = ("popularity", "itemknn", "ease", "lightfm", "lightgcn")

DEFAULTS: dict[str, dict[str, Any]] = {
    "popularity": {"half_life_days": 90.0},
    "itemknn": {"neighbours": 20, "shrink_power": 0.25},
    "ease": {"l2": 500.0, "max_items": 10_000},
    "lightfm": {"factors": 16, "epochs": 30, "learning_rate": 0.05},
    "lightgcn": {"factors": 64, "layers": 3, "lr": 5e-3, "reg": 1e-3, "epochs": 300, "patience": 10},
}


def model_class(name: str) -> type[Recommender]:
    if name == "popularity":
        from rec_orchestration.ml.popularity import PopularityRecommender
        return PopularityRecommender
    if name == "itemknn":
        from rec_orchestration.ml.neighbours import ItemKNNRecommender
        return ItemKNNRecommender
    if name == "ease":
        from rec_orchestration.ml.ease import EASERecommender
        return EASERecommender
    if name == "lightfm":
        from rec_orchestration.ml.factorization import LightFMRecommender
        return LightFMRecommender
    if name == "lightgcn":
        from rec_orchestration.ml.gnn import LightGCNRecommender
        return LightGCNRecommender
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")


def build(name: str, **params: Any) -> Recommender:
    """A fresh model ``name`` with ``DEFAULTS[name]`` overridden by ``params``."""
    return model_class(name)(**{**DEFAULTS.get(name, {}), **params})
