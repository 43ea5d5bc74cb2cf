"""Splits: the stratified protocol (row for row the published one), no leakage, the time holdout, validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.common import MOVIELENS_DIR
from rec_orchestration.ml.interactions import ITEM_ID, USER_ID
from rec_orchestration.ml.splits import stratified_split, time_holdout, validation_split
from rec_orchestration.sources.movielens import read_ratings_frame
from tests.unit.published_split import python_stratified_split

ML_100K = MOVIELENS_DIR / "ml-100k" / "u.data"  # where the benchmarks read it


def frame_with_item_counts(counts: dict[int, int], n_users: int = 50, seed: int = 0) -> pd.DataFrame:
    """``counts[item]`` ratings of each item by distinct users (user 0 rates every item)."""
    rng = np.random.default_rng(seed)
    rows = []
    for item, count in counts.items():
        users = np.r_[0, rng.choice(np.arange(1, n_users), count - 1, replace=False)]
        rows += [(int(user), item) for user in users]
    frame = pd.DataFrame(rows, columns=["user_id", "product_id"])
    frame["weight"] = 1.0
    frame["ts"] = np.arange(len(frame), dtype=float)
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


COUNTS = {10: 1, 11: 2, 12: 3, 13: 4, 14: 8, 15: 10, 16: 40}
# Group sizes where floor(ratio * n) and round(ratio * n) (half to even) part ways, and some where they agree.
SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 14, 40)
KEPT_IN_TRAIN = {  # round(ratio * n), Python's round, written out
    0.75: {1: 1, 2: 2, 3: 2, 4: 3, 5: 4, 6: 4, 8: 6, 10: 8, 14: 10, 40: 30},
    0.8: {1: 1, 2: 2, 3: 2, 4: 3, 5: 4, 6: 5, 8: 6, 10: 8, 14: 11, 40: 32},
    0.5: {1: 0, 2: 1, 3: 2, 4: 2, 5: 2, 6: 3, 8: 4, 10: 5, 14: 7, 40: 20},
}


def frame_with_group_sizes(sizes: tuple[int, ...], by: str, seed: int) -> pd.DataFrame:
    """Groups of ``by`` (``"item"`` or ``"user"``) with ``sizes`` rows each (two groups per size), the
    other column random, rows shuffled, group keys not in order of appearance, a non-default index."""
    rng = np.random.default_rng(seed)
    keys = rng.permutation(np.arange(100, 100 + 2 * len(sizes)))
    group = np.repeat(keys, np.tile(sizes, 2))
    other = rng.integers(0, 30, len(group))
    column, other_column = (ITEM_ID, USER_ID) if by == "item" else (USER_ID, ITEM_ID)
    frame = pd.DataFrame({column: group, other_column: other, "weight": 1.0, "ts": 0.0})
    frame = frame[[USER_ID, ITEM_ID, "weight", "ts"]]
    frame = frame.iloc[rng.permutation(len(frame))]
    frame.index = rng.permutation(np.arange(1000, 1000 + len(frame)))
    return frame


def published(frame: pd.DataFrame, ratio: float, by: str, seed: int, min_rating: int = 1) -> tuple[set, set]:
    train, test = python_stratified_split(frame, ratio=ratio, min_rating=min_rating, filter_by=by,
                                          col_user=USER_ID, col_item=ITEM_ID, seed=seed)
    return set(train.index), set(test.index)


def assert_subsequence(part: pd.DataFrame, frame: pd.DataFrame) -> None:
    """``part`` holds rows of ``frame`` in ``frame``'s order, with their index and values."""
    assert part.index.equals(frame.index[frame.index.isin(part.index)])
    pd.testing.assert_frame_equal(part, frame.loc[part.index])


@pytest.mark.parametrize("ratio", sorted(KEPT_IN_TRAIN))
@pytest.mark.parametrize("by", ["item", "user"])
def test_each_group_keeps_round_half_to_even_of_ratio_in_train(ratio: float, by: str):
    frame = frame_with_group_sizes(SIZES, by, seed=5)
    column = ITEM_ID if by == "item" else USER_ID
    train, test = stratified_split(frame, ratio=ratio, filter_by=by, drop_unknown=False)
    sizes = frame.groupby(column).size()
    kept = train.groupby(column).size().reindex(sizes.index, fill_value=0)
    assert {key: (int(sizes[key]), int(kept[key])) for key in sizes.index} == {
        key: (int(sizes[key]), KEPT_IN_TRAIN[ratio][int(sizes[key])]) for key in sizes.index}
    assert len(train) + len(test) == len(frame)
    assert not set(train.index) & set(test.index)
    assert_subsequence(train, frame)
    assert_subsequence(test, frame)


