"""``recommend`` ranks a model's candidates only (``Recommender.candidate_scores``), and must give what ranking
every item's dense score gives: the same items in the same order with the same scores.

The reference is written out plainly: every item's dense score (``score_users``), the user's seen items at
``-inf``, sorted by score descending then item index ascending, the first k finite ones.
"""

from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rec_orchestration.ml.base import Recommender, top_k, top_k_sparse
from rec_orchestration.ml.ease import EASERecommender
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.neighbours import ItemKNNRecommender


def reference(model: Recommender, user_ids: np.ndarray, k: int, exclude: dict) -> list[tuple[list, list]]:
    out = []
    for user in user_ids.tolist():
        position = np.searchsorted(model.user_ids, user)
        if position >= len(model.user_ids) or model.user_ids[position] != user:
            out.append(([], []))
            continue
        scores = np.asarray(model.score_users(np.array([position])), dtype=np.float32)[0].copy()
        seen = np.searchsorted(model.item_ids, exclude.get(user, np.array([], dtype=np.int64)))
        scores[seen] = -np.inf
        ranked = sorted(range(len(scores)), key=lambda item: (-scores[item], item))[:k]
        ranked = [item for item in ranked if np.isfinite(scores[item])]
        out.append((model.item_ids[ranked].tolist(), scores[ranked].tolist()))
    return out


