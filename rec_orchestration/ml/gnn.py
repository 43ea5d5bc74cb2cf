"""LightGCN (He et al. 2020) as a PyTorch Lightning module, and the project's recommender around it.

The model
    Users and items are the two sides of one bipartite graph whose adjacency is normalised
    symmetrically, ``A_hat = D^-1/2 A D^-1/2``. From the free ("ego") embeddings ``E_0`` each layer
    computes ``E_k+1 = A_hat E_k`` (no weights, no non-linearity), and the final embedding is the mean
    of ``E_0 .. E_K``. A user's score for an item is the dot product of their final embeddings.

Training
    BPR on every (user, positive item) pair once per epoch, in a fresh random order, with one negative
    item drawn uniformly from the items the user has not interacted with; plus, as in the paper, L2 on
    the ego embeddings of the batch's users, positives and negatives, divided by the batch size. One
    full-graph propagation per step (a sparse CSR product per layer; the adjacency is symmetric, so the
    backward pass multiplies by the same matrix instead of transposing it). Adam.

Model selection
    :class:`LightGCNRecommender` carves a validation split out of the interactions it is given (a random
    ``val_fraction`` of each user's positives), measures nDCG@20 on it after every epoch (training
    positives excluded from the ranking), stops when it has not improved for ``patience`` epochs and
    keeps the best epoch's weights. No test data is ever seen: the caller's test split stays outside.

The fitted recommender keeps only the final (propagated) user and item embeddings, as CPU arrays; its
state dict is tensors and plain values, so it loads with ``torch.load(weights_only=True)`` on a machine
without a GPU whatever it was trained on.
"""

from __future__ import annotations

from datetime import timedelta

import logging
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from rec_orchestration.ml.base import Recommender
from rec_orchestration.ml.interactions import Interactions

TOP_K = 20                      # cut-off of the validation metrics (recall@20, nDCG@20, as in the paper)
VALIDATION_CELLS = 1 << 24      # users x items scored per validation batch (64 MiB of float32)
VALIDATION_USERS = 10_000       # validation ranks a fixed random sample of this many users (every epoch)
NEGATIVE_RETRIES = 10           # rounds of redrawing negatives that hit a positive


# -- the graph ---------------------------------------------------------------------------------------

def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the bipartite user-item graph as a ``(n_users + n_items)``-square CSR tensor.

    Node ``u`` is user ``u``, node ``n_users + i`` is item ``i``; ``(users[j], items[j])`` are the
    (distinct) edges. Isolated nodes get an empty row.
    """
    n = n_users + n_items
    rows = np.concatenate([users, items + n_users]).astype(np.int64)
    cols = np.concatenate([items + n_users, users]).astype(np.int64)
    adjacency = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(n, n))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros(n)
    np.divide(1.0, np.sqrt(degree), out=inv_sqrt, where=degree > 0)
    normalized = (sp.diags(inv_sqrt) @ adjacency @ sp.diags(inv_sqrt)).tocsr().astype(np.float32)
    normalized.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(normalized.indptr.astype(np.int64)),
            torch.from_numpy(normalized.indices.astype(np.int64)),
            torch.from_numpy(normalized.data),
            size=(n, n), check_invariants=True,
        )


class _SymmetricSparseProduct(torch.autograd.Function):
    """``A @ X`` for a constant symmetric sparse ``A``: the gradient ``A^T G`` is ``A G``, no transpose."""

    @staticmethod
    def forward(ctx: Any, adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ dense

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adjacency @ grad


# -- the training data -------------------------------------------------------------------------------

def positive_pairs(interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(user, item)`` index pairs with weight > 0, sorted by user then item (int64)."""
    positive = interactions.weight > 0
    pairs = np.unique(interactions.user_index[positive].astype(np.int64) * interactions.n_items
                      + interactions.item_index[positive])
    return pairs // interactions.n_items, pairs % interactions.n_items


