"""What a publication serves, as plain rows: blended similar products and each user's top k with a reason.

No database or Dagster here: ``assets/publish.py`` reads the inputs and writes the rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rec_orchestration.ml.base import Recommendations

BLENDED = "blended"
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009): damps the weight of the top ranks
POPULAR = "popular"
PERSONALIZED = "personalized"


def blend_similarities(similarity: pd.DataFrame, n: int, rrf_k: int = RRF_K) -> pd.DataFrame:
    """Reciprocal rank fusion of every method's neighbour lists: ``score = sum_m 1 / (rrf_k + rank_m)``.

    ``similarity`` has ``item_id, neighbor_id, rank, method``. Ranks, not raw scores, are fused, so
    methods whose scores live on different scales (cosine of counts, of TF-IDF, of embeddings) count
    alike; a neighbour found by several methods rises. Returns the top ``n`` per product as
    ``product_id, similar_product_id, rank, score, method='blended'``; ties go to the smaller id.
    """
    fused = (similarity.assign(score=1.0 / (rrf_k + similarity["rank"].to_numpy(dtype=float)))
             .groupby(["item_id", "neighbor_id"], as_index=False)["score"].sum())
    fused = fused.sort_values(["item_id", "score", "neighbor_id"], ascending=[True, False, True], kind="stable")
    fused["rank"] = fused.groupby("item_id").cumcount() + 1
    fused = fused[fused["rank"] <= n]
    return pd.DataFrame({"product_id": fused["item_id"].to_numpy(),
                         "similar_product_id": fused["neighbor_id"].to_numpy(),
                         "rank": fused["rank"].to_numpy(), "score": fused["score"].to_numpy(), "method": BLENDED})


def neighbour_lists(blended: pd.DataFrame) -> dict[int, np.ndarray]:
    """Product id -> its blended neighbours, best first."""
    ordered = blended.sort_values(["product_id", "rank"])
    products = ordered["product_id"].to_numpy()
    neighbours = ordered["similar_product_id"].to_numpy()
    bounds = np.flatnonzero(np.diff(products)) + 1
    return {int(group[0]): items for group, items in zip(np.split(products, bounds), np.split(neighbours, bounds),
                                                          strict=True) if len(group)}


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
    neighbours: Mapping[int, np.ndarray] = field(default_factory=dict)  # product -> blended neighbours
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


def because_you_liked(item: int, history: set[int], neighbours: Mapping[int, np.ndarray]) -> int | None:
    """The product of ``history`` most similar to ``item`` (first in its blended neighbour list), if any."""
    for neighbour in neighbours.get(item, ()):
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
      with "because you liked <title>" when one of their products is among the item's blended
      neighbours (``because_product_id``), else ``personalized``.
    - Everyone else: popular products of the categories they interacted with, round robin from their
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

        if len(history) >= inputs.min_interactions and user in personal:
            seen = set(history.tolist())
            for item, score in zip(*(array.tolist() for array in personal[user]), strict=True):
                because = because_you_liked(item, seen, inputs.neighbours)
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
