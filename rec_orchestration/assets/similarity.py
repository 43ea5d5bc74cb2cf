"""Item–item similarity matrices in ``ml.item_similarity (item_id, neighbor_id, score, rank, method)``.

Three methods, each the top-N neighbours of every product:
- ``collaborative``: cosine between the products' columns of the user × product interaction matrix
  (sparse, computed a block of products at a time so memory stays bounded);
- ``content``: cosine of TF-IDF vectors of title, description and category paths;
- ``embedding``: cosine of the LightGCN model's item embeddings (its latest artifact).

The table is recomputed only when what it is computed from changed: ``ml.item_similarity_basis`` holds a
hash of the interactions, the products' texts, the LightGCN version, the neighbours kept and
:data:`SIMILARITY_VERSION`, written with the table in one transaction. A refresh with nothing new (a run
launched again from the UI, an hourly tick before data landed) keeps the table: at 10M interactions
computing it is minutes. After new interactions it is kept too while they grew by at most ``max_growth``
(5 %) since it was computed and it is younger than ``max_age_hours`` (24), with the same settings: the rule
models/champion keeps its fit by (``ml.training.within_staleness``). Products new since then have no
neighbours until it is recomputed.
"""

import hashlib
import json
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
from pydantic import Field

from rec_orchestration.db import reads
from rec_orchestration.db.tables import ensure_ml_schema, replace_table
from rec_orchestration.deployment import k8s_step_tags
from rec_orchestration.ml import registry
from rec_orchestration.ml.base import Recommender
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.training import SERVING_MAX_AGE_HOURS, SERVING_MAX_GROWTH, data_version, within_staleness
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.retry import retry_transient_db_errors
from rec_orchestration.runs import REFRESH_POOL, materialized_model_versions

if TYPE_CHECKING:
    import pandas as pd

    from rec_orchestration.ml.similarity import ItemNeighbours


SIMILARITY_VERSION = "similarity-v2"  # bumped when the code computes other rows from the same inputs
BASIS_TABLE = "ml.item_similarity_basis"


class SimilarityConfig(dg.Config):
    neighbours: int = Field(default=20, ge=1, le=500, description="Neighbours kept per product and method.")
    max_growth: float = Field(default=SERVING_MAX_GROWTH, ge=0.0, description=(
        "Keep the table while the interactions grew by at most this share since it was computed (0.05 = 5 %); 0 "
        "recomputes on every change of the data."))
    max_age_hours: float = Field(default=SERVING_MAX_AGE_HOURS, gt=0.0, description=(
        "Recompute, however little the data grew, once the table is this old."))


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

    settings = similarity_settings(config.neighbours)
    kept, why = kept_within_staleness(warehouse, settings, config.max_growth, config.max_age_hours)
    if kept is not None:
        context.log.info(f"keeping ml.item_similarity ({kept:,} rows): {why}")
        return dg.MaterializeResult(metadata={"rows": kept, "reused": True, "kept_within_staleness": True,
                                              "why": why})
    frame = reads.interactions_frame(warehouse)
    products = reads.product_texts(warehouse)
    version = materialized_model_versions(context, ["lightgcn"])["lightgcn"]
    basis = similarity_basis(frame, products, version, config.neighbours)
    kept = kept_rows(warehouse, basis)
    if kept is not None:
        context.log.info(f"interactions, products, LightGCN {version} and settings unchanged: keeping "
                         f"ml.item_similarity ({kept:,} rows)")
        return dg.MaterializeResult(metadata={"rows": kept, "basis": basis, "reused": True,
                                              "lightgcn_version": version})

    interactions = Interactions.from_frame(frame)
    n_interactions = len(frame)
    del frame
    matrix = (interactions.user_item_matrix() > 0).astype(np.float32).tocsr()
    frames = [_frame(cosine_top_n_sparse(matrix, config.neighbours), interactions.item_ids, "collaborative")]

    item_ids = products["product_id"].to_numpy(dtype=np.int64)
    frames.append(_frame(content_top_n(products["text"].fillna("").tolist(), config.neighbours), item_ids,
                         "content"))

    state, _ = model_store.store().load("lightgcn", version)
    frames.append(embedding_neighbours(registry.served_model("lightgcn", state), config.neighbours))

    similarity = pd.concat(frames, ignore_index=True)
    rows = similarity[["item_id", "neighbor_id", "score", "rank", "method"]].itertuples(index=False, name=None)
    with warehouse.connection() as conn:  # its own transaction: not under replace_table's exclusive lock
        ensure_ml_schema(conn)
    with warehouse.connection() as conn:  # the rows and their basis: both or neither
        written = replace_table(
            conn, "ml.item_similarity",
            columns=[("item_id", "bigint"), ("neighbor_id", "bigint"), ("score", "double precision"),
                     ("rank", "integer"), ("method", "text")],
            rows=((int(a), int(b), float(s), int(r), m) for a, b, s, r, m in rows),
            primary_key=["item_id", "method", "rank"],
        )
        record_basis(conn, basis, context.run.run_id if context.run else "", written, n_interactions, settings)
    per_method = similarity.groupby("method").agg(rows=("item_id", "size"), products=("item_id", "nunique"),
                                                  mean_score=("score", "mean")).reset_index()
    example = reads.neighbours_of_most_interacted_product(warehouse, 3)
    return dg.MaterializeResult(metadata={
        "rows": written,
        "basis": basis,
        "reused": False,
        "per_method": dg.MetadataValue.md(per_method.round(4).to_markdown(index=False)),
        "neighbours_of_the_most_interacted_product": dg.MetadataValue.md(example.to_markdown(index=False)),
        "lightgcn_version": version,
    })


