"""Scoring every user on the distributed engine: one dask worker against two, on this machine.

What is timed is the work of the scoring shards (``assets/scoring.py``) as dask tasks: each of the shards
loads the champion's artifact from the model store and the interactions, takes the users of its shard by
the stable hash (``ml.serving.user_shards``), scores them (``Recommender.recommend``, what was seen left
out) and assembles each user's top k (``ml.serving.assemble``, popularity fallback). The same tasks run on a
local cluster of one worker process, then of two (one thread each, as ``REC_DASK_WORKERS`` starts them);
each run is timed from submission to the last result, cluster start-up excluded, best of ``--repeats``.
Not timed here: the steps' PostgreSQL reads and writes, and Dagster's step start (both the same per shard
on one worker or two).

Data: ``--interactions`` distinct generated interactions (default 1M; at most interactions / 10 users and
interactions / 50 items, power-law activity and popularity), a LightFM champion fitted on them (its fit not timed).

Last line: ``scale_out_speedup=<t1/t2> shards=<n> users=<u> one_worker_s=<t1> two_workers_s=<t2>``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import argument_parser, machine, power_law, say

K = 20


def generated(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    """``n`` distinct (user, product) interactions: drawn twice over, repeats dropped, the first ``n`` kept."""
    draws = 2 * n
    users = power_law(rng, max(n // 10, 1), 0.9, draws).astype(np.int64)
    items = power_law(rng, max(n // 50, 1), 1.1, draws).astype(np.int64)
    frame = pd.DataFrame({"user_id": users + 1, "product_id": items + 1, "weight": 1.0,
                          "ts": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
                              rng.integers(0, 365 * 86400, draws), unit="s")})
    return frame.drop_duplicates(["user_id", "product_id"]).head(n).reset_index(drop=True)


def score_shard(shard: int, shards: int, store_root: str, version: str, interactions_path: str) -> int:
    """One scoring shard's work, on a worker: what ``assets/scoring.py`` does between its reads and write."""
    from rec_orchestration.ml import registry
    from rec_orchestration.ml.artifacts import ModelStore
    from rec_orchestration.ml.interactions import Interactions
    from rec_orchestration.ml.popularity import PopularityRecommender
    from rec_orchestration.ml.serving import ServingInputs, Source, assemble, user_shards
    from rec_orchestration.threads import limited

    frame = pd.read_parquet(interactions_path)
    interactions = Interactions.from_frame(frame)
    seen = interactions.items_by_user()
    state, _ = ModelStore(store_root).load("lightfm", version)
    champion = registry.model_class("lightfm").from_state_dict(state)
    popular = PopularityRecommender().fit(interactions)
    users = interactions.user_ids
    mine = users[user_shards(users, shards) == shard]
    with limited():
        personal = champion.recommend(mine, K, exclude=seen)
        fallback = popular.recommend(mine, 2 * K, exclude=seen)
    inputs = ServingInputs(k=K, min_interactions=3, seen=seen, personal=personal, champion=Source("lightfm", version),
                           popular=fallback, popularity=Source("popularity", "bench"), category_ranking={},
                           category_scores={}, item_categories={})
    return sum(1 for _ in assemble(mine, inputs))


def timed_on(workers: int, shards: int, arguments: tuple, repeats: int) -> tuple[float, int]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        client.run(lambda: __import__("rec_orchestration.ml.serving"))  # imports paid before the clock
        best, rows = float("inf"), 0
        for _ in range(repeats):
            started = time.perf_counter()
            futures = [client.submit(score_shard, shard, shards, *arguments, pure=False) for shard in range(shards)]
            rows = sum(client.gather(futures))
            best = min(best, time.perf_counter() - started)
            say(f"  {workers} worker(s): {time.perf_counter() - started:.1f} s, {rows:,} rows")
    return best, rows


def main() -> None:
    parser = argument_parser("bench.scale_out", __doc__)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("REC_STEP_THREADS", "1")  # one thread per worker process, as dask's nanny sets
    from rec_orchestration.ml.artifacts import ModelStore
    from rec_orchestration.ml.factorization import LightFMRecommender
    from rec_orchestration.ml.interactions import Interactions

    say(machine())
    frame = generated(args.interactions, args.seed)
    interactions = Interactions.from_frame(frame)
    say(f"{len(frame):,} interactions, {interactions.n_users:,} users, {interactions.n_items:,} items")
    with tempfile.TemporaryDirectory(prefix="scale_out_") as scratch:
        path = Path(scratch) / "interactions.parquet"
        frame.to_parquet(path)
        started = time.perf_counter()
        model = LightFMRecommender(factors=64, epochs=2, num_threads=1).fit(interactions)
        say(f"champion (LightFM, 2 epochs) fitted in {time.perf_counter() - started:.0f} s (not timed)")
        store = ModelStore(str(Path(scratch) / "store"))
        store.save("lightfm", "bench", model.state_dict(), {"bench": True})
        arguments = (store.root_url, "bench", str(path))
        one, rows_one = timed_on(1, args.shards, arguments, args.repeats)
        two, rows_two = timed_on(2, args.shards, arguments, args.repeats)
    if rows_one != rows_two:
        sys.exit(f"one worker made {rows_one} rows, two made {rows_two}")
    print(f"scoring {interactions.n_users:,} users in {args.shards} shards: one worker {one:.1f} s, "
          f"two workers {two:.1f} s (best of {args.repeats})")
    print(f"scale_out_speedup={one / two:.2f} shards={args.shards} users={interactions.n_users} "
          f"one_worker_s={one:.1f} two_workers_s={two:.1f}")


if __name__ == "__main__":
    main()
