r"""Ranking every item for many users with a factor model: tile by tile against a block of users at a time.

What the scoring step does for LightFM and LightGCN (``Recommender.recommend``): each user's top ``--k``
(10) of ``--items`` (200,000) by ``user . item + bias`` (``--factors`` 16), each user's ``--seen`` (10)
items left out, ties to the lower item index. Random float32 vectors, the sizes of the 10M pipeline bench.

The contenders, each on ``--threads`` threads (default 1; BLAS on as many)
    ours        ``ml.selection.top_k_dot``: a float32 matmul of 256 users x 2,048 items at a time (the bias
                a column of the item side), folded into each user's heap of k while in the cache.
    block       what the scoring step did before: ``users @ items.T + bias`` for 256 users at once (205 MB
                of scores at 200,000 items), seen items set to ``-inf``, then ``ml.selection.top_k_rows``.
    argpartition  the usual numpy way (the peer): the same block of scores, ``np.argpartition`` of the k
                best, those k sorted; it breaks ties at the cut-off arbitrarily.

Method: one untimed run of each on the first 256 users (compilation, first-call costs), then ``--rounds``
(3) rounds over ``--users`` (8,192) users, alternating which goes first; the best seconds of each are
compared. Agreement: the fraction of users whose k items and order are the same as ours.

Output: a table (seconds per 1,000 users, agreement), the machine, and a last line
``scoring_speedup=<block / ours> vs_argpartition=<argpartition / ours> same_top_k=<block's agreement>``.

    .venv/bin/python -m bench.scoring [--users 8192] [--items 200000] [--factors 16] [--k 10] [--seen 10]
        [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from bench.common import argument_parser, code_commit, machine, say
from rec_orchestration.ml.selection import top_k_dot, top_k_rows

BLOCK = 256  # users per block of the block-at-once contenders (what ml.base.USER_BATCH was for this)


def block_scores(users: np.ndarray, items: np.ndarray, bias: np.ndarray, seen_ptr: np.ndarray,
                 seen_idx: np.ndarray, start: int) -> np.ndarray:
    scores = users[start:start + BLOCK] @ items.T + bias
    for row in range(len(scores)):
        scores[row, seen_idx[seen_ptr[start + row]:seen_ptr[start + row + 1]]] = -np.inf
    return scores


def block_top_k(users, items, bias, k, seen_ptr, seen_idx, threads) -> np.ndarray:
    return np.concatenate([top_k_rows(block_scores(users, items, bias, seen_ptr, seen_idx, start), k, threads)[0]
                           for start in range(0, len(users), BLOCK)])


def argpartition_top_k(users, items, bias, k, seen_ptr, seen_idx, threads) -> np.ndarray:
    out = []
    for start in range(0, len(users), BLOCK):
        scores = block_scores(users, items, bias, seen_ptr, seen_idx, start)
        best = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
        out.append(np.take_along_axis(best, order, axis=1))
    return np.concatenate(out)


def ours(users, items, bias, k, seen_ptr, seen_idx, threads) -> np.ndarray:
    return top_k_dot(users, items, bias, k, seen_ptr, seen_idx, threads)[0]


def main() -> None:
    parser = argument_parser("bench.scoring", __doc__)
    parser.add_argument("--users", type=int, default=8192)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--factors", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seen", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    users = rng.standard_normal((args.users, args.factors), dtype=np.float32)
    items = rng.standard_normal((args.items, args.factors), dtype=np.float32)
    bias = rng.standard_normal(args.items, dtype=np.float32)
    seen_idx = np.sort(rng.integers(0, args.items, size=(args.users, args.seen)), axis=1).ravel()
    seen_ptr = np.arange(args.users + 1, dtype=np.int64) * args.seen
    contenders: dict[str, Callable[..., np.ndarray]] = {
        "ours": ours, "block": block_top_k, "argpartition": argpartition_top_k}
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    answers: dict[str, np.ndarray] = {}
    with threadpool_limits(args.threads):
        for function in contenders.values():  # compilation and first-call costs, untimed
            function(users[:BLOCK], items, bias, args.k, seen_ptr[:BLOCK + 1], seen_idx, args.threads)
        for round_number in range(args.rounds):
            names = list(contenders) if round_number % 2 == 0 else list(reversed(contenders))
            for name in names:
                started = time.perf_counter()
                answers[name] = contenders[name](users, items, bias, args.k, seen_ptr, seen_idx, args.threads)
                seconds[name].append(time.perf_counter() - started)
                say(f"round {round_number + 1} {name}: {seconds[name][-1]:.2f} s")
    best = {name: min(values) for name, values in seconds.items()}
    agree = {name: float((answers[name] == answers["ours"]).all(axis=1).mean()) for name in contenders}
    print(f"{args.users:,} users x {args.items:,} items, {args.factors} factors, k={args.k}, {args.seen} seen each, "
          f"{args.threads} thread(s); code {code_commit()}")
    print(f"{'contender':14} {'s / 1,000 users':>16} {'same top k as ours':>19}")
    for name in contenders:
        print(f"{name:14} {1000 * best[name] / args.users:16.3f} {agree[name]:19.4f}")
    print(machine())
    print(f"scoring_speedup={best['block'] / best['ours']:.2f} "
          f"vs_argpartition={best['argpartition'] / best['ours']:.2f} same_top_k={agree['block']:.4f}")


if __name__ == "__main__":
    main()
