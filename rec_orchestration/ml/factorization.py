"""LightFM (WARP loss) with item features from categories.

After fitting, the model keeps the final user and item representations (LightFM's
``get_*_representations``: an item's vector is the sum of its feature embeddings), so scoring is one
matrix product. The state dict also holds LightFM's own arrays (embeddings, biases and their AdaGrad
accumulators, per user, item and feature name), as tensors: no LightFM object is pickled, and the next
fit can continue from them (``warm_start``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from rec_orchestration.ml.base import Recommender, fit_budget_minutes, shared_rows
from rec_orchestration.ml.defaults import LIGHTFM
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.threads import step_threads


def item_feature_matrix(item_ids: np.ndarray, features: Mapping[Any, Sequence[str]] | None,
                        feature_weight: float = 1.0) -> tuple[sp.csr_matrix, list[str]]:
    """Identity features plus one column per distinct feature name; each row normalised to sum 1.

    With no ``features`` this is the identity (pure collaborative filtering).
    """
    names: dict[str, int] = {}
    rows, cols, vals = [], [], []
    n_items = len(item_ids)
    for index, item in enumerate(item_ids.tolist()):
        rows.append(index)
        cols.append(index)
        vals.append(1.0)
        for feature in (features or {}).get(item, ()):
            column = names.setdefault(str(feature), n_items + len(names))
            rows.append(index)
            cols.append(column)
            vals.append(feature_weight)
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(n_items, n_items + len(names)), dtype=np.float32)
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    matrix = sp.diags(1.0 / sums).astype(np.float32) @ matrix
    return matrix.tocsr(), list(names)


# LightFM's arrays a warm start continues from: each row belongs to a user, or to an item feature column
# (the item itself, or a feature name).
# (The model learns with AdaGrad, LightFM's default, whose *_momentum arrays stay zero: not kept.)
RAW = "lightfm_"  # their keys' prefix in the state dict
USER_ARRAYS = ("user_embeddings", "user_embedding_gradients", "user_biases", "user_bias_gradients")
ITEM_ARRAYS = ("item_embeddings", "item_embedding_gradients", "item_biases", "item_bias_gradients")
# A warm-started fit continues the earlier model's training for this many epochs over all of today's
# data (a cold one trains ``epochs``).
WARM_EPOCHS = 5

# Per-epoch reporting (only when a progress report is set): triples for the sampled loss, users whose
# held-out nDCG is computed.
LOSS_SAMPLE = 20_000
MONITOR_USERS = 2_000


class LightFMRecommender(Recommender):
    """Hybrid matrix factorisation (Kula 2015), WARP loss; every interaction with weight > 0 is a positive.

    ``warm_start(state)`` before ``fit``: the users, items and feature names of an earlier fit's state
    dict start from its LightFM arrays (embeddings, biases and AdaGrad accumulators; new ones at random),
    and the fit trains :data:`WARM_EPOCHS` epochs instead of ``epochs`` (LightFM's ``fit_partial``);
    ``warm_started`` says how many users and items it carried over.
    """

    name = "lightfm"

    def __init__(self, factors: int = LIGHTFM["factors"], epochs: int = LIGHTFM["epochs"],
                 learning_rate: float = LIGHTFM["learning_rate"],
                 item_alpha: float = 1e-6, user_alpha: float = 1e-6, max_sampled: int = 10,
                 item_features: Mapping[Any, Sequence[str]] | None = None, feature_weight: float = 1.0,
                 num_threads: int | None = None, seed: int = 42, max_minutes: float | None = None) -> None:
        self.params = {"factors": factors, "epochs": epochs, "learning_rate": learning_rate,
                       "item_alpha": item_alpha, "user_alpha": user_alpha, "max_sampled": max_sampled,
                       "feature_weight": feature_weight, "seed": seed}
        self.item_features = item_features
        # None: the step's thread budget (rec_orchestration.threads). More than one thread trains Hogwild
        # style, so two fits of the same data differ slightly; one thread is reproducible.
        self.num_threads = num_threads
        # Wall-clock budget of one fit's training: no epoch starts that the mean epoch so far says would end
        # past it (at 10M interactions an epoch took 24 s beside LightGCN's training, 122 s with more work
        # beside it: 30 of those are an hour), so a scheduled refresh still ends on time; ``epochs_trained``
        # says how many ran. Not part of the model: like LightGCN's, a fit stopped by it is the model after
        # that many epochs.
        self.max_minutes = max_minutes
        self.budget_minutes = max_minutes  # this fit's: a share of it for a warm start (fit_budget_minutes)
        self.epochs_trained: int | None = None
        self.user_ids = np.array([], dtype=np.int64)
        self.item_ids = np.array([], dtype=np.int64)
        self.user_vectors = np.empty((0, factors), dtype=np.float32)
        self.item_factors = np.empty((0, factors), dtype=np.float32)
        self.item_biases = np.empty(0, dtype=np.float32)
        self.history: list[dict[str, float]] = []  # per epoch, only when fitted with a progress report
        self.feature_names: list[str] = []
        self.raw: dict[str, np.ndarray] = {}  # LightFM's arrays (USER_ARRAYS, ITEM_ARRAYS) after a fit
        self._warm: dict[str, Any] | None = None
        self.warm_started: dict[str, int] | None = None

    def warm_start(self, state: dict[str, Any]) -> None:
        """Start the next ``fit`` from ``state`` (an earlier fit's ``state_dict`` with LightFM's arrays)."""
        if f"{RAW}user_embeddings" not in state:
            raise ValueError("the state has no LightFM arrays to start from (saved before warm starts existed)")
        if int(state[f"{RAW}user_embeddings"].shape[1]) != self.params["factors"]:
            raise ValueError("the state's embeddings have another number of factors")
        self._warm = state

    def fit(self, interactions: Interactions) -> LightFMRecommender:
        from lightfm import LightFM

        if len(interactions) == 0:
            raise ValueError("cannot fit LightFM on zero interactions")
        p = self.params
        positives = (interactions.user_item_matrix() > 0).astype(np.float32).tocoo()
        features, self.feature_names = item_feature_matrix(interactions.item_ids, self.item_features,
                                                           p["feature_weight"])
        model = LightFM(no_components=p["factors"], loss="warp", learning_rate=p["learning_rate"],
                        item_alpha=p["item_alpha"], user_alpha=p["user_alpha"], max_sampled=p["max_sampled"],
                        random_state=np.random.RandomState(p["seed"]))
        # LightFM's fit is _reset_state then fit_partial(epochs): initialising here and calling fit_partial
        # trains the same model, and lets a warm start replace the initial rows first.
        model._initialize(p["factors"], features.shape[1], interactions.n_users)
        epochs = p["epochs"]
        if self._warm is not None:
            self.warm_started = _carry_over(model, self._warm, interactions, self.feature_names)
            epochs = min(epochs, WARM_EPOCHS)
        self.user_ids, self.item_ids = interactions.user_ids, interactions.item_ids
        self._threads = self.num_threads or step_threads()
        self.budget_minutes = fit_budget_minutes(self.max_minutes, self._warm is not None)
        if self.progress is None and self.budget_minutes is None:
            model.fit_partial(positives, item_features=features, epochs=epochs, num_threads=self._threads)
            self.epochs_trained = epochs
            self._take_representations(model, features)
        else:
            self._fit_by_epoch(model, positives, features, epochs)
        return self

    def _another_epoch_fits(self, started: float, epochs_done: int) -> bool:
        """Whether one more epoch, as long as the mean one so far, ends within this fit's budget."""
        if self.budget_minutes is None or epochs_done == 0:
            return True
        elapsed = time.perf_counter() - started
        return elapsed + elapsed / epochs_done <= self.budget_minutes * 60

    def _take_representations(self, model: Any, features: sp.csr_matrix) -> None:
        self.item_biases, self.item_factors = model.get_item_representations(features)
        _, self.user_vectors = model.get_user_representations()
        self.raw = {name: getattr(model, name) for name in (*USER_ARRAYS, *ITEM_ARRAYS)}

    def _fit_by_epoch(self, model: Any, positives: sp.coo_matrix, features: sp.csr_matrix, epochs: int) -> None:
        """The same fit, one epoch at a time, within ``max_minutes`` and reporting each epoch where a progress
        report is set: ``epochs`` calls of ``fit_partial(epochs=1)`` train the same model as one
        ``fit_partial(epochs)``. LightFM reports no loss; the line gives the BPR loss,
        ``mean(softplus(s_neg - s_pos))``, of fixed sampled (user, positive, random item) triples of the
        training data, and the nDCG@10 on ``monitor`` (the evaluation's held-out rows) where it is set."""
        from rec_orchestration.ml.metrics import evaluate
        from rec_orchestration.progress import EpochProgress

        p = self.params
        rng = np.random.default_rng(p["seed"])
        pick = rng.integers(0, positives.nnz, size=min(positives.nnz, LOSS_SAMPLE))
        users = positives.row[pick].astype(np.int32)
        pos, neg = positives.col[pick].astype(np.int32), rng.integers(0, positives.shape[1], len(pick), dtype=np.int32)
        monitor = self.monitor
        if monitor is not None:
            held_out = monitor[1]
            sampled = np.unique(held_out["user_id"].to_numpy())
            if len(sampled) > MONITOR_USERS:
                sampled = rng.choice(sampled, MONITOR_USERS, replace=False)
            monitor = (monitor[0], held_out[held_out["user_id"].isin(sampled)])
        budget = self.budget_minutes * 60 if self.budget_minutes is not None else None
        reporter = EpochProgress(self.name, epochs, self.progress, budget_seconds=budget) if self.progress else None
        self.history = []
        started = time.perf_counter()
        self.epochs_trained = 0
        for epoch in range(epochs):
            if not self._another_epoch_fits(started, epoch):
                if self.progress is not None:
                    self.progress(f"{self.name}: stopped after {epoch} of {epochs} epochs, the next would end past "
                                  f"the budget of {self.budget_minutes:g} min")
                break
            model.fit_partial(positives, item_features=features, epochs=1, num_threads=self._threads)
            self.epochs_trained = epoch + 1
            if reporter is None:
                continue
            margin = (model.predict(users, neg, item_features=features, num_threads=self._threads)
                      - model.predict(users, pos, item_features=features, num_threads=self._threads))
            row = {"epoch": epoch, "train_loss": float(np.logaddexp(0.0, margin).mean()),
                   "held_out_ndcg": float("nan")}
            if monitor is not None:
                self._take_representations(model, features)
                row["held_out_ndcg"] = evaluate(self, monitor[0], monitor[1], k=10)["ndcg@10"]
            self.history.append(row)
            reporter.epoch(epoch, {"loss": row["train_loss"], "held_out_ndcg@10": row["held_out_ndcg"]})
        self._take_representations(model, features)

    def score_users(self, user_index: np.ndarray) -> np.ndarray:
        # The user bias shifts every item of a user equally, so it does not change a ranking.
        return self.user_vectors[user_index] @ self.item_factors.T + self.item_biases

    def item_vectors(self) -> np.ndarray:
        return self.item_factors

    def factor_form(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.user_vectors, self.item_factors, self.item_biases

    def state_dict(self) -> dict[str, Any]:
        import torch

        return {
            "params": dict(self.params),
            "user_ids": torch.as_tensor(self.user_ids.astype(np.int64)),
            "item_ids": torch.as_tensor(self.item_ids.astype(np.int64)),
            "user_vectors": torch.as_tensor(np.ascontiguousarray(self.user_vectors)),
            "item_factors": torch.as_tensor(np.ascontiguousarray(self.item_factors)),
            "item_biases": torch.as_tensor(np.ascontiguousarray(self.item_biases)),
            "feature_names": list(self.feature_names),
            # LightFM's own arrays under a prefix: its item_biases (per feature column) are not the items'
            **{f"{RAW}{name}": torch.as_tensor(np.ascontiguousarray(array)) for name, array in self.raw.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LightFMRecommender:
        params = dict(state["params"])
        model = cls(**{key: params[key] for key in ("factors", "epochs", "learning_rate", "item_alpha",
                                                      "user_alpha", "max_sampled", "feature_weight", "seed")})
        for key in ("user_ids", "item_ids", "user_vectors", "item_factors", "item_biases"):
            setattr(model, key, state[key].cpu().numpy())
        # Artifacts saved before warm starts existed have only the representations.
        model.feature_names = list(state.get("feature_names", []))
        model.raw = {name: state[f"{RAW}{name}"].cpu().numpy() for name in (*USER_ARRAYS, *ITEM_ARRAYS)
                     if f"{RAW}{name}" in state}
        return model


def _carry_over(model: Any, state: dict[str, Any], interactions: Interactions,
                feature_names: list[str]) -> dict[str, int]:
    """Copy ``state``'s LightFM arrays into the freshly initialised ``model`` for the users, items and
    feature names both know (by external id, by name). An item feature column is the item itself (the
    first ``n_items`` columns, in item id order) or a feature name after them."""
    users_now, users_then = shared_rows(state["user_ids"].cpu().numpy(), interactions.user_ids)
    items_now, items_then = shared_rows(state["item_ids"].cpu().numpy(), interactions.item_ids)
    names_now, names_old = shared_rows(np.asarray(state.get("feature_names", []), dtype=str),
                                       np.asarray(feature_names, dtype=str))
    columns_now = np.concatenate([items_now, interactions.n_items + names_now])
    columns_then = np.concatenate([items_then, len(state["item_ids"]) + names_old])
    for name in USER_ARRAYS:
        getattr(model, name)[users_now] = state[f"{RAW}{name}"].cpu().numpy()[users_then]
    for name in ITEM_ARRAYS:
        getattr(model, name)[columns_now] = state[f"{RAW}{name}"].cpu().numpy()[columns_then]
    return {"users": len(users_now), "items": len(items_now)}
