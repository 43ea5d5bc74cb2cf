"""The k largest entries of each row of a dense score matrix, as a stable sort would rank them.

One compiled pass over each row keeps a min-heap of the k best ``(value, column)`` seen so far. Columns
are read in ascending order, so an entry equal to the heap's worst comes after it in a stable sort and
never displaces it: the test is one comparison, ``value > worst``, for nearly every entry. The kernel
releases the GIL, and the rows are split among ``threads`` Python threads (the callers pass the step's
budget, ``rec_orchestration.threads``): no numba threading layer, so nothing to break across a fork.

Measured against ``torch.topk`` of k + 1 per row followed by a whole-row sort of rows tied at the
cut-off (what ``ml.base.top_k`` did before): 0.32 s against 0.78 s on 1,024 x 200,000 float32 scores,
k = 10. No Dagster, no torch import here.
"""

from __future__ import annotations

import numba
import numpy as np

_SPAN = 64  # columns whose maximum is compared first: a span of scores below the k-th best is skipped


@numba.njit(cache=True, nogil=True, inline="always")
def _sift_down(values: np.ndarray, columns: np.ndarray, start: int, size: int, at: int) -> None:
    """Restore the min-heap order (worst at the root: lower value, or equal value and higher column)
    of ``values[start:start + size]`` / ``columns[...]`` below position ``at``."""
    value, column = values[start + at], columns[start + at]
    while True:
        child = 2 * at + 1
        if child >= size:
            break
        other = child + 1
        if other < size and (values[start + other] < values[start + child] or (
                values[start + other] == values[start + child] and columns[start + other] > columns[start + child])):
            child = other
        cv, cc = values[start + child], columns[start + child]
        if cv > value or (cv == value and cc < column):  # the child is better: the parent may stay
            break
        values[start + at], columns[start + at] = cv, cc
        at = child
    values[start + at], columns[start + at] = value, column


@numba.njit(cache=True, nogil=True)
def _top_k_rows(scores: np.ndarray, k: int, out_values: np.ndarray, out_columns: np.ndarray) -> None:
    n_rows, n_cols = scores.shape
    for row in range(n_rows):
        start = row * k
        for c in range(k):  # the first k columns, NaN as -inf
            value = scores[row, c]
            out_values[start + c] = -np.inf if np.isnan(value) else value
            out_columns[start + c] = c
        for at in range(k // 2 - 1, -1, -1):
            _sift_down(out_values, out_columns, start, k, at)
        worst = out_values[start]
        c = k
        while c < n_cols:
            end = min(c + _SPAN, n_cols)
            span_max = scores[row, c]  # a span no entry of which beats the worst is skipped whole
            for d in range(c + 1, end):
                span_max = max(span_max, scores[row, d])
            if span_max > worst or np.isnan(span_max):
                for d in range(c, end):
                    value = scores[row, d]
                    if value > worst:  # False for NaN; an equal value comes after the worst: it loses
                        out_values[start] = value
                        out_columns[start] = d
                        _sift_down(out_values, out_columns, start, k, 0)
                        worst = out_values[start]
            c = end


def top_k_rows(scores: np.ndarray, k: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Columns and values of the ``k`` largest entries of each row (``1 <= k <= columns``), best first, ties
    to the lower column, NaN ranked as ``-inf``: exactly a stable descending sort's first k."""
    scores = np.ascontiguousarray(scores)
    n_rows = scores.shape[0]
    values = np.empty(n_rows * k, dtype=scores.dtype)
    columns = np.empty(n_rows * k, dtype=np.int64)
    threads = max(1, min(int(threads), n_rows))
    if threads == 1:
        _top_k_rows(scores, k, values, columns)
    else:  # the kernel releases the GIL: one slice of rows per thread (no numba threading layer, fork-safe)
        from concurrent.futures import ThreadPoolExecutor

        bounds = np.linspace(0, n_rows, threads + 1).astype(int)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda a, b: _top_k_rows(scores[a:b], k, values[a * k:b * k], columns[a * k:b * k]),
                          bounds[:-1], bounds[1:]))
    return _best_first(columns.reshape(n_rows, k), values.reshape(n_rows, k))


