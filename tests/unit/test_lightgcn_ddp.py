"""LightGCN under data-parallel training: each rank trains on its own share of every epoch's BPR batches,
and a two-process DDP fit on the CPU (gloo) ends, in the caller's process, with a model as good as a
single-process fit's, its best epoch's weights, its history and its progress lines, and no process left.

The data: users in six communities, each user's positives drawn mostly from their community's block of
items, so a model that learned the graph has a clearly non-trivial validation nDCG.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.lightgcn import BprEpochs, LightGCNRecommender, holdout_mask, positive_pairs
from rec_orchestration.ml.metrics import ndcg_at_k

N_USERS, N_ITEMS, GROUPS, PER_USER, ITEM_OFFSET = 360, 240, 6, 24, 1000
# A high learning rate: validation nDCG peaks within a few epochs and early stopping ends the fit, so the
# best epoch is not the last and restoring it is visible.
EPOCHS = 10
SETTINGS = {"factors": 16, "layers": 2, "lr": 0.1, "batch_size": 256, "epochs": EPOCHS, "patience": 3,
            "val_fraction": 0.2, "accelerator": "cpu"}


def communities(seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    block = N_ITEMS // GROUPS
    rows = []
    for user in range(N_USERS):
        group = user % GROUPS
        own = rng.choice(np.arange(group * block, (group + 1) * block), size=PER_USER * 4 // 5, replace=False)
        anywhere = rng.choice(N_ITEMS, size=PER_USER - len(own), replace=False)
        rows += [(user, ITEM_OFFSET + int(item), 1.0, 1_600_000_000) for item in {*own.tolist(), *anywhere.tolist()}]
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "product_id", "weight", "ts"]))


def spawned_children() -> list[int]:
    """Processes started from this one by multiprocessing's spawn (Lightning's ranks) that still exist."""
    found = [process.pid for process in multiprocessing.active_children()]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue                    # gone meanwhile
        if parent == str(os.getpid()) and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return sorted(set(found))


def validation_ndcg(model: LightGCNRecommender, interactions: Interactions, k: int = 20) -> float:
    """nDCG@k of the model's own validation hold-out, training pairs excluded, as the module measures it."""
    users, items = positive_pairs(interactions)
    held_out = holdout_mask(users, items, model.params["val_fraction"], model.params["seed"])

    def by_user(mask: np.ndarray) -> dict[int, np.ndarray]:
        user_ids, item_ids = interactions.user_ids[users[mask]], interactions.item_ids[items[mask]]
        return {int(user): item_ids[user_ids == user] for user in np.unique(user_ids)}

    truth = by_user(held_out)
    return ndcg_at_k(model.recommend(np.array(list(truth)), k, exclude=by_user(~held_out)), truth, k)


@pytest.fixture(scope="module")
def data() -> Interactions:
    return communities()


@pytest.fixture(scope="module")
def single(data) -> LightGCNRecommender:
    return LightGCNRecommender(**SETTINGS).fit(data)


@pytest.fixture(scope="module")
def ddp(data) -> tuple[LightGCNRecommender, list[str], list[dict[str, object]]]:
    """A 2-process DDP fit, with what it reported, and the caller's torch threads and MASTER_PORT before and
    after it."""
    model = LightGCNRecommender(**SETTINGS, strategy="ddp", devices=2)
    lines: list[str] = []
    model.progress = lines.append
    before = {"threads": torch.get_num_threads(), "port": os.environ.get("MASTER_PORT")}
    model.fit(data)
    after = {"threads": torch.get_num_threads(), "port": os.environ.get("MASTER_PORT")}
    return model, lines, [before, after]


# ------------------------------------------------------------------------------------------ the data side

def batches(dataset: BprEpochs) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [tuple(part.numpy() for part in batch) for batch in dataset]


