"""Publish: the tables downstream applications read, as one publication (see :mod:`rec_orchestration.publishing`).

One step builds every published table from the model stage's outputs and swaps them in together:
``recs.user_recommendations`` (the champion's top k per user, popularity for cold-start users: the ranking
of ``ml.popular_products``, the stronger popularity baseline on the holdout, time-decayed or plain),
``recs.similar_products`` (every similarity method plus their blend), ``recs.popular_products`` and
``recs.popular_products_by_category``, plus the product metadata the ``*_detailed`` views hydrate.
"""

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from pydantic import Field

from rec_orchestration import publishing
from rec_orchestration.db import reads
from rec_orchestration.db.roles import ensure_roles
from rec_orchestration.ml import registry
from rec_orchestration.ml.base import Recommender
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.popularity import PopularityRecommender
from rec_orchestration.ml.serving import (
    REASON_SIMILARITY,
    ServingInputs,
    Source,
    assemble,
    blend_similarities,
    neighbour_evidence,
    reason_thresholds,
    strong_neighbours,
)
from rec_orchestration.publishing.checks import recommendation_problems, refusal
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.retry import retry_transient_db_errors
from rec_orchestration.runs import REFRESH_POOL, approved_champion

RECOMMENDATIONS = dg.AssetKey(["recs", "user_recommendations"])
PUBLISHED_KEYS = {name: dg.AssetKey(["recs", name]) for name in publishing.TABLES if name != "products"}

class PublishConfig(dg.Config):
    k: int = Field(default=20, ge=1, le=1000, description="Recommendations per user.")
    min_interactions: int = Field(default=3, ge=0, description=(
        "Users with fewer interactions get popular products (of their categories first) instead of the champion's."))
    similar_products: int = Field(default=20, ge=1, le=500, description="Blended similar products kept per product.")
    keep_publications: int = Field(default=publishing.DEFAULT_KEEP, ge=publishing.MIN_KEEP, description=(
        "Publications whose data is kept for `rec recs rollback`, the live one included."))


def popularity_model(warehouse: PostgresResource) -> tuple[PopularityRecommender, str]:
    """The published popularity ranking (``ml.popular_products``: the stronger baseline on the holdout, decayed
    or plain, refitted on every interaction) as a model, and its version. Served under the name ``popularity``
    either way; the version tells the variants apart."""
    ranked = reads.popularity_ranking(warehouse)
    model = PopularityRecommender()
    model.item_ids = ranked["product_id"].to_numpy(dtype=np.int64)
    model.item_scores = ranked["score"].to_numpy(dtype=float)
    return model, str(ranked["model_version"].iloc[0])


def champion_model(context: dg.AssetExecutionContext, warehouse: PostgresResource,
                   model_store: ModelStoreResource) -> tuple[Recommender, str, dict]:
    """The approved champion as ``models/champion`` refitted it on every interaction, and its evaluation."""
    row = approved_champion(context, warehouse)
    version = row.get("deployed_version")
    if not version:
        raise dg.Failure(f"champion {row['model_name']} {row['model_version']} is not refitted for publishing yet: "
                         "materialize models/champion first")
    state, _ = model_store.store().load(row["model_name"], version)
    return registry.model_class(row["model_name"]).from_state_dict(state), version, row


