r"""Model quality offline: every model of ``ml.registry`` on the Microsoft Recommenders MovieLens protocol.

The protocol
    data     MovieLens 100K ``u.data`` (``--dataset ml-100k``) or 1M ``ratings.dat`` (``ml-1m``, when
             present) under ``--data-dir`` (default ``../shared/data``), read in file order by
             ``sources.movielens.read_ratings_frame``; every rating is a positive (weight 1), timestamps
             kept.
    split    ``ml.splits.stratified_split(ratio=0.75, filter_by="item", seed=42)``: row for row the
             train/test sets of the ``python_stratified_split`` the published table was made with
             (``ekmixon/recommenders`` at 4ad255070ed655f365613a18b3053ca92b5451e9: each item's rows
             shuffled with ``RandomState(42)``, ``round(0.75 * n)`` of them, half to even, to train),
             not of today's upstream (one global draw, ``floor(0.75 * n)``), on the file's rows in file
             order: 75,066 train / 24,934 test rows on ml-100k; test rows of users or items missing
             from train dropped (none there).
    ranking  every item the user did not rate in train is a candidate; top ``--k`` (10).
    metrics  ``ml.metrics.evaluate``: precision@k, recall@k, nDCG@k (binary), MAP (that library's
             ``map``), catalogue coverage (distinct recommended items / items in train).

Each model is built with ``registry.build(name)`` (``registry.DEFAULTS``), fitted on train (wall clock
of ``fit``: "fit s") and evaluated once on test. With ``--tune``, a small grid per model (``GRIDS``
below) is tried on a validation split carved out of train (``ml.splits.validation_split``: the same
stratified protocol inside train); the grid point with the best validation nDCG@k is printed, refitted
on all of train, and only that model is evaluated on test. The test split never chooses anything.

The table holds only what this run measured (``ours: <model>``). For ml-100k at k=10, a separate
section after it quotes figures that no run of this script measures: the rows published on this
protocol by the Microsoft Recommenders benchmark notebook (``PUBLISHED``), and the nDCG@10 of peers run
with their published default settings as the project's benchmark brief reports them
(``QUOTED_PEERS``).

Output: the report as text, ending with ``champion_ndcg@10=<x> gnn_ndcg@10=<y>``: the best nDCG@k of
our models in this run and that of ``lightgcn`` (``nan`` when it did not run). With ``--json`` the
figures go to stdout as one JSON object and the text report to stderr. Progress goes to stderr.
Exit status 1 if a requested model could not be built or fitted (the others are still reported).

    .venv/bin/python -m bench.model_quality [--dataset ml-100k] [--models popularity,itemknn] [--tune]
        [--k 10] [--json]
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import DATA_DIR, argument_parser, emit, machine, say
from rec_orchestration.ml import registry
from rec_orchestration.ml.interactions import ITEM_ID, TIMESTAMP, USER_ID, WEIGHT, Interactions
from rec_orchestration.ml.metrics import evaluate
from rec_orchestration.ml.splits import stratified_split, validation_split
from rec_orchestration.sources.movielens import read_ratings_frame

DATASETS = {"ml-100k": "movielens/ml-100k/u.data", "ml-1m": "movielens/ml-1m/ratings.dat"}  # under the data dir
GNN = "lightgcn"

# Quoted, never measured here: both are printed in a section of their own, apart from this run's rows.
PUBLISHED_SOURCE = ("Microsoft Recommenders, examples/06_benchmarks/movielens.ipynb (MovieLens 100K, "
                    "stratified 75/25 per item, seed 42, k=10)")
# (model, MAP, nDCG@10, P@10, R@10)
PUBLISHED: tuple[tuple[str, float, float, float, float], ...] = (
    ("ALS (Spark)", 0.0033, 0.0332, 0.0385, 0.0134),
    ("SAR", 0.1140, 0.3938, 0.3406, 0.1854),
    ("NCF", 0.0952, 0.3686, 0.3269, 0.1632),
    ("BPR (cornac)", 0.1340, 0.4450, 0.3887, 0.2166),
    ("LightGCN", 0.1209, 0.4164, 0.3592, 0.1960),
    ("BiVAE", 0.1436, 0.4687, 0.4082, 0.2209),
)
QUOTED_PEERS_SOURCE = "the project's benchmark brief (peers run with their published default settings on this protocol)"
# (model, nDCG@10)
QUOTED_PEERS: tuple[tuple[str, float], ...] = (
    ("most-popular", 0.252),
    ("LightFM WARP (10 comp., lr .05, 10 ep.)", 0.406),
    ("implicit ALS defaults", 0.324),
    ("item-kNN cosine (K=20)", 0.406),
)

# Small per-model grids for --tune; a parameter the model's constructor does not take is left out.
GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {"half_life_days": [7.0, 30.0, 90.0, 365.0, 1e6]},
    "itemknn": {"neighbours": [5, 10, 20, 50, 100], "shrink_power": [0.25, 0.5, 1.0, 2.0]},
    "lightfm": {"factors": [16, 32, 64, 128], "epochs": [5, 10, 20, 30], "learning_rate": [0.05]},
    "ease": {"l2": [50.0, 100.0, 200.0, 300.0, 500.0, 800.0, 1200.0]},
    "lightgcn": {"layers": [2, 3], "reg": [1e-4, 1e-3]},  # epochs: its own early stopping on its own split
}


def load_dataset(name: str, data_dir: Path) -> pd.DataFrame:
    """The ratings as ``user_id, product_id, weight (1.0), ts`` in file order."""
    path = data_dir / DATASETS[name]
    if not path.exists():
        raise SystemExit(f"{name}: {path} not found")
    frame = read_ratings_frame(path)
    frame[WEIGHT] = 1.0
    return frame[[USER_ID, ITEM_ID, WEIGHT, TIMESTAMP]]


def grid_for(name: str) -> list[dict[str, Any]]:
    """The grid points of ``name`` restricted to the parameters its constructor accepts."""
    grid = GRIDS.get(name, {})
    try:
        accepted = inspect.signature(registry.model_class(name).__init__).parameters
        grid = {key: values for key, values in grid.items() if key in accepted}
    except (AttributeError, ImportError, ValueError):
        pass
    keys = sorted(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[key] for key in keys))]


def fit_and_evaluate(name: str, params: dict[str, Any], train: pd.DataFrame, test: pd.DataFrame,
                     k: int) -> dict[str, Any]:
    interactions = Interactions.from_frame(train)
    model = registry.build(name, **params)
    started = time.perf_counter()
    model.fit(interactions)
    fit_seconds = time.perf_counter() - started
    return {"fit_seconds": fit_seconds, **evaluate(model, interactions, test, k=k)}


def tune(name: str, train: pd.DataFrame, k: int, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid point of best validation nDCG@k (``{}``: the defaults, if the model has no grid)."""
    points = grid_for(name)
    if not points:
        return {}, []
    fit_part, validation = validation_split(train, how="stratified", seed=seed)
    trials = []
    for params in points:
        result = fit_and_evaluate(name, params, fit_part, validation, k)
        trials.append({"params": params, f"ndcg@{k}": result[f"ndcg@{k}"], "fit_seconds": result["fit_seconds"]})
        say(f"  tune {name} {params}: validation nDCG@{k} {result[f'ndcg@{k}']:.4f} "
            f"(fit {result['fit_seconds']:.1f}s)")
    best = max(trials, key=lambda trial: trial[f"ndcg@{k}"])
    return best["params"], trials


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def quoted() -> list[str]:
    """The published figures (ml-100k, k=10), in a section of their own: quotes, not measurements."""
    w = max(len(name) for name, *_ in (*PUBLISHED, *QUOTED_PEERS)) + 2
    lines = ["", "published figures, quoted (not measured by this run):",
             f"  from {PUBLISHED_SOURCE}:",
             f"  {'model':<{w}} {'MAP':>7} {'nDCG@10':>8} {'P@10':>7} {'R@10':>7}"]
    for name, map_, ndcg, precision, recall in PUBLISHED:
        lines.append(f"  {name:<{w}} {fmt(map_):>7} {fmt(ndcg):>8} {fmt(precision):>7} {fmt(recall):>7}")
    lines.append(f"  from {QUOTED_PEERS_SOURCE}, nDCG@10 only:")
    for name, ndcg in QUOTED_PEERS:
        lines.append(f"  {name:<{w}} {'-':>7} {fmt(ndcg, 3):>8}")
    return lines


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]], failures: dict[str, str],
           split_info: dict[str, int]) -> list[str]:
    k = args.k
    w = max(len("model"), *(len(f"ours: {name}") for name in [*results, *failures]))
    lines = [
        f"model quality, {args.dataset}: stratified {args.ratio:.2f}/{1 - args.ratio:.2f} per item, seed "
        f"{args.seed} (the published table's splitter: each item shuffled, round(ratio*n) to train); "
        f"train {split_info['train_rows']} rows, test {split_info['test_rows']} rows "
        f"({split_info['test_users']} users, {split_info['test_items']} items); "
        f"catalogue {split_info['train_items']} items; k={k}; {machine()}",
        "",
        "measured in this run:",
        f"{'model':<{w}} {'MAP':>7} {f'nDCG@{k}':>8} {f'P@{k}':>7} {f'R@{k}':>7} {'cover':>7} {'fit s':>7}  params",
    ]
    for name, result in results.items():
        lines.append(
            f"{'ours: ' + name:<{w}} {fmt(result['map']):>7} {fmt(result[f'ndcg@{k}']):>8} "
            f"{fmt(result[f'precision@{k}']):>7} {fmt(result[f'recall@{k}']):>7} {fmt(result['coverage']):>7} "
            f"{fmt(result['fit_seconds'], 1):>7}  {json.dumps(result['params'], sort_keys=True)}")
    for name, reason in failures.items():
        lines.append(f"{'ours: ' + name:<{w}} failed: {reason}")
    for name, result in results.items():
        if result["users_without_recommendations"]:
            lines.append(f"note: {name} returned nothing for {result['users_without_recommendations']} "
                         "test users (left out of the means)")
    if args.tune:
        lines.append("")
        lines.append("--tune: chosen on a validation split carved out of train (best validation nDCG):")
        for name, result in results.items():
            grid = {key: values for key, values in GRIDS.get(name, {}).items()
                    if any(key in trial["params"] for trial in result.get("trials", []))}
            lines.append(f"  {name}: grid {json.dumps(grid, sort_keys=True)} -> "
                         f"{json.dumps(result['params'], sort_keys=True)}")
    if args.dataset == "ml-100k" and k == 10:
        lines += quoted()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench.model_quality", __doc__)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ml-100k")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--models", default=",".join(registry.EVALUATED_NAMES),
                        help=f"comma-separated, of: {', '.join(registry.EVALUATED_NAMES)}")
    parser.add_argument("--tune", action="store_true", help="choose hyper-parameters on a validation split of train")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ratio", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, report on stderr")
    args = parser.parse_args(argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in models if name not in registry.EVALUATED_NAMES]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(registry.EVALUATED_NAMES)}")

    frame = load_dataset(args.dataset, args.data_dir)
    train, test = stratified_split(frame, ratio=args.ratio, filter_by="item", seed=args.seed)
    split_info = {"train_rows": len(train), "test_rows": len(test), "test_users": int(test[USER_ID].nunique()),
                  "test_items": int(test[ITEM_ID].nunique()), "train_items": int(train[ITEM_ID].nunique())}
    say(f"{args.dataset}: {len(frame)} ratings; train {len(train)}, test {len(test)}")

    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for name in models:
        try:
            params, trials = tune(name, train, args.k, args.seed) if args.tune else ({}, [])
            say(f"{name}: fit on train {json.dumps(params, sort_keys=True) if params else '(defaults)'}")
            result = fit_and_evaluate(name, params, train, test, args.k)
        except Exception as error:  # noqa: BLE001 - one model's failure must not hide the others' figures
            traceback.print_exc(file=sys.stderr)
            failures[name] = f"{type(error).__name__}: {error}"
            continue
        results[name] = {"params": {**registry.DEFAULTS.get(name, {}), **params}, "trials": trials, **result}
        say(f"{name}: nDCG@{args.k} {result[f'ndcg@{args.k}']:.4f}, fit {result['fit_seconds']:.1f}s")

    champion = max((result[f"ndcg@{args.k}"] for result in results.values()), default=float("nan"))
    gnn = results[GNN][f"ndcg@{args.k}"] if GNN in results else float("nan")
    lines = report(args, results, failures, split_info)
    lines.append(f"champion_ndcg@{args.k}={champion:.4f} gnn_ndcg@{args.k}={gnn:.4f}")
    emit(lines, {
        "dataset": args.dataset, "k": args.k, "split": split_info, "models": results, "failures": failures,
        f"champion_ndcg@{args.k}": None if math.isnan(champion) else champion,
        f"gnn_ndcg@{args.k}": None if math.isnan(gnn) else gnn, "machine": machine(),
        "published": [dict(zip(("model", "map", "ndcg@10", "precision@10", "recall@10"), row, strict=True))
                      for row in PUBLISHED],
        "published_source": PUBLISHED_SOURCE,
        "quoted_peers": {"source": QUOTED_PEERS_SOURCE,
                         "rows": [{"model": name, "ndcg@10": ndcg} for name, ndcg in QUOTED_PEERS]},
    }, args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
