"""Item-item cosine similarity: top-n neighbours from interactions, from dense item vectors, from text.

Three entry points, one selection rule (the n best per item, best first, ties to the lower item index,
an item never its own neighbour):

* :func:`cosine_top_n_sparse` - collaborative similarity, the cosine between the COLUMNS of a
  users x items matrix, with memory bounded by a block of scores rather than ``n_items ** 2``;
  only strictly positive scores are kept;
* :func:`cosine_top_n_dense` - for dense item vectors (embeddings), a fixed ``n`` per item;
* :func:`content_top_n` - TF-IDF of one text per item, then the sparse routine while its cost stays
  within a budget per item, else exact scores of candidates from champion lists (a word in every title
  makes every pair of items share a term: the exact answer costs the square of the catalogue).

How :func:`cosine_top_n_sparse` works (the answer does not depend on it, up to float32 rounding):

* columns are scaled to unit norm and items ordered by popularity, then cut into blocks of
  ``chunk_items``; the score matrix is symmetric, so only the pairs of blocks on and above the
  diagonal are computed, each one updating the neighbours of both blocks' items;
* a pair of blocks is scored by whichever product is cheaper for it: the sparse product (cost: for
  each user, items in one block x items in the other; scikit-learn's sparse-to-dense kernel) or,
  where popular items make the blocks dense, a one-thread BLAS product (users x block x block
  multiply-adds, but ~50-100x cheaper each);
* every score is packed with its item into one int64 key (float32 bits above, ``n_items - 1 - index``
  below) and folded into each item's running top n, a min-heap of keys, by a compiled (numba) pass
  over the block: a score below the heap's smallest costs one comparison, and ties go to the lower
  index exactly;
* when the catalogue is so large and sparse that the score matrix is mostly zeros (the sparse
  product's multiply-adds under 5% of ``n_items ** 2``), rows are instead taken ``chunk_items`` at a
  time (or as many as the budget allows) as sparse products, and their non-zero scores sorted.

Memory: the matrix (twice, normalised and transposed), the running top n of every item, the result,
and at any moment about ``memory_budget_bytes`` of blocks; BLAS is used only when the dense matrix
fits in half the budget.

Speed: the products (scikit-learn's sparse kernel, BLAS) plus one compiled pass over every score;
``NearestNeighbors(metric="cosine", algorithm="brute")`` computes every product (no symmetry) and then
makes several numpy passes over a dense distance matrix. Measured with ``bench/similarity.py``.

No Dagster here: numpy, scipy, scikit-learn and numba.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of score blocks (and of a densified matrix) at any moment
# Bytes per entry of a pair of blocks: scores (float32) and the BLAS/transposed temporaries, with margin.
_BYTES_PER_PAIR_ENTRY = 24
_BLOCKS_PER_SIDE = 4     # automatic blocks: about this many per side (the symmetry saves ~3/8) ...
_MIN_BLOCK = 512         # ... but no fewer items per block than this (each merge has a fixed cost)
# A pair of blocks goes to BLAS when its dense multiply-adds are at most this many times the sparse
# product's: measured here, scikit-learn's sparse kernel costs ~0.8 ns per multiply-add, one-thread
# OpenBLAS sgemm ~0.01-0.02 ns; 50 was about best on MovieLens 100K and a 1M-rating synthetic set.
_DENSE_WORK_RATIO = 50.0
# Below this ratio of the sparse product's multiply-adds to n_items ** 2 the score matrix is mostly
# zeros, and sorting the non-zero entries of sparse row chunks beats selecting from dense blocks.
_SPARSE_OUTPUT_FRACTION = 0.05
_BYTES_PER_SPARSE_ENTRY = 64  # sparse product output and the sort's temporaries, per non-zero score
# Content similarity is exact while scoring every pair of items that share a term costs at most this
# many multiply-adds per item; beyond it, candidates come from champion lists (see content_top_n).
CANDIDATES_PER_ITEM = 2_000
# Dense item vectors: past 4 x this many items, an item is scored against about this many candidates
# from the nearest clusters of a k-means of about CLUSTER_SIZE items each (see cosine_top_n_dense).
DENSE_CANDIDATES_PER_ITEM = 8_192
CLUSTER_SIZE = 256
_EMPTY_KEY = np.iinfo(np.int64).min  # decodes to the score -0.0: never kept
_blas_controller = None  # threadpoolctl's controller, made on first use
_sparse_matmul_to_dense = None  # scikit-learn's kernel (False: not available), imported on first use


@dataclass(frozen=True)
class ItemNeighbours:
    """Top-n neighbours of every item, long form: row ``k`` says ``neighbor[k]`` is ``item[k]``'s
    ``rank[k]``-th most similar item (1 = most similar), with cosine ``score[k]`` > 0.

    Indices are dense item indices (columns of the matrix the neighbours were computed from); rows are
    sorted by item, then rank.
    """

    item: np.ndarray      # int64
    neighbor: np.ndarray  # int64
    score: np.ndarray     # float32
    rank: np.ndarray      # int32, 1-based per item

    def __len__(self) -> int:
        return len(self.item)

    def to_external(self, item_ids: np.ndarray) -> pd.DataFrame:
        """The neighbours as a frame ``item_id, neighbor_id, score, rank`` in external ids
        (``item_ids[i]`` is the external id of index ``i``)."""
        item_ids = np.asarray(item_ids)
        return pd.DataFrame({
            "item_id": item_ids[self.item],
            "neighbor_id": item_ids[self.neighbor],
            "score": self.score,
            "rank": self.rank,
        })

    @classmethod
    def empty(cls) -> ItemNeighbours:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int32))


# -- the public routines -----------------------------------------------------------------------------

def cosine_top_n_sparse(matrix: sp.spmatrix | sp.sparray, n: int, *, chunk_items: int | None = None,
                        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET) -> ItemNeighbours:
    """The ``n`` items of highest cosine to each item, cosine taken between the columns of ``matrix``
    (users x items, e.g. :meth:`Interactions.user_item_matrix`), computed in float32.

    Only strictly positive scores are kept (items that share no user are never neighbours), an item is
    never its own neighbour, ties go to the lower item index. Items are scored ``chunk_items`` at a
    time against ``chunk_items`` others (blocks of ``chunk_items ** 2`` scores) or, for very sparse
    score matrices, against all items (``chunk_items x n_items`` at most); when None, the chunk is
    sized from ``memory_budget_bytes`` (see the module doc for what else is held).
    """
    csr = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    n_users, n_items = csr.shape
    n = min(int(n), n_items - 1)
    if n <= 0 or csr.nnz == 0:
        return ItemNeighbours.empty()
    csr.sum_duplicates()
    normalised = _normalise_columns(csr)
    per_user = np.diff(normalised.indptr).astype(np.float64)
    if float(per_user @ per_user) < _SPARSE_OUTPUT_FRACTION * float(n_items) ** 2:
        return _top_n_by_sparse_rows(normalised, n, chunk_items, memory_budget_bytes)
    return _top_n_by_blocks(normalised, n, chunk_items, memory_budget_bytes)


def cosine_top_n_dense(vectors: np.ndarray, n: int, rows: np.ndarray | None = None, chunk: int | None = None,
                       candidates_per_item: int = DENSE_CANDIDATES_PER_ITEM, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours and cosine scores of the ``n`` items most similar to each of ``rows`` (item indices;
    all items when None), for dense item ``vectors`` (one row per item).

    Returns ``(neighbours, scores)``, each of shape ``(len(rows), n)``: int64 indices and float scores
    (float32 for float32 vectors, else float64), best first, ties to the lower index, the item itself
    excluded. Negative and zero scores are kept so that every row is full; ``n`` is capped at
    ``n_items - 1``. A zero vector has cosine 0 with everything. ``chunk`` rows are scored at a time (None:
    as many as make a block of about ``DEFAULT_MEMORY_BUDGET / 4`` bytes of scores).

    Up to ``4 x candidates_per_item`` items every pair is scored: exact. Beyond, the work of the exact
    answer (rows x items) grows with the square of the catalogue, and the candidates of an item are the
    members of the clusters nearest its own (an inverted file, IVF: spherical k-means into clusters of
    about ``CLUSTER_SIZE`` items, seeded by ``seed``; the clusters whose centroids are nearest the item's
    cluster's are searched until ``candidates_per_item`` items are covered). Every score returned is
    exact; a true neighbour in a cluster not searched is missed (see :func:`clustered_candidates`).
    Selection within a block of scores is :func:`rec_orchestration.ml.selection.top_k_rows`.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-d (items x dimensions), got shape {vectors.shape}")
    dtype = vectors.dtype if vectors.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    n_items = len(vectors)
    rows = np.arange(n_items) if rows is None else np.asarray(rows, dtype=np.int64)
    n = max(0, min(int(n), n_items - 1))
    neighbours = np.empty((len(rows), n), dtype=np.int64)
    scores = np.empty((len(rows), n), dtype=dtype)
    if n == 0 or len(rows) == 0:
        return neighbours, scores
    norms = np.linalg.norm(vectors.astype(dtype, copy=False), axis=1)
    unit = vectors / np.where(norms > 0, norms, 1)[:, None]
    unit = np.ascontiguousarray(unit, dtype=dtype)
    if n_items <= 4 * max(candidates_per_item, n + 1):
        _score_against(unit, rows, np.arange(n_items), n, chunk, neighbours, scores, np.arange(len(rows)))
        return neighbours, scores
    for members, candidates in clustered_candidates(unit, rows, max(candidates_per_item, n + 1), seed):
        _score_against(unit, rows[members], candidates, n, chunk, neighbours, scores, members)
    return neighbours, scores


def clustered_candidates(unit: np.ndarray, rows: np.ndarray, candidates_per_item: int, seed: int = 0,
                         iterations: int = 8):
    """``(positions in rows, candidate items)`` pairs covering every position of ``rows`` once: the rows of a
    cluster of a spherical k-means of ``unit`` (unit vectors, one per item; clusters of about
    ``CLUSTER_SIZE`` items, ``iterations`` Lloyd steps from ``seed``'s sample of items), and the items of
    the clusters whose centroids are nearest that cluster's centroid (its own first), ascending, at
    least ``candidates_per_item`` of them. The work is ``items x clusters`` per step plus
    ``rows x candidates_per_item`` for the scores: linear in the catalogue at a fixed cluster size."""
    n_items = len(unit)
    n_clusters = max(1, round(n_items / CLUSTER_SIZE))
    rng = np.random.default_rng(seed)
    centroids = unit[np.sort(rng.choice(n_items, n_clusters, replace=False))].astype(np.float32)
    vectors = unit.astype(np.float32, copy=False)  # every item, float32 for the products below
    for _ in range(iterations + 1):
        assignment = np.empty(n_items, dtype=np.int64)
        for start in range(0, n_items, 65_536):  # items x clusters scores, a slice at a time
            assignment[start:start + 65_536] = np.argmax(vectors[start:start + 65_536] @ centroids.T, axis=1)
        sums = sp.csr_matrix((np.ones(n_items, dtype=np.float32), (assignment, np.arange(n_items))),
                             shape=(n_clusters, n_items)) @ vectors  # each cluster's sum of its members
        lengths = np.linalg.norm(sums, axis=1)
        moved = lengths > 0  # an empty cluster keeps its centroid
        centroids[moved] = sums[moved] / lengths[moved, None]
    members_of = np.argsort(assignment, kind="stable")
    bounds = np.searchsorted(assignment[members_of], np.arange(n_clusters + 1))
    sizes = np.diff(bounds)
    row_cluster = assignment[rows]
    row_order = np.argsort(row_cluster, kind="stable")
    row_bounds = np.searchsorted(row_cluster[row_order], np.arange(n_clusters + 1))
    nearest = np.argsort(-(centroids @ centroids.T), axis=1, kind="stable")
    for cluster in range(n_clusters):
        positions = row_order[row_bounds[cluster]:row_bounds[cluster + 1]]
        if len(positions) == 0:
            continue
        probed = nearest[cluster][np.argsort(nearest[cluster] != cluster, kind="stable")]  # its own first
        enough = int(np.searchsorted(np.cumsum(sizes[probed]), candidates_per_item)) + 1
        chosen = probed[:enough]
        candidates = np.sort(np.concatenate([members_of[bounds[c]:bounds[c + 1]] for c in chosen]))
        yield positions, candidates


def _score_against(unit: np.ndarray, queries: np.ndarray, candidates: np.ndarray, n: int, chunk: int | None,
                   neighbours: np.ndarray, scores: np.ndarray, out: np.ndarray) -> None:
    """Top ``n`` of each of ``queries`` (item indices) among ``candidates`` (ascending item indices), itself
    excluded, written to rows ``out`` of ``neighbours`` and ``scores``."""
    from rec_orchestration.ml.selection import top_k_rows
    from rec_orchestration.threads import step_threads

    threads = step_threads()
    if chunk is None:
        chunk = DEFAULT_MEMORY_BUDGET // 4 // (unit.itemsize * len(candidates))
    chunk = max(1, int(chunk))
    against = unit[candidates].T if len(candidates) < len(unit) else unit.T
    for start in range(0, len(queries), chunk):
        these = queries[start:start + chunk]
        block = unit[these] @ against
        own = np.searchsorted(candidates, these)
        here = (own < len(candidates)) & (candidates[np.minimum(own, len(candidates) - 1)] == these)
        block[np.flatnonzero(here), own[here]] = -np.inf
        best, values = top_k_rows(block, n, threads)
        neighbours[out[start:start + chunk]] = candidates[best]
        scores[out[start:start + chunk]] = values


def content_top_n(texts: Sequence[str], n: int, *, max_features: int = 50_000, min_df: int = 1,
                  candidates_per_item: int = CANDIDATES_PER_ITEM) -> ItemNeighbours:
    """Top-``n`` content neighbours: cosine of TF-IDF vectors (sublinear tf, English stop words removed)
    of one text per item (the caller joins title, description and categories). Item ``i`` is
    ``texts[i]``; an empty text (or one of stop words only) has no neighbours and is nobody's.

    Exact (:func:`cosine_top_n_sparse`) while scoring every pair that shares a term costs at most
    ``candidates_per_item`` per item (``sum over terms of df ** 2 <= candidates_per_item x n_items``).
    Beyond that the cost of the exact answer grows with the square of the catalogue: a word in every
    title ("item", a category name) makes every pair of items share a term. The candidates are then
    taken from *champion lists* (Manning, Raghavan & Schuetze, Introduction to Information Retrieval,
    section 7.1.3): each term keeps the ``r`` items of highest weight for it, ``r`` the largest that keeps
    the candidates within ``candidates_per_item`` per item, and an item's candidates are the champions
    of its terms. Every candidate's cosine is exact, and a term in at most ``r`` items contributes all
    its pairs, so only neighbours that share nothing but frequent terms with an item can be missed.
    The work is then linear in the number of items. See :func:`champion_list_length`.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["" if text is None else str(text) for text in texts]
    if not any(text.strip() for text in texts):
        return ItemNeighbours.empty()
    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", max_features=max_features,
                                 min_df=min_df, dtype=np.float32)
    try:
        tfidf = vectorizer.fit_transform(texts)  # items x terms
    except ValueError:  # empty vocabulary: nothing but stop words (or terms pruned by min_df)
        return ItemNeighbours.empty()
    tfidf = sp.csr_matrix(tfidf, dtype=np.float32)
    length = champion_list_length(np.bincount(tfidf.indices, minlength=tfidf.shape[1]),
                                  candidates_per_item * tfidf.shape[0])
    if length is None:
        return cosine_top_n_sparse(tfidf.T.tocsr(), n)  # terms x items: items are the columns
    return top_n_by_champions(tfidf, n, length)


