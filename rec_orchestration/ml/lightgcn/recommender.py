"""The project's LightGCN recommender: fits the Lightning module with early stopping, keeps its embeddings.

Model selection
    :class:`LightGCNRecommender` carves a validation split out of the interactions it is given (a random
    ``val_fraction`` of each user's positives), measures nDCG@20 on it after every epoch (training
    positives excluded from the ranking), stops when it has not improved for ``patience`` epochs and
    keeps the best epoch's weights. No test data is ever seen: the caller's test split stays outside.

The fitted recommender keeps only the final (propagated) user and item embeddings, as CPU arrays; its
state dict is tensors and plain values, so it loads with ``torch.load(weights_only=True)`` on a machine
without a GPU whatever it was trained on.

Data-parallel training (``strategy="ddp"``)
    Lightning's DDP with spawned processes: the caller's process only waits, so a Dagster run or a test
    never has its command line re-run as Lightning's default DDP launcher would do. Spawned ranks hold
    copies of the callbacks, so a rank writes their states to a file the main process loads; it then
    restores the best checkpoint exactly as a single-process fit does. Progress lines come back through
    a queue. Buffers are not broadcast: the sparse adjacency cannot be, and every rank receives the same.
    Over several nodes only global rank 0 writes the best checkpoint, so ``checkpoint_dir`` must be a
    directory every node sees.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import statistics
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any

import numpy as np
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy

from rec_orchestration.ml.base import Recommender, fit_budget_minutes, shared_rows
from rec_orchestration.ml.defaults import LIGHTGCN
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.lightgcn.data import BprEpochs, holdout_mask, positive_pairs, validation_batches
from rec_orchestration.ml.lightgcn.history import EpochHistory, ReportEpochs
from rec_orchestration.ml.lightgcn.module import LightGCN
from rec_orchestration.progress import EpochProgress, Report
from rec_orchestration.threads import step_threads

HISTORY_KEYS = ("epoch", "train_loss", "val_ndcg")   # what the recommender keeps of each epoch's row
STRATEGIES = ("auto", "ddp")
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric")
NOISE = (                   # warnings that are noise for a model this size
    ".*does not have many workers.*",
    ".*`validation_step` but have no `val_dataloader`.*",
    ".*Sparse CSR tensor support is in beta.*",
    ".*IterableDataset.*__len__.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*sync_dist=True.*",   # the module sums its validation across ranks itself
    # torch deprecates it, but its successor still syncs buffers at start-up, which a sparse buffer breaks
    ".*`broadcast_buffers` is deprecated.*",
)


def _silence_lightning() -> None:
    for logger in map(logging.getLogger, LIGHTNING_LOGGERS):
        logger.setLevel(logging.WARNING)
    for message in NOISE:
        warnings.filterwarnings("ignore", message=message)


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's start-up banners and its hints for big datasets are noise for a model this size."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings():
            _silence_lightning()
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


@contextmanager
def _restored_environ(name: str) -> Iterator[None]:
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _uses_cuda(accelerator: str) -> bool:
    if accelerator in ("cuda", "gpu"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


class _QueuedReport:
    """A progress report a spawned rank can carry: each line goes into a queue the main process drains."""

    def __init__(self, lines: Any) -> None:
        self.lines = lines

    def __call__(self, line: str) -> None:
        self.lines.put(line)


@contextmanager
def _relayed(report: Report) -> Iterator[Report]:
    """A report for spawned ranks whose lines reach ``report`` in this process, from a thread, as they come."""
    lines = multiprocessing.get_context("spawn").SimpleQueue()

    def drain() -> None:
        while (line := lines.get()) is not None:
            report(line)

    thread = threading.Thread(target=drain, name="lightgcn-progress", daemon=True)
    thread.start()
    try:
        yield _QueuedReport(lines)
    finally:
        lines.put(None)
        thread.join()


class _SpawnedRank(pl.Callback):
    """What a spawned DDP rank needs besides the trainer's copy: Lightning kept quiet (from the moment the
    rank unpickles it, before Lightning's own start-up), ``threads`` torch threads so that the ranks share
    the cores instead of fighting over them, and, on each node's first rank, the states of ``kept``
    written to ``handoff`` at the end of the fit, since the main process's callbacks never ran (the
    ranks take the same decisions, so any rank's states will do)."""

    def __init__(self, threads: int, handoff: str, kept: dict[str, pl.Callback]) -> None:
        self.threads, self.handoff, self.kept = threads, handoff, kept

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _silence_lightning()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        torch.set_num_threads(self.threads)     # after Lightning's own default for spawned ranks

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.local_rank == 0:
            torch.save({name: callback.state_dict() for name, callback in self.kept.items()}, self.handoff)

    def restore(self) -> None:
        """In the main process, after the fit: the ranks' callback states into ``kept``."""
        state = torch.load(self.handoff, map_location="cpu", weights_only=True)
        for name, callback in self.kept.items():
            callback.load_state_dict(state[name])


