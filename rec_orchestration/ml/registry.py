"""Every model the project trains, by name, with the defaults the pipeline uses.

``DEFAULTS[name]`` holds the tuned parameters of model ``name``; it is ``ml.defaults.DEFAULTS``, the
values each constructor defaults to (where they come from is told there), so ``build(name)`` and the
model constructed with no arguments are the same model (``popularity_plain`` is the popularity class
built with ``DEFAULTS["popularity_plain"]``, no decay). Model classes are imported only when asked for,
so reading the names and defaults loads no torch.

:data:`MODEL_NAMES` are the models with a ``models/<name>`` asset each; :data:`EVALUATED_NAMES` are every
model evaluated and compared in ``ml.model_evaluations``: those plus ``popularity_plain``, which the
``models/popularity`` asset fits and evaluates beside ``popularity`` (:data:`FITTED_WITH`), so the two
baselines always share one split and data version.
"""

from __future__ import annotations

from typing import Any

from rec_orchestration.ml.base import Recommender
from rec_orchestration.ml.defaults import DEFAULTS

__all__ = ["BASELINE_NAMES", "DEFAULTS", "EVALUATED_NAMES", "FITTED_WITH", "MODEL_NAMES", "SERVED_AS_FACTORS", "build",
           "model_class", "served_model"]

MODEL_NAMES: tuple[str, ...] = ("popularity", "itemknn", "ease", "lightfm", "lightgcn")
# The popularity baselines: time-decayed, then plain (no decay). Neither may be published as the champion.
BASELINE_NAMES: tuple[str, ...] = ("popularity", "popularity_plain")
# Models fitted and evaluated by another model's asset, beside it: asset name -> those models.
FITTED_WITH: dict[str, tuple[str, ...]] = {"popularity": ("popularity_plain",)}
EVALUATED_NAMES: tuple[str, ...] = tuple(
    evaluated for name in MODEL_NAMES for evaluated in (name, *FITTED_WITH.get(name, ())))


def model_class(name: str) -> type[Recommender]:
    if name in ("popularity", "popularity_plain"):
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
    raise ValueError(f"unknown model {name!r}; known: {', '.join(EVALUATED_NAMES)}")


# Models served by their final vectors alone (ml.served.FactorScores): their own class would import the
# training stack (Lightning) only to rank by dot products.
SERVED_AS_FACTORS: tuple[str, ...] = ("lightgcn",)


def served_model(name: str, state: dict[str, Any]) -> Recommender:
    """Model ``name`` from its artifact's state dict, in the form ranking needs: the same rankings as
    ``model_class(name).from_state_dict(state)``, with no more imports than they take."""
    if name in SERVED_AS_FACTORS:
        from rec_orchestration.ml.served import FactorScores
        return FactorScores.from_state_dict(state, name=name)
    return model_class(name).from_state_dict(state)


def build(name: str, **params: Any) -> Recommender:
    """A fresh model ``name`` with ``DEFAULTS[name]`` overridden by ``params``."""
    return model_class(name)(**{**DEFAULTS.get(name, {}), **params})
