"""Progress a person watching a run log sees: a line per training epoch (loss, validation nDCG, elapsed, time
left) for LightGCN and LightFM, and a line every so many rows of an ingestion; reporting changes no result."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from rec_orchestration.ml.factorization import LightFMRecommender
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.progress import EpochProgress, counted, duration

EPOCH_LINE = re.compile(r"^(?P<model>\w+) epoch (?P<done>\d+)/(?P<of>\d+): loss (?P<loss>[\d.]+), "
                        r"(?P<metric>[\w@]+) (?P<value>[\d.]+), [\d.]+ (s|min \d+ s) elapsed, "
                        r"(done|about .+ left.*)$")


@pytest.fixture(scope="module")
def interactions() -> Interactions:
    rng = np.random.default_rng(0)
    # Two blocks of users and items, so a model can learn something a held-out nDCG can show.
    users = rng.integers(0, 200, 6000)
    items = np.where(users < 100, rng.integers(0, 60, 6000), rng.integers(60, 120, 6000))
    frame = pd.DataFrame({"user_id": users, "product_id": items, "weight": 1.0,
                          "ts": pd.Timestamp("2024-01-01", tz="UTC")}).drop_duplicates(["user_id", "product_id"])
    return Interactions.from_frame(frame)


def test_lightfm_reports_each_epoch_and_trains_the_same_model(interactions):
    plain = LightFMRecommender(factors=8, epochs=4, num_threads=1).fit(interactions)
    lines: list[str] = []
    watched = LightFMRecommender(factors=8, epochs=4, num_threads=1)
    held_out = pd.DataFrame({"user_id": [0, 1, 150], "product_id": [59, 58, 119]})
    watched.progress, watched.monitor = lines.append, (interactions, held_out)
    watched.fit(interactions)

    np.testing.assert_array_equal(plain.item_factors, watched.item_factors)
    np.testing.assert_array_equal(plain.user_vectors, watched.user_vectors)
    assert len(lines) == 4 and len(watched.history) == 4
    parsed = [EPOCH_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m["done"]) for m in parsed] == [1, 2, 3, 4] and {m["of"] for m in parsed} == {"4"}
    assert {m["metric"] for m in parsed} == {"held_out_ndcg@10"}
    assert lines[-1].endswith("done") and "left" in lines[0]
    losses = [row["train_loss"] for row in watched.history]
    assert losses[-1] < losses[0]  # the sampled BPR loss falls as WARP trains


def test_a_lightfm_time_budget_stops_before_an_epoch_that_would_overrun_it(interactions):
    """Within the budget, the same model as without one; with a budget a few epochs long, training stops
    there, says so, and keeps what those epochs trained (the same as a fit of that many epochs)."""
    unbounded = LightFMRecommender(factors=8, epochs=3, num_threads=1, max_minutes=60).fit(interactions)
    plain = LightFMRecommender(factors=8, epochs=3, num_threads=1).fit(interactions)
    np.testing.assert_array_equal(unbounded.item_factors, plain.item_factors)
    assert unbounded.epochs_trained == plain.epochs_trained == 3

    lines: list[str] = []
    bounded = LightFMRecommender(factors=8, epochs=100_000, num_threads=1, max_minutes=0.02)
    bounded.progress = lines.append
    bounded.fit(interactions)
    trained = bounded.epochs_trained
    assert 0 < trained < 100_000 and len(bounded.history) == trained  # stopped by the 1.2 s budget
    assert lines[-1].startswith(f"lightfm: stopped after {trained} of 100000 epochs")
    same_epochs = LightFMRecommender(factors=8, epochs=trained, num_threads=1).fit(interactions)
    np.testing.assert_array_equal(bounded.item_factors, same_epochs.item_factors)


def test_lightgcn_reports_each_epoch_through_its_callback(interactions):
    from rec_orchestration.ml.lightgcn.recommender import LightGCNRecommender

    lines: list[str] = []
    model = LightGCNRecommender(factors=8, layers=1, epochs=3, patience=10, num_threads=1)
    model.progress = lines.append
    model.fit(interactions)
    parsed = [EPOCH_LINE.match(line) for line in lines]
    assert len(lines) == len(model.history) == 3 and all(parsed), lines
    assert [float(m["value"]) for m in parsed] == pytest.approx([row["val_ndcg"] for row in model.history], abs=1e-4)
    assert [float(m["loss"]) for m in parsed] == pytest.approx([row["train_loss"] for row in model.history], abs=1e-4)
    assert "early stopping may end it sooner" in lines[0]


def test_time_left_is_the_mean_epoch_times_epochs_left_capped_by_the_budget():
    progress = EpochProgress("m", 10, lambda line: None)
    assert progress.estimate_left(2, 20.0) == pytest.approx(80.0)
    capped = EpochProgress("m", 10, lambda line: None, budget_seconds=50.0)
    assert capped.estimate_left(2, 20.0) == pytest.approx(30.0)
    assert duration(42) == "42 s" and duration(185) == "3 min 05 s" and duration(3720) == "1 h 02 min"


def test_an_ingestion_reports_every_so_many_rows_and_passes_every_row_on():
    lines: list[str] = []
    rows = list(counted(iter(range(1050)), lines.append, "reviews.jsonl", every=250))
    assert rows == list(range(1050))
    assert [line.split(":")[1].split(" rows")[0].strip() for line in lines] == ["250", "500", "750", "1,000"]
    assert all(line.startswith("reviews.jsonl: ") for line in lines)
    assert list(counted(iter(range(3)), None, "x")) == [0, 1, 2]