@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
@pytest.mark.parametrize("ratio", [0.75, 0.8, 0.5])
@pytest.mark.parametrize("by", ["item", "user"])
def test_same_rows_as_the_published_splitter(by: str, ratio: float, seed: int):
    frame = frame_with_group_sizes((1, 2, 3, 5, 6, 14), by, seed=seed)
    for min_rating in (1, 3):
        train, test = stratified_split(frame, ratio=ratio, filter_by=by, seed=seed, min_rating=min_rating,
                                       drop_unknown=False)
        assert (set(train.index), set(test.index)) == published(frame, ratio, by, seed, min_rating)
    assert len(train) + len(test) < len(frame)  # min_rating=3 dropped the groups of 1 and 2


@pytest.mark.skipif(not ML_100K.is_file(), reason=f"MovieLens 100K is not at {ML_100K} on this machine")
def test_movielens_100k_per_item_is_the_published_split():
    frame = read_ratings_frame(ML_100K)  # file order, as the benchmark reads it
    train, test = stratified_split(frame, ratio=0.75, filter_by="item", seed=42, drop_unknown=False)
    assert (len(train), len(test)) == (75_066, 24_934)
    assert (set(train.index), set(test.index)) == published(frame, 0.75, "item", 42)
    assert_subsequence(train, frame)
    dropped = stratified_split(frame, ratio=0.75, filter_by="item", seed=42)  # the benchmark's call
    assert dropped[0].index.equals(train.index) and set(dropped[1].index) <= set(test.index)


def test_rows_without_a_group_key_are_in_neither_part_as_theirs():
    frame = pd.DataFrame({"user_id": range(9), "product_id": [1.0, np.nan, 1, 2, np.nan, 2, 2, 1, 1],
                          "weight": 1.0, "ts": 0.0})
    for min_rating in (1, 2):
        train, test = stratified_split(frame, min_rating=min_rating, drop_unknown=False)
        assert (set(train.index), set(test.index)) == published(frame, 0.75, "item", 42, min_rating)
        assert not {1, 4} & (set(train.index) | set(test.index))


@pytest.mark.parametrize("n", [1, 2, 5, 14, 1000])
def test_pandas_sample_draws_randomstate_permutation(n: int):
    # The shuffle stratified_split reproduces without calling DataFrame.sample once per group.
    frame = pd.DataFrame({"x": np.arange(n)}, index=np.arange(n) * 3 + 7)
    for seed in (0, 42):
        sampled = frame.sample(frac=1, random_state=seed)
        assert sampled["x"].tolist() == np.random.RandomState(seed).permutation(n).tolist()


def test_groups_of_one_size_share_one_permutation():
    # RandomState(42).permutation(4) = [1, 3, 0, 2]: each item's rows 1, 3, 0 (in its own order) go to
    # train, row 2 to test, whatever the item and wherever its rows are in the frame.
    assert np.random.RandomState(42).permutation(4).tolist() == [1, 3, 0, 2]
    frame = pd.DataFrame({"user_id": [1, 2, 3, 4, 5, 6, 7, 8], "product_id": [7, 9, 7, 9, 7, 9, 7, 9],
                          "weight": 1.0, "ts": 0.0})
    train, test = stratified_split(frame, seed=42, drop_unknown=False)
    assert test.index.tolist() == [4, 5]  # item 7's rows are 0, 2, 4, 6 and item 9's 1, 3, 5, 7
    assert train.index.tolist() == [0, 1, 2, 3, 6, 7]


def test_test_rows_of_items_or_users_missing_from_train_are_dropped():
    frame = frame_with_item_counts(COUNTS)
    train, test = stratified_split(frame, ratio=0.4)  # round(.4 * 1) = 0: item 10's one rating to test
    assert 10 not in set(test["product_id"])  # its only rating went to test, then was dropped
    assert set(test["product_id"]) <= set(train["product_id"])
    assert set(test["user_id"]) <= set(train["user_id"])
    _, undropped = stratified_split(frame, ratio=0.4, drop_unknown=False)
    assert 10 in set(undropped["product_id"])
    assert len(undropped) > len(test)


