"""Splits: the stratified protocol's proportions and draws, no leakage, the time holdout, validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rec_orchestration.ml.splits import stratified_split, time_holdout, validation_split


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


def test_each_item_keeps_floor_of_ratio_in_train():
    frame = frame_with_item_counts(COUNTS)
    train, test = stratified_split(frame, ratio=0.75, filter_by="item", drop_unknown=False)
    in_train = train["product_id"].value_counts().reindex(list(COUNTS), fill_value=0).to_dict()
    assert in_train == {10: 0, 11: 1, 12: 2, 13: 3, 14: 6, 15: 7, 16: 30}
    assert len(train) + len(test) == len(frame)
    assert not set(train.index) & set(test.index)


def test_test_rows_of_items_or_users_missing_from_train_are_dropped():
    frame = frame_with_item_counts(COUNTS)
    train, test = stratified_split(frame)
    assert 10 not in set(test["product_id"])  # its only rating went to test, then was dropped
    assert set(test["product_id"]) <= set(train["product_id"])
    assert set(test["user_id"]) <= set(train["user_id"])
    _, undropped = stratified_split(frame, drop_unknown=False)
    assert len(undropped) > len(test)


def test_draws_are_those_of_np_random_seed_then_rand_in_row_order():
    # python_stratified_split: np.random.seed(42); rand(4) = [.37, .95, .73, .60]; within the item the
    # row with the largest draw ranks last (4/4 > .75) and is the one in test.
    frame = pd.DataFrame({"user_id": [1, 2, 3, 4], "product_id": 7, "weight": 1.0, "ts": 0.0})
    train, test = stratified_split(frame, seed=42, drop_unknown=False)
    assert test.index.tolist() == [int(np.argmax(np.random.RandomState(42).rand(4)))] == [1]
    assert train.index.tolist() == [0, 2, 3]


def test_stratified_by_user_and_min_rating():
    frame = frame_with_item_counts(COUNTS)
    train, test = stratified_split(frame, filter_by="user", drop_unknown=False)
    per_user = frame["user_id"].value_counts()
    kept = train["user_id"].value_counts().reindex(per_user.index, fill_value=0)
    assert (kept == np.floor(0.75 * per_user)).all()
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
