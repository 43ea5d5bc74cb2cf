"""Ranking metrics: hand-computed values with Microsoft Recommenders' definitions, and evaluate()."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rec_orchestration.ml.base import Recommendations
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.metrics import (
    catalogue_coverage,
    evaluate,
    map_score,
    ndcg_at_k,
    ndcg_per_user,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    recall_per_user,
)
from rec_orchestration.ml.popularity import PopularityRecommender

# k = 3. Users "a", "b", "c" are evaluated; "d" (no recommendations) and "e" (not in the truth) are not.
RECS = {"a": [1, 2, 3], "b": [4, 5, 6], "c": [7, 8], "e": [1, 2, 3]}
TRUTH = {"a": {1, 3, 9, 10}, "b": {5}, "c": {20}, "d": {1}}


def ln(x: float) -> float:
    return math.log(x)


def test_precision_divides_hits_by_k_over_users_with_recommendations():
    # a: 2 hits, b: 1 hit, c: 0 hits (and only 2 recommendations: still divided by k)
    assert precision_at_k(RECS, TRUTH, k=3) == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)


def test_recall_divides_hits_by_number_relevant():
    assert recall_at_k(RECS, TRUTH, k=3) == pytest.approx((2 / 4 + 1 / 1 + 0) / 3)


def test_ndcg_binary_with_ideal_of_min_relevant_k_hits():
    ndcg_a = (1 / ln(2) + 1 / ln(4)) / (1 / ln(2) + 1 / ln(3) + 1 / ln(4))  # 4 relevant, k = 3
    ndcg_b = (1 / ln(3)) / (1 / ln(2))                                    # hit at rank 2, 1 relevant
    assert ndcg_at_k(RECS, TRUTH, k=3) == pytest.approx((ndcg_a + ndcg_b + 0) / 3)


def test_hit_matrix_metrics_score_each_row_like_the_mapping_metrics():
    # RECS / TRUTH's users a, b, c as a top-3 hit matrix and their numbers of relevant items
    hits = np.array([[True, False, True], [False, True, False], [False, False, False]])
    n_relevant = np.array([4, 1, 1])
    ndcg_a = (1 / ln(2) + 1 / ln(4)) / (1 / ln(2) + 1 / ln(3) + 1 / ln(4))
    np.testing.assert_allclose(ndcg_per_user(hits, n_relevant), [ndcg_a, ln(2) / ln(3), 0.0])
    np.testing.assert_allclose(recall_per_user(hits, n_relevant), [2 / 4, 1.0, 0.0])
    assert ndcg_per_user(hits, n_relevant).mean() == pytest.approx(ndcg_at_k(RECS, TRUTH, k=3))
    assert recall_per_user(hits.astype(np.float32), n_relevant).mean() == pytest.approx(recall_at_k(RECS, TRUTH, k=3))


def test_map_sums_precision_at_each_hit_over_number_relevant():
    ap_a = (1 / 1 + 2 / 3) / 4  # hits at ranks 1 and 3; 4 relevant items
    ap_b = (1 / 2) / 1
    assert map_score(RECS, TRUTH, k=3) == pytest.approx((ap_a + ap_b + 0) / 3)


def test_map_divides_by_all_relevant_items_not_by_k():
    truth = {"u": set(range(100, 120)) | {1}}  # 21 relevant items, one hit at rank 1
    assert map_score({"u": [1, 2, 3]}, truth, k=3) == pytest.approx(1 / 21)


def test_only_the_first_k_recommendations_count():
    recs, truth = {"u": [9, 8, 7, 1]}, {"u": {1}}
    assert precision_at_k(recs, truth, k=3) == 0.0
    assert precision_at_k(recs, truth, k=4) == pytest.approx(1 / 4)
    assert ndcg_at_k(recs, truth, k=4) == pytest.approx(ln(2) / ln(5))


def test_perfect_ranking_scores_one_and_no_hit_scores_zero():
    truth = {"u": {1, 2, 3}, "v": {4, 5, 6}}
    perfect = {"u": [3, 1, 2], "v": [6, 5, 4]}
    assert ranking_metrics(perfect, truth, k=3) == pytest.approx(
        {"precision@3": 1.0, "recall@3": 1.0, "ndcg@3": 1.0, "map": 1.0, "users": 2})
    wrong = {"u": [7, 8, 9], "v": [1, 2, 3]}
    assert ranking_metrics(wrong, truth, k=3) == {
        "precision@3": 0.0, "recall@3": 0.0, "ndcg@3": 0.0, "map": 0.0, "users": 2}


def test_no_common_user_gives_zero():
    assert ranking_metrics({"x": [1]}, {"y": {1}}, k=1) == {
        "precision@1": 0.0, "recall@1": 0.0, "ndcg@1": 0.0, "map": 0.0, "users": 0}


def test_recommendations_object_string_items_and_empty_lists():
    recs = Recommendations(np.array(["u", "v"]), [np.array(["x", "y"]), np.array([], dtype=str)],
                           [np.array([2.0, 1.0]), np.array([])])
    truth = {"u": np.array(["y"]), "v": np.array(["x"])}
    # v got nothing: left out of the mean, as in the library's join of truth and predictions
    assert ranking_metrics(recs, truth, k=2)["users"] == 1
    assert ndcg_at_k(recs, truth, k=2) == pytest.approx(ln(2) / ln(3))


def test_catalogue_coverage_counts_distinct_items_in_the_top_k():
    recs = {"a": [1, 2], "b": [2, 3]}
    assert catalogue_coverage(recs, 10) == pytest.approx(0.3)
    assert catalogue_coverage(recs, 10, k=1) == pytest.approx(0.2)
    assert catalogue_coverage(recs, [1, 2, 3, 4]) == pytest.approx(0.75)


def test_evaluate_excludes_train_items_and_reports_every_metric():
    train = pd.DataFrame({"user_id": [1, 1, 2, 3], "product_id": ["a", "b", "a", "c"],
                          "weight": 1.0, "ts": 0.0})
    test = pd.DataFrame({"user_id": [1, 2], "product_id": ["c", "b"]})
    interactions = Interactions.from_frame(train)
    model = PopularityRecommender().fit(interactions)  # a (2), then b and c (1 each, b first by id)
    result = evaluate(model, interactions, test, k=2)
    # user 1 has seen a and b: gets [c], a hit at rank 1; user 2 gets [b, c], a hit at rank 1
    assert result["precision@2"] == pytest.approx(0.5)
    assert result["recall@2"] == pytest.approx(1.0)
    assert result["ndcg@2"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(1.0)
    assert result["coverage"] == pytest.approx(2 / 3)
    assert result["users"] == 2
    assert result["users_without_recommendations"] == 0


def test_invalid_k_and_catalogue_are_refused():
    with pytest.raises(ValueError):
        precision_at_k(RECS, TRUTH, k=0)
    with pytest.raises(ValueError):
        catalogue_coverage(RECS, 0)


def test_the_histories_of_some_users_are_theirs_in_full_and_nobody_elses():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"user_id": 3 * rng.integers(0, 300, 5000), "product_id": rng.integers(0, 100, 5000),
                          "weight": 1.0, "ts": rng.random(5000)})
    data = Interactions.from_frame(frame)
    everyone = data.items_by_user()
    asked = np.array([0, 3, 1, 897, 5, 2000, -1])  # some known, some never seen
    some = data.items_by_user(asked)
    assert set(some) == {user for user in asked.tolist() if user in everyone} and len(some) >= 2
    for user, items in some.items():
        assert np.array_equal(items, everyone[user])
