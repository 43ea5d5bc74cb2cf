r"""Item-item similarity speed: ``cosine_top_n_sparse`` against scikit-learn's brute-force kNN, in one run.

The data
    ``--dataset generated`` (the default): 1M interactions (``--rows``) drawn like the generated reviews
    of ``bench.warehouse`` (``bench.common``: 100,000 users with power-law activity, exponent 0.5; 20,000
    items with power-law popularity, exponent 0.7), the scale the project's other benchmarks use.
    Or MovieLens ratings (``ml-1m`` or ``ml-100k`` under the default MovieLens directory,
    ``../shared/data/movielens``, or a path to a ``ratings.dat`` / ``u.data`` / ``ratings.csv`` file or
    its directory, read by ``sources.movielens.read_ratings_frame``), as a users x items CSR matrix
    (float32). Every rating is a positive (``--values binary``, the default, as in the model-quality
    protocol: each entry is 1), or the entry is the rating itself (``--values rating``). The data are
    read, never copied into the repository.

The contenders, both asked for the ``--n`` (50) most cosine-similar items of every item
    ours   ``cosine_top_n_sparse(X, n)`` on the users x items matrix: column normalisation, the blocked
           symmetric product and the exact top-n (ties to the lower index), only positive scores.
    peer   ``NearestNeighbors(n_neighbors=n + 1, metric="cosine", algorithm="brute").fit(X.T)
           .kneighbors(X.T)`` on the items x users matrix (built beforehand, not timed), then each item
           itself dropped (or the last neighbour, if the item is not in its own list).

Method: one untimed run of each first (imports, first-call costs; its answers are the ones compared),
then ``--rounds`` rounds (default 3) alternating which goes first; the best (minimum) seconds of each
are compared, medians shown beside them. Speed-up = peer seconds / our seconds (above 1: ours is
faster). Goal: ``similarity_speedup >= 5``.

Agreement, over all items: neighbours of zero cosine are left out of the peer's lists (ours never keeps
them). Near-ties at the cut may be resolved differently (the peer breaks exact ties arbitrarily, ours
by the lower item index), so besides the fraction of identical neighbour sets the report gives the
fraction of items whose two lists have the same score at every rank (within 1e-5: the only
differences are items tied at the cut), the mean Jaccard index of the sets, and the largest absolute
difference between our score and the peer's ``1 - distance`` over the neighbours both lists share.

Output: the report as text (a small table: figure, the peer's figure, their ratio; the machine),
whose last line is ``similarity_speedup=<peer/ours> same_neighbours=<fraction of identical sets>
same_up_to_ties=<fraction with the same score at every rank>``.
With ``--json`` the figures go to stdout as one JSON object and the text report to stderr.

    .venv/bin/python -m bench.similarity [--dataset generated|ml-1m|ml-100k|PATH] [--rows 1000000] [--n 50]
        [--rounds 3] [--values binary|rating] [--json]
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy
import scipy.sparse as sp
import sklearn
from sklearn.neighbors import NearestNeighbors

from bench.common import MOVIELENS_DIR, argument_parser, emit, machine, power_law, say
from rec_orchestration.ml.interactions import ITEM_ID, USER_ID
from rec_orchestration.ml.similarity import ItemNeighbours, cosine_top_n_sparse
from rec_orchestration.sources.movielens import RATINGS_FILES, read_ratings_frame

SCORE_TOLERANCE = 1e-5


# -- the data ----------------------------------------------------------------------------------------

def ratings_file(dataset: str) -> Path:
    """The ratings file of ``dataset``: a MovieLens release under the default MovieLens directory
    (``ml-1m``, ``ml-100k``), or a path to a ratings file or its directory."""
    path = Path(dataset)
    if not path.exists():
        path = MOVIELENS_DIR / dataset
    if path.is_dir():
        found = [path / name for name in RATINGS_FILES if (path / name).is_file()]
        if not found:
            raise SystemExit(f"no ratings file ({', '.join(RATINGS_FILES)}) in {path}")
        path = found[0]
    if not path.is_file():
        raise SystemExit(f"dataset not found: {dataset} (looked in {MOVIELENS_DIR})")
    return path


def generated_ratings(rows: int, seed: int, n_users: int = 100_000, n_items: int = 20_000) -> pd.DataFrame:
    """``user_id, product_id, rating`` drawn like ``bench.common``'s generated reviews (power-law users
    and items)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({USER_ID: power_law(rng, n_users, 0.5, rows), ITEM_ID: power_law(rng, n_items, 0.7, rows),
                         "rating": rng.choice(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), size=rows)})


