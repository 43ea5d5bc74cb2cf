"""Item-kNN: a user's score for an item is the summed cosine similarity to the items they interacted with.

The similarity is the collaborative item–item cosine of ``ml.similarity`` (top-``neighbours`` per item,
sparse), so the model is the same matrix the pipeline stores in ``ml.item_similarity``.

``warm_start(state)`` before ``fit``: the fit keeps an earlier fit's similarity for the items both know
(new items have no neighbours until the next cold fit) and takes only the users' histories from today's
data: what the pipeline does when a little data was added (``ml.training``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from rec_orchestration.ml.base import Recommender, index_of, shared_rows
from rec_orchestration.ml.defaults import ITEMKNN
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.similarity import cosine_top_n_sparse


class ItemKNNRecommender(Recommender):
    name = "itemknn"

    def __init__(self, neighbours: int = ITEMKNN["neighbours"], shrink_power: float = ITEMKNN["shrink_power"]) -> None:
        if neighbours < 1:
            raise ValueError("neighbours must be at least 1")
        self.params = {"neighbours": neighbours, "shrink_power": shrink_power}
        self.user_ids = np.array([], dtype=np.int64)
        self.item_ids = np.array([], dtype=np.int64)
        self.user_items = sp.csr_matrix((0, 0), dtype=np.float32)     # users x items, binary
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)  # items x items, top-n per row
        self._warm: dict[str, Any] | None = None
        self.warm_started: dict[str, int] | None = None

    def warm_start(self, state: dict[str, Any]) -> None:
        """Keep ``state``'s similarity (an earlier fit's ``state_dict``) in the next ``fit``."""
        self._warm = state

    def fit(self, interactions: Interactions) -> ItemKNNRecommender:
        if len(interactions) == 0:
            raise ValueError("cannot fit item-kNN on zero interactions")
        history = (interactions.user_item_matrix() > 0).astype(np.float32).tocsr()
        n_items = interactions.n_items
        if self._warm is not None:
            self.similarity, known = _reindexed(self._warm, interactions.item_ids)
            self.warm_started = {"users": int(np.isin(interactions.user_ids, self._warm["user_ids"].numpy()).sum()),
                                 "items": known}
        else:
            neighbours = cosine_top_n_sparse(history, self.params["neighbours"])
            scores = neighbours.score.astype(np.float32) ** self.params["shrink_power"]
            self.similarity = sp.csr_matrix((scores, (neighbours.item, neighbours.neighbor)),
                                            shape=(n_items, n_items), dtype=np.float32)
        self.user_items = history
        self.user_ids, self.item_ids = interactions.user_ids, interactions.item_ids
        return self

    def score_users(self, user_index: np.ndarray) -> np.ndarray:
        return self.candidate_scores(user_index).toarray()

    def candidate_scores(self, user_index: np.ndarray) -> sp.csr_matrix:
        """The summed similarities, sparse: only the neighbours of a user's items score above 0, a few
        hundred of 200,000 products at 10M interactions."""
        return (self.user_items[user_index] @ self.similarity).tocsr()

    def similar_items(self, item_ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours straight from the stored similarity rows (padded with -1 / NaN)."""
        index = index_of(self.item_ids, np.asarray(item_ids))
        neighbours = np.full((len(index), n), -1, dtype=np.int64)
        scores = np.full((len(index), n), np.nan)
        for row, item in enumerate(index.tolist()):
            if item < 0:
                continue
            start, end = self.similarity.indptr[item], self.similarity.indptr[item + 1]
            cols, vals = self.similarity.indices[start:end], self.similarity.data[start:end]
            order = np.lexsort((cols, -vals))[:n]
            neighbours[row, :len(order)] = self.item_ids[cols[order]]
            scores[row, :len(order)] = vals[order]
        return neighbours, scores

    def state_dict(self) -> dict[str, Any]:
        import torch

        def csr(matrix: sp.csr_matrix) -> dict[str, Any]:
            return {"indptr": torch.as_tensor(matrix.indptr.astype(np.int64)),
                    "indices": torch.as_tensor(matrix.indices.astype(np.int64)),
                    "data": torch.as_tensor(matrix.data.astype(np.float32)),
                    "shape": list(matrix.shape)}

        return {"params": dict(self.params),
                "user_ids": torch.as_tensor(self.user_ids.astype(np.int64)),
                "item_ids": torch.as_tensor(self.item_ids.astype(np.int64)),
                "user_items": csr(self.user_items), "similarity": csr(self.similarity)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ItemKNNRecommender:
        model = cls(**state["params"])
        model.user_ids = state["user_ids"].cpu().numpy()
        model.item_ids = state["item_ids"].cpu().numpy()
        model.user_items, model.similarity = _csr(state["user_items"]), _csr(state["similarity"])
        return model


def _csr(part: dict[str, Any]) -> sp.csr_matrix:
    """A CSR matrix back from its parts in a state dict."""
    return sp.csr_matrix((part["data"].cpu().numpy(), part["indices"].cpu().numpy(), part["indptr"].cpu().numpy()),
                         shape=tuple(part["shape"]))


def _reindexed(state: dict[str, Any], item_ids: np.ndarray) -> tuple[sp.csr_matrix, int]:
    """``state``'s similarity over today's ``item_ids`` (the pairs of items both know), and how many of
    today's items it knew."""
    now, then = shared_rows(state["item_ids"].cpu().numpy(), item_ids)
    position = np.full(len(state["item_ids"]), -1, dtype=np.int64)
    position[then] = now
    before = _csr(state["similarity"]).tocoo()
    rows, cols = position[before.row], position[before.col]
    keep = (rows >= 0) & (cols >= 0)
    similarity = sp.csr_matrix((before.data[keep], (rows[keep], cols[keep])), shape=(len(item_ids), len(item_ids)),
                               dtype=np.float32)
    return similarity, len(now)