def champion_list_length(document_frequency: np.ndarray, budget: float) -> int | None:
    """The champion list length ``r`` for terms of these document frequencies: None when scoring every
    pair sharing a term (``sum(df ** 2)`` multiply-adds) is within ``budget``, else the largest ``r >= 1``
    with ``sum(df * min(df, r)) <= budget`` (each of a term's ``df`` items then meets at most ``r`` of
    its champions), or 1."""
    df = np.sort(np.asarray(document_frequency, dtype=np.float64))
    if float(df @ df) <= budget:
        return None
    # f(r) = sum(df * min(df, r)): the terms with df <= r in full, the others r times their df.
    below = np.concatenate(([0.0], np.cumsum(df * df)))
    above = np.concatenate((np.cumsum(df[::-1])[::-1], [0.0]))
    low, high = 1, int(df[-1])
    while low < high:  # the largest r with f(r) <= budget
        middle = (low + high + 1) // 2
        split = np.searchsorted(df, middle, side="right")
        if below[split] + middle * above[split] <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def top_n_by_champions(rows: sp.csr_matrix, n: int, length: int) -> ItemNeighbours:
    """Top-``n`` cosine neighbours of the rows of ``rows`` (items x features, every row of unit norm or
    zero), scoring each item against the champions of its features only: a feature's ``length`` items of
    highest value (ties to the lower item). Scores are exact float32 dot products; the selection rule is
    the module's (best first, ties to the lower item, positive scores only, never the item itself)."""
    rows = sp.csr_matrix(rows, dtype=np.float32, copy=True)
    rows.sum_duplicates()
    rows.sort_indices()
    n_items = rows.shape[0]
    n = min(int(n), n_items - 1)
    if n <= 0 or rows.nnz == 0:
        return ItemNeighbours.empty()
    by_feature = rows.T.tocsr()  # features x items, items ascending within a feature
    feature = np.repeat(np.arange(by_feature.shape[0]), np.diff(by_feature.indptr))
    order = np.lexsort((by_feature.indices, -by_feature.data, feature))  # by feature, value down, item up
    position = np.arange(len(order)) - by_feature.indptr[feature[order]]
    kept = order[position < length]
    champion_items = by_feature.indices[kept].astype(np.int32)
    champion_ptr = np.concatenate(([0], np.cumsum(np.bincount(feature[kept], minlength=by_feature.shape[0]))))
    best = np.full((n_items, n), _EMPTY_KEY, dtype=np.int64)
    _champion_scores(rows.indptr.astype(np.int64), rows.indices.astype(np.int32), rows.data,
                     champion_ptr.astype(np.int64), champion_items, best)
    return _decode(best, np.arange(n_items))


