"""What a publication serves: blended similar products and each user's list with its reason."""

import math

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rec_orchestration.ml.base import Recommendations
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.serving import (
    PERSONALIZED,
    POPULAR,
    REASON_MIN_SUPPORT,
    ReasonThresholds,
    ServingInputs,
    Source,
    assemble,
    blend_similarities,
    co_occurrence,
    history_digests,
    neighbour_evidence,
    neighbour_lists,
    reason_thresholds,
    strong_neighbours,
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
        strong_neighbours={110: np.array([105, 101, 100]), 111: np.array([108])},
        titles={101: "Dune", 100: "Emma"},
    )
    return ServingInputs(**{**defaults, **overrides})


def rows_of(user: int, data: ServingInputs) -> list[tuple]:
    return [(r.product_id, r.rank, r.reason, r.because_product_id, r.source.name)
            for r in assemble([user], data)]


def test_personalized_rows_say_which_liked_product_they_come_from_and_are_topped_up_from_popularity():
    assert rows_of(1, inputs()) == [
        (110, 1, "because you liked Dune", 101, "ease"),  # 105 is stronger but not liked; 101 is
        (111, 2, "personalized", None, "ease"),           # no liked product among its strong neighbours
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
    # Enough history, but the champion's fit does not know the user (new since it was fitted: no items for
    # them): their categories first, as for any user the champion does not rank.
    unknown = inputs(seen={2: np.array([103, 106, 104])}, min_interactions=3,
                     personal=ranked([2], [[]]), popular=ranked([2], [[100, 101, 102, 105, 107]]))
    assert [(row[0], row[4]) for row in rows_of(2, unknown)] == [
        (105, "popularity_by_category"), (107, "popularity_by_category"), (100, "popularity"), (101, "popularity")]
    # No history at all: overall popularity.
    assert [(row[0], row[4]) for row in rows_of(3, inputs())] == [
        (100, "popularity"), (101, "popularity"), (102, "popularity"), (103, "popularity")]


def test_every_user_gets_k_distinct_unseen_products_when_the_catalogue_allows():
    data = inputs(k=6)
    for user in (1, 2, 3):
        products = [row[0] for row in rows_of(user, data)]
        assert len(products) == len(set(products)) == 6
        assert not set(products) & set(data.seen.get(user, np.array([])).tolist())


def evidence_rows(rows: list[tuple[int, int, int, float]]) -> pd.DataFrame:
    """``(product, neighbour, support, lift)`` rows as :func:`neighbour_evidence` returns them."""
    return pd.DataFrame(rows, columns=["product_id", "similar_product_id", "support", "similarity"])


def reasons_of_user_1(evidence: pd.DataFrame, thresholds: ReasonThresholds) -> list[tuple]:
    """User 1 liked 100, 101 and 102; the champion recommends 110 then 111."""
    data = inputs(strong_neighbours=strong_neighbours(evidence, thresholds))
    return [(row[0], row[2], row[3]) for row in rows_of(1, data) if row[4] == "ease"]


def test_a_reason_names_a_liked_product_only_when_it_is_a_strong_and_supported_neighbour():
    thresholds = ReasonThresholds(min_similarity=3.0, min_support=4)
    # Strong (lift 5 >= 3) and supported (6 users >= 4): named.
    strong = evidence_rows([(110, 101, 6, 5.0)])
    assert reasons_of_user_1(strong, thresholds) == [(110, "because you liked Dune", 101), (111, PERSONALIZED, None)]
    # A weak neighbour (lift 2 < 3), however many users share it: personalized.
    weak = evidence_rows([(110, 101, 50, 2.0)])
    assert reasons_of_user_1(weak, thresholds) == [(110, PERSONALIZED, None), (111, PERSONALIZED, None)]
    # A strong lift resting on too few users (3 < 4): personalized.
    unsupported = evidence_rows([(110, 101, 3, 40.0)])
    assert reasons_of_user_1(unsupported, thresholds) == [(110, PERSONALIZED, None), (111, PERSONALIZED, None)]
    # Exactly at both thresholds: named.
    assert reasons_of_user_1(evidence_rows([(110, 101, 4, 3.0)]), thresholds)[0] == (
        110, "because you liked Dune", 101)


def test_the_strongest_qualifying_liked_product_is_named_ties_to_more_support_then_the_smaller_id():
    thresholds = ReasonThresholds(min_similarity=2.0, min_support=2)
    evidence = evidence_rows([
        (110, 105, 9, 9.0),    # the strongest, but user 1 never liked it
        (110, 100, 3, 4.0),
        (110, 101, 8, 6.0),    # the strongest the user liked
        (110, 102, 50, 1.5),   # most support, too weak
        (111, 101, 5, 3.0), (111, 100, 5, 3.0),  # a tie on lift and support: the smaller id
        (112, 100, 7, 3.0), (112, 101, 5, 3.0),  # a tie on lift: the better supported
    ])
    lists = strong_neighbours(evidence, thresholds)
    assert {item: ids.tolist() for item, ids in lists.items()} == {
        110: [105, 101, 100], 111: [100, 101], 112: [100, 101]}
    assert reasons_of_user_1(evidence, thresholds) == [(110, "because you liked Dune", 101),
                                                       (111, "because you liked Emma", 100)]
    # Shuffled input gives the same lists.
    shuffled = strong_neighbours(evidence.sample(frac=1.0, random_state=3), thresholds)
    assert {item: ids.tolist() for item, ids in shuffled.items()} == {
        item: ids.tolist() for item, ids in lists.items()}


def test_thresholds_come_from_the_neighbour_pairs_support_and_lift():
    # Support of the pairs that share any user: 1, 2, 4, 6, ..., 16 (the pair with 0 is left out): its
    # lower quartile is 4. Lifts of the pairs with support >= 4: 1.5, 2, 3, 4, 5, 6, 7: the median is 4
    # (the rare pairs' lifts of 90 and 50 rest on one and two users and do not count).
    evidence = evidence_rows([(1, 2, 0, 0.0), (1, 3, 1, 90.0), (1, 4, 2, 50.0), (1, 5, 4, 1.5), (2, 3, 6, 2.0),
                              (2, 4, 8, 3.0), (2, 5, 10, 4.0), (3, 4, 12, 5.0), (3, 5, 14, 7.0), (4, 5, 16, 6.0)])
    assert reason_thresholds(evidence) == ReasonThresholds(min_similarity=4.0, min_support=4)
    # Sparse data: the quartile is 1 user, but a reason never rests on fewer than two.
    sparse_pairs = evidence_rows([(1, 2, 1, 9.0), (1, 3, 1, 8.0), (1, 4, 1, 7.0), (1, 5, 2, 0.5), (2, 3, 3, 0.8)])
    assert reason_thresholds(sparse_pairs) == ReasonThresholds(min_similarity=1.0, min_support=REASON_MIN_SUPPORT)
    # No pair with enough support: nothing qualifies, so every reason is "personalized".
    none = reason_thresholds(evidence_rows([(1, 2, 1, 9.0), (1, 3, 0, 0.0)]))
    assert none.min_similarity == math.inf and not strong_neighbours(evidence_rows([(1, 2, 1, 9.0)]), none)


def test_evidence_counts_the_users_who_share_each_pair_and_its_lift_over_chance():
    # Four users. Products 10 and 11 are liked together by users 1 and 2 only; 12 by everyone.
    frame = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2, 3, 3, 4],
                          "product_id": [10, 11, 12, 10, 11, 12, 12, 13, 12],
                          "weight": 1.0, "ts": 0.0})
    blended = pd.DataFrame({"product_id": [10, 10, 12, 13, 99], "similar_product_id": [11, 12, 13, 10, 10]})
    evidence = neighbour_evidence(blended, Interactions.from_frame(frame))
    assert evidence["support"].tolist() == [2, 2, 1, 0, 0]  # 99 has no interaction at all
    # lift = support * users / (n_a * n_b): 10 and 11 (2 users each) always together: 2 * 4 / 4 = 2;
    # 12 is liked by everyone, so sharing it says nothing: 2 * 4 / (2 * 4) = 1.
    assert np.allclose(evidence["similarity"], [2.0, 1.0, 1.0, 0.0, 0.0])