def validation_split(users: np.ndarray, items: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which of the (distinct) positive pairs to hold out for validation: a boolean mask.

    Each user gives a random ``fraction`` of their positives (rounded stochastically, so small users
    give one with probability ``fraction * n``), never all of them: a user with fewer than 2 keeps
    everything in training. ``items`` only serves the shape; held-out pairs are always among the input.
    """
    if len(users) != len(items):
        raise ValueError("users and items differ in length")
    mask = np.zeros(len(users), dtype=bool)
    if fraction <= 0 or len(users) == 0:
        return mask
    rng = np.random.default_rng(seed)
    counts = np.bincount(users)
    wanted = counts * fraction
    n_val = np.floor(wanted) + (rng.random(len(counts)) < wanted - np.floor(wanted))
    n_val = np.minimum(n_val, np.maximum(counts - 1, 0)).astype(np.int64)
    order = np.lexsort((rng.random(len(users)), users))       # by user, random within a user
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(users)) - starts[users[order]]    # rank of each pair within its user
    mask[order] = position < n_val[users[order]]
    return mask


def sample_negatives(rng: np.random.Generator, users: np.ndarray, positive_keys: np.ndarray,
                     n_items: int) -> np.ndarray:
    """One item per user, uniform over the items, redrawn (a few rounds) where it is a known positive.

    ``positive_keys`` is the sorted array of ``user * n_items + item`` of every training positive.
    """
    negatives = rng.integers(0, n_items, size=len(users))
    clash = np.arange(len(users))
    for _ in range(NEGATIVE_RETRIES):
        keys = users[clash] * n_items + negatives[clash]
        where = np.minimum(np.searchsorted(positive_keys, keys), len(positive_keys) - 1)
        clash = clash[positive_keys[where] == keys]
        if len(clash) == 0:
            break
        negatives[clash] = rng.integers(0, n_items, size=len(clash))
    return negatives


class BprEpochs(torch.utils.data.IterableDataset):
    """Batches ``(users, positives, negatives)``: each iteration is one epoch over every positive pair,
    shuffled, with fresh negatives. Everything is drawn from one seeded generator, so runs repeat."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int, batch_size: int, seed: int) -> None:
        super().__init__()
        self.users = users.astype(np.int64)
        self.items = items.astype(np.int64)
        self.n_items = n_items
        self.batch_size = batch_size
        self.positive_keys = np.sort(self.users * n_items + self.items)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.users) / self.batch_size)

    def epoch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = self.rng.permutation(len(self.users))
        users, positives = self.users[order], self.items[order]
        return users, positives, sample_negatives(self.rng, users, self.positive_keys, self.n_items)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        users, positives, negatives = (torch.from_numpy(a) for a in self.epoch())
        for start in range(0, len(users), self.batch_size):
            stop = start + self.batch_size
            yield users[start:stop], positives[start:stop], negatives[start:stop]