# -- the blocked, symmetric computation -------------------------------------------------------------

def _top_n_by_blocks(normalised: sp.csr_matrix, n: int, chunk_items: int | None,
                     memory_budget_bytes: int) -> ItemNeighbours:
    """Top-n of every item from the pairs of blocks on and above the diagonal (see the module doc)."""
    n_users, n_items = normalised.shape
    by_item = normalised.T.tocsr()  # items x users
    order = np.argsort(-np.diff(by_item.indptr), kind="stable")  # position -> item, most popular first
    by_item = by_item[order]
    side = max(1, min(int(chunk_items or _auto_block(n_items, memory_budget_bytes)), n_items))
    bounds = np.append(np.arange(0, n_items, side), n_items)
    blocks = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    work = _block_work(by_item, bounds)
    sizes = np.diff(bounds).astype(np.float64)
    use_blas = (n_users * np.outer(sizes, sizes) <= _DENSE_WORK_RATIO * work) & (work > 0)
    if n_users * n_items * 4 > memory_budget_bytes // 2:
        use_blas[:] = False
    rows = [by_item[a:b] for a, b in blocks]                # block items x users, sparse
    columns = [block.T.tocsr() for block in rows]            # users x block items, for the sparse product
    dense = [block.toarray() if use_blas[i].any() or use_blas[:, i].any() else None
             for i, block in enumerate(rows)]                # the same rows, dense, where BLAS needs them
    low_bits = (n_items - 1 - order).astype(np.int32)  # in a key, a lower item index ranks higher
    best = np.full((n_items, n), _EMPTY_KEY, dtype=np.int64)  # running top n of each position, as keys
    score_buffer = np.empty(side * side, dtype=np.float32)
    with _blas_threads(1 if use_blas.any() else None):
        for i, (a0, a1) in enumerate(blocks):
            for j in range(i, len(blocks)):
                if work[i, j] == 0:  # no user has items in both blocks: all their scores are zero
                    continue
                b0, b1 = blocks[j]
                scores = score_buffer[:(a1 - a0) * (b1 - b0)].reshape(a1 - a0, b1 - b0)
                if use_blas[i, j]:
                    np.matmul(dense[i], dense[j].T, out=scores)
                else:
                    _sparse_product_to_dense(rows[i], columns[j], scores)
                if i == j:
                    np.fill_diagonal(scores, 0)  # an item is not its own neighbour
                score_bits = scores.view(np.int32)  # positive float32s order like their bits
                _merge_rows(best, a0, score_bits, low_bits[b0:b1])
                if i != j:
                    _merge_columns(best, b0, score_bits, low_bits[a0:a1])
    return _decode(best, order)