def user_item_matrix(ratings: pd.DataFrame, values: str) -> sp.csr_matrix:
    """Users x items CSR (float32): 1 for every rating (``binary``) or the rating itself."""
    _, user = np.unique(ratings[USER_ID].to_numpy(), return_inverse=True)
    _, item = np.unique(ratings[ITEM_ID].to_numpy(), return_inverse=True)
    data = np.ones(len(ratings)) if values == "binary" else ratings["rating"].to_numpy(dtype=float)
    matrix = sp.csr_matrix((data.astype(np.float32), (user, item)))
    matrix.sum_duplicates()
    return matrix


# -- the contenders ----------------------------------------------------------------------------------

def run_ours(matrix: sp.csr_matrix, n: int) -> ItemNeighbours:
    return cosine_top_n_sparse(matrix, n)


def run_peer(items_by_users: sp.csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray]:
    model = NearestNeighbors(n_neighbors=n + 1, metric="cosine", algorithm="brute").fit(items_by_users)
    return model.kneighbors(items_by_users)


def timed(work: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# -- agreement ---------------------------------------------------------------------------------------

def peer_lists(distances: np.ndarray, indices: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per item: the peer's neighbours and cosine scores, itself dropped, zero scores left out."""
    lists = []
    for item, (dist, idx) in enumerate(zip(distances, indices, strict=True)):
        others = idx != item
        if others.all():
            others[-1] = False
        score = 1.0 - dist[others].astype(np.float64)
        positive = score > SCORE_TOLERANCE
        lists.append((idx[others][positive][:n], score[positive][:n]))
    return lists


def agreement(ours: ItemNeighbours, peer: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Identical sets, same scores at every rank, mean Jaccard, max |score difference| on shared pairs."""
    n_items = len(peer)
    bounds = np.searchsorted(ours.item, np.arange(n_items + 1))
    identical = same_scores = 0
    jaccard = []
    max_diff = 0.0
    for item, (peer_items, peer_scores) in enumerate(peer):
        mine = slice(bounds[item], bounds[item + 1])
        my_items, my_scores = ours.neighbor[mine], ours.score[mine].astype(np.float64)
        mine_set, peer_set = set(my_items.tolist()), set(peer_items.tolist())
        identical += mine_set == peer_set
        union = mine_set | peer_set
        jaccard.append(len(mine_set & peer_set) / len(union) if union else 1.0)
        same_scores += len(my_scores) == len(peer_scores) and bool(
            np.all(np.abs(np.sort(my_scores) - np.sort(peer_scores)) <= SCORE_TOLERANCE))
        shared, mine_at, peer_at = np.intersect1d(my_items, peer_items, return_indices=True)
        if len(shared):
            max_diff = max(max_diff, float(np.max(np.abs(my_scores[mine_at] - peer_scores[peer_at]))))
    return {
        "identical_sets": identical / n_items,
        "same_scores_at_every_rank": same_scores / n_items,
        "mean_jaccard": float(np.mean(jaccard)),
        "max_abs_score_diff": max_diff,
    }


# -- the run -----------------------------------------------------------------------------------------

def libraries() -> str:
    return f"numpy {np.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench.similarity", __doc__)
    parser.add_argument("--dataset", default="generated",
                        help="generated (default), ml-1m, ml-100k (under the default MovieLens directory) or a path")
    parser.add_argument("--rows", type=int, default=1_000_000, help="interactions of --dataset generated")
    parser.add_argument("--seed", type=int, default=7, help="seed of --dataset generated")
    parser.add_argument("--n", type=int, default=50, help="neighbours per item (50)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each (3); the best is compared")
    parser.add_argument("--values", choices=("binary", "rating"), default="binary",
                        help="matrix entries: 1 for every rating (default) or the rating")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, the report on stderr")
    args = parser.parse_args(argv)

    if args.dataset == "generated":
        path = f"generated ({args.rows:,} interactions, seed {args.seed})"
        matrix = user_item_matrix(generated_ratings(args.rows, args.seed), args.values)
    else:
        path = ratings_file(args.dataset)
        say(f"reading {path} ...")
        matrix = user_item_matrix(read_ratings_frame(path), args.values)
    items_by_users = matrix.T.tocsr()  # the peer's input, built outside its timing
    n_users, n_items = matrix.shape
    n = args.n

    say("untimed first run of each (answers compared) ...")
    ours_result = run_ours(matrix, n)
    distances, indices = run_peer(items_by_users, n)
    agree = agreement(ours_result, peer_lists(distances, indices, n))
    del distances, indices

    ours_s: list[float] = []
    peer_s: list[float] = []
    for round_number in range(1, args.rounds + 1):
        order = ("ours", "peer") if round_number % 2 else ("peer", "ours")
        for who in order:
            if who == "ours":
                ours_s.append(timed(lambda: run_ours(matrix, n)))
            else:
                peer_s.append(timed(lambda: run_peer(items_by_users, n)))
        say(f"round {round_number}: ours {ours_s[-1]:.3f} s, peer {peer_s[-1]:.3f} s")

    ours_best, peer_best = min(ours_s), min(peer_s)
    speedup = peer_best / ours_best
    label = "binary: every rating = 1" if args.values == "binary" else "entry = the rating"
    if isinstance(path, str):
        dataset = path
    else:
        dataset = path.parent.name if path.name in RATINGS_FILES else path.name
    rows = [  # figure, ours, the peer's, ratio (peer / ours for seconds, ours / peer for rates), format
        (f"seconds, best of {args.rounds}", ours_best, peer_best, peer_best / ours_best, ",.3f"),
        (f"seconds, median of {args.rounds}", statistics.median(ours_s), statistics.median(peer_s),
         statistics.median(peer_s) / statistics.median(ours_s), ",.3f"),
        ("items per second, best", n_items / ours_best, n_items / peer_best, peer_best / ours_best, ",.0f"),
    ]
    report = [
        f"item-item cosine top-{n} on MovieLens {dataset}: {n_users:,} users x {n_items:,} items, "
        f"{matrix.nnz:,} ratings ({label}), density {matrix.nnz / (n_users * n_items):.2%}",
        "ours: rec_orchestration.ml.similarity.cosine_top_n_sparse; "
        "peer: sklearn NearestNeighbors(metric='cosine', algorithm='brute') fit + kneighbors",
        f"machine: {machine()}, {libraries()}",
        "",
        f"{'figure':<26}{'ours':>14}{'peer':>14}{'ratio':>10}",
    ]
    for name, mine, theirs, ratio, spec in rows:
        report.append(f"{name:<26}{format(mine, spec):>14}{format(theirs, spec):>14}{ratio:>9.2f}x")
    report += [
        "",
        f"agreement over {n_items:,} items: identical neighbour sets {agree['identical_sets']:.2%}; "
        f"same score at every rank (differences only among ties at the cut) "
        f"{agree['same_scores_at_every_rank']:.2%}; mean Jaccard {agree['mean_jaccard']:.4f}; "
        f"max |score difference| on shared neighbours {agree['max_abs_score_diff']:.1e}",
        f"ours kept {len(ours_result):,} (item, neighbour) pairs, "
        f"{np.count_nonzero(np.bincount(ours_result.item, minlength=n_items) < n):,} item(s) with fewer than {n}",
        f"goal similarity_speedup >= 5: {'met' if speedup >= 5 else 'NOT met'}",
        f"similarity_speedup={speedup:.2f} same_neighbours={agree['identical_sets']:.4f} "
        f"same_up_to_ties={agree['same_scores_at_every_rank']:.4f}",
    ]
    figures = {
        "dataset": str(path), "values": args.values, "n": n, "n_users": n_users, "n_items": n_items,
        "ratings": int(matrix.nnz), "rounds": args.rounds, "machine": machine(),
        "ours_seconds": ours_s, "peer_seconds": peer_s, "ours_best_s": ours_best, "peer_best_s": peer_best,
        "similarity_speedup": speedup, **agree,
    }
    emit(report, figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
