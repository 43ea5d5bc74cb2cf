"""The default of every tuned model parameter, defined once.

Each model's constructor defaults to these values, and ``registry.DEFAULTS`` (which the pipeline's
config classes read) is :data:`DEFAULTS`, so a model built with no arguments, one built by
``registry.build(name)`` and the pipeline's default config all agree. This module imports nothing, so
reading a default loads no model code (and no torch).

The values were chosen on a validation split carved out of the training data of ml-100k
(``python -m bench.model_quality --tune``: the best validation nDCG@10 of each model's grid), never on a test
split; the pipeline's config may override any of them. LightGCN's learning rate and L2 were chosen on
its own validation split (10 % of each user's training positives, nDCG@20, early-stopped): lr 1e-3 gave
.342 after 205 epochs, 5e-3 .349, 1e-2 .344 with the paper's reg 1e-4; with reg 1e-3: lr 5e-3 .360 (109
epochs), 1e-2 .357; reg 3e-3 and 1e-2 were worse. It picks its epoch count by early stopping on that
split (``epochs`` is only the ceiling).

The two popularity baselines are not tuned: ``popularity`` decays with a 90-day half-life, and
``popularity_plain`` is the same model without decay (``half_life_days=None``), so the champion is
always measured against plain most-popular as well (``ml/champion.py``).
"""

from __future__ import annotations

from typing import Any

POPULARITY: dict[str, Any] = {"half_life_days": 90.0}
POPULARITY_PLAIN: dict[str, Any] = {"half_life_days": None}
ITEMKNN: dict[str, Any] = {"neighbours": 20, "shrink_power": 0.25}
EASE: dict[str, Any] = {"l2": 500.0, "max_items": 10_000}
LIGHTFM: dict[str, Any] = {"factors": 16, "epochs": 30, "learning_rate": 0.05}
LIGHTGCN: dict[str, Any] = {"factors": 64, "layers": 3, "lr": 5e-3, "reg": 1e-3, "epochs": 300, "patience": 10}

DEFAULTS: dict[str, dict[str, Any]] = {
    "popularity": POPULARITY,
    "popularity_plain": POPULARITY_PLAIN,
    "itemknn": ITEMKNN,
    "ease": EASE,
    "lightfm": LIGHTFM,
    "lightgcn": LIGHTGCN,
}
