"""Models over the core tables. For now: time-decayed popularity (baseline and cold-start fallback)."""


import dagster as dg
import pandas as pd
from psycopg import sql
from pydantic import Field

from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.popularity import PopularityRecommender
from rec_orchestration.resources.model_store import ModelStoreResource, artifact_version
from rec_orchestration.resources.postgres import PostgresResource, replace_table

POPULARITY_CODE_VERSION = "popularity-v1"

# The training input: one row per (user, product), weighted by dbt (var interaction_weights).
INTERACTIONS_QUERY = sql.SQL("""
    SELECT user_id, product_id, weight, last_at AS ts
    FROM core.interactions
""")
DATA_VERSION_QUERY = sql.SQL("""
    SELECT count(*) || ':' || coalesce(max(last_at)::text, '') || ':' || coalesce(sum(weight)::text, '')
    FROM core.interactions
""")


class PopularityConfig(dg.Config):
    half_life_days: float = Field(default=90.0, description="Weight of an interaction halves every this many days.")


def load_interactions(warehouse: PostgresResource) -> Interactions:
    frame = warehouse.read_dataframe(INTERACTIONS_QUERY)
    if frame.empty:
        raise dg.Failure("core.interactions is empty: nothing to train on")
    frame["weight"] = frame["weight"].astype(float)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return Interactions.from_frame(frame)


@dg.asset(
    key=["recs", "popular_products"],
    group_name="models",
    kinds={"python", "postgres"},
    deps=[dg.AssetKey(["core", "interactions"]), dg.AssetKey(["core", "products"])],
)
def popular_products(context: dg.AssetExecutionContext, config: PopularityConfig, warehouse: PostgresResource,
                     model_store: ModelStoreResource) -> dg.MaterializeResult:
    """Products ranked by time-decayed, rating-weighted popularity, in ``recs.popular_products``.

    The fitted model is saved to the model store, versioned by data, parameters and code.
    """
    interactions = load_interactions(warehouse)
    model = PopularityRecommender(half_life_days=config.half_life_days).fit(interactions)
    params = {"half_life_days": config.half_life_days}
    version = artifact_version(str(warehouse.fetch_value(DATA_VERSION_QUERY)), params, POPULARITY_CODE_VERSION)
    location = model_store.save(model.name, version, model.state_dict(),
                                {"params": params, "n_interactions": len(interactions)})
    items, scores = model.ranking()
    rows = [(int(item), rank, float(score), version)
            for rank, (item, score) in enumerate(zip(items.tolist(), scores.tolist(), strict=True), start=1)]
    with warehouse.connection() as conn:
        replace_table(
            conn, "recs.popular_products",
            columns=[("product_id", "bigint"), ("rank", "integer"),
                     ("score", "double precision"), ("model_version", "text")],
            rows=rows,
            primary_key=["product_id"],
            indexes=[["rank"]],
        )
    top = warehouse.read_dataframe(sql.SQL("""
        SELECT pp.rank, p.title, p.main_category, round(pp.score::numeric, 2) AS score
        FROM recs.popular_products pp JOIN core.products p USING (product_id)
        ORDER BY pp.rank LIMIT 10"""))
    return dg.MaterializeResult(metadata={
        "model_version": version,
        "artifact": dg.MetadataValue.path(location),
        "n_interactions": len(interactions),
        "n_products": len(rows),
        "top_10": dg.MetadataValue.md(top.to_markdown(index=False)),
    })
