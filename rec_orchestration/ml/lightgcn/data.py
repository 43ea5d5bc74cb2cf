"""What LightGCN trains and validates on: positive pairs, the validation hold-out, BPR batches, ranking blocks.

Every interaction with weight > 0 is a positive (repeats of a pair count once). A random fraction of
each user's positives is held out for validation (:func:`holdout_mask`); the rest are the graph's edges
and the BPR training pairs (:class:`BprEpochs`: every pair once per epoch, in a fresh random order, with
one negative item drawn uniformly and redrawn, a few rounds, where it is one of the user's training
positives).
:func:`validation_batches` lays out the held-out pairs for ranking.

Under data-parallel training every rank iterates its own copy of :class:`BprEpochs`; Lightning does not
shard an iterable dataset, so the dataset shards itself: all ranks draw the same epoch (same seed) and
each keeps every ``world_size``-th batch, the same number on every rank, since a rank with one batch more
would wait forever on the others in the gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from rec_orchestration.ml.interactions import Interactions

VALIDATION_CELLS = 1 << 24      # users x items scored per validation batch (64 MiB of float32)
VALIDATION_USERS = 10_000       # validation ranks a fixed random sample of this many users (every epoch)
NEGATIVE_RETRIES = 10           # rounds of redrawing negatives that hit a positive


def positive_pairs(interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(user, item)`` index pairs with weight > 0, sorted by user then item (int64)."""
    positive = interactions.weight > 0
    pairs = np.unique(interactions.user_index[positive].astype(np.int64) * interactions.n_items
                      + interactions.item_index[positive])
    return pairs // interactions.n_items, pairs % interactions.n_items


def holdout_mask(users: np.ndarray, items: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which of the (distinct) positive pairs to hold out for validation: a boolean mask.

    Each user gives a random ``fraction`` of their positives (rounded stochastically, so small users
    give one with probability ``fraction * n``), never all of them: a user with fewer than 2 keeps
    everything in training. ``items`` only serves the shape; held-out pairs are always among the input.
    (Not to be confused with ``ml.splits.validation_split``, which splits a frame of interactions.)
    """
    if len(users) != len(items):
        raise ValueError("users and items differ in length")
    mask = np.zeros(len(users), dtype=bool)
    if fraction <= 0 or len(users) == 0:
        return mask
    rng = np.random.default_rng(seed)
    counts = np.bincount(users)
    wanted = counts * fraction
    n_val = np.floor(wanted) + (rng.random(len(counts)) < wanted - np.floor(wanted))
    n_val = np.minimum(n_val, np.maximum(counts - 1, 0)).astype(np.int64)
    order = np.lexsort((rng.random(len(users)), users))       # by user, random within a user
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(users)) - starts[users[order]]    # rank of each pair within its user
    mask[order] = position < n_val[users[order]]
    return mask


def sample_negatives(rng: np.random.Generator, users: np.ndarray, positive_keys: np.ndarray,
                     n_items: int) -> np.ndarray:
    """One item per user, uniform over the items, redrawn (a few rounds) where it is a known positive.

    ``positive_keys`` is the sorted array of ``user * n_items + item`` of every training positive.
    """
    negatives = rng.integers(0, n_items, size=len(users))
    clash = np.arange(len(users))
    for _ in range(NEGATIVE_RETRIES):
        keys = users[clash] * n_items + negatives[clash]
        where = np.minimum(np.searchsorted(positive_keys, keys), len(positive_keys) - 1)
        clash = clash[positive_keys[where] == keys]
        if len(clash) == 0:
            break
        negatives[clash] = rng.integers(0, n_items, size=len(clash))
    return negatives


class BprEpochs(torch.utils.data.IterableDataset):
    """Batches ``(users, positives, negatives)``: each iteration is one epoch over every positive pair,
    shuffled, with fresh negatives. Everything is drawn from one seeded generator, so runs repeat.

    ``rank`` of ``world_size`` (None: those of the initialised ``torch.distributed`` group, else 0 of 1,
    read when iterated, i.e. in the rank's own process) keeps batches ``rank, rank + world_size, ...`` of
    the epoch. Batches are ``batch_size`` pairs; what is left after the last full round of ``world_size``
    batches is split evenly among the ranks (with one rank, that is the usual short last batch), and a
    remainder smaller than ``world_size`` pairs is skipped that epoch.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int, batch_size: int, seed: int, *,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__()
        if (rank is None) != (world_size is None) or (world_size is not None and not 0 <= rank < world_size):
            raise ValueError("give both rank and world_size, with 0 <= rank < world_size, or neither")
        self.users = users.astype(np.int64)
        self.items = items.astype(np.int64)
        self.n_items = n_items
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.positive_keys = np.sort(self.users * n_items + self.items)
        self.rng = np.random.default_rng(seed)

    def shard(self) -> tuple[int, int]:
        """``(rank, world_size)`` this iteration serves."""
        if self.world_size is not None:
            return self.rank, self.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def bounds(self, world_size: int) -> list[tuple[int, int]]:
        """``(start, stop)`` of every batch of an epoch in order; batch ``j`` goes to rank ``j % world_size``."""
        n, size = len(self.users), self.batch_size
        round_size = size * world_size
        full = n // round_size * round_size
        bounds = [(start, start + size) for start in range(0, full, size)]
        if n - full >= world_size:
            edges = np.linspace(full, n, world_size + 1).round().astype(int)
            bounds += list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
        return bounds

    def __len__(self) -> int:
        _, world_size = self.shard()
        return len(self.bounds(world_size)) // world_size

    def epoch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = self.rng.permutation(len(self.users))
        users, positives = self.users[order], self.items[order]
        return users, positives, sample_negatives(self.rng, users, self.positive_keys, self.n_items)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        rank, world_size = self.shard()
        users, positives, negatives = (torch.from_numpy(a) for a in self.epoch())
        for start, stop in self.bounds(world_size)[rank::world_size]:
            yield users[start:stop], positives[start:stop], negatives[start:stop]


def validation_batches(train: sp.csr_matrix, held_out: sp.csr_matrix, max_users: int = VALIDATION_USERS,
                       seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Users with held-out items (a fixed random sample of ``max_users`` of them where there are more: an
    epoch's validation then costs the same at any scale), in blocks, each with the coordinates (row in
    block, item) of its training positives (masked out of the ranking) and of its held-out positives
    (the relevant items)."""
    users = np.flatnonzero(np.diff(held_out.indptr) > 0)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    block = max(1, min(4096, VALIDATION_CELLS // max(train.shape[1], 1)))
    batches = []
    for start in range(0, len(users), block):
        rows = users[start:start + block]
        seen, relevant = train[rows].tocoo(), held_out[rows].tocoo()
        batches.append({
            "users": torch.from_numpy(rows.astype(np.int64)),
            "seen_rows": torch.from_numpy(seen.row.astype(np.int64)),
            "seen_items": torch.from_numpy(seen.col.astype(np.int64)),
            "relevant_rows": torch.from_numpy(relevant.row.astype(np.int64)),
            "relevant_items": torch.from_numpy(relevant.col.astype(np.int64)),
        })
    return batches
