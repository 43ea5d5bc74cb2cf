"""The graph LightGCN propagates over: its normalised adjacency, and the product that propagates one layer.

Users and items are the two sides of one bipartite graph whose adjacency is normalised symmetrically,
``A_hat = D^-1/2 A D^-1/2``. Node ``u`` is user ``u``, node ``n_users + i`` is item ``i``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the bipartite user-item graph as a ``(n_users + n_items)``-square CSR tensor.

    Node ``u`` is user ``u``, node ``n_users + i`` is item ``i``; ``(users[j], items[j])`` are the
    (distinct) edges. Isolated nodes get an empty row.
    """
    n = n_users + n_items
    rows = np.concatenate([users, items + n_users]).astype(np.int64)
    cols = np.concatenate([items + n_users, users]).astype(np.int64)
    adjacency = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(n, n))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros(n)
    np.divide(1.0, np.sqrt(degree), out=inv_sqrt, where=degree > 0)
    normalized = (sp.diags(inv_sqrt) @ adjacency @ sp.diags(inv_sqrt)).tocsr().astype(np.float32)
    normalized.sort_indices()
    return csr_tensor(torch.from_numpy(normalized.indptr.astype(np.int64)),
                      torch.from_numpy(normalized.indices.astype(np.int64)),
                      torch.from_numpy(normalized.data), (n, n), check_invariants=True)


def csr_tensor(crow_indices: torch.Tensor, col_indices: torch.Tensor, values: torch.Tensor, size: tuple[int, int],
               check_invariants: bool = False) -> torch.Tensor:
    """A sparse CSR tensor from its parts, without torch's notice that CSR support is in beta."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow_indices, col_indices, values, size=size,
                                       check_invariants=check_invariants)


class _SymmetricSparseProduct(torch.autograd.Function):
    """``A @ X`` for a constant symmetric sparse ``A``: the gradient ``A^T G`` is ``A G``, no transpose."""

    @staticmethod
    def forward(ctx: Any, adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ dense

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adjacency @ grad


def symmetric_sparse_product(adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``adjacency @ dense`` for a constant symmetric sparse ``adjacency`` (it gets no gradient); the backward
    pass multiplies the gradient by the same matrix instead of transposing it."""
    return _SymmetricSparseProduct.apply(adjacency, dense)