MIN_BATCH = 2048          # BPR pairs per step, at least
STEPS_PER_EPOCH = 32      # at most, on large graphs: every step propagates over the whole graph


# A fit warm-started from an earlier model (``warm_start``) starts near its optimum: it trains this many
# epochs at most and stops after this many without a better validation nDCG.
WARM_EPOCHS = 20
WARM_PATIENCE = 3


def epoch_batch_size(pairs: int) -> int:
    """The batch of a fit without ``batch_size``: :data:`MIN_BATCH`, or bigger so an epoch takes at most
    :data:`STEPS_PER_EPOCH` steps. Each step propagates the embeddings over the whole graph (its cost grows
    with the graph, not the batch), so with a fixed batch an epoch's cost grew with the square of the data:
    at 1M interactions 2,048 pairs a step meant ~450 full propagations and 106-152 s an epoch on 2 cores;
    64 steps took 40 s, 32 take half that. Graphs up to 65,536 training pairs keep 2,048 pairs a step.
    On MovieLens 100K (67,500 training pairs on the published split) 32 steps of 2,111 pairs against 33 of
    2,048 moved LightGCN's best validation nDCG@20 from 0.2115 to 0.2100 and its test nDCG@10 from
    0.4563 to 0.4521 (-0.7 % and -0.9 %)."""
    return max(MIN_BATCH, -(-pairs // STEPS_PER_EPOCH))


class LightGCNRecommender(Recommender):
    """LightGCN trained with BPR, early-stopped on nDCG@20 of a validation split of its own input.

    Every interaction with weight > 0 is a positive (repeats of a pair count once). After ``fit``:
    ``history`` (per epoch: ``epoch``, ``train_loss``, ``val_ndcg``), ``best_epoch``, ``best_val_ndcg``,
    ``stopped_early``, ``device_used`` (``"cuda"`` or ``"cpu"``), ``seconds_per_epoch`` (median
    training time of an epoch, validation excluded). ``num_threads``: torch's CPU threads while fitting
    (None: torch's setting; under DDP, of each rank, None: the cores shared out among the node's ranks).
    The tuned defaults (factors, layers, lr, reg, epochs, patience) are ``ml.defaults.LIGHTGCN``.

    ``devices``, ``num_nodes``: Lightning's; more than one process in all needs ``strategy="ddp"``
    (DDP on spawned processes; gloo on CPUs). Each rank trains on its share of every epoch's BPR batches
    (the gradients are averaged, so a step sees ``devices x num_nodes x batch_size`` pairs) and the best
    epoch's weights and the history come back to this process as after a single-process fit.

    ``batch_size``: BPR pairs per step; None (the default) sizes it from the graph (:func:`epoch_batch_size`),
    and ``batch_size_used`` says what it was.

    ``warm_start(state)`` before ``fit``: the users and items of an earlier fit's state dict start from its
    ego embeddings (new ones at random), and the fit trains at most :data:`WARM_EPOCHS` epochs with
    patience :data:`WARM_PATIENCE`; ``warm_started`` says how many users and items it carried over.
    """

    name = "lightgcn"

    def __init__(self, factors: int = LIGHTGCN["factors"], layers: int = LIGHTGCN["layers"],
                 lr: float = LIGHTGCN["lr"], reg: float = LIGHTGCN["reg"], epochs: int = LIGHTGCN["epochs"],
                 batch_size: int | None = None, patience: int = LIGHTGCN["patience"], val_fraction: float = 0.1,
                 seed: int = 42, accelerator: str = "auto", checkpoint_dir: str | None = None,
                 num_threads: int | None = None, max_minutes: float | None = None, devices: int = 1,
                 num_nodes: int = 1, strategy: str = "auto") -> None:
        if not 0 <= val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
        if devices < 1 or num_nodes < 1:
            raise ValueError("devices and num_nodes must be at least 1")
        if devices * num_nodes > 1 and strategy != "ddp":
            # Lightning's own choice would be DDP that re-runs this process's command line once per rank.
            raise ValueError("training on more than one device or node needs strategy='ddp'")
        if num_nodes > 1 and checkpoint_dir is None:
            raise ValueError("training on several nodes needs a checkpoint_dir that every node sees")
        self.params = {"factors": int(factors), "layers": int(layers), "lr": float(lr), "reg": float(reg),
                       "epochs": int(epochs),
                       "batch_size": None if batch_size is None else int(batch_size), "patience": int(patience),
                       "val_fraction": float(val_fraction), "seed": int(seed)}
        self.accelerator = accelerator
        self.checkpoint_dir = checkpoint_dir
        self.num_threads = num_threads
        self.devices, self.num_nodes, self.strategy = int(devices), int(num_nodes), strategy
        # Wall-clock budget of one fit (Lightning's max_time): training stops there and keeps the best
        # epoch so far, so a scheduled refresh on a slow machine still ends on time; a warm start gets a
        # share of it (fit_budget_minutes).
        self.max_minutes = max_minutes
        self.budget_minutes: float | None = max_minutes  # the last fit's
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
        self.epochs_trained: int | None = None  # the last fit's (early stopping and the time budget end it)
        self.batch_size_used: int | None = None
        self._warm: dict[str, Any] | None = None
        self.warm_started: dict[str, int] | None = None
        self.user_ego = np.empty((0, factors), dtype=np.float32)   # the free embeddings: what a warm start reuses
        self.item_ego = np.empty((0, factors), dtype=np.float32)

    def warm_start(self, state: dict[str, Any]) -> None:
        """Start the next ``fit`` from ``state`` (an earlier fit's ``state_dict`` with ego embeddings)."""
        if "user_ego" not in state:
            raise ValueError("the state has no ego embeddings to start from (saved before warm starts existed)")
        if int(state["user_ego"].shape[1]) != self.params["factors"]:
            raise ValueError("the state's embeddings have another number of factors")
        self._warm = state

    def fit(self, interactions: Interactions) -> LightGCNRecommender:
        users, items = positive_pairs(interactions)
        if len(users) == 0:
            raise ValueError("cannot fit LightGCN on zero interactions with weight > 0")
        p = self.params
        n_users, n_items = interactions.n_users, interactions.n_items
        held_out = holdout_mask(users, items, p["val_fraction"], p["seed"])
        train_users, train_items = users[~held_out], items[~held_out]

        module = LightGCN(n_users, n_items, train_users, train_items, factors=p["factors"], layers=p["layers"],
                          lr=p["lr"], reg=p["reg"], seed=p["seed"])
        max_epochs, patience = p["epochs"], p["patience"]
        if self._warm is not None:
            self.warm_started = _carry_over(module, self._warm, interactions)
            max_epochs, patience = min(max_epochs, WARM_EPOCHS), min(patience, WARM_PATIENCE)
        budget = self.budget_minutes = fit_budget_minutes(self.max_minutes, self._warm is not None)
        self.batch_size_used = p["batch_size"] or epoch_batch_size(len(train_users))
        train_loader = torch.utils.data.DataLoader(
            BprEpochs(train_users, train_items, n_items, self.batch_size_used, p["seed"]), batch_size=None)
        val_loader = None
        if held_out.any():
            def matrix(u: np.ndarray, i: np.ndarray) -> sp.csr_matrix:
                return sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=(n_users, n_items))
            val_loader = torch.utils.data.DataLoader(
                validation_batches(matrix(train_users, train_items), matrix(users[held_out], items[held_out]),
                                   seed=p["seed"]),
                batch_size=None)

        spawned = self.strategy == "ddp"
        with (tempfile.TemporaryDirectory(prefix="lightgcn-") as scratch, _quiet_lightning(),
              _torch_threads(self.num_threads), ExitStack() as stack):
            directory = self.checkpoint_dir or scratch
            history = EpochHistory(metric="val_ndcg")
            callbacks: list[pl.Callback] = [history]
            kept: dict[str, pl.Callback] = {"history": history}
            if self.progress is not None:
                report = stack.enter_context(_relayed(self.progress)) if spawned else self.progress
                callbacks.append(ReportEpochs(history, EpochProgress(
                    self.name, max_epochs, report, early_stopping=val_loader is not None,
                    budget_seconds=budget * 60 if budget else None)))
            early_stopping = checkpoint = None
            if val_loader is not None:
                early_stopping = EarlyStopping(monitor="val_ndcg", mode="max", patience=patience)
                checkpoint = ModelCheckpoint(dirpath=directory, filename="lightgcn-{epoch}", monitor="val_ndcg",
                                             mode="max", save_top_k=1, save_weights_only=True)
                callbacks += [early_stopping, checkpoint]
                kept |= {"early_stopping": early_stopping, "checkpoint": checkpoint}
            ranks = None
            if spawned:
                ranks = _SpawnedRank(self.num_threads or max(1, step_threads() // self.devices),
                                    os.path.join(scratch, "rank-callbacks.pt"), kept)
                callbacks.append(ranks)
                stack.enter_context(_restored_environ("MASTER_PORT"))   # the launcher sets it here
            trainer = pl.Trainer(
                accelerator=self.accelerator, devices=self.devices, num_nodes=self.num_nodes,
                strategy=DDPStrategy(start_method="spawn", broadcast_buffers=False) if spawned else "auto",
                max_epochs=max_epochs, max_time=timedelta(minutes=budget) if budget else None,
                precision="16-mixed" if _uses_cuda(self.accelerator) else "32-true",
                callbacks=callbacks, logger=False, enable_checkpointing=checkpoint is not None,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                default_root_dir=directory,
                use_distributed_sampler=False,   # BprEpochs and the validation shard themselves
            )
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
            if ranks is not None:
                ranks.restore()
            self.device_used = trainer.strategy.root_device.type
            if checkpoint is not None and checkpoint.best_model_path:
                best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
                module.load_state_dict(best["state_dict"])
                self.best_epoch = int(best["epoch"])
                self.best_val_ndcg = float(checkpoint.best_model_score)
            else:
                self.best_epoch = len(history.rows) - 1
            self.stopped_early = early_stopping is not None and early_stopping.stopped_epoch > 0

        module = module.cpu().eval()
        with torch.no_grad():
            user_final, item_final = module.propagate()
        self.user_factors = user_final.numpy().astype(np.float32)
        self.item_factors = item_final.numpy().astype(np.float32)
        self.user_ego = module.user_embedding.detach().numpy().astype(np.float32)
        self.item_ego = module.item_embedding.detach().numpy().astype(np.float32)
        self.user_ids, self.item_ids = interactions.user_ids, interactions.item_ids
        self.history = [{key: row[key] for key in HISTORY_KEYS} for row in history.rows]
        self.epochs_trained = len(history.rows)
        self.seconds_per_epoch = statistics.median(row["seconds"] for row in history.rows)
        return self

    def score_users(self, user_index: np.ndarray) -> np.ndarray:
        return self.user_factors[user_index] @ self.item_factors.T

    def item_vectors(self) -> np.ndarray:
        return self.item_factors

    def factor_form(self) -> tuple[np.ndarray, np.ndarray, None]:
        return self.user_factors, self.item_factors, None

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "accelerator": str(self.accelerator),
            "user_ids": torch.as_tensor(self.user_ids.astype(np.int64)),
            "item_ids": torch.as_tensor(self.item_ids.astype(np.int64)),
            "user_factors": torch.as_tensor(np.ascontiguousarray(self.user_factors)),
            "item_factors": torch.as_tensor(np.ascontiguousarray(self.item_factors)),
            "user_ego": torch.as_tensor(np.ascontiguousarray(self.user_ego)),
            "item_ego": torch.as_tensor(np.ascontiguousarray(self.item_ego)),
            "history": {key: [float(row[key]) for row in self.history] for key in HISTORY_KEYS},
            "best_epoch": int(self.best_epoch),
            "best_val_ndcg": float(self.best_val_ndcg),
            "stopped_early": bool(self.stopped_early),
            "device_used": str(self.device_used),
            "seconds_per_epoch": float(self.seconds_per_epoch),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LightGCNRecommender:
        model = cls(**state["params"], accelerator=state.get("accelerator", "auto"))
        for key in ("user_ids", "item_ids", "user_factors", "item_factors", "user_ego", "item_ego"):
            if key in state:  # artifacts saved before warm starts have no ego embeddings
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


def _carry_over(module: LightGCN, state: dict[str, Any], interactions: Interactions) -> dict[str, int]:
    """Copy ``state``'s ego embeddings into ``module`` for the users and items both know (by external id)."""
    carried = {}
    with torch.no_grad():
        for side, ids, parameter in (("user", interactions.user_ids, module.user_embedding),
                                     ("item", interactions.item_ids, module.item_embedding)):
            now, then = shared_rows(state[f"{side}_ids"].detach().cpu().numpy(), ids)
            if len(now):
                parameter[torch.as_tensor(now)] = state[f"{side}_ego"].detach().cpu()[
                    torch.as_tensor(then)].to(parameter.dtype)
            carried[f"{side}s"] = len(now)
    return carried
