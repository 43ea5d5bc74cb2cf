"""Train/test splits of an interactions frame: the literature's random protocol, and the pipeline's time holdout.

- :func:`stratified_split` reproduces the stratified splitter the published MovieLens benchmark table
  (Microsoft Recommenders, ``examples/06_benchmarks/movielens.ipynb``) was produced with: ``_do_stratification``
  / ``python_stratified_split`` of ``recommenders/datasets/python_splitters.py`` with the helpers of
  ``recommenders/datasets/split_utils.py``, as they stand in ``ekmixon/recommenders`` at commit
  4ad255070ed655f365613a18b3053ca92b5451e9. Each item's (or user's) rows, in the frame's order, are
  shuffled by ``group.sample(frac=1, random_state=seed)`` -- a fresh ``RandomState(seed)`` per group, so
  every group of ``n`` rows takes the same ``RandomState(seed).permutation(n)`` -- and the first
  ``round(ratio * n)`` of the shuffled rows go to train (Python's ``round``, half to even: a group of 1
  or 2 goes wholly to train, 6 keeps 4, 10 keeps 8, 14 keeps 10). Given the same rows in the same order
  (``u.data`` as read from the file: 75,066 train and 24,934 test rows per item at 0.75, seed 42), the
  train and test sets are the same rows as theirs (they return rows sorted by group and shuffle; this
  keeps the input's order and index; rows whose group key is missing are in neither, as theirs).
  The current upstream (``recommenders-team/recommenders`` at 182ce901dce3e7dd31a41804556b06ea4df7868f)
  splits differently: one global draw ``np.random.seed(seed); np.random.rand(len(data))`` ranks the
  rows inside each group, and a row goes to train when ``rank / n <= ratio``, i.e. ``floor(ratio * n)``
  rows (this module's rule until now: 74,331 train and 25,669 test rows on the same file, 25,528 after
  the drop below). We follow the older one because the published rows ``bench/model_quality.py``
  prints beside ours were measured on its split.
  Then, as the benchmark protocol says, test rows whose user or item is missing from train are dropped.
- :func:`time_holdout` holds out each user's latest interactions: what predicts next hour's behaviour.
- :func:`validation_split` carves a validation set out of a training frame, for choosing
  hyper-parameters without touching the test split.

Frames have the project's columns (``user_id``, ``product_id``, ``ts``; see ``ml/interactions.py``);
every function returns ``(train, test)`` row subsets of its input, index kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rec_orchestration.ml.interactions import ITEM_ID, TIMESTAMP, USER_ID

if TYPE_CHECKING:
    import pandas as pd


def _group_positions(keys: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows taken in ``order`` (grouped by ``keys``): 1-based position within the group, and group size."""
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(keys) else np.array([], int)
    sizes = np.diff(np.r_[starts, len(keys)])
    position = np.arange(len(keys)) - np.repeat(starts, sizes) + 1
    return position, np.repeat(sizes, sizes)


def _group_codes(frame: pd.DataFrame, column: str) -> np.ndarray:
    import pandas as pd
    codes, _ = pd.factorize(frame[column], sort=True)
    return codes


def drop_cold(train: pd.DataFrame, test: pd.DataFrame, user_col: str = USER_ID,
              item_col: str = ITEM_ID, users: bool = True, items: bool = True) -> pd.DataFrame:
    """``test`` without the rows whose user (``users``) or item (``items``) never occurs in ``train``."""
    import pandas as pd
    keep = np.ones(len(test), dtype=bool)
    if users:
        keep &= test[user_col].isin(pd.unique(train[user_col])).to_numpy()
    if items:
        keep &= test[item_col].isin(pd.unique(train[item_col])).to_numpy()
    return test[keep]


def _shuffle_ranks(position: np.ndarray, size: np.ndarray, seed: int) -> np.ndarray:
    """Where ``group.sample(frac=1, random_state=seed)`` puts the row at 0-based ``position`` of its group.

    pandas draws ``RandomState(seed).choice(n, size=n, replace=False)``, which is
    ``RandomState(seed).permutation(n)``: the sample's ``j``-th row is the group's row ``permutation[j]``.
    Groups of the same size share the permutation, so one is drawn per distinct size.
    """
    sizes = np.unique(size)
    offsets = np.r_[0, np.cumsum(sizes)[:-1]]
    ranks = np.empty(int(sizes.sum()), dtype=np.int64)
    for n, offset in zip(sizes.tolist(), offsets.tolist(), strict=True):
        permutation = np.random.RandomState(seed).permutation(n)
        ranks[offset + permutation] = np.arange(n)  # inverse permutation: row -> place in the sample
    return ranks[offsets[np.searchsorted(sizes, size)] + position]


