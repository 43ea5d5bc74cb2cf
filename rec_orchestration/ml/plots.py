"""PNG plots for the UI: a model's training curve and the metric comparison across models."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

# The Dagster UI shows a Markdown metadata value in place, images included, only when it is shorter than
# 1,000 characters (dagster-webserver 1.13: MetadataEntry's ``expandSmallValues`` in the asset's overview and
# events); a longer one sits behind a "[Show Markdown]" link. The charts below are SVG sized to fit.
INLINE_MARKDOWN_LIMIT = 1000
_SVG_HEAD = "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>"


def markdown_image(png: bytes, alt: str) -> str:
    """A PNG inlined as Markdown (a data URI): the full-size plot, behind the UI's "[Show Markdown]" link."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _svg_markdown(svg: str, alt: str) -> str:
    """``svg`` as a Markdown image; a ValueError if it is too long to be shown in place."""
    markdown = f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"
    if len(markdown) >= INLINE_MARKDOWN_LIMIT:
        raise ValueError(f"inline chart of {len(markdown)} characters: the UI would hide it behind a link")
    return markdown


def _label(text: str, limit: int = 16) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "~"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def inline_bars(values: Mapping[str, float], title: str, *, highlight: str | None = None) -> str:
    """Markdown of a horizontal bar chart, best first, that the Dagster UI shows in place: as many of the
    best bars (at most 8; labels cut to 16 characters) as fit in 1,000 characters; ``highlight`` in red."""
    ranked = sorted(values.items(), key=lambda kv: -kv[1])[:8]
    top = max((v for _, v in ranked), default=0.0) or 1.0
    while True:
        paths: dict[str, str] = {"steelblue": "", "tomato": ""}
        labels = [f"<text x='0' y='11'>{_label(title, 40)}</text>"]
        for i, (name, value) in enumerate(ranked):
            y, width = 16 + 15 * i, max(round(150 * value / top), 1)
            paths["tomato" if name == highlight else "steelblue"] += f"M130 {y}h{width}v11H130z"
            labels.append(f"<text x='0' y='{y + 10}'>{_label(name)} {value:.3f}</text>")
        svg = (_SVG_HEAD.format(w=290, h=20 + 15 * len(ranked))
               + "".join(f"<path fill='{colour}' d='{d}'/>" for colour, d in paths.items() if d)
               + "".join(labels) + "</svg>")
        try:
            return _svg_markdown(svg, "chart")
        except ValueError:
            if len(ranked) <= 1:
                raise
            ranked = ranked[:-1]


def inline_curve(history: Sequence[Mapping[str, Any]], title: str) -> str:
    """Markdown of a training curve the Dagster UI shows in place: train loss (blue) and the validation or
    held-out metric (orange) per epoch, each scaled to its own range; at most 24 epochs drawn, fewer where
    that does not fit in 1,000 characters."""
    for points in (24, 16, 10):
        try:
            return _curve(history, title, points)
        except ValueError:
            continue
    return _curve(history, title, 5)


def _curve(history: Sequence[Mapping[str, Any]], title: str, points: int) -> str:
    step = max(1, -(-len(history) // points))
    rows = list(history[::step]) + ([history[-1]] if (len(history) - 1) % step else [])
    metric = next((key for row in history for key in row if key.startswith(("val_", "held_out_"))), None)
    lines, legend = [], []
    for key, colour in (("train_loss", "steelblue"), (metric, "darkorange")):
        series = [(int(row["epoch"]), float(row[key])) for row in rows if key and row.get(key) == row.get(key)]
        if not series:
            continue
        low, high = min(v for _, v in series), max(v for _, v in series)
        last_epoch = max(int(history[-1]["epoch"]), 1)
        xy = " ".join(f"{round(250 * e / last_epoch)},{round(70 - 68 * (v - low) / ((high - low) or 1))}"
                      for e, v in series)
        lines.append(f"<polyline fill='none' stroke='{colour}' points='{xy}'/>")
        legend.append(f"<text x='0' y='{98 + 12 * len(legend)}' fill='{colour}'>{key} {series[0][1]:.3f} to "
                      f"{series[-1][1]:.3f}</text>")
    svg = (_SVG_HEAD.format(w=260, h=100 + 12 * len(legend)) + f"<text x='0' y='9'>{_label(title, 40)}</text>"
           + f"<g transform='translate(5,14)'>{''.join(lines)}</g>" + "".join(legend) + "</svg>")
    return _svg_markdown(svg, "chart")


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def training_curve(history: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Training loss and validation metric per epoch (``history``: dicts with epoch, train_loss, and val_* or
    held_out_* metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, loss_axis = plt.subplots(figsize=(6, 3.2))
    loss_axis.plot(epochs, [row.get("train_loss") for row in history], color="tab:blue", label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    val_keys = sorted({key for row in history for key in row if key.startswith(("val_", "held_out_"))})
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
