"""Publish: the tables downstream applications read (``recs`` schema)."""


import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
from psycopg import sql
from pydantic import Field

from rec_orchestration.assets.evaluation import approved_champion
from rec_orchestration.assets.models import load_interactions
from rec_orchestration.ml import registry
from rec_orchestration.ml.base import Recommender
from rec_orchestration.ml.popularity import PopularityRecommender
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource, replace_table
from rec_orchestration.resources.roles import ensure_roles

RECOMMENDATIONS_TABLE = "recs.user_recommendations"

RUNS_DDL = sql.SQL("""
    CREATE TABLE IF NOT EXISTS recs.recommendation_runs (
        run_id        text PRIMARY KEY,
        model_name    text NOT NULL,
        model_version text NOT NULL,
        k             integer NOT NULL,
        users         integer NOT NULL,
        rows_written  bigint NOT NULL,
        started_at    timestamptz NOT NULL,
        finished_at   timestamptz NOT NULL
    )""")


class RecommendationsConfig(dg.Config):
    k: int = Field(default=10, ge=1, le=1000, description="Recommendations per user.")
    min_interactions: int = Field(default=3, ge=0, description=(
        "Users with fewer interactions get popular products instead of the champion's."))


def popularity_model(warehouse: PostgresResource) -> tuple[PopularityRecommender, str]:
    ranked = warehouse.read_dataframe(sql.SQL(
        "SELECT product_id, score, model_version FROM recs.popular_products ORDER BY rank"))
    if ranked.empty:
        raise dg.Failure("recs.popular_products is empty")
    model = PopularityRecommender()
    model.item_ids = ranked["product_id"].to_numpy(dtype=np.int64)
    model.item_scores = ranked["score"].to_numpy(dtype=float)
    return model, str(ranked["model_version"].iloc[0])


def champion_model(context: dg.AssetExecutionContext, warehouse: PostgresResource,
                   model_store: ModelStoreResource) -> tuple[Recommender, str]:
    """The approved champion as ``models/champion`` refitted it on every interaction."""
    row = approved_champion(context, warehouse)
    version = row.get("deployed_version")
    if not version:
        raise dg.Failure(f"champion {row['model_name']} {row['model_version']} is not refitted for publishing yet: "
                         "materialize models/champion first")
    state, _ = model_store.load(row["model_name"], version)
    return registry.model_class(row["model_name"]).from_state_dict(state), version