def test_stratified_by_user_and_min_rating():
    frame = frame_with_item_counts(COUNTS)
    train, test = stratified_split(frame, filter_by="user", drop_unknown=False)
    per_user = frame["user_id"].value_counts()
    kept = train["user_id"].value_counts().reindex(per_user.index, fill_value=0)
    assert kept.to_dict() == {user: round(0.75 * n) for user, n in per_user.items()}
    train, test = stratified_split(frame, min_rating=4, drop_unknown=False)
    assert set(pd.concat([train, test])["product_id"]) == {13, 14, 15, 16}


def test_same_seed_same_split_other_seed_other_split():
    frame = frame_with_item_counts(COUNTS)
    first, second = stratified_split(frame, seed=3), stratified_split(frame, seed=3)
    assert first[0].index.equals(second[0].index) and first[1].index.equals(second[1].index)
    other = stratified_split(frame, seed=4)
    assert not first[0].index.equals(other[0].index)


def test_invalid_arguments_are_refused():
    frame = frame_with_item_counts(COUNTS)
    with pytest.raises(ValueError):
        stratified_split(frame, ratio=1.0)
    with pytest.raises(ValueError):
        stratified_split(frame, filter_by="session")
    with pytest.raises(ValueError):
        time_holdout(frame, n_latest=0)
    with pytest.raises(ValueError):
        validation_split(frame, how="test")


def events() -> pd.DataFrame:
    # user 1: 5 events, user 2: 2 events, user 3: 1 event; listed out of time order
    return pd.DataFrame({
        "user_id": [1, 2, 1, 1, 3, 2, 1, 1],
        "product_id": [10, 20, 11, 12, 30, 21, 13, 14],
        "weight": 1.0,
        "ts": [50.0, 5.0, 10.0, 40.0, 1.0, 9.0, 30.0, 20.0],
    })


def test_time_holdout_takes_each_users_latest():
    train, test = time_holdout(events(), n_latest=1)
    assert sorted(zip(test["user_id"], test["product_id"], strict=True)) == [(1, 10), (2, 21)]
    assert set(train["user_id"]) == {1, 2, 3}  # user 3 (one event) stays in train
    assert train.groupby("user_id")["ts"].max().le(test.groupby("user_id")["ts"].min(), fill_value=np.inf).all()


def test_time_holdout_counts_fraction_and_minimum():
    train, test = time_holdout(events(), n_latest=2, min_interactions=3)
    assert sorted(test["product_id"]) == [10, 12]  # user 2 has too few events: all in train
    train, test = time_holdout(events(), n_latest=0.5)
    assert sorted(test["product_id"]) == [10, 12, 21]  # floor(.5 * 5) = 2; user 2: max(floor(1), 1) = 1
    train, test = time_holdout(events(), n_latest=10)
    assert train.groupby("user_id").size().to_dict() == {1: 1, 2: 1, 3: 1}  # one kept in train each


def test_time_holdout_works_on_datetimes_and_can_drop_new_items():
    frame = events()
    frame["ts"] = pd.to_datetime(frame["ts"], unit="D", utc=True)
    frame.loc[frame["product_id"] == 20, "product_id"] = 10  # user 2 saw item 10 early on
    train, test = time_holdout(frame)
    assert sorted(zip(test["user_id"], test["product_id"], strict=True)) == [(1, 10), (2, 21)]
    train, test = time_holdout(frame, drop_unknown_items=True)
    assert sorted(test["product_id"]) == [10]  # item 21 occurs only in test


def test_validation_split_is_carved_out_of_train_only():
    frame = frame_with_item_counts(COUNTS)
    train, test = stratified_split(frame)
    fit, validation = validation_split(train)
    assert set(fit.index) | set(validation.index) <= set(train.index)
    assert not set(fit.index) & set(validation.index)
    assert not (set(fit.index) | set(validation.index)) & set(test.index)
    assert set(validation["product_id"]) <= set(fit["product_id"])
    history = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2, 3, 3],
                            "product_id": [10, 11, 12, 12, 10, 11, 10, 99],
                            "weight": 1.0, "ts": [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]})
    fit, validation = validation_split(history, how="time")
    # each user's latest; user 3's item 99 never occurs in the fit part, so it cannot be validated on
    assert sorted(zip(validation["user_id"], validation["product_id"], strict=True)) == [(1, 12), (2, 11)]
    assert len(fit) == 5
