"""Every model the project trains, by name, with the defaults the pipeline uses.

``DEFAULTS[name]`` holds the tuned parameters of model ``name``; it is ``ml.defaults.DEFAULTS``, the
values each constructor defaults to (where they come from is told there), so ``build(name)`` and the
model constructed with no arguments are the same model. Model classes are imported only when asked
for, so reading the names and defaults loads no torch.
"""

from __future__ import annotations

from typing import Any

from rec_orchestration.ml.base import Recommender
from rec_orchestration.ml.defaults import DEFAULTS

__all__ = ["DEFAULTS", "MODEL_NAMES", "build", "model_class"]

MODEL_NAMES: tuple[str, ...] = ("popularity", "itemknn", "ease", "lightfm", "lightgcn")


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
        from rec_orchestration.ml.lightgcn import LightGCNRecommender
        return LightGCNRecommender
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")


def build(name: str, **params: Any) -> Recommender:
    """A fresh model ``name`` with ``DEFAULTS[name]`` overridden by ``params``."""
    return model_class(name)(**{**DEFAULTS.get(name, {}), **params})