@pytest.mark.parametrize("n_pairs", [1000, 1024, 1100, 1281])
def test_ranks_take_disjoint_equal_shares_of_every_epoch(n_pairs):
    rng = np.random.default_rng(1)
    keys = rng.choice(200 * 50, size=n_pairs, replace=False)
    users, items = keys // 50, keys % 50
    whole = batches(BprEpochs(users, items, 50, batch_size=128, seed=7))
    shares = [BprEpochs(users, items, 50, batch_size=128, seed=7, rank=rank, world_size=2) for rank in (0, 1)]
    for _ in range(2):                                            # two epochs: each one a fresh order
        share = [batches(dataset) for dataset in shares]
        assert len(share[0]) == len(share[1]) == len(shares[0]) == len(shares[1])
        pairs = [np.concatenate([u * 50 + p for u, p, _ in rank_batches]) for rank_batches in share]
        assert not set(pairs[0].tolist()) & set(pairs[1].tolist())
        union = np.concatenate(pairs)
        # every pair once, but for a remainder (after whole rounds of 2 batches) smaller than 2 pairs
        skipped = n_pairs % 256 if n_pairs % 256 < 2 else 0
        assert len(np.unique(union)) == len(union) == n_pairs - skipped
        assert set(union.tolist()) <= set(keys.tolist())
        assert all(0 < len(u) <= 128 for rank_batches in share for u, _, _ in rank_batches)
    # one rank of one is the plain epoch, batch for batch
    assert len(whole) == -(-n_pairs // 128)
    alone = batches(BprEpochs(users, items, 50, batch_size=128, seed=7, rank=0, world_size=1))
    for ours, theirs in zip(alone, whole, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_rank_and_world_size_go_together():
    users, items = np.array([0, 1]), np.array([0, 1])
    with pytest.raises(ValueError, match="rank"):
        BprEpochs(users, items, 2, batch_size=1, seed=0, rank=1)
    with pytest.raises(ValueError, match="rank"):
        BprEpochs(users, items, 2, batch_size=1, seed=0, rank=2, world_size=2)


def test_more_than_one_device_needs_ddp():
    with pytest.raises(ValueError, match="strategy='ddp'"):
        LightGCNRecommender(devices=2)
    with pytest.raises(ValueError, match="strategy must be one of"):
        LightGCNRecommender(strategy="ddp_spawn")
    with pytest.raises(ValueError, match="checkpoint_dir that every node sees"):
        LightGCNRecommender(strategy="ddp", num_nodes=2)


# ------------------------------------------------------------------------------------------- the DDP fit

def test_a_ddp_fit_is_as_good_as_a_single_process_fit(data, single, ddp):
    model, _, _ = ddp
    assert single.best_val_ndcg > 0.2                       # the communities were learned
    assert model.best_val_ndcg == pytest.approx(single.best_val_ndcg, rel=0.10)
    assert [row["epoch"] for row in model.history] == list(range(len(model.history)))
    assert model.stopped_early and model.best_epoch == len(model.history) - 1 - SETTINGS["patience"]
    assert all(np.isfinite(row["train_loss"]) and 0 < row["val_ndcg"] <= 1 for row in model.history)
    assert model.best_val_ndcg == pytest.approx(max(row["val_ndcg"] for row in model.history), rel=1e-6)
    assert model.history[model.best_epoch]["val_ndcg"] == pytest.approx(model.best_val_ndcg, rel=1e-6)
    assert model.device_used == "cpu"
    assert model.seconds_per_epoch > 0


def test_the_caller_ends_with_the_best_epochs_weights(data, ddp):
    model, _, _ = ddp
    assert validation_ndcg(model, data) == pytest.approx(model.best_val_ndcg, abs=1e-6)
    assert model.history[-1]["val_ndcg"] != pytest.approx(model.best_val_ndcg, abs=1e-6)   # not the last's


def test_a_ddp_model_recommends_unseen_items(data, ddp):
    model, _, _ = ddp
    seen = data.items_by_user()
    users = data.user_ids[:50]
    assert np.isfinite(model.score_users(np.arange(len(data.user_ids)))).all()
    recommendations = model.recommend(users, k=10, exclude=seen)
    for user, items, scores in zip(users, recommendations.items, recommendations.scores, strict=True):
        assert len(items) == len(set(items.tolist())) == 10
        assert not set(items.tolist()) & set(seen[user].tolist())
        assert np.isfinite(scores).all()


def test_a_ddp_model_round_trips_through_a_weights_only_load(data, ddp):
    model, _, _ = ddp
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    restored = LightGCNRecommender.from_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    users, seen = data.user_ids, data.items_by_user()
    ours, theirs = model.recommend(users, 10, exclude=seen), restored.recommend(users, 10, exclude=seen)
    for a, b in zip(ours.items, theirs.items, strict=True):
        np.testing.assert_array_equal(a, b)
    assert restored.history == model.history
    assert (restored.best_epoch, restored.best_val_ndcg) == (model.best_epoch, model.best_val_ndcg)


def test_rank_zero_reports_each_epoch_once_to_the_caller(ddp):
    model, lines, _ = ddp
    epochs = range(1, len(model.history) + 1)
    assert [line.split(":")[0] for line in lines] == [f"lightgcn epoch {n}/{EPOCHS}" for n in epochs]


def test_no_rank_outlives_the_fit(ddp):
    assert spawned_children() == []


def test_the_caller_keeps_its_torch_threads_and_environment(ddp):
    _, _, (before, after) = ddp
    assert after == before