@dg.asset(
    key=["recs", "user_recommendations"],
    group_name="publish",
    kinds={"python", "postgres"},
    deps=[dg.AssetKey(["recs", "popular_products"]), dg.AssetKey(["models", "champion"]),
          dg.AssetKey(["core", "users"]), dg.AssetKey(["core", "interactions"])],
)
def user_recommendations(context: dg.AssetExecutionContext, config: RecommendationsConfig,
                         warehouse: PostgresResource, model_store: ModelStoreResource) -> dg.MaterializeResult:
    """Top-k products per user in ``recs.user_recommendations``, excluding what the user already interacted with.

    Users with at least ``min_interactions`` get the champion's ranking (reason ``personalized``), topped
    up from popularity when it has fewer than k unseen items; everyone else gets popular products
    (reason ``popular``). Written beside the live table and swapped in with one short transaction, so
    readers see the old set or the new one, never a mix; each publish is recorded in
    ``recs.recommendation_runs``.
    """
    started = datetime.now(UTC)
    popular, popular_version = popularity_model(warehouse)
    champion, champion_version = champion_model(context, warehouse, model_store)
    interactions = load_interactions(warehouse)
    seen = interactions.items_by_user()
    users = np.array([row[0] for row in warehouse.fetch_all("SELECT user_id FROM core.users ORDER BY user_id")])
    history = {user: len(items) for user, items in seen.items()}
    active = np.array([user for user in users if history.get(user, 0) >= config.min_interactions])
    personal = {}
    if len(active):
        ranked = champion.recommend(active, config.k, exclude=seen)
        personal = dict(zip(active.tolist(), zip(ranked.items, ranked.scores, strict=True), strict=True))
    fallback = popular.recommend(users, config.k, exclude=seen)
    run_id = context.run.run_id if context.run else str(uuid.uuid4())
    generated_at = datetime.now(UTC)
    rows = []
    counts = {"personalized": 0, "popular": 0}
    for user, popular_items, popular_scores in zip(users.tolist(), fallback.items, fallback.scores, strict=True):
        chosen, chosen_scores = personal.get(user, (champion.item_ids[:0], np.empty(0)))
        rows += [(user, int(item), rank, float(score), "personalized", champion.name, champion_version, run_id,
                  generated_at)
                 for rank, (item, score) in enumerate(zip(chosen.tolist(), chosen_scores.tolist(), strict=True),
                                                      start=1)]
        taken = set(chosen.tolist())
        for item, score in zip(popular_items.tolist(), popular_scores.tolist(), strict=True):
            if len(taken) >= config.k:
                break
            if item not in taken:
                taken.add(item)
                rows.append((user, int(item), len(taken), float(score), "popular", popular.name, popular_version,
                             run_id, generated_at))
        counts["personalized" if len(chosen) else "popular"] += 1
    with warehouse.connection() as conn:
        ensure_roles(conn)  # creates the recs schema; readers get SELECT on what is published into it
        conn.execute(RUNS_DDL)
        replace_table(
            conn, RECOMMENDATIONS_TABLE,
            columns=[("user_id", "bigint"), ("product_id", "bigint"),
                     ("rank", "integer"), ("score", "double precision"),
                     ("reason", "text"), ("model_name", "text"),
                     ("model_version", "text"), ("run_id", "text"),
                     ("generated_at", "timestamptz")],
            rows=rows,
            primary_key=["user_id", "rank"],
            indexes=[],
        )
        conn.execute(
            """INSERT INTO recs.recommendation_runs
               (run_id, model_name, model_version, k, users, rows_written, started_at, finished_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (run_id) DO UPDATE SET rows_written = EXCLUDED.rows_written,
                                                  finished_at = EXCLUDED.finished_at""",
            (run_id, champion.name, champion_version, config.k, len(users), len(rows), started, datetime.now(UTC)),
        )
    return dg.MaterializeResult(metadata={
        "rows": len(rows),
        "users": len(users),
        "users_personalized": counts["personalized"],
        "users_popular_only": counts["popular"],
        "k": config.k,
        "model": f"{champion.name} {champion_version}",
    })


@dg.asset_check(asset=user_recommendations, blocking=True,
                description="Every user has k recommendations and none of them is a product they interacted with.")
def every_user_gets_k_unseen_recommendations(warehouse: PostgresResource) -> dg.AssetCheckResult:
    users_without = warehouse.fetch_value("""
        SELECT count(*) FROM core.users u
        WHERE NOT EXISTS (SELECT 1 FROM recs.user_recommendations r WHERE r.user_id = u.user_id)""")
    per_user = warehouse.fetch_all("""
        SELECT min(n), max(n) FROM (SELECT count(*) AS n FROM recs.user_recommendations GROUP BY user_id) c""")
    already_reviewed = warehouse.fetch_value("""
        SELECT count(*) FROM recs.user_recommendations r
        JOIN core.interactions v ON v.user_id = r.user_id AND v.product_id = r.product_id""")
    k = warehouse.fetch_value("SELECT k FROM recs.recommendation_runs ORDER BY finished_at DESC LIMIT 1")
    low, high = per_user[0]
    passed = users_without == 0 and already_reviewed == 0 and low == k and high == k
    return dg.AssetCheckResult(passed=passed, metadata={
        "users_without_recommendations": users_without,
        "min_per_user": low, "max_per_user": high, "k": k,
        "recommendations_already_reviewed": already_reviewed,
    })


# Recommendations older than two hours (the hourly schedule missed two refreshes) are flagged as a
# warning on the asset; the sensor evaluates the check every five minutes under `make dev`.
RECOMMENDATIONS_MAX_AGE = timedelta(hours=2)
recommendations_freshness_checks = dg.build_last_update_freshness_checks(
    assets=[user_recommendations], lower_bound_delta=RECOMMENDATIONS_MAX_AGE, severity=dg.AssetCheckSeverity.WARN)
recommendations_freshness_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=recommendations_freshness_checks, minimum_interval_seconds=300,
    name="recommendations_freshness", default_status=dg.DefaultSensorStatus.RUNNING)
