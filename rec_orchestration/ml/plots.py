"""PNG plots for the UI: a model's training curve and the metric comparison across models."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any


def markdown_image(png: bytes, alt: str) -> str:
    """A PNG inlined as Markdown (a data URI), which the Dagster UI renders in an asset's metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def training_curve(history: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Training loss and validation metric per epoch (``history``: dicts with epoch, train_loss, val_*)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, loss_axis = plt.subplots(figsize=(6, 3.2))
    loss_axis.plot(epochs, [row.get("train_loss") for row in history], color="tab:blue", label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    val_keys = sorted({key for row in history for key in row if key.startswith("val_")})
    if val_keys:
        metric_axis = loss_axis.twinx()
        for key in val_keys:
            metric_axis.plot(epochs, [row.get(key) for row in history], color="tab:orange", label=key)
        metric_axis.set_ylabel(", ".join(val_keys), color="tab:orange")
    loss_axis.set_title(f"{title}: training curve")
    return _png(figure)


def metric_comparison(metrics: Mapping[str, Mapping[str, float]], keys: Sequence[str], title: str) -> bytes:
    """Grouped bars: one group per metric key, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = list(metrics)
    width = 0.8 / max(len(models), 1)
    positions = np.arange(len(keys))
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for offset, model in enumerate(models):
        axis.bar(positions + offset * width, [float(metrics[model].get(key, 0.0)) for key in keys], width,
                 label=model)
    axis.set_xticks(positions + width * (len(models) - 1) / 2, keys)
    axis.set_title(title)
    axis.legend(fontsize="small")
    return _png(figure)
