"""One API for every recommender: fit, recommend, similar_items, save and load.

Same shape as benfred/implicit's ``RecommenderBase``: a model is fitted on :class:`Interactions`
(external ids mapped to dense indices), answers in external ids, and is fully described by a
``state_dict`` of tensors and plain numbers, so artifacts load with ``torch.load(weights_only=True)``.

A subclass implements ``fit``, ``score_users`` (dense scores of every item for some users),
``state_dict`` and ``from_state_dict``; ``recommend``, ``similar_items`` (from ``item_vectors``),
``save`` and ``load`` come from here. A model whose scores are mostly the same value overrides
``candidate_scores`` so that ``recommend`` ranks only the items that can win: EASE's modelled items (the
rest score ``-inf``), item-kNN's sparse neighbour sums (the rest score 0). The top k are the same as a
ranking of every item's dense score (``tests/unit/test_candidates.py`` holds them to that); the work
per user is the candidates', not the catalogue's, which at 200,000 products is what keeps scoring every
user linear in the data.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.progress import Report

if TYPE_CHECKING:
    import scipy.sparse as sp

USER_BATCH = 256  # users scored per dense block in recommend(): 20 MB of float32 scores at 20,000 items. Small
# enough to stay in cache: with 1,024 (80 MB) two scoring processes on two cores were bound by memory
# bandwidth (bench/scale_out.py: 1.41x the speed of one, 1.86x with 256).
FACTORED_BATCH = 65_536  # users per call of ml.selection.top_k_dot for a factor model (k scores held per user)


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


def stable_hash(ids: np.ndarray) -> np.ndarray:
    """A uint64 hash of each integer id (splitmix64's finaliser): the same on every machine and Python
    process (unlike ``hash``), spreading consecutive ids evenly."""
    x = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` largest entries of each row, best first: a stable sort's first k
    (ties, at the cut-off too, go to the lower column). NaN ranks as ``-inf``; a row with fewer than k finite
    entries is filled with ``-inf`` ones (``recommend`` drops those).

    One compiled pass per row (``ml.selection``: a heap of k, spans of scores below the k-th best skipped
    whole), on as many threads as torch may use here (the step's budget): on 1,024 x 200,000 float32
    scores 0.32 s against 0.78 s for ``torch.topk`` of k + 1 with a whole-row sort of rows tied at the
    cut-off, which it replaced (k = 10, timed beside the 10M bench's dbt build: relative).
    """
    import torch

    from rec_orchestration.ml.selection import top_k_rows

    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k <= 0 or n_rows == 0:
        empty = np.empty((n_rows, max(k, 0)))
        return empty.astype(np.int64), empty.astype(scores.dtype)
    return top_k_rows(scores, k, threads=torch.get_num_threads())


class Recommender(ABC):
    """Base class of the project's models."""

    name: str
    user_ids: np.ndarray   # external id of each user index seen in fit
    item_ids: np.ndarray   # external id of each item index seen in fit
    # Set before ``fit`` by whoever wants to watch it (the model assets pass the run log): models trained
    # in epochs report each one there. ``monitor`` is ``(train, held_out)``: the training interactions and
    # a frame of held-out (user_id, product_id) rows the model never trains on; a model without a
    # validation split of its own reports its nDCG on them per epoch. Only reported, never used to choose.
    progress: Report | None = None
    monitor: tuple[Interactions, Any] | None = None

    @abstractmethod
    def fit(self, interactions: Interactions) -> Recommender: ...

    @abstractmethod
    def score_users(self, user_index: np.ndarray) -> np.ndarray:
        """Dense ``(len(user_index), n_items)`` float scores, higher is better, for users given by index."""

    def candidate_scores(self, user_index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | sp.csr_matrix:
        """The scores ``recommend`` ranks, for users given by index; the same top k as ``score_users``'.

        Either ``(scores, columns)``: dense ``(len(user_index), len(columns))`` scores of the item indices
        ``columns`` (ascending; None: every item), every other item scoring ``-inf``; or a CSR
        ``(len(user_index), n_items)`` matrix whose unstored entries score 0. By default every item's
        dense score."""
        return self.score_users(user_index), None

    def item_vectors(self) -> np.ndarray | None:
        """One vector per item index whose cosine is the model's item similarity; None if it has none."""
        return None

    def factor_form(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """``(user_vectors, item_vectors, item_bias)`` when ``score_users`` is ``user_vectors[user_index] @
        item_vectors.T + item_bias`` (bias None: 0), so ``recommend`` can rank without every score of a block of
        users at once (``ml.selection.top_k_dot``); None for other models."""
        return None

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Tensors (and plain numbers) that fully describe the fitted model; safe for weights_only loads."""

    @classmethod
    @abstractmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Recommender: ...

    # ------------------------------------------------------------------ derived API

    def user_index_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Dense index of each external user id, -1 where the model never saw the user."""
        return index_of(self.user_ids, np.asarray(user_ids))

    def recommend(self, user_ids: np.ndarray, k: int,
                  exclude: Mapping[Any, np.ndarray] | None = None) -> Recommendations:
        """Top ``k`` items for each user, leaving out ``exclude[user]`` (e.g. what they already rated).

        A user the model never saw gets no items (the caller falls back to popularity).
        """
        import scipy.sparse as sp

        user_ids = np.asarray(user_ids)
        index = self.user_index_of(user_ids)
        items_out: list[np.ndarray] = [self.item_ids[:0]] * len(user_ids)
        scores_out: list[np.ndarray] = [np.empty(0)] * len(user_ids)
        known = np.flatnonzero(index >= 0)
        factors = self.factor_form()  # a factor model is ranked tile by tile (ml.selection.top_k_dot)
        batch = USER_BATCH if factors is None else FACTORED_BATCH
        for start in range(0, len(known), batch):
            rows = known[start:start + batch]
            seen_ptr, seen_idx = self._seen_rows(user_ids[rows], exclude)  # item indices to leave out
            if factors is not None:
                import torch

                from rec_orchestration.ml.selection import top_k_dot

                user_vectors, item_vectors, item_bias = factors
                best, best_scores = top_k_dot(user_vectors[index[rows]], item_vectors, item_bias, k, seen_ptr,
                                              seen_idx, threads=torch.get_num_threads())
            else:
                seen = np.split(seen_idx, seen_ptr[1:-1])
                candidates = self.candidate_scores(index[rows])
                if sp.issparse(candidates):
                    best, best_scores = top_k_sparse(candidates, k, seen)
                else:
                    best, best_scores = _top_k_dense(*candidates, k, seen)
            for row_in_block, row in enumerate(rows.tolist()):
                keep = np.isfinite(best_scores[row_in_block])
                items_out[row] = self.item_ids[best[row_in_block][keep]]
                scores_out[row] = best_scores[row_in_block][keep]
        return Recommendations(user_ids, items_out, scores_out)

    def _seen_rows(self, user_ids: np.ndarray, exclude: Mapping[Any, np.ndarray] | None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """The item indices of ``exclude[user]`` for each of ``user_ids`` as CSR rows (``indptr``, ascending
        ``indices``); items the model never saw are dropped."""
        lists = [exclude.get(user) for user in user_ids.tolist()] if exclude is not None else []
        lengths = np.array([0 if items is None else len(items) for items in lists], dtype=np.int64)
        if not lengths.sum():
            return np.zeros(len(user_ids) + 1, dtype=np.int64), np.empty(0, dtype=np.int64)
        ids = np.concatenate([np.asarray(items) for items in lists if items is not None and len(items)])
        columns = index_of(self.item_ids, ids)
        rows = np.repeat(np.arange(len(user_ids)), lengths)
        keep = columns >= 0
        rows, columns = rows[keep], columns[keep]
        order = np.lexsort((columns, rows))
        indptr = np.zeros(len(user_ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(user_ids)), out=indptr[1:])
        return indptr, columns[order]

    def similar_items(self, item_ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` most similar items (cosine of ``item_vectors``) to each item, itself excluded.

        Returns ``(neighbours, scores)``, both ``(len(item_ids), n)``, external (integer) ids; an unknown
        item's row is all -1 / NaN.
        """
        vectors = self.item_vectors()
        if vectors is None:
            raise NotImplementedError(f"{self.name} has no item vectors")
        from rec_orchestration.ml.similarity import cosine_top_n_dense

        item_ids = np.asarray(item_ids)
        index = index_of(self.item_ids, item_ids)
        n = min(n, len(self.item_ids) - 1)
        neighbours = np.full((len(item_ids), n), -1, dtype=np.int64)
        scores = np.full((len(item_ids), n), np.nan)
        known = np.flatnonzero(index >= 0)
        if len(known):
            nb, sc = cosine_top_n_dense(vectors, n, rows=index[known])
            neighbours[known] = self.item_ids[nb]
            scores[known] = sc
        return neighbours, scores

    def save(self, path: str | Path) -> None:
        """Write the state dict to ``path`` (torch format)."""
        import torch

        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        Path(path).write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> Recommender:
        """Read a model written by :meth:`save`; tensors land on ``map_location`` (a CPU by default)."""
        import torch

        state = torch.load(io.BytesIO(Path(path).read_bytes()), map_location=map_location, weights_only=True)
        return cls.from_state_dict(state)


def _top_k_dense(scores: np.ndarray, columns: np.ndarray | None, k: int,
                 seen: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` of dense candidate scores over the item indices ``columns`` (None: every item), the
    ``seen`` item indices of each row left out; item indices back."""
    scores = np.array(scores, dtype=np.float32, copy=None)
    if not scores.flags.writeable:
        scores = scores.copy()
    for row, items in enumerate(seen):
        if len(items):
            if columns is not None:
                items = index_of(columns, items)
                items = items[items >= 0]
            scores[row, items] = -np.inf
    best, best_scores = top_k(scores, k)
    return (best if columns is None else columns[best]), best_scores


def top_k_sparse(scores: sp.csr_matrix, k: int, seen: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """What :func:`top_k` gives for the dense rows of ``scores`` (unstored entries 0), each row's ``seen``
    columns set to ``-inf``, without making them dense: a row's stored positive scores best first (ties:
    lower column), then its zeros by column (the lowest columns neither stored nor seen, a dense row's
    tie-break), then its negative scores. The work is the stored entries', plus a row's seen columns and k
    where a row has fewer than k positive entries."""
    import scipy.sparse as sp

    scores = sp.csr_matrix(scores)
    scores.sum_duplicates()
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    lengths = np.diff(scores.indptr)
    row = np.repeat(np.arange(n_rows), lengths)
    col, value = scores.indices.astype(np.int64), scores.data.astype(np.float32)
    excluded = np.concatenate([np.asarray(items, dtype=np.int64) + r * n_cols for r, items in enumerate(seen)] or
                              [np.empty(0, dtype=np.int64)])
    keep = ~np.isin(row * n_cols + col, excluded) if len(excluded) else np.ones(len(col), dtype=bool)
    positive = keep & (value > 0)
    order = np.flatnonzero(positive)[np.lexsort((col[positive], -value[positive], row[positive]))]
    counts = np.bincount(row[order], minlength=n_rows)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    order = order[np.arange(len(order)) - first < k]      # each row's best k positives
    starts = np.searchsorted(row[order], np.arange(n_rows + 1))
    best_out, scores_out = [], []
    for r in range(n_rows):
        items, values = col[order[starts[r]:starts[r + 1]]], value[order[starts[r]:starts[r + 1]]]
        if len(items) < k:  # then zeros by column, then negatives: what a dense row ranks next
            stored = slice(scores.indptr[r], scores.indptr[r + 1])
            row_keep = keep[stored]
            nonzero = col[stored][row_keep & (value[stored] != 0)]
            zeros = _lowest_columns_not_in(np.concatenate([nonzero, np.asarray(seen[r], dtype=np.int64)]),
                                           k - len(items), n_cols)
            negative = row_keep & (value[stored] < 0)
            neg_cols, neg_values = col[stored][negative], value[stored][negative]
            neg_order = np.lexsort((neg_cols, -neg_values))[:k - len(items) - len(zeros)]
            items = np.concatenate([items, zeros, neg_cols[neg_order]])
            values = np.concatenate([values, np.zeros(len(zeros), dtype=np.float32), neg_values[neg_order]])
        best_out.append(items)
        scores_out.append(values)
    return best_out, scores_out


def _lowest_columns_not_in(taken: np.ndarray, n: int, n_cols: int) -> np.ndarray:
    """The ``n`` lowest of ``0 .. n_cols - 1`` not in ``taken`` (fewer if there are not so many)."""
    window = np.arange(min(n_cols, n + len(taken)))  # holds n free columns, if there are n
    return window[~np.isin(window, taken)][:n]


def index_of(known_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each of ``ids`` in the sorted array ``known_ids``, -1 where absent."""
    if len(known_ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.searchsorted(known_ids, ids)
    pos = np.clip(pos, 0, len(known_ids) - 1)
    return np.where(known_ids[pos] == ids, pos, -1).astype(np.int64)


# A warm-started fit's share of the model's time budget (``max_minutes``). A warm start trains on from the
# previous weights after a little data landed; on a 2-core CPU at 10M interactions a LightGCN epoch took
# about 5 minutes (its 20-minute budget: 4 epochs), so the whole budget would make every hourly refresh as
# long as a cold one.
WARM_BUDGET_SHARE = 0.25


def fit_budget_minutes(max_minutes: float | None, warm: bool) -> float | None:
    """The wall-clock budget of a fit: ``max_minutes``, a :data:`WARM_BUDGET_SHARE` of it for a warm start."""
    if max_minutes is None:
        return None
    return max_minutes * WARM_BUDGET_SHARE if warm else max_minutes


def shared_rows(before: np.ndarray, now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the entries of ``now`` that ``before`` also has are, in ``now`` and in ``before`` (neither
    need be sorted): what a warm start copies from an earlier fit's rows into a new fit's."""
    if len(before) == 0 or len(now) == 0:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    order = np.argsort(before, kind="stable")
    position = np.minimum(np.searchsorted(before[order], now), len(before) - 1)
    known = before[order][position] == now
    return np.flatnonzero(known), order[position[known]]