def _best_first(columns: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's heap entries in ranking order: value descending, then column ascending."""
    order = np.lexsort((columns, -values), axis=1)
    return np.take_along_axis(columns, order, axis=1), np.take_along_axis(values, order, axis=1)


# ---------------------------------------------------------------------------------------------- factor models

_TILE_USERS = 256    # users x items scored by one matmul: 256 x 2,048 float32 scores (2 MB) stay in the cache
_TILE_ITEMS = 2048


@numba.njit(cache=True, nogil=True)
def _scan_tile(tile: np.ndarray, start: int, first: int, k: int, seen_ptr: np.ndarray, seen_idx: np.ndarray,
               cursor: np.ndarray, out_values: np.ndarray, out_columns: np.ndarray) -> None:
    """Fold the scores of items ``start, start + 1, ...`` of users ``first, first + 1, ...`` (the rows of
    ``tile``) into those users' heaps, after setting their seen items to ``-inf``."""
    rows, width = tile.shape
    for r in range(rows):
        u = first + r
        p = cursor[u]
        while p < seen_ptr[u + 1] and seen_idx[p] < start + width:
            tile[r, seen_idx[p] - start] = -np.inf
            p += 1
        cursor[u] = p
        base = u * k
        worst = out_values[base]
        c = 0
        while c < width:
            end = min(c + _SPAN, width)
            span_max = tile[r, c]
            for d in range(c + 1, end):
                span_max = max(span_max, tile[r, d])
            # a span no entry of which beats the worst is skipped whole (a NaN first entry keeps the maximum
            # NaN: such a span is read)
            if span_max > worst or np.isnan(span_max):
                for d in range(c, end):
                    value = tile[r, d]
                    if value > worst:  # False for NaN and -inf; an equal value comes after the worst: it loses
                        out_values[base] = value
                        out_columns[base] = start + d
                        _sift_down(out_values, out_columns, base, k, 0)
                        worst = out_values[base]
            c = end


def top_k_dot(users: np.ndarray, items: np.ndarray, bias: np.ndarray | None, k: int, seen_ptr: np.ndarray,
              seen_idx: np.ndarray, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items for each row of ``users`` by ``users @ items.T + bias``, each user's seen items left
    out, best first, ties to the lower column, without ever holding a user block's scores of every item.

    ``users`` is ``(n, f)``, ``items`` ``(m, f)``, ``bias`` ``(m,)`` or None; user ``i``'s seen item
    indices are ``seen_idx[seen_ptr[i]:seen_ptr[i + 1]]``, ascending (a CSR row). Returns ``(columns,
    values)``, both ``(n, min(k, m))``; a user with fewer items left gets ``-inf`` entries of column -1 at
    the end.

    The scores are computed a tile of 256 users x 2,048 items at a time (one float32 matmul, the bias a
    row of the item side against a column of ones), each tile folded into the users' heaps while it is
    in the cache, as :func:`top_k_rows` folds a row. Scoring a block of users against every item at once
    and selecting after wrote and read back 205 MB per 256 users at 200,000 items, bound by memory: on
    ``bench/scoring.py``'s 4,096 users x 200,000 items of 16 factors, 0.52 s per 1,000 users against
    0.93 s on one thread, 0.27 s against 0.90 s on two (the same top k).
    """
    users = np.asarray(users, dtype=np.float32)
    items = np.asarray(items, dtype=np.float32)
    n_users, n_items = users.shape[0], items.shape[0]
    with_ones = np.ones((n_users, users.shape[1] + 1), dtype=np.float32)
    with_ones[:, :-1] = users
    item_side = np.empty((items.shape[1] + 1, n_items), dtype=np.float32)
    item_side[:-1] = items.T
    item_side[-1] = 0.0 if bias is None else bias
    seen_ptr = np.ascontiguousarray(seen_ptr, dtype=np.int64)
    seen_idx = np.ascontiguousarray(seen_idx, dtype=np.int64)
    k = min(k, n_items)
    if k <= 0 or n_users == 0:
        return np.empty((n_users, max(k, 0)), dtype=np.int64), np.empty((n_users, max(k, 0)), dtype=np.float32)
    values = np.full(n_users * k, -np.inf, dtype=np.float32)
    # k padding entries per user, all -inf: the highest column at the root makes a valid heap
    columns = np.tile(np.arange(n_items + k - 1, n_items - 1, -1, dtype=np.int64), n_users)
    cursor = seen_ptr[:-1].copy()  # each user's next seen item

    def score(first: int, last: int) -> None:
        tile = np.empty((_TILE_USERS, _TILE_ITEMS), dtype=np.float32)
        for block in range(first, last, _TILE_USERS):
            rows = min(_TILE_USERS, last - block)
            for start in range(0, n_items, _TILE_ITEMS):
                width = min(_TILE_ITEMS, n_items - start)
                if rows == _TILE_USERS and width == _TILE_ITEMS:
                    np.dot(with_ones[block:block + rows], item_side[:, start:start + width], out=tile)
                    scores = tile
                else:
                    scores = with_ones[block:block + rows] @ item_side[:, start:start + width]
                _scan_tile(scores, start, block, k, seen_ptr, seen_idx, cursor, values, columns)

    threads = max(1, min(int(threads), -(-n_users // _TILE_USERS)))
    if threads == 1:
        score(0, n_users)
    else:  # matmul and kernel release the GIL: one slice of users per thread, one BLAS thread each
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        bounds = np.linspace(0, n_users, threads + 1).astype(int)
        with threadpool_limits(1), ThreadPoolExecutor(threads) as pool:
            list(pool.map(score, bounds[:-1], bounds[1:]))
    columns, values = _best_first(columns.reshape(n_users, k), values.reshape(n_users, k))
    columns[values == -np.inf] = -1  # padding: a score enters a heap only if it beats -inf
    return columns, values
