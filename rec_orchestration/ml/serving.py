"""What a publication serves, as plain rows: blended similar products and each user's top k with a reason.

No database or Dagster here: ``assets/publish.py`` reads the inputs and writes the rows.

"Because you liked X" (see :func:`reason_thresholds`): X must be one of the recommended product's blended
neighbours that the user interacted with, share at least ``min_support`` users with it, and go with it well
beyond what the two products' popularity explains (lift at least ``min_similarity``); both thresholds come
from the data, and the publish step records them. Otherwise the reason is ``personalized``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from rec_orchestration.ml.base import Recommendations, index_of, stable_hash
from rec_orchestration.ml.interactions import Interactions

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp

BLENDED = "blended"
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009): damps the weight of the top ranks
POPULAR = "popular"
PERSONALIZED = "personalized"

# What makes a neighbour strong enough to name in "because you liked X" (see reason_thresholds):
REASON_SUPPORT_QUANTILE = 0.25     # support: at least the lower quartile of the co-occurring neighbour pairs' ...
REASON_MIN_SUPPORT = 2             # ... and never fewer than two users (one shared user is an anecdote)
REASON_SIMILARITY_QUANTILE = 0.5   # lift: at least the median of the supported neighbour pairs' ...
REASON_MIN_SIMILARITY = 1.0        # ... and never below chance
REASON_SIMILARITY = "lift"         # what the similarity threshold measures (recorded with the thresholds)
_PAIR_CHUNK_WORK = 20_000_000      # co-occurrence counting: multiply-adds (and entries) per chunk of items


def blend_similarities(similarity: pd.DataFrame, n: int, rrf_k: int = RRF_K) -> pd.DataFrame:
    """Reciprocal rank fusion of every method's neighbour lists: ``score = sum_m 1 / (rrf_k + rank_m)``.

    ``similarity`` has ``item_id, neighbor_id, rank, method``. Ranks, not raw scores, are fused, so
    methods whose scores live on different scales (cosine of counts, of TF-IDF, of embeddings) count
    alike; a neighbour found by several methods rises. Returns the top ``n`` per product as
    ``product_id, similar_product_id, rank, score, method='blended'``; ties go to the smaller id.
    """
    import pandas as pd
    fused = (similarity.assign(score=1.0 / (rrf_k + similarity["rank"].to_numpy(dtype=float)))
             .groupby(["item_id", "neighbor_id"], as_index=False)["score"].sum())
    fused = fused.sort_values(["item_id", "score", "neighbor_id"], ascending=[True, False, True], kind="stable")
    fused["rank"] = fused.groupby("item_id").cumcount() + 1
    fused = fused[fused["rank"] <= n]
    return pd.DataFrame({"product_id": fused["item_id"].to_numpy(),
                         "similar_product_id": fused["neighbor_id"].to_numpy(),
                         "rank": fused["rank"].to_numpy(), "score": fused["score"].to_numpy(), "method": BLENDED})


def neighbour_lists(blended: pd.DataFrame) -> dict[int, np.ndarray]:
    """Product id -> its neighbours, best first (rows ``product_id, similar_product_id, rank``)."""
    ordered = blended.sort_values(["product_id", "rank"])
    products = ordered["product_id"].to_numpy()
    neighbours = ordered["similar_product_id"].to_numpy()
    bounds = np.flatnonzero(np.diff(products)) + 1
    return {int(group[0]): items for group, items in zip(np.split(products, bounds), np.split(neighbours, bounds),
                                                          strict=True) if len(group)}


def co_occurrence(user_items: sp.spmatrix | sp.sparray, left: np.ndarray, right: np.ndarray,
                  chunk_work: int = _PAIR_CHUNK_WORK) -> np.ndarray:
    """How many users interacted with both items of each pair (``left[k]``, ``right[k]``: column indices
    of the users x items ``user_items``; any stored positive value counts as an interaction).

    Sparse all the way: the co-occurrence rows of the distinct ``left`` items (their items x users rows
    times the users x items matrix), a chunk of items at a time whose product costs about ``chunk_work``
    multiply-adds (and holds at most that many entries), each pair read from its item's row. An item's row
    costs the item counts of its users summed, so all of them together at most the collaborative
    similarity's product (every user's item count squared); nothing is ever users x items or items x
    items dense.
    """
    import scipy.sparse as sp
    by_user = sp.csr_matrix(sp.csr_matrix(user_items) > 0, dtype=np.float32)
    by_item = by_user.T.tocsr()
    left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
    counts = np.zeros(len(left), dtype=np.int64)
    if len(left) == 0:
        return counts
    items, row_of_pair = np.unique(left, return_inverse=True)
    order = np.argsort(row_of_pair, kind="stable")
    row_sorted = row_of_pair[order]
    work = by_item[items] @ np.diff(by_user.indptr).astype(np.float64)  # per item: its row's multiply-adds
    ends = np.cumsum(work + 1)
    start = 0
    while start < len(items):
        before = ends[start - 1] if start else 0
        end = max(start + 1, int(np.searchsorted(ends, before + chunk_work, side="right")))
        block = (by_item[items[start:end]] @ by_user).tocsr()
        block.sort_indices()
        lo, hi = np.searchsorted(row_sorted, [start, end])
        pairs = order[lo:hi]
        counts[pairs] = np.asarray(block[row_of_pair[pairs] - start, right[pairs]]).ravel().round().astype(np.int64)
        start = end
    return counts


def neighbour_evidence(blended: pd.DataFrame, interactions: Interactions) -> pd.DataFrame:
    """The co-occurrence evidence of every blended neighbour pair: ``product_id, similar_product_id,
    support, similarity``.

    ``support``: the users who interacted with both products. ``similarity``: the lift
    ``support * n_users / (n_product * n_neighbour)``, how many times more often the two share a user
    than the products' popularity alone would make them (1: chance). A product with no interaction has
    support and lift 0.
    """
    import pandas as pd
    import scipy.sparse as sp
    matrix = sp.csr_matrix(interactions.user_item_matrix() > 0, dtype=np.float32)
    left = index_of(interactions.item_ids, blended["product_id"].to_numpy())
    right = index_of(interactions.item_ids, blended["similar_product_id"].to_numpy())
    known = (left >= 0) & (right >= 0)
    support = np.zeros(len(blended), dtype=np.int64)
    support[known] = co_occurrence(matrix, left[known], right[known])
    per_item = np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(float)
    similarity = np.zeros(len(blended))
    shared = support > 0  # so both products are known and have users
    similarity[shared] = support[shared] * matrix.shape[0] / (per_item[left[shared]] * per_item[right[shared]])
    return pd.DataFrame({"product_id": blended["product_id"].to_numpy(),
                         "similar_product_id": blended["similar_product_id"].to_numpy(),
                         "support": support, "similarity": similarity})


@dataclass(frozen=True)
class ReasonThresholds:
    """A neighbour is named in "because you liked" when ``support >= min_support`` and
    ``similarity >= min_similarity`` (lift, see :func:`neighbour_evidence`)."""

    min_similarity: float
    min_support: int


def reason_thresholds(evidence: pd.DataFrame, *, support_quantile: float = REASON_SUPPORT_QUANTILE,
                      min_support: int = REASON_MIN_SUPPORT,
                      similarity_quantile: float = REASON_SIMILARITY_QUANTILE,
                      min_similarity: float = REASON_MIN_SIMILARITY) -> ReasonThresholds:
    """Thresholds for naming a neighbour, from the neighbour pairs' own evidence (:func:`neighbour_evidence`).

    - Support: the ``support_quantile`` (lower quartile) of the support of the pairs that share any user,
      but at least ``min_support`` (2). A lift measured on one or two shared users is mostly chance (a
      product bought once has a huge lift with whatever its buyer also bought); the quantile scales the
      floor with the data, so on a large catalogue a reason rests on as many users as most neighbour
      pairs do, not on a handful.
    - Similarity: the lift, not the cosine the collaborative neighbours are ranked by. Cosine grows with
      popularity: two bestsellers share many users just because everyone buys them. On the default
      2000-user sample (EASE's lists, collaborative and content neighbours), with cosine above its median,
      a quarter of the reasons still named a product of another leaf category (a keyboard "because you
      liked" a perfume), all of them pairs of bestsellers with a lift under 3; with lift above its median,
      4 in 10,000 did. Lift divides by what popularity explains. The threshold is the
      ``similarity_quantile`` (median) of the lift of the pairs with enough support (a reason names a
      neighbour stronger than the typical one), and at least ``min_similarity`` (1: more often together
      than chance).

    Quantiles are taken as observed values (``method="lower"``), so the thresholds are values some pair
    has. With no supported pair, no neighbour qualifies (``min_similarity`` is infinite).
    """
    supported = evidence["support"].to_numpy()
    supported = supported[supported > 0]
    support = max(int(min_support), int(np.quantile(supported, support_quantile, method="lower"))
                  if len(supported) else int(min_support))
    eligible = evidence.loc[evidence["support"] >= support, "similarity"].to_numpy(dtype=float)
    similarity = (max(float(min_similarity), float(np.quantile(eligible, similarity_quantile, method="lower")))
                  if len(eligible) else math.inf)
    return ReasonThresholds(min_similarity=similarity, min_support=support)


def strong_pairs(evidence: pd.DataFrame, thresholds: ReasonThresholds) -> pd.DataFrame:
    """The rows of ``evidence`` (:func:`neighbour_evidence`) that pass ``thresholds``."""
    return evidence[(evidence["support"] >= thresholds.min_support)
                    & (evidence["similarity"] >= thresholds.min_similarity)].reset_index(drop=True)


def strong_neighbours(evidence: pd.DataFrame, thresholds: ReasonThresholds) -> dict[int, np.ndarray]:
    """Product id -> the neighbours that pass ``thresholds``, strongest first (highest lift, then more
    support, then the smaller id): what :func:`because_you_liked` may name."""
    strong = strong_pairs(evidence, thresholds)
    strong = strong.sort_values(["product_id", "similarity", "support", "similar_product_id"],
                                ascending=[True, False, False, True], kind="stable")
    return neighbour_lists(strong.assign(rank=strong.groupby("product_id").cumcount() + 1))


@dataclass(frozen=True)
class Source:
    """Who made a row: model name and version."""

    name: str
    version: str


@dataclass
class ServingInputs:
    """Everything the per-user assembly needs, keyed by external ids."""

    k: int
    min_interactions: int
    seen: Mapping[int, np.ndarray]                     # user -> items interacted with
    personal: Recommendations | None                   # the champion's top k for users with enough history
    champion: Source
    popular: Recommendations                           # overall popularity, 2k unseen per user
    popularity: Source
    category_ranking: Mapping[int, Sequence[int]]      # leaf category -> its most popular products, best first
    category_scores: Mapping[int, Sequence[float]]
    item_categories: Mapping[int, Sequence[int]]       # product -> its leaf categories
    # product -> the neighbours a reason may name, strongest first (strong_neighbours)
    strong_neighbours: Mapping[int, np.ndarray] = field(default_factory=dict)
    titles: Mapping[int, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    user_id: int
    product_id: int
    rank: int
    score: float
    reason: str
    because_product_id: int | None
    source: Source


def because_you_liked(item: int, history: set[int], strong: Mapping[int, np.ndarray]) -> int | None:
    """The product of ``history`` first in ``item``'s strong neighbours (:func:`strong_neighbours`, strongest
    first), if any: None when no product of theirs is a strong enough neighbour to name."""
    for neighbour in strong.get(item, ()):
        if int(neighbour) in history:
            return int(neighbour)
    return None


def reason_text(because: int | None, titles: Mapping[int, str | None]) -> str:
    if because is None:
        return PERSONALIZED
    title = titles.get(because) or f"product {because}"
    return f"because you liked {title}"


def user_categories(history: np.ndarray, item_categories: Mapping[int, Sequence[int]]) -> list[int]:
    """The leaf categories of a user's products, most frequent first (ties: smaller id)."""
    counts = Counter(category for item in history.tolist() for category in item_categories.get(item, ()))
    return [category for category, _ in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))]


