"""What a publication serves: blended similar products and each user's list with its reason."""

import numpy as np
import pandas as pd

from rec_orchestration.ml.base import Recommendations
from rec_orchestration.ml.serving import (
    POPULAR,
    ServingInputs,
    Source,
    assemble,
    blend_similarities,
    neighbour_lists,
)


def similarity_rows(method: str, neighbours: dict[int, list[int]]) -> list[dict]:
    return [{"item_id": item, "neighbor_id": other, "rank": rank, "score": 1.0 / rank, "method": method}
            for item, others in neighbours.items() for rank, other in enumerate(others, start=1)]


def test_blending_fuses_ranks_so_a_neighbour_found_by_several_methods_rises():
    frame = pd.DataFrame(
        similarity_rows("collaborative", {1: [2, 3, 4]}) + similarity_rows("content", {1: [4, 5, 2]})
        + similarity_rows("embedding", {1: [6, 4, 7]}))
    blended = blend_similarities(frame, n=4)
    assert blended["method"].unique().tolist() == ["blended"]
    # 4: 1/63 + 1/61 + 1/62 (all three); 2: 1/61 + 1/63 (two); 6: 1/61 (one first place); then 3 and 5
    # tie at 1/62 (one second place each): the smaller id first.
    assert blended["similar_product_id"].tolist() == [4, 2, 6, 3]
    assert blended["rank"].tolist() == [1, 2, 3, 4]
    assert np.isclose(blended["score"].iloc[0], 1 / 63 + 1 / 61 + 1 / 62)
    assert neighbour_lists(blended)[1].tolist() == [4, 2, 6, 3]


def ranked(users: list[int], lists: list[list[int]]) -> Recommendations:
    return Recommendations(np.array(users), [np.array(items, dtype=np.int64) for items in lists],
                           [np.linspace(1.0, 0.5, len(items)) for items in lists])


def inputs(**overrides) -> ServingInputs:
    catalogue = list(range(100, 112))  # overall popularity: 100 first
    seen = {1: np.array([100, 101, 102]), 2: np.array([103]), 3: np.array([], dtype=np.int64)}
    defaults = dict(
        k=4, min_interactions=3, seen=seen,
        personal=ranked([1], [[110, 111]]),  # the champion has only two unseen items for user 1
        champion=Source("ease", "e1"),
        popular=ranked([1, 2, 3], [[i for i in catalogue if i not in seen.get(u, [])][:8] for u in (1, 2, 3)]),
        popularity=Source("popularity", "p1"),
        category_ranking={7: [103, 104, 105], 8: [106, 107]},
        category_scores={7: [3.0, 2.0, 1.0], 8: [2.5, 1.5]},
        item_categories={103: [7], 104: [7], 105: [7], 106: [8], 107: [8]},
        neighbours={110: np.array([105, 101, 100]), 111: np.array([108])},
        titles={101: "Dune", 100: "Emma"},
    )
    return ServingInputs(**{**defaults, **overrides})


def rows_of(user: int, data: ServingInputs) -> list[tuple]:
    return [(r.product_id, r.rank, r.reason, r.because_product_id, r.source.name)
            for r in assemble([user], data)]


def test_personalized_rows_say_which_liked_product_they_come_from_and_are_topped_up_from_popularity():
    assert rows_of(1, inputs()) == [
        (110, 1, "because you liked Dune", 101, "ease"),  # 105 is nearer but not liked; 101 is
        (111, 2, "personalized", None, "ease"),           # no liked product among its neighbours
        (103, 3, POPULAR, None, "popularity"),
        (104, 4, POPULAR, None, "popularity"),
    ]


def test_cold_start_users_get_their_categories_popular_products_then_overall_and_never_what_they_saw():
    # User 2 saw one product of category 7: 7's other products first, then overall popularity.
    assert rows_of(2, inputs()) == [
        (104, 1, POPULAR, None, "popularity_by_category"),
        (105, 2, POPULAR, None, "popularity_by_category"),
        (100, 3, POPULAR, None, "popularity"),
        (101, 4, POPULAR, None, "popularity"),
    ]
    # Two categories are taken in turn, the more frequent first.
    data = inputs(seen={2: np.array([103, 106, 104])}, min_interactions=10, personal=None,
                  popular=ranked([2], [[100, 101, 102, 105, 107]]))
    assert [row[0] for row in rows_of(2, data)] == [105, 107, 100, 101]
    # No history at all: overall popularity.
    assert [(row[0], row[4]) for row in rows_of(3, inputs())] == [
        (100, "popularity"), (101, "popularity"), (102, "popularity"), (103, "popularity")]


def test_every_user_gets_k_distinct_unseen_products_when_the_catalogue_allows():
    data = inputs(k=6)
    for user in (1, 2, 3):
        products = [row[0] for row in rows_of(user, data)]
        assert len(products) == len(set(products)) == 6
        assert not set(products) & set(data.seen.get(user, np.array([])).tolist())