def sparse_interactions(n_users: int = 300, n_items: int = 400, per_user: int = 4, seed: int = 3) -> Interactions:
    """Few interactions over many items, so many users' neighbours run out before k."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1)
    rows = [(7 * user + 1, 1000 + int(item), 1.0, 1_600_000_000 + i)
            for user in range(n_users)
            for i, item in enumerate(rng.choice(n_items, per_user, replace=False, p=popularity / popularity.sum()))]
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "product_id", "weight", "ts"]))


def assert_same_as_dense(model: Recommender, data: Interactions, k: int) -> None:
    users = np.concatenate([data.user_ids, [999_999]])  # one unknown user: nothing, as before
    exclude = data.items_by_user()
    got = model.recommend(users, k, exclude=exclude)
    expected = reference(model, users, k, exclude)
    for user, items, scores, (want_items, want_scores) in zip(users.tolist(), got.items, got.scores, expected,
                                                               strict=True):
        assert items.tolist() == want_items, f"user {user}"
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6, err_msg=f"user {user}")


def test_item_knn_ranks_its_sparse_neighbour_sums_as_the_dense_ranking_does():
    data = sparse_interactions()
    model = ItemKNNRecommender(neighbours=3, shrink_power=0.5).fit(data)
    candidates = model.candidate_scores(np.arange(data.n_users))
    short = (np.diff(candidates.indptr) < 20 + 4).sum()  # users whose list ends in zero-scored items
    assert sp.issparse(candidates) and short > 0
    assert_same_as_dense(model, data, k=20)


def test_ease_ranks_only_its_modelled_items_as_the_dense_ranking_does():
    data = sparse_interactions()
    model = EASERecommender(l2=5.0, max_items=50).fit(data)
    scores, columns = model.candidate_scores(np.arange(5))
    assert scores.shape == (5, 50) and np.array_equal(columns, model.modelled)
    assert_same_as_dense(model, data, k=20)


class FixedSparse(Recommender):
    """Scores given as a sparse matrix with negative and stored-zero entries: the cases item-kNN never makes."""

    name = "fixed"

    def __init__(self, scores: sp.csr_matrix) -> None:
        self.scores = scores
        self.user_ids = np.arange(scores.shape[0]) * 10
        self.item_ids = np.arange(scores.shape[1]) + 100

    def fit(self, interactions: Interactions) -> "FixedSparse":
        return self

    def score_users(self, user_index: np.ndarray) -> np.ndarray:
        return self.scores[user_index].toarray()

    def candidate_scores(self, user_index: np.ndarray) -> sp.csr_matrix:
        return self.scores[user_index]

    def state_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "FixedSparse":
        raise NotImplementedError


@pytest.mark.parametrize("k", [1, 5, 12, 30])
def test_sparse_ranking_orders_positives_then_zeros_by_index_then_negatives(k):
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 12
    dense = np.where(rng.random((n_users, n_items)) < 0.3, rng.normal(size=(n_users, n_items)), 0.0)
    dense[:, 3] = np.where(rng.random(n_users) < 0.5, 0.7, 0.0)  # ties between items
    dense[:, 8] = np.where(dense[:, 3] > 0, 0.7, dense[:, 8])
    stored = sp.csr_matrix(dense.astype(np.float32))
    stored.data[:3] = 0.0  # explicitly stored zeros rank with the unstored ones
    model = FixedSparse(stored)
    exclude = {int(user): model.item_ids[rng.choice(n_items, rng.integers(0, 6), replace=False)]
               for user in model.user_ids}
    got = model.recommend(model.user_ids, k, exclude=exclude)
    for user, items, scores, (want_items, want_scores) in zip(
            model.user_ids.tolist(), got.items, got.scores, reference(model, model.user_ids, k, exclude), strict=True):
        assert items.tolist() == want_items, f"user {user}"
        np.testing.assert_allclose(scores, want_scores)


def test_a_row_with_every_item_seen_gets_nothing():
    scores = sp.csr_matrix(np.array([[0.5, 0.0, 0.2], [0.0, 0.0, 0.0]], dtype=np.float32))
    best, values = top_k_sparse(scores, 3, [np.array([0, 1, 2]), np.array([1])])
    assert best[0].tolist() == [] and values[0].tolist() == []
    assert best[1].tolist() == [0, 2] and values[1].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("k", [1, 3, 7, 15])
def test_dense_ranking_breaks_ties_at_the_cut_off_by_the_lower_column(k):
    """argpartition alone keeps an arbitrary few of the entries tied at the k-th place."""
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 3, size=(200, 16)).astype(np.float32)  # every row full of ties
    scores[::7, ::3] = np.nan
    scores[::5, 1::2] = -np.inf
    best, values = top_k(scores, k)
    for row in range(len(scores)):
        plain = [-np.inf if np.isnan(value) else float(value) for value in scores[row]]
        ranked = sorted(range(16), key=lambda col: (-plain[col], col))[:k]
        assert best[row].tolist() == ranked, row
        assert not np.isnan(values[row]).any()


@pytest.mark.parametrize("k", [1, 10, 333])
def test_dense_ranking_of_long_rows_is_a_stable_sorts_on_any_number_of_threads(k):
    """Rows longer than the spans the selection skips whole, full of ties, NaN and -inf."""
    from rec_orchestration.ml.selection import top_k_rows

    rng = np.random.default_rng(k)
    scores = rng.integers(0, 40, size=(60, 333)).astype(np.float32)
    scores[::4, ::5] = np.nan
    scores[::3, 7::2] = -np.inf
    scores[5] = np.nan  # a row of NaN only: -inf values, the lowest columns
    expected = np.argsort(-np.where(np.isnan(scores), -np.inf, scores), axis=1, kind="stable")[:, :k]
    for threads in (1, 2):
        best, values = top_k_rows(scores, k, threads=threads)
        assert np.array_equal(best, expected)
        assert np.array_equal(values, np.take_along_axis(np.where(np.isnan(scores), -np.inf, scores), expected, 1))


class FixedFactors(Recommender):
    """A factor model with given user and item vectors and item bias (as LightFM and LightGCN are)."""

    name = "fixed_factors"

    def __init__(self, users: np.ndarray, items: np.ndarray, bias: np.ndarray | None):
        self.users, self.items, self.bias = users, items, bias
        self.user_ids = np.arange(len(users), dtype=np.int64) * 3 + 5
        self.item_ids = np.arange(len(items), dtype=np.int64) * 2 + 100

    def fit(self, interactions: Interactions) -> "FixedFactors":
        return self

    def score_users(self, user_index: np.ndarray) -> np.ndarray:
        return self.users[user_index] @ self.items.T + (0.0 if self.bias is None else self.bias)

    def factor_form(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self.users, self.items, self.bias

    def state_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "FixedFactors":
        raise NotImplementedError


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_factor_models_rank_tile_by_tile_as_the_dense_ranking_does(with_bias, threads):
    """More users and items than one tile of ``ml.selection.top_k_dot`` holds, small integer factors so every
    score is exact in float32 and ties are everywhere: the same items, order and scores as the dense ranking,
    on one thread or two; a user with fewer unseen items than k gets only those."""
    import torch

    rng = np.random.default_rng(threads)
    n_users, n_items, k = 600, 4_500, 12
    users = rng.integers(-2, 3, size=(n_users, 4)).astype(np.float32)
    items = rng.integers(-2, 3, size=(n_items, 4)).astype(np.float32)
    bias = rng.integers(-1, 2, size=n_items).astype(np.float32) if with_bias else None
    model = FixedFactors(users, items, bias)
    exclude = {int(user): model.item_ids[rng.choice(n_items, rng.integers(0, 40), replace=False)]
               for user in model.user_ids}
    exclude[int(model.user_ids[7])] = model.item_ids[3:]  # three items left to recommend
    asked = np.concatenate([model.user_ids, [4]])  # an unknown user gets nothing
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = model.recommend(asked, k, exclude=exclude)
    finally:
        torch.set_num_threads(before)
    assert len(got.items[7]) == 3 and len(got.items[-1]) == 0
    for user, items_got, scores, (want_items, want_scores) in zip(
            asked.tolist(), got.items, got.scores, reference(model, asked, k, exclude), strict=True):
        assert items_got.tolist() == want_items, f"user {user}"
        assert scores.tolist() == want_scores, f"user {user}"


def test_a_factor_model_never_recommends_an_item_scoring_nan_and_still_reads_its_neighbours():
    """An item whose vector holds NaN (a diverged fit) ranks as -inf; the best item sits right after it."""
    items = np.arange(100, dtype=np.float32)[:, None] % 7
    items[0], items[1] = np.nan, 9.0
    model = FixedFactors(np.ones((1, 1), dtype=np.float32), items, None)
    got = model.recommend(model.user_ids, 3)
    assert got.items[0].tolist() == model.item_ids[[1, 6, 13]].tolist()
    assert got.scores[0].tolist() == [9.0, 6.0, 6.0]
    assert model.recommend(model.user_ids, 0).items[0].tolist() == []  # k = 0: nothing, not an error