@dg.multi_asset(
    specs=[
        dg.AssetSpec(RECOMMENDATIONS, group_name="publish", kinds={"python", "postgres"},
                     deps=[dg.AssetKey(["models", "champion"]), dg.AssetKey(["ml", "popular_products"]),
                           dg.AssetKey(["ml", "popular_products_by_category"]), dg.AssetKey(["ml", "item_similarity"]),
                           dg.AssetKey(["core", "users"]), dg.AssetKey(["core", "interactions"]),
                           dg.AssetKey(["core", "products"])],
                     description="Top-k products per user (recs.user_recommendations and its _detailed view)."),
        dg.AssetSpec(PUBLISHED_KEYS["similar_products"], group_name="publish", kinds={"python", "postgres"},
                     deps=[dg.AssetKey(["ml", "item_similarity"])],
                     description="Similar products per method and blended (recs.similar_products)."),
        dg.AssetSpec(PUBLISHED_KEYS["popular_products"], group_name="publish", kinds={"python", "postgres"},
                     deps=[dg.AssetKey(["ml", "popular_products"])],
                     description="Overall popularity ranking (recs.popular_products)."),
        dg.AssetSpec(PUBLISHED_KEYS["popular_products_by_category"], group_name="publish", kinds={"python", "postgres"},
                     deps=[dg.AssetKey(["ml", "popular_products_by_category"]), dg.AssetKey(["core", "categories"])],
                     description="Popularity ranking per leaf category (recs.popular_products_by_category)."),
    ],
    pool=REFRESH_POOL,
)
@retry_transient_db_errors()
def publish_recommendations(context: dg.AssetExecutionContext, config: PublishConfig, warehouse: PostgresResource,
                            model_store: ModelStoreResource):
    """Build every published table and swap them in as one publication.

    Users with at least ``min_interactions`` get the champion's ranking, with "because you liked
    <product>" where one of their products is a strong blended neighbour (enough shared users, lift
    above the median: thresholds from the data, see ``ml.serving.reason_thresholds``); others get
    popular products of their categories, then overall. Nothing already interacted with is
    recommended. The new set is checked before it goes live; readers see the old publication or the
    new one, never a mix, and never wait for the swap.
    """
    started = datetime.now(UTC)
    popular, popular_version = popularity_model(warehouse)
    champion, champion_version, champion_row = champion_model(context, warehouse, model_store)
    interactions = Interactions.from_frame(reads.interactions_frame(warehouse))
    seen = interactions.items_by_user()
    users = reads.user_ids(warehouse)
    active = np.array([user for user in users.tolist() if len(seen.get(user, ())) >= config.min_interactions],
                      dtype=np.int64)

    similarity = reads.item_similarity(warehouse)
    blended = blend_similarities(similarity, config.similar_products)
    evidence = neighbour_evidence(blended, interactions)
    thresholds = reason_thresholds(evidence)
    products = reads.product_metadata(warehouse)
    by_category = reads.popularity_by_category(warehouse)
    category_groups = by_category.groupby("category_id", sort=False)
    inputs = ServingInputs(
        k=config.k, min_interactions=config.min_interactions, seen=seen,
        personal=champion.recommend(active, config.k, exclude=seen) if len(active) else None,
        champion=Source(champion.name, champion_version),
        popular=popular.recommend(users, 2 * config.k, exclude=seen),  # 2k: enough after the category picks
        popularity=Source(popular.name, popular_version),
        category_ranking={int(c): group["product_id"].tolist() for c, group in category_groups},
        category_scores={int(c): group["score"].tolist() for c, group in category_groups},
        item_categories=reads.product_category_ids(warehouse),
        strong_neighbours=strong_neighbours(evidence, thresholds),
        titles=dict(zip(products["product_id"].tolist(), products["title"].tolist(), strict=True)),
    )
    run_id = context.run.run_id if context.run else str(uuid.uuid4())
    generated_at = datetime.now(UTC)
    recommendations = [(row.user_id, row.product_id, row.rank, row.score, row.reason, row.because_product_id,
                        row.source.name, row.source.version, run_id, generated_at) for row in assemble(users, inputs)]
    personalized_users = {row[0] for row in recommendations if row[6] == champion.name}
    explained = sum(1 for row in recommendations if row[5] is not None)
    champion_rows = sum(1 for row in recommendations if row[6] == champion.name)
    user_counts = {"users": len(users), "personalized": len(personalized_users),
                   "popular": len(users) - len(personalized_users)}

    similar = pd.concat([similarity.rename(columns={"item_id": "product_id", "neighbor_id": "similar_product_id"}),
                         blended], ignore_index=True)
    ranking = popular.ranking()
    rows = {
        "user_recommendations": recommendations,
        "similar_products": [(int(a), int(b), int(r), float(s), m) for a, b, r, s, m in similar[
            ["product_id", "similar_product_id", "rank", "score", "method"]].itertuples(index=False, name=None)],
        "popular_products": [(int(item), rank, float(score), popular_version) for rank, (item, score)
                             in enumerate(zip(*(array.tolist() for array in ranking), strict=True), start=1)],
        "popular_products_by_category": [(int(c), name, int(p), int(r), float(s)) for c, name, p, r, s in
                                         by_category.itertuples(index=False, name=None)],
        "products": [tuple(None if pd.isna(v) else v for v in row)
                     for row in products.itertuples(index=False, name=None)],
    }

    def validate(conn: psycopg.Connection, partitions: dict[str, sql.Composable]) -> None:
        problems = recommendation_problems(conn, partitions["user_recommendations"], partitions["popular_products"])
        context.log.info(f"new publication checked: {problems}")
        if reason := refusal(problems, config.k):
            raise dg.Failure(f"{reason}; the live recommendations stay as they are")

    evaluation = {key: champion_row[key] for key in ("k", "ndcg_at_k", "baseline_name", "baseline_ndcg_at_k",
                                                     "model_version") if key in champion_row}
    evaluation |= reads.evaluation_metrics(warehouse, champion_row["model_name"], champion_row["model_version"],
                                          champion_row["k"])
    with warehouse.connection() as conn:
        ensure_roles(conn)  # readers get SELECT on the recs views
        conn.commit()
        conn.autocommit = True
        try:
            publication = publishing.publish(
                conn, rows, run_id=run_id, model_name=champion.name, model_version=champion_version,
                evaluation=evaluation, k=config.k, user_counts=user_counts, started_at=started,
                validate=validate, keep=config.keep_publications)
        finally:
            if not conn.closed:  # a lost connection's error is the one to raise (and retry)
                conn.autocommit = False
    if publication.pinned:
        context.log.warning(f"publication {publication.publication_id} is kept but not live: a rollback pinned "
                            "the live one (`rec recs unpin` releases it)")
    common = {"publication_id": publication.publication_id, "live": publication.live,
              "retired_publications": str(publication.retired)}
    yield dg.MaterializeResult(asset_key=RECOMMENDATIONS, metadata={
        **common,
        "rows": publication.row_counts["user_recommendations"],
        "users": user_counts["users"],
        "users_personalized": user_counts["personalized"],
        "users_popular_only": user_counts["popular"],
        "explained_recommendations": explained,
        "because_share": explained / len(recommendations) if recommendations else 0.0,
        "because_share_personalized": explained / champion_rows if champion_rows else 0.0,
        "reason_similarity": REASON_SIMILARITY,
        "reason_min_similarity": float(thresholds.min_similarity),
        "reason_min_support": thresholds.min_support,
        "k": config.k,
        "model": f"{champion.name} {champion_version}",
    })
    per_method = similar.groupby("method").size().to_dict()
    yield dg.MaterializeResult(asset_key=PUBLISHED_KEYS["similar_products"], metadata={
        **common, "rows": publication.row_counts["similar_products"],
        **{f"rows_{method}": int(n) for method, n in per_method.items()}})
    for name in ("popular_products", "popular_products_by_category"):
        yield dg.MaterializeResult(asset_key=PUBLISHED_KEYS[name], metadata={
            **common, "rows": publication.row_counts[name], "model_version": popular_version})