def test_co_occurrence_matches_the_dense_count_whatever_the_chunk():
    rng = np.random.default_rng(5)
    matrix = sp.random(60, 25, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    dense = (matrix.toarray() > 0).astype(int)
    together = dense.T @ dense
    left, right = rng.integers(0, 25, 200), rng.integers(0, 25, 200)
    for chunk in (1, 7, 10_000_000):
        assert co_occurrence(matrix, left, right, chunk_work=chunk).tolist() == together[left, right].tolist()
    assert co_occurrence(matrix, np.array([], dtype=int), np.array([], dtype=int)).tolist() == []


def _splitmix64_finaliser(user_id: int) -> int:
    """Vigna's splitmix64 (https://prng.di.unimi.it/splitmix64.c): one step from state ``user_id``, written
    with Python's unbounded ints masked to 64 bits, independently of the numpy version under test."""
    mask = (1 << 64) - 1
    z = (user_id + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_user_shards_are_a_stable_hash_spread_evenly():
    from rec_orchestration.ml.serving import user_shards

    users = np.array([0, 1, 2, 7, 1_000_003, 2**40 + 5, 2**62], dtype=np.int64)
    assert user_shards(users, 7).tolist() == [_splitmix64_finaliser(int(u)) % 7 for u in users]
    assert (user_shards(users, 1) == 0).all()
    # Consecutive ids (how a database hands them out) land evenly: each of 4 shards within 2 % of a quarter.
    counts = np.bincount(user_shards(np.arange(100_000, dtype=np.int64), 4), minlength=4)
    assert (np.abs(counts - 25_000) < 500).all(), counts


def test_a_users_history_digest_changes_with_any_of_their_rows_and_only_theirs():
    frame = pd.DataFrame({"user_id": [3, 1, 3, 2, 2], "product_id": [10, 11, 12, 10, 13],
                          "weight": [1.0, 2.0, 1.0, 1.0, 0.6],
                          "ts": pd.to_datetime([5, 6, 7, 8, 9], unit="s", utc=True)})
    users, digests = history_digests(frame)
    assert users.tolist() == [1, 2, 3] and digests.dtype == np.int64
    # Row order does not matter.
    assert np.array_equal(history_digests(frame.iloc[::-1])[1], digests)

    def digest_after(changed: pd.DataFrame) -> dict[int, int]:
        return dict(zip(*(array.tolist() for array in history_digests(changed)), strict=True))

    before = dict(zip(users.tolist(), digests.tolist(), strict=True))
    for change in (lambda f: f.assign(weight=np.where(f["product_id"] == 13, 0.8, f["weight"])),  # a weight
                   lambda f: f.assign(ts=f["ts"].where(f["product_id"] != 13, f["ts"] + pd.Timedelta("1s"))),
                   lambda f: f[f["product_id"] != 13],                                              # a row gone
                   lambda f: pd.concat([f, f.iloc[[3]].assign(product_id=14)])):                    # a row more
        after = digest_after(change(frame))
        assert after[2] != before[2], change
        assert after[1] == before[1] and after[3] == before[3]
