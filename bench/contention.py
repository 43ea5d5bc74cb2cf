"""Thread contention: LightGCN seconds per epoch with one core kept busy by another process, over idle.

A model step rarely has the machine to itself: under the multiprocess executor the model steps run side
by side, and a shared machine has neighbours. Torch starts one thread per core; when another process
holds one of them, a thread that waits for a descheduled peer slows every step of the epoch. The
project's thread budget (``rec_orchestration.threads``) gives each step its share of the cores instead.

Method: MovieLens 100K (``ml-100k/u.data`` under the default MovieLens directory, or ``--data``), every
rating a positive; our LightGCN module (64 dimensions, 3 layers, the recommender's BPR batches of 2,048,
drawn once beforehand), trained for ``--epochs`` timed epochs after a warm-up, median seconds per epoch,
in four conditions: {the step's thread budget under the multiprocess executor, torch's default of one
thread per core} x {idle, one core kept busy by a spinning process}. Same process, same batches.

Last line: ``contention_slowdown=<busy/idle with the budget> default_slowdown=<busy/idle with torch's
default> budget_threads=<n> default_threads=<n>``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import MOVIELENS_DIR, argument_parser, machine, say
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.lightgcn import BprEpochs, LightGCN
from rec_orchestration.sources.movielens import read_ratings_frame
from rec_orchestration.threads import step_threads

SPIN = "while True:\n    pass\n"


def epoch_seconds(model: LightGCN, optimizer: torch.optim.Optimizer, batches: list, epochs: int) -> float:
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        for users, positives, negatives in batches:
            optimizer.zero_grad()
            model.bpr_loss(users, positives, negatives).backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argument_parser("bench.contention", __doc__)
    parser.add_argument("--data", type=Path, default=MOVIELENS_DIR / "ml-100k" / "u.data")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    say(machine())
    interactions = Interactions.from_frame(read_ratings_frame(args.data).assign(weight=1.0))
    n_users, n_items = interactions.n_users, interactions.n_items
    pairs = np.unique(interactions.user_index.astype(np.int64) * n_items + interactions.item_index)
    users, items = pairs // n_items, pairs % n_items
    batches = list(BprEpochs(users, items, n_items, 2048, args.seed))
    budget = step_threads("multiprocess")
    default = torch.get_num_threads()
    say(f"{args.data.name}: {len(users):,} positive pairs, {len(batches)} batches an epoch; "
        f"budget {budget} thread(s), torch's default {default}")

    results: dict[tuple[str, str], float] = {}
    for load in ("idle", "busy"):
        spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if load == "busy" else None
        try:
            time.sleep(0.5 if spinner else 0)
            for name, threads in (("budget", budget), ("default", default)):
                torch.set_num_threads(threads)
                model = LightGCN(n_users, n_items, users, items, factors=64, layers=3, lr=1e-3, reg=1e-4,
                                 seed=args.seed)
                optimizer = model.configure_optimizers()
                epoch_seconds(model, optimizer, batches[:10], 1)  # warm-up
                results[name, load] = epoch_seconds(model, optimizer, batches, args.epochs)
                say(f"  {load:4} {name:7} ({threads} thread(s)): {results[name, load]:.2f} s/epoch")
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    torch.set_num_threads(default)
    budget_slowdown = results["budget", "busy"] / results["budget", "idle"]
    default_slowdown = results["default", "busy"] / results["default", "idle"]
    print("LightGCN s/epoch on ml-100k:")
    for (name, load), seconds in results.items():
        print(f"  {name:7} {load:4} {seconds:.2f}")
    print(f"contention_slowdown={budget_slowdown:.2f} default_slowdown={default_slowdown:.2f} "
          f"budget_threads={budget} default_threads={default}")


if __name__ == "__main__":
    main()
