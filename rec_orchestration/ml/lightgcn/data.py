"""What LightGCN trains and validates on: positive pairs, the validation hold-out, BPR batches, ranking blocks.

Every interaction with weight > 0 is a positive (repeats of a pair count once). A random fraction of
each user's positives is held out for validation (:func:`holdout_mask`); the rest are the graph's edges
and the BPR training pairs (:class:`BprEpochs`: every pair once per epoch, in a fresh random order, with
one negative item drawn uniformly and redrawn, a few rounds, where it is one of the user's training
positives).
:func:`validation_batches` lays out the held-out pairs for ranking.
"""

from __future__ import annotations

import math
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
    shuffled, with fresh negatives. Everything is drawn from one seeded generator, so runs repeat."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int, batch_size: int, seed: int) -> None:
        super().__init__()
        self.users = users.astype(np.int64)
        self.items = items.astype(np.int64)
        self.n_items = n_items
        self.batch_size = batch_size
        self.positive_keys = np.sort(self.users * n_items + self.items)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.users) / self.batch_size)

    def epoch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = self.rng.permutation(len(self.users))
        users, positives = self.users[order], self.items[order]
        return users, positives, sample_negatives(self.rng, users, self.positive_keys, self.n_items)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        users, positives, negatives = (torch.from_numpy(a) for a in self.epoch())
        for start in range(0, len(users), self.batch_size):
            stop = start + self.batch_size
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
