"""Offline ranking metrics, defined once, with the semantics of Microsoft Recommenders.

The definitions follow ``recommenders/evaluation/python_evaluation.py`` (``precision_at_k``,
``recall_at_k``, ``ndcg_at_k`` with binary relevance, and ``map``), so figures computed here sit beside
the numbers published with that library:

- **Users evaluated**: those with at least one relevant item *and* at least one recommendation (their
  ``merge_ranking_true_pred`` keeps the users common to truth and predictions). A user the model
  returns nothing for is left out, not counted as 0; :func:`evaluate` reports how many there were.
  A user with recommendations but no hit counts as 0.
- Only the first ``k`` recommendations of each user count; a hit is a recommended item in the user's
  relevant set.
- ``precision@k`` = hits / k (k even if fewer than k items were recommended);
  ``recall@k`` = hits / number of relevant items.
- ``ndcg@k`` = DCG / ideal DCG with gain 1 per hit and discount ``1 / ln(1 + rank)``; the ideal puts
  ``min(number relevant, k)`` hits at ranks 1, 2, ...
- ``map`` (their ``map``, not ``map_at_k``): for each user, the precision at the rank of each hit
  (hits so far / rank), summed and divided by the number of relevant items (not by ``min(·, k)``).
- Every metric is the mean over the users evaluated; 0.0 when there are none.

(Later versions of their ``ndcg_at_k`` average over every user of the truth, counting users without
predictions as 0, unlike their other metrics; on the benchmark protocol every test user gets
recommendations, so both readings give the same figure.)

Recommendations are given in rank order, as ``{user: items}`` or a :class:`Recommendations`; the truth
as ``{user: items}`` (a set or an array). Items need only be comparable for equality with each other
(integers, strings). Where the ranking is already a matrix (LightGCN's per-epoch validation takes its
top k on the device), :func:`ndcg_per_user` and :func:`recall_per_user` score the top-k hit matrix
directly, with the same definitions.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rec_orchestration.ml.base import Recommendations, Recommender
from rec_orchestration.ml.interactions import ITEM_ID, USER_ID, Interactions

if TYPE_CHECKING:
    import pandas as pd

RankedItems = Mapping[Any, Any] | Recommendations
RelevantItems = Mapping[Any, Any]


@dataclass(frozen=True)
class _Hits:
    """One row per evaluated user: which of the top-k recommendations are relevant."""

    users: np.ndarray       # the evaluated users
    hits: np.ndarray        # bool (n_users, k): recommendation at rank r+1 is relevant
    n_relevant: np.ndarray  # int (n_users,): size of the user's relevant set
    k: int


def _as_mapping(recommendations: RankedItems) -> Mapping[Any, Any]:
    if isinstance(recommendations, Recommendations):
        return dict(zip(recommendations.user_ids.tolist(), recommendations.items, strict=True))
    return recommendations


def _flatten(lists: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated items of ``lists`` and the row each came from."""
    arrays = [np.asarray(list(items) if isinstance(items, (set, frozenset)) else items).ravel()
              for items in lists]
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    rows = np.repeat(np.arange(len(arrays)), lengths)
    flat = np.concatenate(arrays) if arrays and lengths.sum() else np.array([], dtype=np.int64)
    return flat, rows


