"""Item-item similarity: the neighbours a user sees equal a brute-force cosine, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rec_orchestration.ml import similarity
from rec_orchestration.ml.similarity import (
    ItemNeighbours,
    content_top_n,
    cosine_top_n_dense,
    cosine_top_n_sparse,
)

# 6 users x 7 items. Item 5 shares no user with anyone; item 6 was never rated.
TINY = np.array([
    [5, 3, 0, 1, 0, 0, 0],
    [4, 0, 0, 1, 0, 0, 0],
    [1, 1, 0, 5, 0, 0, 0],
    [1, 0, 0, 4, 0, 0, 0],
    [0, 1, 5, 4, 0, 0, 0],
    [0, 0, 0, 0, 0, 2, 0],
], dtype=np.float32)


def brute_force(dense: np.ndarray, n: int) -> dict[int, list[tuple[int, float]]]:
    """Positive top-n cosine between columns in float64, ties to the lower index, self excluded."""
    norms = np.linalg.norm(dense, axis=0)
    unit = dense / np.where(norms > 0, norms, 1)
    scores = unit.T @ unit
    out = {}
    for i in range(scores.shape[0]):
        order = [j for j in np.lexsort((np.arange(len(scores)), -scores[i])) if j != i and scores[i, j] > 1e-9]
        out[i] = [(int(j), float(scores[i, j])) for j in order[:n]]
    return out


def as_lists(result: ItemNeighbours) -> dict[int, list[tuple[int, float]]]:
    out: dict[int, list[tuple[int, float]]] = {}
    for item, neighbor, score in zip(result.item.tolist(), result.neighbor.tolist(), result.score.tolist(),
                                     strict=True):
        out.setdefault(item, []).append((neighbor, score))
    return out


def assert_same(result: ItemNeighbours, expected: dict[int, list[tuple[int, float]]]) -> None:
    got = as_lists(result)
    for item, want in expected.items():
        have = got.get(item, [])
        assert [j for j, _ in have] == [j for j, _ in want], f"item {item}"
        np.testing.assert_allclose([s for _, s in have], [s for _, s in want], rtol=1e-5, atol=1e-6)
    assert set(got) <= {i for i, want in expected.items() if want}


def random_ratings(n_users: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    matrix = sp.random(n_users, n_items, density=density, format="csr", rng=rng, dtype=np.float32)
    matrix.data = rng.uniform(0.5, 5.0, matrix.nnz).astype(np.float32)  # continuous: no exact ties
    return matrix


def test_tiny_matrix_matches_brute_force_cosine():
    result = cosine_top_n_sparse(sp.csr_matrix(TINY), 3)
    expected = brute_force(TINY.astype(np.float64), 3)
    assert_same(result, expected)
    # spelled out for item 0: cosine with item 3 is (5+4+5+4) / (|c0| |c3|)
    c = TINY.astype(np.float64)
    want = c[:, 0] @ c[:, 3] / np.linalg.norm(c[:, 0]) / np.linalg.norm(c[:, 3])
    row = (result.item == 0) & (result.neighbor == 3)
    assert result.score[row] == pytest.approx([want], rel=1e-6)


def test_long_form_is_sorted_ranked_and_typed():
    result = cosine_top_n_sparse(sp.csr_matrix(TINY), 2)
    assert result.item.dtype == np.int64 and result.neighbor.dtype == np.int64
    assert result.score.dtype == np.float32 and result.rank.dtype == np.int32
    assert np.all(np.diff(result.item) >= 0)
    for item in np.unique(result.item):
        mine = result.item == item
        assert result.rank[mine].tolist() == list(range(1, mine.sum() + 1))
        assert np.all(np.diff(result.score[mine]) <= 0)  # best first
    assert np.all(result.score > 0)


def test_an_item_is_never_its_own_neighbour_but_its_twin_is():
    matrix = TINY.copy()
    matrix[:, 6] = matrix[:, 1]  # item 6 rated exactly like item 1: cosine 1
    result = cosine_top_n_sparse(sp.csr_matrix(matrix), 6)
    assert not np.any(result.item == result.neighbor)
    first = as_lists(result)
    assert first[1][0] == (6, pytest.approx(1.0)) and first[6][0] == (1, pytest.approx(1.0))


def test_items_sharing_no_user_get_no_neighbours():
    result = cosine_top_n_sparse(sp.csr_matrix(TINY), 10)
    assert 5 not in result.item and 5 not in result.neighbor  # shares no user
    assert 6 not in result.item and 6 not in result.neighbor  # never rated
    assert 2 not in result.neighbor[result.item == 0]  # items 0 and 2 have no user in common


def test_ties_go_to_the_lower_item_index():
    # item 0 shares exactly one user with each of items 1, 2, 3, which are alike otherwise
    matrix = np.zeros((4, 4), dtype=np.float32)
    matrix[1:, 0] = 1
    for user, item in ((3, 1), (1, 2), (2, 3)):
        matrix[user, item] = 1
    result = cosine_top_n_sparse(sp.csr_matrix(matrix), 2)
    assert result.neighbor[result.item == 0].tolist() == [1, 2]
    neighbours, _ = cosine_top_n_dense(matrix.T, 2, rows=np.array([0]))
    assert neighbours.tolist() == [[1, 2]]


def test_dense_ties_go_to_the_lower_item_index():
    vectors = np.vstack([np.ones((1, 4)), np.tile([[1.0, 2.0, 0.0, 0.0]], (60, 1))])  # 60 identical items
    neighbours, scores = cosine_top_n_dense(vectors, 45, rows=np.array([0, 7]))
    assert neighbours[0].tolist() == list(range(1, 46))
    assert neighbours[1].tolist() == [*range(1, 7), *range(8, 47)]
    np.testing.assert_allclose(scores[1], 1.0)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_chunked_result_equals_unchunked(chunk):
    matrix = random_ratings(40, 11, 0.3, seed=chunk)
    whole = cosine_top_n_sparse(matrix, 4)
    chunked = cosine_top_n_sparse(matrix, 4, chunk_items=chunk)
    np.testing.assert_array_equal(chunked.item, whole.item)
    np.testing.assert_array_equal(chunked.neighbor, whole.neighbor)
    np.testing.assert_allclose(chunked.score, whole.score, rtol=1e-6)
    assert_same(chunked, brute_force(matrix.toarray().astype(np.float64), 4))


def test_a_tiny_memory_budget_gives_the_same_neighbours():
    matrix = random_ratings(60, 30, 0.2, seed=3)
    small = cosine_top_n_sparse(matrix, 5, memory_budget_bytes=1_000)
    assert_same(small, brute_force(matrix.toarray().astype(np.float64), 5))


@pytest.mark.parametrize("path", ["sparse product", "scipy product", "blas", "sparse rows"])
def test_every_way_of_computing_gives_the_brute_force_answer(monkeypatch, path):
    """The routine picks BLAS, the sparse product or sorted sparse rows from the data (and scipy's
    product without scikit-learn's kernel); all must give the same answer."""
    monkeypatch.setattr(similarity, "_DENSE_WORK_RATIO", 1e12 if path == "blas" else 0.0)
    monkeypatch.setattr(similarity, "_SPARSE_OUTPUT_FRACTION", 1e12 if path == "sparse rows" else 0.0)
    if path == "scipy product":
        monkeypatch.setattr(similarity, "_sparse_matmul_to_dense", False)
    matrix = random_ratings(80, 45, 0.1, seed=11)
    expected = brute_force(matrix.toarray().astype(np.float64), 6)
    for chunk in (None, 7):
        assert_same(cosine_top_n_sparse(matrix, 6, chunk_items=chunk), expected)


def test_negative_values_keep_only_positive_scores():
    matrix = random_ratings(30, 12, 0.5, seed=5)
    matrix.data -= 2.5  # centred ratings: some cosines negative
    result = cosine_top_n_sparse(matrix, 11)
    assert np.all(result.score > 0)
    assert_same(result, brute_force(matrix.toarray().astype(np.float64), 11))


def test_to_external_maps_indices_through_the_ids():
    result = cosine_top_n_sparse(sp.csr_matrix(TINY), 1)
    ids = np.array([f"P{i}" for i in range(TINY.shape[1])])
    frame = result.to_external(ids)
    assert list(frame.columns) == ["item_id", "neighbor_id", "score", "rank"]
    first = frame[frame["item_id"] == "P0"].iloc[0]
    assert first["neighbor_id"] == f"P{result.neighbor[result.item == 0][0]}" and first["rank"] == 1


def test_nothing_to_compare_gives_no_neighbours():
    assert len(cosine_top_n_sparse(sp.csr_matrix((3, 4), dtype=np.float32), 5)) == 0
    assert len(cosine_top_n_sparse(sp.csr_matrix(TINY), 0)) == 0
    assert len(cosine_top_n_sparse(sp.csr_matrix(np.ones((2, 1))), 3)) == 0  # a single item


def test_dense_vectors_agree_with_the_sparse_routine():
    matrix = sp.csr_matrix(random_ratings(50, 20, 0.6, seed=2).toarray() + 0.1)  # all scores positive
    sparse_result = cosine_top_n_sparse(matrix, 5)
    neighbours, scores = cosine_top_n_dense(matrix.T.toarray(), 5)
    assert neighbours.shape == (20, 5) and neighbours.dtype == np.int64
    np.testing.assert_array_equal(neighbours.ravel(), sparse_result.neighbor)
    np.testing.assert_allclose(scores.ravel(), sparse_result.score, rtol=1e-5)


def test_dense_vectors_for_chosen_rows_exclude_themselves():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 8))
    rows = np.array([4, 0, 29])
    neighbours, scores = cosine_top_n_dense(vectors, 29, rows=rows, chunk=2)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for row, got, got_scores in zip(rows, neighbours, scores, strict=True):
        assert row not in got and sorted(got.tolist()) == sorted(set(range(30)) - {row})
        want = unit[got] @ unit[row]
        np.testing.assert_allclose(got_scores, want, rtol=1e-10)
        assert np.all(np.diff(got_scores) <= 0)
    assert scores.dtype == np.float64


