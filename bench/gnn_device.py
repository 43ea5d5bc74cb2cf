"""The GNN on a GPU: proof that it trains there, its epoch time against the CPU's, and that the artifact
loads on a CPU.

Fits ``LightGCNRecommender`` (the pipeline's model, through ``pl.Trainer``) on MovieLens 100K for a fixed
number of epochs on CUDA (16-bit mixed precision) and on the CPU, saves the CUDA model, loads it with
``torch.load(weights_only=True, map_location="cpu")`` and checks it scores exactly as before.
Exits 2 when no CUDA device is present (run it on the device machine). Last line:
``gnn_gpu_s_per_epoch=<x> gnn_cpu_s_per_epoch=<y> cpu_over_gpu=<y/x> device=<name>``.

    .venv/bin/python -m bench.gnn_device [--epochs 20] [--data PATH]

``--data``: a MovieLens ratings file or release directory (default: ``ml-100k/u.data`` of the default
MovieLens directory, ``../shared/data/movielens``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import MOVIELENS_DIR, argument_parser
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.lightgcn import LightGCNRecommender
from rec_orchestration.sources.movielens import read_ratings_frame

DEFAULT_DATA = MOVIELENS_DIR / "ml-100k" / "u.data"


def fit(data: Interactions, accelerator: str, epochs: int) -> LightGCNRecommender:
    # patience above epochs: both devices run the same number of epochs
    return LightGCNRecommender(accelerator=accelerator, epochs=epochs, patience=epochs + 1).fit(data)


def main() -> int:
    parser = argument_parser("bench.gnn_device", __doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="MovieLens ratings file or release directory (default: MovieLens 100K's u.data)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs on each device (20)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: run this on the device machine", file=sys.stderr)
        return 2
    frame = read_ratings_frame(args.data)
    frame["weight"] = 1.0
    data = Interactions.from_frame(frame)
    gpu = fit(data, "cuda", args.epochs)
    cpu = fit(data, "cpu", args.epochs)
    assert gpu.device_used == "cuda", gpu.device_used
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lightgcn.pt")
        gpu.save(path)
        restored = LightGCNRecommender.load(path, map_location="cpu")
    users = np.arange(min(100, data.n_users))
    same = np.array_equal(restored.score_users(users), gpu.score_users(users))
    name = torch.cuda.get_device_name(0)
    print(f"data: {args.data} ({data.n_users} users, {data.n_items} items, {len(data)} interactions)")
    print(f"GPU {name}: {gpu.seconds_per_epoch:.3f} s/epoch, best val nDCG@20 {gpu.best_val_ndcg:.4f}")
    print(f"CPU ({os.cpu_count()} cores): {cpu.seconds_per_epoch:.3f} s/epoch, "
          f"best val nDCG@20 {cpu.best_val_ndcg:.4f}")
    print(f"GPU artifact loaded on the CPU (weights_only) scores identically: {same}")
    print(f"gnn_gpu_s_per_epoch={gpu.seconds_per_epoch:.4f} gnn_cpu_s_per_epoch={cpu.seconds_per_epoch:.4f} "
          f"cpu_over_gpu={cpu.seconds_per_epoch / gpu.seconds_per_epoch:.2f} device={name.replace(' ', '_')}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
