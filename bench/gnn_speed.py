r"""GNN training speed: seconds per epoch of our LightGCN module against ``torch_geometric.nn.LightGCN``.

The graph
    MovieLens 100K (``--dataset ml-100k``: ``ml-100k/u.data`` under the default MovieLens directory,
    ``../shared/data/movielens``) or 1M (``--dataset ml-1m``: ``ml-1m/ratings.dat``), or any MovieLens
    ratings file or release directory named by ``--data``; every rating is a positive (distinct
    user-item pairs), users and items are the two sides of one bipartite graph.

The contenders, same settings (64 dimensions, 3 layers, mean of the layer outputs, Adam lr 1e-3, BPR
with one uniform negative per positive, L2 1e-4), same device, the same batches
    ours   ``rec_orchestration.ml.lightgcn.LightGCN``: one step is ``bpr_loss(users, positives, negatives)``
           (one full-graph propagation: a CSR product per layer on the normalised adjacency, built once),
           backward, Adam step.
    PyG    ``torch_geometric.nn.LightGCN(n_users + n_items, 64, 3)`` as in PyG's own example: one step is
           ``forward(edge_index, edge_label_index)`` on the graph's ``edge_index`` (both directions) with
           the batch's positive and negative pairs, ``recommendation_loss(pos, neg, node_id=
           edge_label_index.unique(), lambda_reg=1e-4)``, backward, Adam step.
    PyG-CSR  the same, with the graph given as a ``torch.sparse`` CSR adjacency
           (``torch_geometric.utils.to_torch_csr_tensor(edge_index)``) instead of ``edge_index``, as PyG's
           docs advise for speed: its ``LGConv`` then multiplies by the sparse matrix instead of
           gathering and scattering messages. Reported beside the others; the headline ratio is
           against the ``edge_index`` peer.
Before timing, all start from the same ego embeddings and their propagated embeddings are compared
(they must agree: the same model, computed different ways).

Method: both in one run on one machine. The epochs' batches (shuffled positives, one negative each,
drawn like the recommender's training loader) are made once beforehand and moved to the device, and are
not timed. ``--warmup`` steps of each first (not timed), then ``--epochs`` timed epochs of each,
rotating which goes first; each epoch is timed by wall clock (the device synchronised at its end), and
the median is reported. The ratio is our seconds over PyG's (below 1: ours is faster). ``--trainer``
also times our whole ``LightGCNRecommender.fit`` through ``pl.Trainer`` (no validation split; 16-bit
mixed precision on CUDA) for the framework's share of the cost.

Output: the report, ending with ``gnn_epoch_ratio=<ours/peer> ours_s=<x> pyg_s=<y> device=<cpu|cuda>``.
With ``--json`` the figures go to stdout as one JSON object and the report to stderr. Progress goes to
stderr. Needs ``torch_geometric`` (benchmark only, not a project dependency):
``.venv/bin/pip install torch_geometric==2.8.1``.

    .venv/bin/python -m bench.gnn_speed [--dataset ml-100k|ml-1m] [--device auto|cpu|cuda] [--epochs 5]
        [--threads N] [--trainer] [--json]
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.common import MOVIELENS_DIR, argument_parser, emit, machine, say
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.lightgcn import BprEpochs, LightGCN, LightGCNRecommender
from rec_orchestration.sources.movielens import read_ratings_frame

DATASETS = {"ml-100k": "ml-100k/u.data", "ml-1m": "ml-1m/ratings.dat"}  # under the MovieLens directory
FACTORS, LAYERS, LR, REG = 64, 3, 1e-3, 1e-4


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epoch(step: Callable[[tuple[torch.Tensor, ...]], None], batches: list, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    synchronize(device)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench.gnn_speed", __doc__)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ml-100k")
    parser.add_argument("--data", type=Path, default=None,
                        help="MovieLens ratings file or release directory (default: the --dataset's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of each (5)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each first (5)")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--trainer", action="store_true", help="also time LightGCNRecommender.fit (pl.Trainer)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, the report on stderr")
    args = parser.parse_args(argv)

    try:
        from torch_geometric.nn import LightGCN as PygLightGCN
        from torch_geometric.utils import to_torch_csr_tensor
    except ImportError:
        print("gnn_speed: torch_geometric is not installed; it is the peer of this benchmark (not a project "
              "dependency). Install it with:\n    .venv/bin/pip install torch_geometric==2.8.1", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gnn_speed: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    path = args.data or MOVIELENS_DIR / DATASETS[args.dataset]
    if not path.exists():
        print(f"gnn_speed: no ratings file at {path}", file=sys.stderr)
        return 2
    interactions = Interactions.from_frame(read_ratings_frame(path).assign(weight=1.0))
    n_users, n_items = interactions.n_users, interactions.n_items
    pairs = np.unique(interactions.user_index.astype(np.int64) * n_items + interactions.item_index)
    users, items = pairs // n_items, pairs % n_items
    say(f"{path.name}: {n_users:,} users, {n_items:,} items, {len(users):,} positive pairs; device {device}")

    # The same batches for both: drawn once, as the recommender's training loader draws them.
    sampler = BprEpochs(users, items, n_items, args.batch_size, args.seed)
    epochs = [[tuple(t.to(device) for t in batch) for batch in sampler] for _ in range(args.epochs + 1)]
    warmup = epochs.pop()[:args.warmup]

    ours = LightGCN(n_users, n_items, users, items, factors=FACTORS, layers=LAYERS, lr=LR, reg=REG,
                    seed=args.seed).to(device)
    n_nodes = n_users + n_items
    edge_index = torch.from_numpy(np.stack([np.concatenate([users, items + n_users]),
                                            np.concatenate([items + n_users, users])])).to(device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse (CSR tensor support|invariant checks).*")
        adjacency = to_torch_csr_tensor(edge_index, size=(n_nodes, n_nodes))
    peers = {"edge_index": PygLightGCN(n_nodes, FACTORS, LAYERS).to(device),
             "csr": PygLightGCN(n_nodes, FACTORS, LAYERS).to(device)}
    graphs = {"edge_index": edge_index, "csr": adjacency}
    agreement = 0.0
    with torch.no_grad():
        reference = torch.cat(ours.propagate())
        for name, peer in peers.items():
            peer.embedding.weight.copy_(torch.cat([ours.user_embedding, ours.item_embedding]))
            agreement = max(agreement, float((reference - peer.get_embedding(graphs[name])).abs().max()))
    if agreement > 1e-4:
        raise SystemExit(f"the models propagate differently (max |difference| {agreement:.2e})")
    ours_optimizer = ours.configure_optimizers()
    peer_optimizers = {name: torch.optim.Adam(peer.parameters(), lr=LR) for name, peer in peers.items()}

    def ours_step(batch: tuple[torch.Tensor, ...]) -> None:
        ours_optimizer.zero_grad()
        ours.bpr_loss(*batch).backward()
        ours_optimizer.step()

    def peer_step(name: str) -> Callable[[tuple[torch.Tensor, ...]], None]:
        peer, graph, optimizer = peers[name], graphs[name], peer_optimizers[name]

        def step(batch: tuple[torch.Tensor, ...]) -> None:
            batch_users, positives, negatives = batch
            edge_label_index = torch.stack([torch.cat([batch_users, batch_users]),
                                            torch.cat([positives, negatives]) + n_users])
            optimizer.zero_grad()
            positive_rank, negative_rank = peer(graph, edge_label_index).chunk(2)
            peer.recommendation_loss(positive_rank, negative_rank, node_id=edge_label_index.unique(),
                                     lambda_reg=REG).backward()
            optimizer.step()
        return step

    steps = {"ours": ours_step, "pyg": peer_step("edge_index"), "pyg_csr": peer_step("csr")}
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        time_epoch(step, warmup, device)
    for number, batches in enumerate(epochs):
        names = list(steps)
        for name in names[number % 3:] + names[:number % 3]:
            seconds[name].append(time_epoch(steps[name], batches, device))
        say(f"epoch {number + 1}: " + ", ".join(f"{name} {values[-1]:.3f} s" for name, values in seconds.items()))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    ours_s, peer_s = median["ours"], median["pyg"]
    ratio = ours_s / peer_s

    trainer_s = None
    if args.trainer:
        say("LightGCNRecommender.fit through pl.Trainer ...")
        fitted = LightGCNRecommender(factors=FACTORS, layers=LAYERS, lr=LR, reg=REG, epochs=args.epochs,
                                     batch_size=args.batch_size, val_fraction=0.0, seed=args.seed,
                                     accelerator=device.type, num_threads=args.threads).fit(interactions)
        trainer_s = fitted.seconds_per_epoch

    threads = torch.get_num_threads()
    steps = len(epochs[0])
    report = [
        f"GNN training speed: LightGCN on {path.name} ({n_users:,} users, {n_items:,} items, {len(users):,} "
        f"edges), {FACTORS} dims, {LAYERS} layers, batch {args.batch_size} ({steps} steps/epoch), BPR 1 negative, "
        "Adam",
        f"machine: {machine()}; device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {threads} torch threads"),
        f"propagated embeddings agree before training (max |difference| {agreement:.1e})",
        "",
        f"{'':<40}{'s/epoch (median)':>18}{'ours / it':>11}",
        f"{'ours (rec_orchestration LightGCN)':<40}{ours_s:>18.3f}",
        f"{'PyG LightGCN, edge_index':<40}{peer_s:>18.3f}{ratio:>11.3f}",
        f"{'PyG LightGCN, torch.sparse CSR adjacency':<40}{median['pyg_csr']:>18.3f}"
        f"{ours_s / median['pyg_csr']:>11.3f}",
    ]
    if trainer_s is not None:
        report.append(f"{'ours through pl.Trainer (fit)':<40}{trainer_s:>18.3f}")
    report.append(f"({args.epochs} timed epochs each after {len(warmup)} warm-up steps)")
    report.append(f"gnn_epoch_ratio={ratio:.3f} ours_s={ours_s:.3f} pyg_s={peer_s:.3f} device={device.type}")

    figures = {
        "dataset": path.name, "n_users": n_users, "n_items": n_items, "edges": int(len(users)),
        "factors": FACTORS, "layers": LAYERS, "batch_size": args.batch_size, "steps_per_epoch": steps,
        "device": device.type, "torch_threads": threads, "machine": machine(),
        "ours_seconds": seconds["ours"], "pyg_seconds": seconds["pyg"], "pyg_csr_seconds": seconds["pyg_csr"],
        "ours_s": ours_s, "pyg_s": peer_s, "pyg_csr_s": median["pyg_csr"], "gnn_epoch_ratio": ratio,
        "ratio_vs_pyg_csr": ours_s / median["pyg_csr"], "trainer_seconds_per_epoch": trainer_s,
        "propagation_max_difference": agreement,
    }
    emit(report, figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
