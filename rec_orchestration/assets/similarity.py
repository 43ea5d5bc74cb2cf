"""Item–item similarity matrices in ``ml.item_similarity (item_id, neighbor_id, score, rank, method)``.

Three methods, each the top-N neighbours of every product:
- ``collaborative``: cosine between the products' columns of the user × product interaction matrix
  (sparse, computed a block of products at a time so memory stays bounded);
- ``content``: cosine of TF-IDF vectors of title, description and category paths;
- ``embedding``: cosine of the LightGCN model's item embeddings (its latest artifact).
"""

from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
from pydantic import Field

from rec_orchestration.db import reads
from rec_orchestration.db.tables import replace_table
from rec_orchestration.deployment import k8s_step_tags
from rec_orchestration.ml import registry
from rec_orchestration.ml.base import Recommender
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.retry import retry_transient_db_errors
from rec_orchestration.runs import REFRESH_POOL, materialized_model_versions

if TYPE_CHECKING:
    import pandas as pd

    from rec_orchestration.ml.similarity import ItemNeighbours


class SimilarityConfig(dg.Config):
    neighbours: int = Field(default=20, ge=1, le=500, description="Neighbours kept per product and method.")


def _frame(neighbours: "ItemNeighbours", item_ids: np.ndarray, method: str) -> "pd.DataFrame":
    frame = neighbours.to_external(item_ids)
    frame["method"] = method
    return frame


def embedding_neighbours(model: Recommender, n: int) -> "pd.DataFrame":
    """The model's own ``similar_items`` (cosine of its item embeddings), as long-form rows."""
    import pandas as pd

    neighbours, scores = model.similar_items(model.item_ids, n)
    width = neighbours.shape[1]
    return pd.DataFrame({"item_id": np.repeat(model.item_ids, width), "neighbor_id": neighbours.ravel(),
                         "score": scores.ravel(), "rank": np.tile(np.arange(1, width + 1), len(model.item_ids)),
                         "method": "embedding"})


@dg.asset(
    key=["ml", "item_similarity"],
    pool=REFRESH_POOL,
    op_tags=k8s_step_tags("similarity"),
    group_name="similarity",
    kinds={"python", "postgres"},
    deps=[dg.AssetKey(["core", "interactions"]), dg.AssetKey(["core", "products"]),
          dg.AssetKey(["core", "product_categories"]), dg.AssetKey(["models", "lightgcn"])],
)
@retry_transient_db_errors()
def item_similarity(context: dg.AssetExecutionContext, config: SimilarityConfig, warehouse: PostgresResource,
                    model_store: ModelStoreResource) -> dg.MaterializeResult:
    """Top-N similar products per product by collaborative, content and embedding cosine similarity."""
    # pandas, and the numba kernels (compiled or loaded from cache on import): only this step pays for them.
    import pandas as pd

    from rec_orchestration.ml.similarity import content_top_n, cosine_top_n_sparse

    interactions = Interactions.from_frame(reads.interactions_frame(warehouse))
    matrix = (interactions.user_item_matrix() > 0).astype(np.float32).tocsr()
    frames = [_frame(cosine_top_n_sparse(matrix, config.neighbours), interactions.item_ids, "collaborative")]

    products = reads.product_texts(warehouse)
    item_ids = products["product_id"].to_numpy(dtype=np.int64)
    frames.append(_frame(content_top_n(products["text"].fillna("").tolist(), config.neighbours), item_ids,
                         "content"))

    store = model_store.store()
    version = materialized_model_versions(context, ["lightgcn"])["lightgcn"]
    state, _ = store.load("lightgcn", version)
    frames.append(embedding_neighbours(registry.model_class("lightgcn").from_state_dict(state), config.neighbours))

    similarity = pd.concat(frames, ignore_index=True)
    rows = similarity[["item_id", "neighbor_id", "score", "rank", "method"]].itertuples(index=False, name=None)
    with warehouse.connection() as conn:
        written = replace_table(
            conn, "ml.item_similarity",
            columns=[("item_id", "bigint"), ("neighbor_id", "bigint"), ("score", "double precision"),
                     ("rank", "integer"), ("method", "text")],
            rows=((int(a), int(b), float(s), int(r), m) for a, b, s, r, m in rows),
            primary_key=["item_id", "method", "rank"],
        )
    per_method = similarity.groupby("method").agg(rows=("item_id", "size"), products=("item_id", "nunique"),
                                                  mean_score=("score", "mean")).reset_index()
    example = reads.neighbours_of_most_interacted_product(warehouse, 3)
    return dg.MaterializeResult(metadata={
        "rows": written,
        "per_method": dg.MetadataValue.md(per_method.round(4).to_markdown(index=False)),
        "neighbours_of_the_most_interacted_product": dg.MetadataValue.md(example.to_markdown(index=False)),
        "lightgcn_version": version,
    })