def test_content_similarity_ranks_shared_rare_words_first():
    texts = [
        "Fender Stratocaster electric guitar with maple neck. Guitars",
        "Acoustic guitar strings, phosphor bronze, for the sound of the guitar and the player. Guitars",
        "Maple neck Stratocaster replacement pickguard. Guitars",
        "Drum sticks, hickory. Drums",
        "",
        "the and of",  # stop words only
    ]
    result = content_top_n(texts, 3)
    neighbours = as_lists(result)
    assert neighbours[0][0][0] == 2  # shares "maple", "neck", "stratocaster" rather than just "guitar"
    assert neighbours[2][0][0] == 0
    assert 3 not in [j for j, _ in neighbours[0]]
    assert 4 not in result.item and 4 not in result.neighbor
    assert 5 not in result.item and 5 not in result.neighbor


def test_content_of_empty_texts_is_empty():
    assert len(content_top_n(["", "  ", ""], 3)) == 0
    assert len(content_top_n(["the", "and"], 3)) == 0
    frame = content_top_n([], 3).to_external(np.array([]))
    assert isinstance(frame, pd.DataFrame) and frame.empty


# -- content similarity past its exact budget: champion lists ------------------------------------------

def unit_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0)) @ matrix,
                         dtype=np.float32)


def test_champion_lists_as_long_as_the_longest_posting_give_the_exact_answer():
    rows = unit_rows(random_ratings(300, 120, 0.05, seed=11))  # items x features
    longest = int(np.bincount(rows.indices).max())
    result = similarity.top_n_by_champions(rows, 7, longest)
    assert_same(result, brute_force(rows.T.toarray().astype(np.float64), 7))