def similarity_basis(frame: "pd.DataFrame", products: "pd.DataFrame", lightgcn_version: str, neighbours: int) -> str:
    """A hash of everything ml.item_similarity is computed from."""
    import pandas as pd

    digest = hashlib.sha256(json.dumps([SIMILARITY_VERSION, data_version(frame), lightgcn_version,
                                        int(neighbours)]).encode())
    digest.update(pd.util.hash_pandas_object(products[["product_id", "text"]], index=False).to_numpy().tobytes())
    return digest.hexdigest()[:24]


def kept_rows(warehouse: PostgresResource, basis: str) -> int | None:
    """The row count of ml.item_similarity when it was computed from ``basis``, else None."""
    with warehouse.connection() as conn:
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass('ml.item_similarity') IS NOT NULL",
                            (BASIS_TABLE,)).fetchone()[0]:
            return None
        row = conn.execute("SELECT basis, row_count FROM ml.item_similarity_basis").fetchone()
    return int(row[1]) if row is not None and row[0] == basis else None


def similarity_settings(neighbours: int) -> str:
    """What the table's rows depend on besides its inputs: the similarity code and the neighbours kept."""
    return json.dumps([SIMILARITY_VERSION, int(neighbours)])


def kept_within_staleness(warehouse: PostgresResource, settings: str, max_growth: float,
                          max_age_hours: float) -> tuple[int | None, str]:
    """The row count of ml.item_similarity when it may stand for today's (computed with ``settings`` from
    interactions that grew by at most ``max_growth`` since, at most ``max_age_hours`` ago), else None; and why."""
    from datetime import UTC, datetime

    with warehouse.connection() as conn:
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass('ml.item_similarity') IS NOT NULL",
                            (BASIS_TABLE,)).fetchone()[0]:
            return None, "no table yet"
        ensure_ml_schema(conn)  # a warehouse from before the staleness columns gains them (NULL: recompute)
        row = conn.execute("SELECT row_count, n_interactions, settings, computed_at FROM ml.item_similarity_basis"
                           ).fetchone()
    if row is None or row[1] is None or row[2] != settings:
        return None, "computed with other settings, or before the interactions it saw were recorded"
    within, why = within_staleness(int(row[1]), row[3], reads.interaction_count(warehouse), max_growth=max_growth,
                                   max_age_hours=max_age_hours, now=datetime.now(UTC))
    return (int(row[0]) if within else None), why


def record_basis(conn, basis: str, run_id: str, rows: int, n_interactions: int, settings: str) -> None:
    conn.execute("""INSERT INTO ml.item_similarity_basis (basis, run_id, row_count, computed_at, n_interactions,
                                                         settings)
                    VALUES (%s, %s, %s, now(), %s, %s)
                    ON CONFLICT (only_row) DO UPDATE SET basis = excluded.basis, run_id = excluded.run_id,
                        row_count = excluded.row_count, computed_at = excluded.computed_at,
                        n_interactions = excluded.n_interactions, settings = excluded.settings""",
                 (basis, run_id, rows, n_interactions, settings))