def assemble(users: Sequence[int], inputs: ServingInputs) -> Iterator[Row]:
    """Each user's top k, best first, never a product they interacted with.

    - Users with at least ``min_interactions`` and a champion ranking: the champion's items, each
      with "because you liked <title>" when one of their products is among the item's strong
      neighbours (``because_product_id``: the strongest such), else ``personalized``.
    - Everyone else (a user the champion's fit does not know, say one new since it was fitted, included):
      popular products of the categories they interacted with, round robin from their
      most frequent category, then overall popularity (reason ``popular`` for both; ``model_name``
      tells ``popularity_by_category`` from ``popularity``).
    - Any list still short of k is topped up from overall popularity.
    """
    personal = {}
    if inputs.personal is not None:
        personal = {int(user): (items, scores) for user, items, scores in zip(
            inputs.personal.user_ids.tolist(), inputs.personal.items, inputs.personal.scores, strict=True)}
    fallback = {int(user): (items, scores) for user, items, scores in zip(
        inputs.popular.user_ids.tolist(), inputs.popular.items, inputs.popular.scores, strict=True)}
    by_category = Source("popularity_by_category", inputs.popularity.version)
    empty = np.empty(0, dtype=np.int64)
    for user in map(int, users):
        history = inputs.seen.get(user, empty)
        taken: list[Row] = []
        chosen: set[int] = set()

        def take(item: int, score: float, reason: str, because: int | None, source: Source) -> None:
            chosen.add(item)
            taken.append(Row(user, item, len(taken) + 1, score, reason, because, source))

        if len(history) >= inputs.min_interactions and user in personal and len(personal[user][0]):
            seen = set(history.tolist())
            for item, score in zip(*(array.tolist() for array in personal[user]), strict=True):
                because = because_you_liked(item, seen, inputs.strong_neighbours)
                take(item, score, reason_text(because, inputs.titles), because, inputs.champion)
        elif len(history):
            seen = set(history.tolist())
            _round_robin(user_categories(history, inputs.item_categories), inputs, seen, chosen,
                         lambda item, score: take(item, score, POPULAR, None, by_category))
        items, scores = fallback.get(user, (empty, np.empty(0)))
        for item, score in zip(items.tolist(), scores.tolist(), strict=True):
            if len(taken) >= inputs.k:
                break
            if item not in chosen:
                take(item, score, POPULAR, None, inputs.popularity)
        yield from taken[:inputs.k]