def test_champion_lists_score_exactly_what_they_keep():
    rows = unit_rows(random_ratings(400, 60, 0.2, seed=5))
    dense = rows.toarray().astype(np.float64)
    result = similarity.top_n_by_champions(rows, 5, 3)
    assert len(result) > 0
    np.testing.assert_allclose(result.score, np.einsum("ij,ij->i", dense[result.item], dense[result.neighbor]),
                               rtol=1e-5)
    assert not np.any(result.item == result.neighbor)
    # within an item, best first, ties to the lower index
    for item in np.unique(result.item):
        mine = result.item == item
        assert np.array_equal(np.lexsort((result.neighbor[mine], -result.score[mine])), np.arange(mine.sum()))


def test_champion_list_length_is_the_largest_within_budget():
    rng = np.random.default_rng(3)
    df = rng.integers(1, 500, size=200)

    def cost(r: int) -> float:
        return float(np.sum(df * np.minimum(df, r)))

    assert similarity.champion_list_length(df, float(df @ df)) is None  # everything fits: exact
    for budget in (float(df.sum()), 1e5, 1e6, float(df @ df) - 1):
        r = similarity.champion_list_length(df, budget)
        assert r == 1 or cost(r) <= budget
        assert cost(r + 1) > budget or r + 1 > df.max()


