"""LightGCN seconds per epoch at scale on this machine: the batch sized from the graph against 2,048 pairs.

Every training step propagates the embeddings over the whole graph, so with a fixed batch of 2,048 BPR
pairs an epoch's cost grows with the square of the data. ``LightGCNRecommender`` now sizes its batch so an
epoch takes at most 32 steps (``epoch_batch_size``); graphs of up to 65,536 training pairs keep 2,048
(MovieLens 100K's published split, 67,500 pairs, gets 32 steps of 2,111).

Method: ``--interactions`` distinct generated interactions (default 1M, ``bench.scale_out``'s generator:
at most interactions / 10 users and interactions / 50 items), the recommender's own ``fit`` through
Lightning with the step's thread budget (``REC_EXECUTOR``'s, default multiprocess: 1 thread on 2 cores),
``--epochs`` epochs each way, early stopping off; the median epoch (validation excluded) as the
recommender measures it. ``--fixed-epochs`` epochs with the old fixed 2,048 (0 skips it: it takes minutes).

Last line: ``lightgcn_epoch_s=<x> batch=<n> fixed_2048_epoch_s=<y> interactions=<n>``.
"""

from __future__ import annotations

import time

from bench.common import argument_parser, machine, say
from bench.scale_out import generated


def fit_seconds(interactions, epochs: int, batch_size: int | None) -> tuple[float, int, float]:
    from rec_orchestration.ml.lightgcn import LightGCNRecommender
    from rec_orchestration.threads import limited

    model = LightGCNRecommender(epochs=epochs, patience=epochs + 1, batch_size=batch_size, accelerator="cpu")
    with limited():
        started = time.perf_counter()
        model.fit(interactions)
        wall = time.perf_counter() - started
    return model.seconds_per_epoch, model.batch_size_used, wall


def main() -> None:
    parser = argument_parser("bench.gnn_epoch", __doc__)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fixed-epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    from rec_orchestration.ml.interactions import Interactions
    from rec_orchestration.threads import step_threads

    say(machine())
    interactions = Interactions.from_frame(generated(args.interactions, args.seed))
    say(f"{len(interactions):,} interactions, {interactions.n_users:,} users, {interactions.n_items:,} items; "
        f"{step_threads()} thread(s)")
    epoch, batch, wall = fit_seconds(interactions, args.epochs, None)
    print(f"sized batch {batch:,}: {epoch:.1f} s an epoch ({args.epochs} epochs, fit {wall:.0f} s with validation)")
    fixed = float("nan")
    if args.fixed_epochs:
        fixed, _, wall = fit_seconds(interactions, args.fixed_epochs, 2048)
        print(f"fixed batch 2,048: {fixed:.1f} s an epoch ({args.fixed_epochs} epoch(s), fit {wall:.0f} s)")
    print(f"lightgcn_epoch_s={epoch:.1f} batch={batch} fixed_2048_epoch_s={fixed:.1f} "
          f"interactions={len(interactions)}")


if __name__ == "__main__":
    main()