def _round_robin(categories: list[int], inputs: ServingInputs, seen: set[int], chosen: set[int], take) -> None:
    """Take one unseen product from each category in turn until k are taken or the lists run out."""
    cursors = {category: 0 for category in categories if category in inputs.category_ranking}
    while cursors and len(chosen) < inputs.k:
        for category in list(cursors):
            ranking, scores = inputs.category_ranking[category], inputs.category_scores[category]
            position = cursors[category]
            while position < len(ranking) and (ranking[position] in seen or ranking[position] in chosen):
                position += 1
            if position >= len(ranking):
                del cursors[category]
                continue
            take(int(ranking[position]), float(scores[position]))
            cursors[category] = position + 1
            if len(chosen) >= inputs.k:
                return


def user_shards(user_ids: np.ndarray, shards: int) -> np.ndarray:
    """The scoring shard (0 to ``shards`` - 1) of each user: a stable hash of the id (:func:`stable_hash`),
    the same on every machine and Python process (unlike ``hash``), spreading consecutive ids evenly."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    return (stable_hash(user_ids) % np.uint64(shards)).astype(np.int64)


def history_digests(interactions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each user's history as one number: ``(users ascending, digests as int64)`` of ``interactions``
    (``user_id, product_id, weight, ts``). The digest is the sum, modulo 2**64, of a hash of each of the
    user's rows, so it does not depend on their order and changes with any added, removed or changed row
    (two different histories share one with probability about 2**-64). What a user's recommendations are
    made from besides the models: a user whose digest is unchanged needs no new rows while the models are."""
    import pandas as pd
    columns = interactions[["user_id", "product_id", "weight", "ts"]]
    hashes = pd.util.hash_pandas_object(columns, index=False).to_numpy(dtype=np.uint64)
    users = columns["user_id"].to_numpy(dtype=np.int64)
    order = np.argsort(users, kind="stable")
    users, hashes = users[order], hashes[order]
    if not len(users):
        return users, np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    with np.errstate(over="ignore"):
        digests = np.add.reduceat(hashes, starts)
    return users[starts], digests.view(np.int64)
