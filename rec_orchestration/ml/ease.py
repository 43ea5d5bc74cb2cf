"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): a closed-form item–item model.

B = argmin ||X - XB||² + λ||B||² subject to diag(B) = 0 has the solution P = (XᵀX + λI)⁻¹,
B = -P / diag(P) (column-wise), diag(B) = 0. A user's scores are their interaction row times B.

The inverse is dense items × items, so the model is built over the ``max_items`` most interacted
items (all of them for catalogues up to that size); other items are never recommended by it.

``warm_start(state)`` before ``fit``: the fit keeps an earlier fit's B over the items it modelled that
today's data still has (items that became popular since wait for the next cold fit), and takes only the
users' histories from today's data: what the pipeline does when a little data was added (``ml.training``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from rec_orchestration.ml.base import Recommender, shared_rows
from rec_orchestration.ml.defaults import EASE
from rec_orchestration.ml.interactions import Interactions

UNMODELLED_SCORE = -np.inf  # never recommended: the caller tops up from popularity
MAX_ITEMS_LIMIT = 20_000      # float64 inverse of 20,000 x 20,000: 3.2 GB, plus as much work space


class EASERecommender(Recommender):
    name = "ease"

    def __init__(self, l2: float = EASE["l2"], max_items: int = EASE["max_items"]) -> None:
        if l2 <= 0:
            raise ValueError("l2 must be positive")
        if not 2 <= max_items <= MAX_ITEMS_LIMIT:
            raise ValueError(f"max_items must be between 2 and {MAX_ITEMS_LIMIT:,} (memory grows with its square)")
        self.params = {"l2": float(l2), "max_items": int(max_items)}
        self.user_ids = np.array([], dtype=np.int64)
        self.item_ids = np.array([], dtype=np.int64)
        self.modelled = np.array([], dtype=np.int64)       # item indices inside the model
        self.weights = np.empty((0, 0), dtype=np.float32)  # B over the modelled items
        self.user_items = sp.csr_matrix((0, 0), dtype=np.float32)
        self._history_of_modelled: sp.csr_matrix | None = None
        self._warm: dict[str, Any] | None = None
        self.warm_started: dict[str, int] | None = None

    def warm_start(self, state: dict[str, Any]) -> None:
        """Keep ``state``'s B (an earlier fit's ``state_dict``) in the next ``fit``."""
        self._warm = state

    def fit(self, interactions: Interactions) -> EASERecommender:
        if len(interactions) == 0:
            raise ValueError("cannot fit EASE on zero interactions")
        history = (interactions.user_item_matrix() > 0).astype(np.float32).tocsr()
        if self._warm is not None:
            return self._keep_weights(self._warm, interactions, history)
        counts = np.asarray(history.sum(axis=0)).ravel()
        modelled = np.sort(np.argsort(-counts, kind="stable")[: self.params["max_items"]])
        x = history[:, modelled]
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.params["l2"]
        weights = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)  # P; gram is consumed
        del gram
        weights /= -np.diag(weights).copy()  # B = -P / diag(P), column by column, in place
        weights[np.diag_indices_from(weights)] = 0.0
        # C order: LAPACK's inverse comes back in Fortran order, and scipy's sparse @ dense copies a
        # Fortran-ordered operand on every call (400 MB at 10,000 items)
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        del weights
        self.modelled = modelled.astype(np.int64)
        self.user_items = history
        self._history_of_modelled = None
        self.user_ids, self.item_ids = interactions.user_ids, interactions.item_ids
        return self

    def _keep_weights(self, state: dict[str, Any], interactions: Interactions,
                      history: sp.csr_matrix) -> EASERecommender:
        modelled_ids = state["item_ids"].cpu().numpy()[state["modelled"].cpu().numpy()]
        now, then = shared_rows(modelled_ids, interactions.item_ids)  # now: ascending, like a cold fit's
        self.weights = np.ascontiguousarray(state["weights"].cpu().numpy()[np.ix_(then, then)])
        self.modelled = now.astype(np.int64)
        self.user_items, self._history_of_modelled = history, None
        self.user_ids, self.item_ids = interactions.user_ids, interactions.item_ids
        self.warm_started = {"users": int(np.isin(interactions.user_ids, state["user_ids"].numpy()).sum()),
                             "items": len(now)}
        return self

    def _modelled_scores(self, user_index: np.ndarray) -> np.ndarray:
        if self._history_of_modelled is None:  # users x modelled items, sliced once, not per block
            self._history_of_modelled = self.user_items[:, self.modelled].tocsr()
        return np.asarray(self._history_of_modelled[user_index] @ self.weights, dtype=np.float32)

    def score_users(self, user_index: np.ndarray) -> np.ndarray:
        modelled_scores = self._modelled_scores(user_index)
        if len(self.modelled) == len(self.item_ids):
            return modelled_scores
        scores = np.full((len(user_index), len(self.item_ids)), UNMODELLED_SCORE, dtype=np.float32)
        scores[:, self.modelled] = modelled_scores
        return scores

    def candidate_scores(self, user_index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Only the modelled items' scores (every other item's is -inf): at 200,000 products and 10,000
        modelled, a twentieth of the dense ranking's work."""
        whole = len(self.modelled) == len(self.item_ids)
        return self._modelled_scores(user_index), (None if whole else self.modelled)

    def item_vectors(self) -> np.ndarray:
        """An item's column of B over the modelled items (zero for unmodelled items)."""
        vectors = np.zeros((len(self.item_ids), len(self.modelled)), dtype=np.float32)
        vectors[self.modelled] = self.weights.T
        return vectors

    def state_dict(self) -> dict[str, Any]:
        import torch

        return {"params": dict(self.params),
                "user_ids": torch.as_tensor(self.user_ids.astype(np.int64)),
                "item_ids": torch.as_tensor(self.item_ids.astype(np.int64)),
                "modelled": torch.as_tensor(self.modelled),
                "weights": torch.as_tensor(np.ascontiguousarray(self.weights)),
                "user_items_indptr": torch.as_tensor(self.user_items.indptr.astype(np.int64)),
                "user_items_indices": torch.as_tensor(self.user_items.indices.astype(np.int64)),
                "user_items_shape": list(self.user_items.shape)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> EASERecommender:
        model = cls(**state["params"])
        model.user_ids = state["user_ids"].cpu().numpy()
        model.item_ids = state["item_ids"].cpu().numpy()
        model.modelled = state["modelled"].cpu().numpy()
        model.weights = np.ascontiguousarray(state["weights"].cpu().numpy())
        indices = state["user_items_indices"].cpu().numpy()
        model.user_items = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices,
                                       state["user_items_indptr"].cpu().numpy()),
                                      shape=tuple(state["user_items_shape"]))
        return model
