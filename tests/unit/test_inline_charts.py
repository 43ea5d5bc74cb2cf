"""Charts the Dagster UI draws in place: Markdown images under the 1,000 characters below which
dagster-webserver renders a Markdown metadata value instead of a "[Show Markdown]" link."""

from __future__ import annotations

import base64
import math
import re

from rec_orchestration.ml.plots import INLINE_MARKDOWN_LIMIT, inline_bars, inline_curve


def svg_of(markdown: str) -> str:
    assert markdown.startswith("![chart](data:image/svg+xml;base64,") and markdown.endswith(")")
    return base64.b64decode(markdown.split("base64,", 1)[1][:-1]).decode()


def test_the_model_chart_names_every_model_with_its_value_best_first_and_fits_in_place():
    ndcg = {"popularity": .2358, "popularity_plain": .2511, "itemknn": .4147, "lightfm": .4487,
            "lightgcn": .4563, "ease": .4827}
    markdown = inline_bars(ndcg, "nDCG@10, held-out latest interaction", highlight="ease")
    assert len(markdown) < INLINE_MARKDOWN_LIMIT
    svg = svg_of(markdown)
    labels = re.findall(r">([\w]+) (\d\.\d{3})</text>", svg)
    assert labels == [(name, f"{value:.3f}") for name, value in sorted(ndcg.items(), key=lambda kv: -kv[1])]
    widths = [int(w) for w in re.findall(r"M130 \d+h(\d+)v11H130z", svg.replace("'/><path", "'/>\n<path"))]
    assert max(widths) == 150 and svg.count("fill='tomato'") == 1  # the best bar full width; one highlighted


def test_bars_that_do_not_fit_are_dropped_weakest_first_rather_than_the_chart_hidden(monkeypatch):
    from rec_orchestration.ml import plots

    values = {f"model_{i}_with_a_long_name": i / 10 for i in range(8)}
    everything = re.findall(r">(model_\d)_with_a_~ (\d\.\d{3})</text>", svg_of(inline_bars(values, "nDCG@10")))
    assert [name for name, _ in everything] == [f"model_{i}" for i in range(7, -1, -1)]  # cut to 16 characters
    monkeypatch.setattr(plots, "INLINE_MARKDOWN_LIMIT", 700)  # as if the names were longer still
    markdown = inline_bars(values, "nDCG@10")
    kept = re.findall(r">(model_\d)_with_a_~ (\d\.\d{3})</text>", svg_of(markdown))
    assert len(markdown) < 700 and 1 <= len(kept) < 8
    assert kept == everything[:len(kept)]  # the best ones, in order


def test_a_long_training_curve_is_thinned_to_fit_and_keeps_its_first_and_last_values():
    history = [{"epoch": i, "train_loss": 0.69 * math.exp(-i / 40), "val_ndcg": 0.3 * (1 - math.exp(-i / 30))}
               for i in range(300)]
    markdown = inline_curve(history, "lightgcn training")
    assert len(markdown) < INLINE_MARKDOWN_LIMIT
    svg = svg_of(markdown)
    assert svg.count("<polyline") == 2
    assert f"train_loss {history[0]['train_loss']:.3f} to {history[-1]['train_loss']:.3f}" in svg
    assert f"val_ndcg {history[0]['val_ndcg']:.3f} to {history[-1]['val_ndcg']:.3f}" in svg
    last_point = re.findall(r"points='([^']+)'", svg)[0].split()[-1]
    assert last_point.startswith("250,")  # drawn to the last epoch


def test_lightfm_held_out_metric_is_drawn_under_its_own_name():
    history = [{"epoch": i, "train_loss": 1 / (i + 1), "held_out_ndcg": i / 10} for i in range(10)]
    svg = svg_of(inline_curve(history, "lightfm training"))
    assert "held_out_ndcg 0.000 to 0.900" in svg
