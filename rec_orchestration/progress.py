"""Progress lines for long work: one per training epoch, one every so many rows of an ingestion.

The work itself knows nothing of Dagster: it calls a ``Report`` (any ``str -> None``); the assets pass
``context.log.info``, so the lines appear in the run's log in the UI as the work goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

Report = Callable[[str], None]
T = TypeVar("T")

# An ingestion reports every this many rows (about every 2-4 s at the loader's rate).
ROWS_PER_REPORT = 250_000


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class EpochProgress:
    """Reports each finished epoch: its number of the most, the epoch's values (loss, validation nDCG),
    the time since training started and an estimate of the time left.

    The estimate is the mean time of the epochs so far times the epochs left, capped by what is left of a
    wall-clock budget (``budget_seconds``, where training stops anyway). Early stopping can end training
    sooner than either, which the line says when the model has it."""

    def __init__(self, model_name: str, max_epochs: int, report: Report, *, budget_seconds: float | None = None,
                 early_stopping: bool = False) -> None:
        self.model_name = model_name
        self.max_epochs = max(int(max_epochs), 1)
        self.report = report
        self.budget_seconds = budget_seconds
        self.early_stopping = early_stopping
        self.started = time.perf_counter()

    def restart_clock(self) -> None:
        self.started = time.perf_counter()

    def estimate_left(self, epochs_done: int, elapsed: float) -> float:
        left = elapsed / max(epochs_done, 1) * (self.max_epochs - epochs_done)
        if self.budget_seconds is not None:
            left = min(left, max(self.budget_seconds - elapsed, 0.0))
        return left

    def epoch(self, epoch: int, values: Mapping[str, float]) -> str:
        """Report epoch ``epoch`` (0-based) with ``values``; returns the line."""
        elapsed = time.perf_counter() - self.started
        done = epoch + 1
        shown = ", ".join(f"{key} {value:.4f}" for key, value in values.items()
                          if value is not None and not math.isnan(value))
        if done >= self.max_epochs:
            left = "done"
        else:
            left = f"about {duration(self.estimate_left(done, elapsed))} left"
            if self.early_stopping:
                left += " at most (early stopping may end it sooner)"
        line = (f"{self.model_name} epoch {done}/{self.max_epochs}: {shown + ', ' if shown else ''}"
                f"{duration(elapsed)} elapsed, {left}")
        self.report(line)
        return line


def counted(rows: Iterable[T], report: Report | None, label: str, every: int = ROWS_PER_REPORT) -> Iterator[T]:
    """``rows`` unchanged, reporting ``<label>: 250,000 rows read (41,000/s, 6.1 s)`` every ``every`` rows."""
    if report is None:
        yield from rows
        return
    started = time.perf_counter()
    for n, row in enumerate(rows, start=1):
        yield row
        if n % every == 0:
            elapsed = time.perf_counter() - started
            report(f"{label}: {n:,} rows read ({n / max(elapsed, 1e-9):,.0f}/s, {duration(elapsed)})")