def _hit_matrix(recommendations: RankedItems, truth: RelevantItems, k: int) -> _Hits:
    import pandas as pd
    if k < 1:
        raise ValueError("k must be at least 1")
    recommended = _as_mapping(recommendations)
    users = [u for u, items in truth.items()
             if len(items) and u in recommended and len(recommended[u])]
    if not users:
        return _Hits(np.array(users), np.zeros((0, k), dtype=bool), np.zeros(0, dtype=np.int64), k)

    rec_items, rec_rows = _flatten(np.asarray(recommended[u]).ravel()[:k] for u in users)
    rec_rank = np.arange(len(rec_rows)) - np.searchsorted(rec_rows, rec_rows)  # 0-based rank in its row
    true_items, true_rows = _flatten(truth[u] for u in users)

    # Encode (user row, item) pairs as integers so membership is one vectorised isin.
    if rec_items.dtype != true_items.dtype and not (
            np.issubdtype(rec_items.dtype, np.number) and np.issubdtype(true_items.dtype, np.number)):
        rec_items, true_items = rec_items.astype(object), true_items.astype(object)
    codes, uniques = pd.factorize(np.concatenate([rec_items, true_items]))
    rec_codes, true_codes = codes[:len(rec_items)], codes[len(rec_items):]
    n_codes = max(len(uniques), 1)
    true_pairs = np.unique(true_rows.astype(np.int64) * n_codes + true_codes)
    rec_pairs = rec_rows.astype(np.int64) * n_codes + rec_codes

    hits = np.zeros((len(users), k), dtype=bool)
    hits[rec_rows, rec_rank] = np.isin(rec_pairs, true_pairs)
    n_relevant = np.bincount(true_pairs // n_codes, minlength=len(users))
    return _Hits(np.asarray(users), hits, n_relevant, k)


def _precision(h: _Hits) -> np.ndarray:
    return h.hits.sum(axis=1) / h.k


def recall_per_user(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Recall@k of each row of a top-k hit matrix: hits / number of relevant items.

    ``hits`` is ``(users, k)``, true where the recommendation at rank ``r + 1`` is relevant (any
    numeric or bool dtype); ``n_relevant`` is each user's number of relevant items (at least 1).
    """
    return np.asarray(hits).sum(axis=1) / n_relevant


def ndcg_per_user(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Binary-relevance nDCG@k of each row of a top-k hit matrix (``k`` = its number of columns).

    Discount ``1 / ln(1 + rank)``; the ideal DCG puts ``min(n_relevant, k)`` hits at ranks 1, 2, ...
    ``hits`` and ``n_relevant`` as in :func:`recall_per_user`.
    """
    hits = np.asarray(hits)
    k = hits.shape[1]
    discount = 1.0 / np.log1p(np.arange(1, k + 1))
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    return (hits * discount).sum(axis=1) / ideal[np.minimum(n_relevant, k)]


def _recall(h: _Hits) -> np.ndarray:
    return recall_per_user(h.hits, h.n_relevant)


def _ndcg(h: _Hits) -> np.ndarray:
    return ndcg_per_user(h.hits, h.n_relevant)


def _average_precision(h: _Hits) -> np.ndarray:
    precision_at_rank = np.cumsum(h.hits, axis=1) / np.arange(1, h.k + 1)
    return (precision_at_rank * h.hits).sum(axis=1) / h.n_relevant


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


def precision_at_k(recommendations: RankedItems, truth: RelevantItems, k: int = 10) -> float:
    """Mean over evaluated users of (relevant items among the top ``k``) / ``k``."""
    return _mean(_precision(_hit_matrix(recommendations, truth, k)))


def recall_at_k(recommendations: RankedItems, truth: RelevantItems, k: int = 10) -> float:
    """Mean over evaluated users of (relevant items among the top ``k``) / (number of relevant items)."""
    return _mean(_recall(_hit_matrix(recommendations, truth, k)))


def ndcg_at_k(recommendations: RankedItems, truth: RelevantItems, k: int = 10) -> float:
    """Mean binary-relevance nDCG of the top ``k`` (discount ``1/ln(1+rank)``, ideal: min(relevant, k) hits)."""
    return _mean(_ndcg(_hit_matrix(recommendations, truth, k)))


def map_score(recommendations: RankedItems, truth: RelevantItems, k: int = 10) -> float:
    """Microsoft Recommenders' ``map``: sum of precision at each hit in the top ``k`` / number relevant."""
    return _mean(_average_precision(_hit_matrix(recommendations, truth, k)))


def catalogue_coverage(recommendations: RankedItems, catalogue: int | Iterable[Any],
                       k: int | None = None) -> float:
    """Distinct items recommended (the first ``k`` of each user, all if None) / catalogue size.

    ``catalogue`` is the number of items that could have been recommended, or those items.
    """
    import pandas as pd
    size = catalogue if isinstance(catalogue, (int, np.integer)) else len(set(catalogue))
    if size <= 0:
        raise ValueError("the catalogue is empty")
    lists = _as_mapping(recommendations).values()
    items, _ = _flatten(np.asarray(items).ravel()[:k] for items in lists)
    return len(pd.unique(items)) / size if len(items) else 0.0


def ranking_metrics(recommendations: RankedItems, truth: RelevantItems, k: int = 10) -> dict[str, float]:
    """All four ranking metrics in one pass: ``precision@k``, ``recall@k``, ``ndcg@k``, ``map`` and ``users``."""
    h = _hit_matrix(recommendations, truth, k)
    return {
        f"precision@{k}": _mean(_precision(h)),
        f"recall@{k}": _mean(_recall(h)),
        f"ndcg@{k}": _mean(_ndcg(h)),
        "map": _mean(_average_precision(h)),
        "users": int(len(h.users)),
    }


def items_by_user(frame: pd.DataFrame, user_col: str = USER_ID, item_col: str = ITEM_ID) -> dict[Any, np.ndarray]:
    """``{user: array of their distinct items}`` from a frame of (user, item) rows."""
    if frame.empty:
        return {}
    grouped = frame.groupby(user_col, sort=True)[item_col].unique()
    return dict(zip(grouped.index.tolist(), grouped.to_numpy(), strict=True))


def evaluate(model: Recommender, train: Interactions, test: pd.DataFrame, k: int = 10) -> dict[str, float]:
    """Recommend ``k`` items to every user of ``test``, leaving out their ``train`` items, and score them.

    ``test`` has ``user_id`` and ``product_id`` columns (every row a relevant item). Returns
    ``precision@k``, ``recall@k``, ``ndcg@k``, ``map``, ``coverage`` (distinct recommended items over the
    ``train`` catalogue), ``users`` (users evaluated), ``users_without_recommendations`` (test users the
    model returned nothing for, left out of the means) and ``recommend_seconds``.
    """
    truth = items_by_user(test)
    users = np.asarray(list(truth))
    started = time.perf_counter()
    recommendations = model.recommend(users, k, exclude=train.items_by_user(users))
    seconds = time.perf_counter() - started
    results: dict[str, float] = ranking_metrics(recommendations, truth, k)
    results["coverage"] = catalogue_coverage(recommendations, train.n_items, k)
    results["users_without_recommendations"] = int(sum(len(items) == 0 for items in recommendations.items))
    results["recommend_seconds"] = seconds
    return results
