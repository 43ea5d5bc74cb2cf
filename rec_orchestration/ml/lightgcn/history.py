"""What each training epoch did, kept by a Lightning callback beside the module rather than inside it.

Under data-parallel training every rank runs these callbacks; the history's loss is the mean over all
ranks' batches and only rank 0 reports, so a spawned fit reports and records each epoch once.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch

from rec_orchestration.failpoints import failpoint
from rec_orchestration.progress import EpochProgress


class EpochHistory(pl.Callback):
    """One row per training epoch in ``rows``: ``epoch``, ``train_loss`` (the mean of the epoch's batch
    losses), ``metric`` under its own name (the value last logged for it, e.g. ``val_ndcg`` by the
    validation that ends the epoch; NaN while none has been) and ``seconds`` (the epoch's wall-clock
    time, validation excluded).

    The training step's returned loss is what is averaged, so the module keeps no bookkeeping of its own.
    Its ``state_dict`` is the rows, so a spawned rank's history can be handed back to the main process.
    """

    def __init__(self, metric: str = "val_ndcg") -> None:
        self.metric = metric
        self.rows: list[dict[str, float]] = []
        self._loss_sum = torch.zeros(())
        self._batches = 0
        self._started = self._validation_started = time.perf_counter()
        self._validation_seconds = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum = torch.zeros((), device=pl_module.device)
        self._batches = 0
        self._validation_seconds = 0.0
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # Summed where it was computed: reading each loss would make every step wait for the device.
        self._loss_sum = self._loss_sum + outputs["loss"].detach().float()
        self._batches += 1

    # Lightning validates inside the training epoch (before on_train_epoch_end), so its time is subtracted.
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_seconds += time.perf_counter() - self._validation_started

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train_loss = float(self._loss_sum) / max(self._batches, 1)   # float() waits for the device
        if trainer.world_size > 1:      # every rank has as many batches, so the mean of means is the mean
            mean = torch.tensor(train_loss, dtype=torch.float64, device=pl_module.device)
            train_loss = float(trainer.strategy.reduce(mean, reduce_op="mean"))
        seconds = time.perf_counter() - self._started - self._validation_seconds
        logged = trainer.callback_metrics.get(self.metric)
        self.rows.append({"epoch": int(trainer.current_epoch), "train_loss": train_loss,
                          self.metric: float(logged) if logged is not None else float("nan"), "seconds": seconds})
        failpoint("lightgcn.epoch_end")


class ReportEpochs(pl.Callback):
    """Reports every epoch :class:`EpochHistory` recorded (loss, validation nDCG, elapsed, time left) through
    an :class:`~rec_orchestration.progress.EpochProgress`; listed after the history in the callbacks."""

    def __init__(self, history: EpochHistory, progress: EpochProgress) -> None:
        self.history = history
        self.progress = progress

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.progress.restart_clock()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row = self.history.rows[-1]
        self.progress.epoch(int(row["epoch"]), {"loss": row["train_loss"],
                                                self.history.metric: row[self.history.metric]})