@dg.asset_check(asset=RECOMMENDATIONS, blocking=True,
                description="Every user has recommendations, at most k, none a product they interacted with, no "
                "product twice (checked on the live publication; the same check gates the swap).")
def every_user_gets_unseen_recommendations(warehouse: PostgresResource) -> dg.AssetCheckResult:
    with warehouse.connection() as conn:
        live = publishing.live_publication(conn)
        if live is not None and live[1]:
            # A rollback pinned an older publication: it was checked when it was built, and users who
            # arrived since are expected to be missing from it.
            return dg.AssetCheckResult(passed=True, metadata={"pinned_publication": live[0]})
        problems = recommendation_problems(conn, sql.SQL("recs.user_recommendations"),
                                           sql.SQL("recs.popular_products"))
        k = conn.execute("SELECT k FROM recs.recommendation_runs WHERE is_live").fetchone()
    reason = refusal(problems, k[0] if k else 0)
    return dg.AssetCheckResult(passed=reason is None, metadata={**problems, "k": k[0] if k else None})


# Recommendations older than two hours (the hourly schedule missed two refreshes) are flagged as a
# warning on the asset; the sensor evaluates the check every five minutes under `make dev`.
RECOMMENDATIONS_MAX_AGE = timedelta(hours=2)
recommendations_freshness_checks = dg.build_last_update_freshness_checks(
    assets=[RECOMMENDATIONS], lower_bound_delta=RECOMMENDATIONS_MAX_AGE, severity=dg.AssetCheckSeverity.WARN)
recommendations_freshness_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=recommendations_freshness_checks, minimum_interval_seconds=300,
    name="recommendations_freshness", default_status=dg.DefaultSensorStatus.RUNNING)
