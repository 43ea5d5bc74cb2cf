"""LightGCN: learns communities, restores its best epoch, validates only on its own input, records each
epoch, round-trips.

The data: two communities of 20 users, each interacting with 7 of the 10 items of its own block; the
other 3 of the block are held out, and a model that learned the graph scores them above every item of
the other block.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import scipy.sparse as sp
import torch

from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.lightgcn import (
    BprEpochs,
    EpochHistory,
    LightGCN,
    LightGCNRecommender,
    holdout_mask,
    normalized_adjacency,
    positive_pairs,
    symmetric_sparse_product,
    validation_batches,
)
from rec_orchestration.ml.metrics import ndcg_at_k

# Lightning's hints for a bare Trainer (the recommender silences the same ones while it fits)
pytestmark = [
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`"),
    pytest.mark.filterwarnings("ignore:Your `IterableDataset` has `__len__` defined"),
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated"),
]

N_USERS, N_ITEMS, ITEM_OFFSET = 40, 20, 1000
SMALL = {"factors": 16, "layers": 2, "lr": 0.05, "batch_size": 64, "accelerator": "cpu"}


def own_block(user: int) -> np.ndarray:
    return np.arange(10) if user < N_USERS // 2 else np.arange(10, 20)


def two_communities(seed: int = 0) -> tuple[Interactions, dict[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    rows, held_out = [], {}
    for user in range(N_USERS):
        items = rng.permutation(own_block(user))
        rows += [(user, ITEM_OFFSET + int(item), 1.0, 1_600_000_000 + i) for i, item in enumerate(items[:7])]
        held_out[user] = items[7:]          # item indices (external id - ITEM_OFFSET)
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "weight", "ts"])
    return Interactions.from_frame(frame), held_out


@pytest.fixture(scope="module")
def data() -> tuple[Interactions, dict[int, np.ndarray]]:
    return two_communities()


@pytest.fixture(scope="module")
def early_stopped(data) -> LightGCNRecommender:
    """Trained until nDCG@20 on its validation split has not improved for 3 epochs."""
    return LightGCNRecommender(**SMALL, epochs=200, patience=3).fit(data[0])


def test_ranks_the_held_out_items_of_the_users_own_block_above_the_other_block(data, early_stopped):
    interactions, held_out = data
    assert early_stopped.device_used == "cpu"
    scores = early_stopped.score_users(np.arange(N_USERS))
    assert scores.shape == (N_USERS, N_ITEMS)
    separated = [scores[user, held_out[user]].min() > np.delete(scores[user], own_block(user)).max()
                 for user in range(N_USERS)]
    assert sum(separated) >= 0.9 * N_USERS, f"only {sum(separated)} of {N_USERS} users separated"
    recs = early_stopped.recommend(np.arange(N_USERS), k=3, exclude=interactions.items_by_user())
    hits = sum(len(set(items.tolist()) & set((ITEM_OFFSET + held_out[user]).tolist()))
               for user, items in enumerate(recs.items))
    assert hits >= 0.9 * 3 * N_USERS


def test_untrained_embeddings_do_not_separate_the_communities(data):
    """The test above can fail: with a learning rate of 0 the random start does not pass it."""
    interactions, held_out = data
    model = LightGCNRecommender(**{**SMALL, "lr": 0.0}, epochs=3, patience=10).fit(interactions)
    scores = model.score_users(np.arange(N_USERS))
    separated = [scores[user, held_out[user]].min() > np.delete(scores[user], own_block(user)).max()
                 for user in range(N_USERS)]
    assert sum(separated) < 0.5 * N_USERS


def test_holdout_mask_holds_out_only_the_users_own_positives():
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 30, size=200)
    users = np.repeat(np.arange(200), counts)
    items = np.concatenate([np.sort(rng.choice(500, size=n, replace=False)) for n in counts])
    held_out = holdout_mask(users, items, 0.2, seed=5)
    assert held_out.shape == users.shape and held_out.any()
    # held-out pairs are input pairs, and every user keeps at least one positive for training
    assert np.bincount(users[~held_out], minlength=200).min() >= 1
    assert not held_out[np.isin(users, np.flatnonzero(counts == 1))].any()
    kept = set(zip(users[~held_out].tolist(), items[~held_out].tolist(), strict=True))
    val = set(zip(users[held_out].tolist(), items[held_out].tolist(), strict=True))
    assert val and not val & kept
    assert val | kept == set(zip(users.tolist(), items.tolist(), strict=True))
    assert held_out.mean() == pytest.approx(0.2, abs=0.03)
    np.testing.assert_array_equal(held_out, holdout_mask(users, items, 0.2, seed=5))
    assert not holdout_mask(users, items, 0.0, seed=5).any()


def test_early_stopping_stops_when_validation_stops_improving(data):
    # lr 0: nDCG never changes, so it never improves after the first epoch
    model = LightGCNRecommender(**{**SMALL, "lr": 0.0}, epochs=50, patience=2).fit(data[0])
    assert model.stopped_early
    assert [row["epoch"] for row in model.history] == [0, 1, 2]
    assert model.best_epoch == 0
    assert model.seconds_per_epoch > 0


def quiet_trainer(history: EpochHistory, epochs: int) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_epochs=epochs, callbacks=[history], logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0)


def test_epoch_history_keeps_the_mean_batch_loss_of_each_epoch(data):
    users, items = positive_pairs(data[0])
    # lr 0: the weights never move, so replaying the same seeded batches gives the same losses
    module = LightGCN(N_USERS, N_ITEMS, users, items, factors=8, layers=2, lr=0.0, reg=1e-3, seed=3)
    history = EpochHistory(metric="val_ndcg")
    loader = torch.utils.data.DataLoader(BprEpochs(users, items, N_ITEMS, batch_size=64, seed=4), batch_size=None)
    quiet_trainer(history, epochs=2).fit(module, train_dataloaders=loader)
    replay = BprEpochs(users, items, N_ITEMS, batch_size=64, seed=4)
    with torch.no_grad():
        expected = [np.mean([float(module.bpr_loss(*batch)) for batch in replay]) for _ in range(2)]
    assert [row["epoch"] for row in history.rows] == [0, 1]
    assert [row["train_loss"] for row in history.rows] == pytest.approx(expected, rel=1e-6)
    assert all(np.isnan(row["val_ndcg"]) for row in history.rows)     # nothing validated, nothing logged
    assert all(row["seconds"] > 0 for row in history.rows)


def test_epoch_history_takes_the_validation_metric_and_leaves_validation_time_out(data):
    pause = 0.3

    class SlowValidation(LightGCN):
        def on_validation_epoch_end(self) -> None:
            time.sleep(pause)
            super().on_validation_epoch_end()

    users, items = positive_pairs(data[0])
    held_out = holdout_mask(users, items, 0.2, seed=1)
    train_users, train_items = users[~held_out], items[~held_out]

    def matrix(u: np.ndarray, i: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(N_USERS, N_ITEMS))

    module = SlowValidation(N_USERS, N_ITEMS, train_users, train_items, factors=8, layers=2, lr=0.05, reg=1e-3)
    train = torch.utils.data.DataLoader(BprEpochs(train_users, train_items, N_ITEMS, 64, seed=4), batch_size=None)
    validation = torch.utils.data.DataLoader(
        validation_batches(matrix(train_users, train_items), matrix(users[held_out], items[held_out])),
        batch_size=None)
    history = EpochHistory(metric="val_ndcg")
    trainer = quiet_trainer(history, epochs=2)
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=train, val_dataloaders=validation)
    total = time.perf_counter() - started
    # each epoch's validation ran inside it and slept `pause`: had it been counted, this would exceed total
    assert sum(row["seconds"] for row in history.rows) + 2 * pause <= total
    assert all(0 < row["val_ndcg"] <= 1 for row in history.rows)
    assert history.rows[-1]["val_ndcg"] == pytest.approx(float(trainer.callback_metrics["val_ndcg"]))


def test_keeps_the_weights_of_the_best_validation_epoch(data, early_stopped):
    history = early_stopped.history
    assert early_stopped.stopped_early and len(history) < 200
    assert early_stopped.epochs_trained == len(history)  # what the artifact's manifest records
    ndcgs = [row["val_ndcg"] for row in history]
    assert early_stopped.best_epoch == int(np.argmax(ndcgs)) < len(history) - 1
    assert early_stopped.best_val_ndcg == pytest.approx(max(ndcgs))
    assert all(np.isfinite(row["train_loss"]) for row in history)
    # nDCG@20 of the validation split, recomputed through the public API and ml.metrics from the kept
    # embeddings, is the best epoch's, not the last one's
    interactions = data[0]
    users, items = positive_pairs(interactions)
    held_out = holdout_mask(users, items, 0.1, seed=early_stopped.params["seed"])
    assert held_out.any()
    recomputed = validation_ndcg(early_stopped, interactions, users, items, held_out)
    assert recomputed == pytest.approx(early_stopped.best_val_ndcg, abs=1e-6)
    assert recomputed != pytest.approx(ndcgs[-1], abs=1e-6)


def validation_ndcg(model: LightGCNRecommender, interactions: Interactions, users: np.ndarray, items: np.ndarray,
                    held_out: np.ndarray, k: int = 20) -> float:
    """nDCG@k of the held-out pairs, training pairs excluded from the ranking, as ``ml.metrics`` scores it."""
    def by_user(mask: np.ndarray) -> dict[int, np.ndarray]:
        user_ids, item_ids = interactions.user_ids[users[mask]], interactions.item_ids[items[mask]]
        return {int(user): item_ids[user_ids == user] for user in np.unique(user_ids)}

    truth = by_user(held_out)
    recommendations = model.recommend(np.array(list(truth)), k, exclude=by_user(~held_out))
    return ndcg_at_k(recommendations, truth, k)


def test_fits_are_repeatable_with_a_seed(data, early_stopped):
    again = LightGCNRecommender(**SMALL, epochs=200, patience=3).fit(data[0])
    np.testing.assert_array_equal(again.user_factors, early_stopped.user_factors)
    np.testing.assert_array_equal(again.item_factors, early_stopped.item_factors)


def test_save_and_load_give_identical_scores(tmp_path, early_stopped):
    path = tmp_path / "lightgcn.pt"
    early_stopped.save(path)
    torch.load(path, weights_only=True)                    # plain tensors and values only
    restored = LightGCNRecommender.load(path)
    users = np.arange(N_USERS)
    np.testing.assert_array_equal(restored.score_users(users), early_stopped.score_users(users))
    np.testing.assert_array_equal(restored.item_vectors(), early_stopped.item_vectors())
    np.testing.assert_array_equal(restored.item_ids, early_stopped.item_ids)
    assert restored.history == early_stopped.history
    assert (restored.best_epoch, restored.params) == (early_stopped.best_epoch, early_stopped.params)
    neighbours, _ = restored.similar_items(early_stopped.item_ids[:1], n=3)
    assert set(neighbours[0].tolist()) <= set((ITEM_OFFSET + own_block(0)).tolist())


def test_module_propagation_is_the_mean_of_the_normalised_layers():
    users, items = np.array([0, 0, 1]), np.array([0, 1, 1])
    module = LightGCN(2, 2, users, items, factors=4, layers=2, lr=1e-3, reg=1e-4, seed=1)
    adjacency = module.adjacency.to_dense()
    # nodes: users 0, 1 (degrees 2, 1), then items 0, 1 (degrees 1, 2); entry = 1 / sqrt(deg * deg)
    expected_adjacency = torch.zeros(4, 4)
    for user, item, value in [(0, 0, 2 ** -0.5), (0, 1, 0.5), (1, 1, 2 ** -0.5)]:
        expected_adjacency[user, 2 + item] = expected_adjacency[2 + item, user] = value
    torch.testing.assert_close(adjacency, expected_adjacency)
    ego = torch.cat([module.user_embedding, module.item_embedding]).detach()
    expected = (ego + expected_adjacency @ ego + expected_adjacency @ expected_adjacency @ ego) / 3
    user_final, item_final = module.propagate()
    torch.testing.assert_close(torch.cat([user_final, item_final]).detach(), expected)


def test_the_symmetric_sparse_product_has_the_dense_products_gradient():
    adjacency = normalized_adjacency(np.array([0, 0, 1]), np.array([0, 1, 1]), 2, 2)
    dense = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weights = torch.arange(12.0).reshape(4, 3)
    (symmetric_sparse_product(adjacency, dense) * weights).sum().backward()
    sparse_grad, dense.grad = dense.grad, None
    (adjacency.to_dense() @ dense * weights).sum().backward()
    torch.testing.assert_close(sparse_grad, dense.grad)


def test_refuses_interactions_without_a_positive():
    frame = pd.DataFrame({"user_id": [1], "product_id": [2], "weight": [0.0], "ts": [0]})
    with pytest.raises(ValueError, match="weight > 0"):
        LightGCNRecommender(accelerator="cpu").fit(Interactions.from_frame(frame))


def test_a_time_budget_ends_training_and_keeps_the_best_epoch(data):
    model = LightGCNRecommender(**SMALL, epochs=100_000, patience=100_000, max_minutes=0.05).fit(data[0])
    trained = len(model.history)
    assert 0 < trained < 100_000                        # stopped by the 3-second budget, not by the epochs
    assert model.best_val_ndcg == pytest.approx(max(row["val_ndcg"] for row in model.history), rel=1e-6)
    assert np.isfinite(model.score_users(np.arange(3))).all()


def test_an_epoch_takes_at_most_32_steps_on_a_large_graph():
    """Every step propagates over the whole graph, so the batch grows with it: a graph of 60,000 training
    pairs keeps 2,048 pairs a step (30 steps); 900,000 pairs take 32 steps, not 440."""
    from rec_orchestration.ml.lightgcn.recommender import MIN_BATCH, epoch_batch_size

    assert epoch_batch_size(60_000) == MIN_BATCH == 2048
    assert epoch_batch_size(32 * 2048) == 2048
    assert epoch_batch_size(900_000) == 28_125
    assert -(-900_000 // epoch_batch_size(900_000)) == 32


def test_the_served_form_ranks_as_the_model_and_imports_no_lightning(data, early_stopped, tmp_path):
    """Scoring serves a LightGCN fit from its final vectors alone (ml.registry.served_model): the same top k,
    scores and similar items as the model's own class, and loading it from the store imports no Lightning."""
    import subprocess
    import sys

    from rec_orchestration.ml.artifacts import ModelStore
    from rec_orchestration.ml.registry import served_model

    interactions, _ = data
    served = served_model("lightgcn", early_stopped.state_dict())
    users = np.concatenate([interactions.user_ids[::3], [10**9]])  # and one the fit never saw
    exclude = {int(user): interactions.items_by_user([user]).get(int(user), np.empty(0)) for user in users[:5]}
    ours, theirs = served.recommend(users, 5, exclude=exclude), early_stopped.recommend(users, 5, exclude=exclude)
    assert all(np.array_equal(a, b) for a, b in zip(ours.items, theirs.items, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(ours.scores, theirs.scores, strict=True))
    assert len(ours.items[-1]) == 0
    for mine, model in zip(served.similar_items(interactions.item_ids[:4], 3),
                           early_stopped.similar_items(interactions.item_ids[:4], 3), strict=True):
        np.testing.assert_array_equal(mine, model)

    ModelStore(str(tmp_path)).save("lightgcn", "v1", early_stopped.state_dict(), {})
    script = ("import sys; from rec_orchestration.ml.artifacts import ModelStore; "
              "from rec_orchestration.ml.registry import served_model; "
              f"state, _ = ModelStore({str(tmp_path)!r}).load('lightgcn', 'v1'); "
              "model = served_model('lightgcn', state); "
              "print(len(model.item_ids), 'pytorch_lightning' in sys.modules, 'lightning' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(len(interactions.item_ids)), "False", "False"]
