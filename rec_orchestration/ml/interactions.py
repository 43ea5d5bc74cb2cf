"""The training input every model shares: (user, item, weight, time) triples over dense indices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp

USER_ID = "user_id"
ITEM_ID = "product_id"
WEIGHT = "weight"
TIMESTAMP = "ts"


@dataclass(frozen=True)
class Interactions:
    """Interactions with external ids mapped to dense 0..n-1 indices (``user_ids[i]`` is index ``i``)."""

    user_index: np.ndarray   # int32, one per interaction
    item_index: np.ndarray   # int32
    weight: np.ndarray       # float32
    timestamp: np.ndarray    # float64, epoch seconds
    user_ids: np.ndarray     # external id of each user index
    item_ids: np.ndarray     # external id of each item index

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Interactions:
        """From a frame with ``user_id, product_id, weight, ts`` (ts: datetime or epoch seconds)."""
        import pandas as pd
        users, user_index = np.unique(frame[USER_ID].to_numpy(), return_inverse=True)
        items, item_index = np.unique(frame[ITEM_ID].to_numpy(), return_inverse=True)
        ts = frame[TIMESTAMP]
        if pd.api.types.is_datetime64_any_dtype(ts):
            seconds = ts.astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9
        else:
            seconds = ts.to_numpy(dtype=float)
        return cls(
            user_index=user_index.astype(np.int32),
            item_index=item_index.astype(np.int32),
            weight=frame[WEIGHT].to_numpy(dtype=np.float32),
            timestamp=seconds.astype(np.float64),
            user_ids=users,
            item_ids=items,
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user_index)

    def user_item_matrix(self) -> sp.csr_matrix:
        """CSR users x items of summed weights."""
        import scipy.sparse as sp
        return sp.csr_matrix(
            (self.weight, (self.user_index, self.item_index)), shape=(self.n_users, self.n_items)
        )

    def items_by_user(self, users: np.ndarray | None = None) -> dict:
        """External user id -> sorted array of the external item ids they interacted with: of every user, or
        of ``users`` (external ids) only, which costs their interactions, not everyone's (the evaluation
        needs 20,000 users' histories, not a million)."""
        if users is None:
            order = np.argsort(self.user_index, kind="stable")
        else:
            wanted = np.isin(self.user_ids, np.asarray(users))  # per user index
            rows = np.flatnonzero(wanted[self.user_index])
            order = rows[np.argsort(self.user_index[rows], kind="stable")]
        users_sorted = self.user_index[order]
        items_sorted = self.item_ids[self.item_index[order]]
        bounds = np.flatnonzero(np.diff(users_sorted)) + 1
        return {
            self.user_ids[users[0]]: np.unique(items)
            for users, items in zip(np.split(users_sorted, bounds), np.split(items_sorted, bounds), strict=True)
            if len(users)
        }