def validation_batches(train: sp.csr_matrix, held_out: sp.csr_matrix, max_users: int = VALIDATION_USERS,
                       seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Users with held-out items (a fixed random sample of ``max_users`` of them where there are more: an
    epoch's validation then costs the same at any scale), in blocks, each with the coordinates (row in
    block, item) of its training positives (masked out of the ranking) and of its held-out positives
    (the relevant items)."""
    users = np.flatnonzero(np.diff(held_out.indptr) > 0)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    block = max(1, min(4096, VALIDATION_CELLS // max(train.shape[1], 1)))
    batches = []
    for start in range(0, len(users), block):
        rows = users[start:start + block]
        seen, relevant = train[rows].tocoo(), held_out[rows].tocoo()
        batches.append({
            "users": torch.from_numpy(rows.astype(np.int64)),
            "seen_rows": torch.from_numpy(seen.row.astype(np.int64)),
            "seen_items": torch.from_numpy(seen.col.astype(np.int64)),
            "relevant_rows": torch.from_numpy(relevant.row.astype(np.int64)),
            "relevant_items": torch.from_numpy(relevant.col.astype(np.int64)),
        })
    return batches


# -- the Lightning module ----------------------------------------------------------------------------

class LightGCN(pl.LightningModule):
    """LightGCN on a fixed training graph: ``propagate()`` gives the final user and item embeddings.

    ``train_users[j], train_items[j]`` (dense indices, distinct pairs) are the graph's edges.
    Validation batches come from :func:`validation_batches`; it logs ``val_ndcg`` and ``val_recall``
    (at :data:`TOP_K`). ``history`` gets one dict per training epoch (``epoch``, ``train_loss``,
    ``val_ndcg``, ``seconds``: that epoch's training time, validation excluded).
    """

    def __init__(self, n_users: int, n_items: int, train_users: np.ndarray, train_items: np.ndarray,
                 factors: int = 64, layers: int = 3, lr: float = 1e-3, reg: float = 1e-4,
                 seed: int = 0) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.factors, self.layers, self.lr, self.reg = factors, layers, lr, reg
        generator = torch.Generator().manual_seed(seed)
        self.user_embedding = torch.nn.Parameter(torch.randn(n_users, factors, generator=generator) * 0.1)
        self.item_embedding = torch.nn.Parameter(torch.randn(n_items, factors, generator=generator) * 0.1)
        # Rebuilt from the edges whenever the module is made, so it stays out of checkpoints.
        self.register_buffer("adjacency", normalized_adjacency(np.asarray(train_users), np.asarray(train_items),
                                                               n_users, n_items), persistent=False)
        self.history: list[dict[str, float]] = []
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None
        self._reset_epoch()
        self._val_sums = [0.0, 0.0, 0]
        self._last_val_ndcg = float("nan")

    # model ---------------------------------------------------------------------------------------

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final embeddings: the mean of the ego embeddings and of each of the ``layers`` propagations."""
        # Sparse products stay in float32 under mixed precision (cuSPARSE half support is partial).
        with torch.autocast(device_type=self.device.type, enabled=False):
            layer = torch.cat([self.user_embedding, self.item_embedding]).float()
            total = layer
            for _ in range(self.layers):
                layer = _SymmetricSparseProduct.apply(self.adjacency, layer)
                total = total + layer
            final = total / (self.layers + 1)
        return final[:self.n_users], final[self.n_users:]

    def bpr_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Mean BPR loss of the batch plus ``reg`` x half the squared norm of its ego embeddings / batch size."""
        user_final, item_final = self.propagate()
        user_vectors = user_final[users]
        positive_scores = (user_vectors * item_final[positives]).sum(dim=1)
        negative_scores = (user_vectors * item_final[negatives]).sum(dim=1)
        ranking = torch.nn.functional.softplus(negative_scores - positive_scores).mean()
        ego = (self.user_embedding[users].pow(2).sum() + self.item_embedding[positives].pow(2).sum()
               + self.item_embedding[negatives].pow(2).sum())
        return ranking + self.reg * 0.5 * ego / len(users)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    # training ------------------------------------------------------------------------------------

    def _reset_epoch(self) -> None:
        self._loss_sum = torch.zeros(())
        self._batches = 0
        self._epoch_started = time.perf_counter()
        self._val_seconds = 0.0

    def on_train_epoch_start(self) -> None:
        self._reset_epoch()
        self._loss_sum = torch.zeros((), device=self.device)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss = self.bpr_loss(*batch)
        self._loss_sum = self._loss_sum + loss.detach().float()
        self._batches += 1
        return loss

    def on_train_epoch_end(self) -> None:
        train_loss = float(self._loss_sum) / max(self._batches, 1)   # float() waits for the device
        seconds = time.perf_counter() - self._epoch_started - self._val_seconds
        self.history.append({"epoch": int(self.current_epoch), "train_loss": train_loss,
                             "val_ndcg": self._last_val_ndcg, "seconds": seconds})

    # validation ----------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_started = time.perf_counter()
        self._val_sums = [0.0, 0.0, 0]
        self._cached = self.propagate()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        user_final, item_final = self._cached
        scores = (user_final[batch["users"]] @ item_final.T).float()
        scores[batch["seen_rows"], batch["seen_items"]] = -torch.inf
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        relevant[batch["relevant_rows"], batch["relevant_items"]] = True
        k = min(TOP_K, scores.shape[1])
        top = scores.topk(k, dim=1).indices
        hits = relevant.gather(1, top).float()
        discount = 1.0 / torch.log2(torch.arange(2, k + 2, device=scores.device, dtype=torch.float32))
        n_relevant = relevant.sum(dim=1)
        ideal = torch.cumsum(discount, 0)[n_relevant.clamp(max=k) - 1]
        self._val_sums[0] += float((hits.sum(dim=1) / n_relevant).sum())
        self._val_sums[1] += float(((hits * discount).sum(dim=1) / ideal).sum())
        self._val_sums[2] += len(batch["users"])

    def on_validation_epoch_end(self) -> None:
        recall_sum, ndcg_sum, n = self._val_sums
        self._cached = None
        self._last_val_ndcg = ndcg_sum / max(n, 1)
        self.log("val_recall", recall_sum / max(n, 1))
        self.log("val_ndcg", self._last_val_ndcg)
        self._val_seconds += time.perf_counter() - self._val_started


# -- the recommender ---------------------------------------------------------------------------------

@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's start-up banners and its hints for big datasets are noise for a model this size."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
            warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
            warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block (None: left alone). On a CPU shared with other
    busy processes, one thread can be many times faster than two that wait on each other."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _uses_cuda(accelerator: str) -> bool:
    if accelerator in ("cuda", "gpu"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


class LightGCNRecommender(Recommender):
    """LightGCN trained with BPR, early-stopped on nDCG@20 of a validation split of its own input.

    Every interaction with weight > 0 is a positive (repeats of a pair count once). After ``fit``:
    ``history`` (per epoch: ``epoch``, ``train_loss``, ``val_ndcg``), ``best_epoch``, ``best_val_ndcg``,
    ``stopped_early``, ``device_used`` (``"cuda"`` or ``"cpu"``), ``seconds_per_epoch`` (median
    training time of an epoch, validation excluded). ``num_threads``: torch's CPU threads while fitting
    (None: torch's setting).
    """

    name = "lightgcn"

    # lr and reg were chosen on the validation split of MovieLens 100K (nDCG@20, early-stopped): lr 1e-3
    # .342 after 205 epochs, 5e-3 .349, 1e-2 .344 with the paper's reg 1e-4; with reg 1e-3: lr 5e-3 .360
    # (109 epochs), 1e-2 .357; reg 3e-3 and 1e-2 were worse.
    def __init__(self, factors: int = 64, layers: int = 3, lr: float = 5e-3, reg: float = 1e-3,
                 epochs: int = 300, batch_size: int = 2048, patience: int = 10, val_fraction: float = 0.1,
                 seed: int = 42, accelerator: str = "auto", checkpoint_dir: str | None = None,
                 num_threads: int | None = None, max_minutes: float | None = None) -> None:
        if not 0 <= val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")
        self.params = {"factors": int(factors), "layers": int(layers), "lr": float(lr), "reg": float(reg),
                       "epochs": int(epochs), "batch_size": int(batch_size), "patience": int(patience),
                       "val_fraction": float(val_fraction), "seed": int(seed)}
        self.accelerator = accelerator
        self.checkpoint_dir = checkpoint_dir
        self.num_threads = num_threads
        # Wall-clock budget of one fit (Lightning's max_time): training stops there and keeps the best
        # epoch so far, so a scheduled refresh on a slow machine still ends on time.
        self.max_minutes = max_minutes
        self.user_ids = np.array([], dtype=np.int64)
        self.item_ids = np.array([], dtype=np.int64)
        self.user_factors = np.empty((0, factors), dtype=np.float32)
        self.item_factors = np.empty((0, factors), dtype=np.float32)
        self.history: list[dict[str, float]] = []
        self.best_epoch = -1
        self.best_val_ndcg = float("nan")
        self.stopped_early = False
        self.device_used = "cpu"
        self.seconds_per_epoch = float("nan")

    def fit(self, interactions: Interactions) -> LightGCNRecommender:
        users, items = positive_pairs(interactions)
        if len(users) == 0:
            raise ValueError("cannot fit LightGCN on zero interactions with weight > 0")
        p = self.params
        n_users, n_items = interactions.n_users, interactions.n_items
        held_out = validation_split(users, items, p["val_fraction"], p["seed"])
        train_users, train_items = users[~held_out], items[~held_out]

        module = LightGCN(n_users, n_items, train_users, train_items, factors=p["factors"], layers=p["layers"],
                          lr=p["lr"], reg=p["reg"], seed=p["seed"])
        train_loader = torch.utils.data.DataLoader(
            BprEpochs(train_users, train_items, n_items, p["batch_size"], p["seed"]), batch_size=None)
        val_loader = None
        if held_out.any():
            def matrix(u: np.ndarray, i: np.ndarray) -> sp.csr_matrix:
                return sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=(n_users, n_items))
            val_loader = torch.utils.data.DataLoader(
                validation_batches(matrix(train_users, train_items), matrix(users[held_out], items[held_out]),
                                   seed=p["seed"]),
                batch_size=None)

        with (tempfile.TemporaryDirectory(prefix="lightgcn-") as scratch, _quiet_lightning(),
              _torch_threads(self.num_threads)):
            directory = self.checkpoint_dir or scratch
            callbacks: list[pl.Callback] = []
            early_stopping = checkpoint = None
            if val_loader is not None:
                early_stopping = EarlyStopping(monitor="val_ndcg", mode="max", patience=p["patience"])
                checkpoint = ModelCheckpoint(dirpath=directory, filename="lightgcn-{epoch}", monitor="val_ndcg",
                                             mode="max", save_top_k=1, save_weights_only=True)
                callbacks = [early_stopping, checkpoint]
            trainer = pl.Trainer(
                accelerator=self.accelerator, devices=1, max_epochs=p["epochs"],
                max_time=timedelta(minutes=self.max_minutes) if self.max_minutes else None,
                precision="16-mixed" if _uses_cuda(self.accelerator) else "32-true",
                callbacks=callbacks, logger=False, enable_checkpointing=checkpoint is not None,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                default_root_dir=directory,
            )
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
            self.device_used = trainer.strategy.root_device.type
            if checkpoint is not None and checkpoint.best_model_path:
                best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
                module.load_state_dict(best["state_dict"])
                self.best_epoch = int(best["epoch"])
                self.best_val_ndcg = float(checkpoint.best_model_score)
            else:
                self.best_epoch = len(module.history) - 1
            self.stopped_early = early_stopping is not None and early_stopping.stopped_epoch > 0

        module = module.cpu().eval()
        with torch.no_grad():
            user_final, item_final = module.propagate()
        self.user_factors = user_final.numpy().astype(np.float32)
        self.item_factors = item_final.numpy().astype(np.float32)
        self.user_ids, self.item_ids = interactions.user_ids, interactions.item_ids
        self.history = [{key: row[key] for key in ("epoch", "train_loss", "val_ndcg")} for row in module.history]
        self.seconds_per_epoch = statistics.median(row["seconds"] for row in module.history)
        return self

    def score_users(self, user_index: np.ndarray) -> np.ndarray:
        return self.user_factors[user_index] @ self.item_factors.T

    def item_vectors(self) -> np.ndarray:
        return self.item_factors

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "accelerator": str(self.accelerator),
            "user_ids": torch.as_tensor(self.user_ids.astype(np.int64)),
            "item_ids": torch.as_tensor(self.item_ids.astype(np.int64)),
            "user_factors": torch.as_tensor(np.ascontiguousarray(self.user_factors)),
            "item_factors": torch.as_tensor(np.ascontiguousarray(self.item_factors)),
            "history": {key: [float(row[key]) for row in self.history] for key in ("epoch", "train_loss", "val_ndcg")},
            "best_epoch": int(self.best_epoch),
            "best_val_ndcg": float(self.best_val_ndcg),
            "stopped_early": bool(self.stopped_early),
            "device_used": str(self.device_used),
            "seconds_per_epoch": float(self.seconds_per_epoch),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LightGCNRecommender:
        model = cls(**state["params"], accelerator=state.get("accelerator", "auto"))
        for key in ("user_ids", "item_ids", "user_factors", "item_factors"):
            setattr(model, key, state[key].detach().cpu().numpy())
        history = state["history"]
        model.history = [{"epoch": int(epoch), "train_loss": loss, "val_ndcg": ndcg}
                         for epoch, loss, ndcg in zip(history["epoch"], history["train_loss"], history["val_ndcg"],
                                                      strict=True)]
        model.best_epoch = int(state["best_epoch"])
        model.best_val_ndcg = float(state["best_val_ndcg"])
        model.stopped_early = bool(state["stopped_early"])
        model.device_used = str(state["device_used"])
        model.seconds_per_epoch = float(state["seconds_per_epoch"])
        return model