def test_content_past_its_budget_still_finds_neighbours_by_rare_words():
    # "widget" is in every title, so every pair shares a term; the exact budget is exceeded.
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    texts = [f"widget gadget {' '.join(rng.choice(words, 3, replace=False))}" for _ in range(400)]
    texts[17] += " zanzibar quokka"
    texts[333] += " zanzibar quokka"
    exact = content_top_n(texts, 5)
    assert len(exact) == 400 * 5
    pruned = content_top_n(texts, 5, candidates_per_item=40)
    assert len(pruned) == 400 * 5
    got = as_lists(pruned)
    assert got[17][0][0] == 333 and got[333][0][0] == 17  # the rare shared words: never pruned

    def recall(candidates_per_item: int) -> float:
        found = content_top_n(texts, 5, candidates_per_item=candidates_per_item)
        pairs = set(zip(found.item.tolist(), found.neighbor.tolist(), strict=True))
        return len(pairs & set(zip(exact.item.tolist(), exact.neighbor.tolist(), strict=True))) / len(exact)

    # More budget, more of the exact neighbours; the whole cost (sum of df ** 2 / items: 800 here), all.
    assert recall(20) < recall(40) < recall(100) < recall(800) == 1.0


# -- dense vectors past the exact size: clustered candidates ---------------------------------------------

def planted_vectors(n_items: int, n_groups: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_groups, 16))
    return centres[rng.integers(0, n_groups, n_items)] + 0.3 * rng.standard_normal((n_items, 16))


def test_clustered_dense_neighbours_are_exact_scores_and_mostly_the_exact_ones(monkeypatch):
    monkeypatch.setattr(similarity, "CLUSTER_SIZE", 32)
    vectors = planted_vectors(4_000, 40, seed=2)
    exact, exact_scores = cosine_top_n_dense(vectors, 10, candidates_per_item=10**6)
    found, found_scores = cosine_top_n_dense(vectors, 10, candidates_per_item=400)  # a tenth of the items
    assert found.shape == (4_000, 10) and not np.any(found == np.arange(4_000)[:, None])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(found_scores, np.einsum("id,ijd->ij", unit, unit[found]), rtol=1e-10)
    assert np.all(np.diff(found_scores, axis=1) <= 0)

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), exact.tolist(), strict=True)]))

    assert recall(found) > 0.95  # the planted groups are well apart: the nearest clusters hold them
    # Fewer candidates (the item's own cluster and about one more) miss more of the exact neighbours.
    assert recall(cosine_top_n_dense(vectors, 10, candidates_per_item=40)[0]) < 0.9


def test_clustered_dense_rows_are_those_of_the_whole_catalogue(monkeypatch):
    monkeypatch.setattr(similarity, "CLUSTER_SIZE", 32)
    vectors = planted_vectors(2_000, 20, seed=4)
    everyone, _ = cosine_top_n_dense(vectors, 5, candidates_per_item=200)
    rows = np.array([1_999, 3, 3, 700])
    some, _ = cosine_top_n_dense(vectors, 5, rows=rows, candidates_per_item=200)
    assert np.array_equal(some, everyone[rows])


def test_clustered_dense_neighbours_fill_every_row_even_with_few_candidates(monkeypatch):
    monkeypatch.setattr(similarity, "CLUSTER_SIZE", 8)
    vectors = planted_vectors(1_000, 200, seed=6)
    found, scores = cosine_top_n_dense(vectors, 30, candidates_per_item=2)
    assert found.shape == (1_000, 30) and np.all(found >= 0) and np.all(np.isfinite(scores))
    assert all(len(set(row)) == 30 for row in found.tolist())
