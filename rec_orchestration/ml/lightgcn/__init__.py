"""LightGCN (He et al. 2020): the graph, its training data, the Lightning module, and the recommender.

- :mod:`.graph`: the normalised user-item adjacency ``D^-1/2 A D^-1/2`` and the symmetric sparse product
  that propagates one layer (its backward pass multiplies by the same matrix instead of transposing it).
- :mod:`.data`: positive pairs, the validation hold-out of each user's positives, BPR epochs with
  sampled negatives, and the blocks of users the validation ranks.
- :mod:`.module`: :class:`LightGCN`, the LightningModule (propagation, BPR loss with L2 on the ego
  embeddings, Adam, validation nDCG@20 / recall@20 through ``ml.metrics``).
- :mod:`.history`: :class:`EpochHistory`, the callback that records each epoch's loss, validation
  nDCG and training seconds.
- :mod:`.recommender`: :class:`LightGCNRecommender`, the project's model: early-stopped on its own
  validation split, keeping the best epoch's final embeddings as CPU arrays; trains on one device or,
  with ``strategy="ddp"``, on several spawned processes (each on its share of the BPR batches).
"""

from rec_orchestration.ml.lightgcn.data import (
    BprEpochs,
    holdout_mask,
    positive_pairs,
    sample_negatives,
    validation_batches,
)
from rec_orchestration.ml.lightgcn.graph import normalized_adjacency, symmetric_sparse_product
from rec_orchestration.ml.lightgcn.history import EpochHistory
from rec_orchestration.ml.lightgcn.module import TOP_K, LightGCN
from rec_orchestration.ml.lightgcn.recommender import LightGCNRecommender

__all__ = [
    "TOP_K",
    "BprEpochs",
    "EpochHistory",
    "LightGCN",
    "LightGCNRecommender",
    "holdout_mask",
    "normalized_adjacency",
    "positive_pairs",
    "sample_negatives",
    "symmetric_sparse_product",
    "validation_batches",
]
