"""LightGCN (He et al. 2020) as a PyTorch Lightning module: propagation, the BPR loss, validation nDCG.

From the free ("ego") embeddings ``E_0`` each layer computes ``E_k+1 = A_hat E_k`` over the normalised
adjacency of :mod:`.graph` (no weights, no non-linearity), and the final embedding is the mean of
``E_0 .. E_K``. A user's score for an item is the dot product of their final embeddings.

Training is BPR with, as in the paper, L2 on the ego embeddings of the batch's users, positives and
negatives, divided by the batch size; one full-graph propagation per step (a sparse CSR product per
layer); Adam. Validation ranks every item for the users of :func:`.data.validation_batches`, training
positives excluded, and logs ``val_ndcg`` and ``val_recall`` at :data:`TOP_K` as ``ml.metrics``
defines them.

Under data-parallel training each rank validates every ``world_size``-th block of users and the sums are
added up across ranks, so every rank logs the same figure as a single process would: early stopping and
checkpointing then take the same decision on every rank (ranks that disagree would diverge and hang).
The ``adjacency`` buffer is a sparse CSR tensor, which DDP cannot broadcast: the strategy must not
broadcast buffers (every rank receives the same one with the module anyway).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from rec_orchestration.ml.lightgcn.graph import csr_tensor, normalized_adjacency, symmetric_sparse_product
from rec_orchestration.ml.metrics import ndcg_per_user, recall_per_user

TOP_K = 20                      # cut-off of the validation metrics (recall@20, nDCG@20, as in the paper)


class LightGCN(pl.LightningModule):
    """LightGCN on a fixed training graph: ``propagate()`` gives the final user and item embeddings.

    ``train_users[j], train_items[j]`` (dense indices, distinct pairs) are the graph's edges. The
    hyper-parameters have no defaults here: the recommender passes its own (``ml.defaults``).
    """

    def __init__(self, n_users: int, n_items: int, train_users: np.ndarray, train_items: np.ndarray, *,
                 factors: int, layers: int, lr: float, reg: float, seed: int = 0) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.factors, self.layers, self.lr, self.reg = factors, layers, lr, reg
        generator = torch.Generator().manual_seed(seed)
        self.user_embedding = torch.nn.Parameter(torch.randn(n_users, factors, generator=generator) * 0.1)
        self.item_embedding = torch.nn.Parameter(torch.randn(n_items, factors, generator=generator) * 0.1)
        # Rebuilt from the edges whenever the module is made, so it stays out of checkpoints.
        self.register_buffer("adjacency", normalized_adjacency(np.asarray(train_users), np.asarray(train_items),
                                                               n_users, n_items), persistent=False)
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None
        self._validation_sums = np.zeros(2)     # recall and nDCG summed over the users validated so far
        self._validation_users = 0

    # Spawned DDP ranks receive the module pickled: the adjacency travels as its CSR parts (plain tensors)
    # rather than through torch's sparse path, which warns in every rank as it unpickles.
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        adjacency = self.adjacency
        state["_buffers"] = {**self._buffers, "adjacency": (adjacency.crow_indices(), adjacency.col_indices(),
                                                           adjacency.values(), tuple(adjacency.shape))}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        crow_indices, col_indices, values, size = state["_buffers"]["adjacency"]
        state["_buffers"] = {**state["_buffers"], "adjacency": csr_tensor(crow_indices, col_indices, values, size)}
        super().__setstate__(state)

    # model ---------------------------------------------------------------------------------------

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final embeddings: the mean of the ego embeddings and of each of the ``layers`` propagations."""
        # Sparse products stay in float32 under mixed precision (cuSPARSE half support is partial).
        with torch.autocast(device_type=self.device.type, enabled=False):
            layer = torch.cat([self.user_embedding, self.item_embedding]).float()
            total = layer
            for _ in range(self.layers):
                layer = symmetric_sparse_product(self.adjacency, layer)
                total = total + layer
            final = total / (self.layers + 1)
        return final[:self.n_users], final[self.n_users:]

    def bpr_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Mean BPR loss of the batch plus ``reg`` x half the squared norm of its ego embeddings / batch size."""
        user_final, item_final = self.propagate()
        user_vectors = user_final[users]
        positive_scores = (user_vectors * item_final[positives]).sum(dim=1)
        negative_scores = (user_vectors * item_final[negatives]).sum(dim=1)
        ranking = torch.nn.functional.softplus(negative_scores - positive_scores).mean()
        ego = (self.user_embedding[users].pow(2).sum() + self.item_embedding[positives].pow(2).sum()
               + self.item_embedding[negatives].pow(2).sum())
        return ranking + self.reg * 0.5 * ego / len(users)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self.bpr_loss(*batch)

    # validation ----------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._validation_sums = np.zeros(2)
        self._validation_users = 0
        self._cached = self.propagate()       # once per validation, not once per block of users

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        world_size = self.trainer.world_size if self._trainer is not None else 1
        if batch_idx % world_size != self.global_rank:
            return                            # another rank's block
        user_final, item_final = self._cached
        scores = (user_final[batch["users"]] @ item_final.T).float()
        scores[batch["seen_rows"], batch["seen_items"]] = -torch.inf
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        relevant[batch["relevant_rows"], batch["relevant_items"]] = True
        # The ranking stays on the device; only the (users x k) hit matrix comes back to be scored.
        top = scores.topk(min(TOP_K, scores.shape[1]), dim=1).indices
        hits = relevant.gather(1, top).cpu().numpy()
        n_relevant = relevant.sum(dim=1).cpu().numpy()
        self._validation_sums += (recall_per_user(hits, n_relevant).sum(), ndcg_per_user(hits, n_relevant).sum())
        self._validation_users += len(hits)

    def on_validation_epoch_end(self) -> None:
        sums, users = self._validation_sums, self._validation_users
        if self._trainer is not None and self.trainer.world_size > 1:
            local = torch.tensor([*sums, users], dtype=torch.float64, device=self.device)
            *total, users = self.trainer.strategy.reduce(local, reduce_op="sum").tolist()
            sums = np.array(total)
        recall, ndcg = sums / max(users, 1)
        self._cached = None
        self.log("val_recall", float(recall))
        self.log("val_ndcg", float(ndcg))