def stratified_split(frame: pd.DataFrame, ratio: float = 0.75, filter_by: str = "item", seed: int = 42,
                     *, min_rating: int = 1, drop_unknown: bool = True, user_col: str = USER_ID,
                     item_col: str = ITEM_ID) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random split stratified per item (or per user): ``round(ratio * n)`` of each group's rows to train.

    The train and test rows of the older ``python_stratified_split(frame, ratio, min_rating, filter_by,
    seed=seed)`` that the published MovieLens table was produced with (see the module docstring); groups
    with fewer than ``min_rating`` rows are dropped first, as theirs. With ``drop_unknown`` (the
    benchmark protocol) test rows of users or items absent from train go.
    """
    if filter_by not in ("user", "item"):
        raise ValueError("filter_by should be either 'user' or 'item'")
    if not 0 < ratio < 1:
        raise ValueError("ratio must lie strictly between 0 and 1")
    if min_rating < 1:
        raise ValueError("min_rating must be at least 1")
    column = user_col if filter_by == "user" else item_col
    if min_rating > 1:
        frame = frame[frame.groupby(column)[column].transform("size") >= min_rating]

    keys = _group_codes(frame, column)  # -1: a missing key, a row pandas' groupby leaves out
    order = np.argsort(keys, kind="stable")  # by group, rows in the frame's order within each
    position, size = _group_positions(keys, order)
    keep = np.rint(float(ratio) * size)  # Python's round(ratio * n): same product, half to even
    in_train_sorted = _shuffle_ranks(position - 1, size, seed) < keep
    in_train = np.empty(len(frame), dtype=bool)
    in_train[order] = in_train_sorted
    grouped = keys >= 0

    train, test = frame[in_train & grouped], frame[~in_train & grouped]
    if drop_unknown:
        test = drop_cold(train, test, user_col, item_col)
    return train, test


def time_holdout(frame: pd.DataFrame, n_latest: int | float = 1, min_interactions: int = 2, *,
                 drop_unknown_items: bool = False, user_col: str = USER_ID, item_col: str = ITEM_ID,
                 ts_col: str = TIMESTAMP) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest interactions (by ``ts``) to test, the rest to train.

    ``n_latest``: an int holds out that many per user; a float in (0, 1) holds out that fraction of each
    user's interactions (rounded down, at least one). Users with fewer than ``min_interactions``
    interactions stay wholly in train, and every user keeps at least one interaction in train.
    Interactions with equal timestamps are ordered as in ``frame``. ``drop_unknown_items`` drops test rows
    of items that never occur in train (off by default: new items are part of what production sees).
    """
    import pandas as pd
    if isinstance(n_latest, float) and not n_latest.is_integer():
        if not 0 < n_latest < 1:
            raise ValueError("a fractional n_latest must lie strictly between 0 and 1")
    elif n_latest < 1:
        raise ValueError("n_latest must be at least 1")
    if min_interactions < 2:
        raise ValueError("min_interactions must be at least 2 (a user needs one interaction to train on)")

    keys = _group_codes(frame, user_col)
    ts = frame[ts_col]
    ts_values = ts.astype("int64").to_numpy() if pd.api.types.is_datetime64_any_dtype(ts) else ts.to_numpy(float)
    order = np.lexsort((np.arange(len(frame)), ts_values, keys))  # by user, then time, then row order
    position, size = _group_positions(keys, order)
    if isinstance(n_latest, float) and not n_latest.is_integer():
        held = np.maximum(np.floor(n_latest * size), 1)
    else:
        held = np.full(len(frame), int(n_latest))
    held = np.minimum(held, size - 1)
    in_test_sorted = (size >= min_interactions) & (position > size - held)
    in_test = np.empty(len(frame), dtype=bool)
    in_test[order] = in_test_sorted

    train, test = frame[~in_test], frame[in_test]
    if drop_unknown_items:
        test = drop_cold(train, test, user_col, item_col, users=False)
    return train, test


def validation_split(train: pd.DataFrame, how: str = "stratified", *, ratio: float = 0.75,
                     filter_by: str = "item", seed: int = 42, n_latest: int | float = 1,
                     min_interactions: int = 2, user_col: str = USER_ID, item_col: str = ITEM_ID,
                     ts_col: str = TIMESTAMP) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(fit, validation)`` carved out of a *training* frame, for choosing hyper-parameters.

    ``how="stratified"`` repeats the random protocol inside train (:func:`stratified_split`, cold
    users and items dropped from validation); ``how="time"`` holds out each user's latest training
    interactions (:func:`time_holdout`, items unknown to the fit part dropped). The test split is never
    an input here: tune on this, then refit on all of ``train`` and evaluate once on test.
    """
    if how == "stratified":
        return stratified_split(train, ratio=ratio, filter_by=filter_by, seed=seed,
                                user_col=user_col, item_col=item_col)
    if how == "time":
        return time_holdout(train, n_latest=n_latest, min_interactions=min_interactions,
                            drop_unknown_items=True, user_col=user_col, item_col=item_col, ts_col=ts_col)
    raise ValueError("how must be 'stratified' or 'time'")