def _auto_block(n_items: int, memory_budget_bytes: int) -> int:
    """Items per block: about ``_BLOCKS_PER_SIDE`` blocks, at least ``_MIN_BLOCK`` items, within budget,
    and the items split evenly between the blocks."""
    by_memory = int(np.sqrt(memory_budget_bytes / _BYTES_PER_PAIR_ENTRY))
    side = max(1, min(by_memory, max(_MIN_BLOCK, -(-n_items // _BLOCKS_PER_SIDE))))
    n_blocks = -(-n_items // side)
    return -(-n_items // n_blocks)


def _block_work(by_item: sp.csr_matrix, bounds: np.ndarray) -> np.ndarray:
    """Multiply-adds of the sparse product of each pair of blocks: for every user, their number of
    items in one block times their number in the other, summed."""
    n_blocks = len(bounds) - 1
    n_users = by_item.shape[1]
    block_of_entry = np.repeat(np.repeat(np.arange(n_blocks), np.diff(bounds)), np.diff(by_item.indptr))
    counts = np.bincount(by_item.indices * n_blocks + block_of_entry, minlength=n_users * n_blocks)
    counts = counts.reshape(n_users, n_blocks).astype(np.float64)
    return counts.T @ counts


def _sparse_product_to_dense(left: sp.csr_matrix, right: sp.csr_matrix, out: np.ndarray) -> None:
    """``out[:] = left @ right`` for sparse float32 operands: scikit-learn's kernel (>= 1.7: Gustavson's
    product straight into a dense array, ~2-3x scipy's sparse product), else scipy's."""
    global _sparse_matmul_to_dense
    if _sparse_matmul_to_dense is None:
        try:
            from sklearn.utils.sparsefuncs import sparse_matmul_to_dense
        except ImportError:  # pragma: no cover - scikit-learn missing or older than 1.7
            sparse_matmul_to_dense = False
        _sparse_matmul_to_dense = sparse_matmul_to_dense
    if _sparse_matmul_to_dense:
        _sparse_matmul_to_dense(left, right, out=out)
    else:
        out[:] = (left @ right).toarray()


def _blas_threads(limit: int | None) -> AbstractContextManager:
    """Cap BLAS threads (None: leave them): block products are small, and on a busy machine a
    multithreaded BLAS waiting for a descheduled thread is slower than one thread."""
    global _blas_controller
    if limit is None:
        return nullcontext()
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController  # a scikit-learn dependency
        except ImportError:  # pragma: no cover
            return nullcontext()
        _blas_controller = ThreadpoolController()  # finding the libraries takes milliseconds: once
    return _blas_controller.limit(limits=limit, user_api="blas")


@numba.njit(cache=True, nogil=True, inline="always")
def _replace_root(heap: np.ndarray, key: np.int64) -> None:
    """Put ``key`` in place of the smallest key of the min-heap ``heap`` (one row of ``best``)."""
    n = heap.shape[0]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= key:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = key


@numba.njit(cache=True, nogil=True)
def _merge_rows(best: np.ndarray, start: int, score_bits: np.ndarray, low_bits: np.ndarray) -> None:
    """Fold the rows of a block of scores (``score_bits``: their float32 bits as int32) into the running
    top n of positions ``start, start + 1, ...``: each row of ``best`` is a min-heap of keys
    (score bits in the high word, ``low_bits`` of the column in the low word). One pass; a score that
    does not beat the heap's smallest key costs one comparison."""
    n_rows, n_columns = score_bits.shape
    for r in range(n_rows):
        heap = best[start + r]
        smallest = heap[0]
        for c in range(n_columns):
            bits = score_bits[r, c]
            if bits <= 0:  # zero or negative: never kept
                continue
            key = (np.int64(bits) << 32) | np.int64(low_bits[c])
            if key > smallest:
                _replace_root(heap, key)
                smallest = heap[0]


@numba.njit(cache=True, nogil=True)
def _merge_columns(best: np.ndarray, start: int, score_bits: np.ndarray, low_bits: np.ndarray) -> None:
    """The same for the columns of the block (the block's transpose), read row by row."""
    n_rows, n_columns = score_bits.shape
    for r in range(n_rows):
        low = np.int64(low_bits[r])
        for c in range(n_columns):
            bits = score_bits[r, c]
            if bits <= 0:
                continue
            key = (np.int64(bits) << 32) | low
            heap = best[start + c]
            if key > heap[0]:
                _replace_root(heap, key)


@numba.njit(cache=True, nogil=True)
def _champion_scores(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, champion_ptr: np.ndarray,
                     champion_items: np.ndarray, best: np.ndarray) -> None:
    """For every item (row of the CSR ``indptr, indices, data``, indices sorted), the exact dot product with
    each distinct champion of its features, folded into its running top n ``best[item]`` (a min-heap of
    keys, as in :func:`_merge_rows`)."""
    n_items = best.shape[0]
    last_seen = np.full(n_items, -1, dtype=np.int64)  # the item whose candidate an item was last
    as_float = np.empty(1, dtype=np.float32)
    as_bits = as_float.view(np.int32)  # a positive float32 orders like its bits
    for i in range(n_items):
        heap = best[i]
        last_seen[i] = i  # never its own neighbour
        for p in range(indptr[i], indptr[i + 1]):
            feature = indices[p]
            for q in range(champion_ptr[feature], champion_ptr[feature + 1]):
                j = champion_items[q]
                if last_seen[j] == i:
                    continue
                last_seen[j] = i
                score = np.float32(0.0)  # the dot product of rows i and j: a merge of their sorted indices
                a, a_end, b, b_end = indptr[i], indptr[i + 1], indptr[j], indptr[j + 1]
                while a < a_end and b < b_end:
                    if indices[a] == indices[b]:
                        score += data[a] * data[b]
                        a += 1
                        b += 1
                    elif indices[a] < indices[b]:
                        a += 1
                    else:
                        b += 1
                as_float[0] = score
                bits = as_bits[0]
                if bits <= 0:
                    continue
                key = (np.int64(bits) << 32) | np.int64(n_items - 1 - j)
                if key > heap[0]:
                    _replace_root(heap, key)


def _decode(best: np.ndarray, order: np.ndarray) -> ItemNeighbours:
    """Neighbours of every item from the running top-n keys of each position (``order``: position -> item)."""
    n_items, n = best.shape
    keys = np.empty_like(best)
    keys[order] = best  # back to item order
    keys.sort(axis=1)
    keys = keys[:, ::-1]  # best first
    scores = (keys >> 32).astype(np.int32).view(np.float32)
    kept = scores > 0  # a prefix of each row
    neighbor = n_items - 1 - (keys[kept] & 0xFFFFFFFF)
    item = np.repeat(np.arange(n_items, dtype=np.int64), np.count_nonzero(kept, axis=1))
    rank = np.broadcast_to(np.arange(1, n + 1, dtype=np.int32), kept.shape)[kept]
    return ItemNeighbours(item, neighbor.astype(np.int64), scores[kept].astype(np.float32), rank)


# -- very sparse score matrices ----------------------------------------------------------------------

def _top_n_by_sparse_rows(normalised: sp.csr_matrix, n: int, chunk_items: int | None,
                          memory_budget_bytes: int) -> ItemNeighbours:
    """Top-n from row chunks of the sparse product ``X.T @ X``, sorting each chunk's non-zero scores."""
    n_items = normalised.shape[1]
    by_item = normalised.T.tocsr()
    if chunk_items:
        bounds = np.append(np.arange(0, n_items, max(1, int(chunk_items))), n_items)
    else:  # cut where the chunk's multiply-adds (a bound on its non-zero scores) fill the budget
        per_user = np.diff(normalised.indptr).astype(np.float64)
        row_of_entry = np.repeat(np.arange(n_items), np.diff(by_item.indptr))
        cumulative = np.cumsum(np.bincount(row_of_entry, weights=per_user[by_item.indices], minlength=n_items))
        step = max(1.0, memory_budget_bytes / _BYTES_PER_SPARSE_ENTRY)
        cuts = np.searchsorted(cumulative, np.arange(step, cumulative[-1], step), side="right")
        bounds = np.unique(np.concatenate(([0], cuts, [n_items])))
    parts = [_top_n_of_sparse_block(by_item[a:b] @ normalised, n, a)
             for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True) if b > a]
    item, neighbor, score, rank = (np.concatenate(column) for column in zip(*parts, strict=True))
    return ItemNeighbours(item, neighbor, score, rank)


def _top_n_of_sparse_block(block: sp.csr_matrix, n: int, start: int
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-n ``(item, neighbor, score, rank)`` of the sparse score rows of items ``start, start + 1, ...``."""
    block = sp.csr_matrix(block, dtype=np.float32)
    n_columns = block.shape[1]
    row = np.repeat(np.arange(block.shape[0], dtype=np.int64), np.diff(block.indptr))
    column = block.indices.astype(np.int64)
    score = block.data
    keep = (score > 0) & (column != row + start)
    row, column, score = row[keep], column[keep], score[keep]
    keys = (score.view(np.int32).astype(np.int64) << 32) | (n_columns - 1 - column)
    order = np.argsort(-keys)  # best first (keys are unique within a row) ...
    small_rows = row[order].astype(np.int16 if block.shape[0] <= np.iinfo(np.int16).max else np.int32)
    order = order[np.argsort(small_rows, kind="stable")]  # ... then by row (a radix sort for int16)
    row, column, score = row[order], column[order], score[order]
    rank = np.arange(len(row)) - np.searchsorted(row, row, side="left")
    top = rank < n
    return row[top] + start, column[top], score[top], (rank[top] + 1).astype(np.int32)


# -- helpers -----------------------------------------------------------------------------------------

def _normalise_columns(csr: sp.csr_matrix) -> sp.csr_matrix:
    """``csr`` (float32, owned) with every column scaled to unit L2 norm; all-zero columns stay zero."""
    squares = np.bincount(csr.indices, weights=np.square(csr.data, dtype=np.float64), minlength=csr.shape[1])
    norms = np.sqrt(squares)
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    csr.data *= inverse[csr.indices].astype(np.float32)
    return csr
