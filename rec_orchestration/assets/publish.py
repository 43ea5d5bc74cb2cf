"""Publish: the tables downstream applications read, as one publication (see :mod:`rec_orchestration.publishing`).

One step builds every published table from the model stage's outputs and swaps them in together:
``recs.user_recommendations`` (the champion's top k per user, popularity for cold-start users: the ranking
of ``ml.popular_products``, the stronger popularity baseline on the holdout, time-decayed or plain),
``recs.similar_products`` (every similarity method plus their blend), ``recs.popular_products`` and
``recs.popular_products_by_category``, plus the product metadata the ``*_detailed`` views hydrate.
"""

import time
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
from psycopg import sql
from pydantic import Field

from rec_orchestration import publishing, shards
from rec_orchestration.db import reads
from rec_orchestration.db.roles import ensure_roles
from rec_orchestration.db.tables import qualified
from rec_orchestration.ml.serving import (
    REASON_SIMILARITY,
    blend_similarities,
)
from rec_orchestration.publishing.checks import PROBLEMS, recommendation_problems, refusal
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.resources.serving import ServingResource
from rec_orchestration.retry import retry_transient_db_errors
from rec_orchestration.runs import REFRESH_POOL

RECOMMENDATIONS = dg.AssetKey(["recs", "user_recommendations"])
PUBLISHED_KEYS = {name: dg.AssetKey(["recs", name]) for name in publishing.TABLES if name != "products"}

class PublishConfig(dg.Config):
    keep_publications: int = Field(default=publishing.DEFAULT_KEEP, ge=publishing.MIN_KEEP, description=(
        "Publications whose data is kept for `rec recs rollback`, the live one included."))


def shard_summary(warehouse: PostgresResource, basis: str, shard_count: int, champion_name: str) -> dict:
    """What the scoring shards hold, when all ``shard_count`` of them were scored on ``basis``: the reason
    thresholds they used and counts of their rows. Fails, naming the shards to materialize, when any is
    missing or was scored on other inputs. Records and rows are read in one snapshot (REPEATABLE READ)."""
    with warehouse.connection() as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        records = {}
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (shards.SHARD_RECORDS,)).fetchone()[0]:
            records = {shard: rest for shard, *rest in conn.execute(
                sql.SQL("SELECT shard, basis, min_support, min_similarity FROM {} WHERE shard_count = %s").format(
                    qualified(shards.SHARD_RECORDS)), (shard_count,))}
        stale = [shards.shard_key(shard, shard_count).to_user_string() for shard in range(shard_count)
                 if records.get(shard, ("",))[0] != basis]
        if stale:
            raise dg.Failure(f"scoring shards {', '.join(stale)} are missing or were scored on other inputs than "
                             "this publish sees: materialize them (with this run's serving config) first; the live "
                             "recommendations stay as they are")
        rows, champion_rows, explained, personalized = conn.execute(sql.SQL(
            """SELECT count(*), count(*) FILTER (WHERE model_name = %s),
                      count(*) FILTER (WHERE because_product_id IS NOT NULL),
                      count(DISTINCT user_id) FILTER (WHERE model_name = %s)
               FROM ({}) AS scored""").format(_union(shard_count)), (champion_name, champion_name)).fetchone()
    _, min_support, min_similarity = records[0]
    return {"min_support": int(min_support), "min_similarity": float(min_similarity), "rows": rows,
            "champion_rows": champion_rows, "explained": explained, "personalized_users": personalized}


def _union(shard_count: int) -> sql.Composable:
    """Every scoring shard's rows (``shards.SHARD_COLUMNS``) with a ``shard`` column."""
    columns = sql.SQL(", ").join(sql.Identifier(name) for name, _ in shards.SHARD_COLUMNS)
    return sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, {} AS shard FROM {}").format(columns, sql.Literal(shard),
                                                         qualified(shards.shard_table(shard, shard_count)))
        for shard in range(shard_count))


def shard_query(basis: str, shard_count: int, run_id: str, generated_at: datetime) -> publishing.Query:
    """The published recommendations as a query over the scoring shards, run by the database inside the publish
    transaction: rows never pass through this process (k per user: twenty million at a million users). A shard whose
    record names another basis by then (re-scored since :func:`shard_summary` looked) contributes no rows, and
    the check before the swap then refuses the publication for its users without recommendations. No ORDER BY:
    each shard's table holds its users' rows in the order it wrote them (by user, best first), and a sort of
    them all would spill to disk at that size."""
    columns = sql.SQL(", ").join(sql.SQL("scored.{}").format(sql.Identifier(name)) for name, _ in shards.SHARD_COLUMNS)
    return publishing.Query(sql.SQL(
        """SELECT {columns}, %s::text, %s::timestamptz FROM ({union}) AS scored
           JOIN {records} AS record ON record.shard = scored.shard AND record.shard_count = %s AND record.basis = %s
        """).format(
        columns=columns, union=_union(shard_count), records=qualified(shards.SHARD_RECORDS)),
        (run_id, generated_at, shard_count, basis))


@dg.multi_asset(
    specs=[
        dg.AssetSpec(RECOMMENDATIONS, group_name="publish", kinds={"python", "postgres"},
                     deps=shards.SERVING_DEPS + shards.SHARD_KEYS,
                     description="Top-k products per user (recs.user_recommendations and its _detailed view), "
                                 "from every scoring shard."),
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
    op_tags=shards.scoring_tags(),
)
@retry_transient_db_errors()
def publish_recommendations(context: dg.AssetExecutionContext, config: PublishConfig, warehouse: PostgresResource,
                            serving: ServingResource):
    """Assemble every scoring shard and the other published tables into one publication and swap it in.

    The scoring shards (``assets/scoring.py``) hold each user's top k: users with at least ``min_interactions``
    get the champion's ranking, with "because you liked <product>" where one of their products is a
    strong blended neighbour (enough shared users, lift above the median: thresholds from the data, see
    ``ml.serving.reason_thresholds``); others get popular products of their categories, then overall.
    Nothing already interacted with is recommended. The new set is checked before it goes live; readers
    see the old publication or the new one, never a mix, and never wait for the swap.
    """
    import pandas as pd
    started = datetime.now(UTC)
    shard_count = shards.SHARD_COUNT
    began = time.perf_counter()
    state = shards.serving_state(context, warehouse, serving, shard_count, read_interactions=False)
    reading_s = time.perf_counter() - began
    champion_row = state.row
    popular, popular_version = shards.popularity_model(state.ranked), state.popularity.version
    champion_name, champion_version = state.champion.name, state.champion.version
    scored = shard_summary(warehouse, state.basis, shard_count, champion_name)
    similarity, products, by_category = state.similarity, state.products, state.by_category
    blended = blend_similarities(similarity, serving.similar_products)
    users = state.users
    run_id = context.run.run_id if context.run else str(uuid.uuid4())
    explained, champion_rows = scored["explained"], scored["champion_rows"]
    user_counts = {"users": len(users), "personalized": scored["personalized_users"],
                   "popular": len(users) - scored["personalized_users"]}

    similar = pd.concat([similarity.rename(columns={"item_id": "product_id", "neighbor_id": "similar_product_id"}),
                         blended], ignore_index=True)
    ranking = popular.ranking()
    # Generators, not lists: COPY streams each row once (the tables grow with the products).
    rows = {
        "user_recommendations": shard_query(state.basis, shard_count, run_id, datetime.now(UTC)),
        "similar_products": ((int(a), int(b), int(r), float(s), m) for a, b, r, s, m in similar[
            ["product_id", "similar_product_id", "rank", "score", "method"]].itertuples(index=False, name=None)),
        "popular_products": ((int(item), rank, float(score), popular_version) for rank, (item, score)
                             in enumerate(zip(*(array.tolist() for array in ranking), strict=True), start=1)),
        "popular_products_by_category": ((int(c), name, int(p), int(r), float(s)) for c, name, p, r, s in
                                         by_category.itertuples(index=False, name=None)),
        "products": (tuple(None if pd.isna(v) else v for v in row)
                     for row in products.itertuples(index=False, name=None)),
    }

    checked: dict = {}  # what the gate found, for the asset check of this run (checked_by_this_run)

    def validate(conn: psycopg.Connection, partitions: dict[str, sql.Composable]) -> None:
        problems = recommendation_problems(conn, partitions["user_recommendations"], partitions["popular_products"])
        context.log.info(f"new publication checked: {problems}")
        if reason := refusal(problems, serving.k):
            raise dg.Failure(f"{reason}; the live recommendations stay as they are")
        checked.update(problems, k=serving.k)

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
                conn, rows, run_id=run_id, model_name=champion_name, model_version=champion_version,
                evaluation=evaluation, k=serving.k, user_counts=user_counts, started_at=started,
                validate=validate, keep=config.keep_publications)
        finally:
            if not conn.closed:  # a lost connection's error is the one to raise (and retry)
                conn.autocommit = False
    if publication.pinned:
        context.log.warning(f"publication {publication.publication_id} is kept but not live: a rollback pinned "
                            "the live one (`rec recs unpin` releases it)")
    common = {"publication_id": publication.publication_id, "live": publication.live,
              "retired_publications": str(publication.retired)}
    seconds = {"reading inputs": round(reading_s, 2), **publication.seconds}
    context.log.info(f"publication {publication.publication_id} built in seconds: {seconds}")
    yield dg.MaterializeResult(asset_key=RECOMMENDATIONS, metadata={
        **common,
        "rows": publication.row_counts["user_recommendations"],
        "users": user_counts["users"],
        "users_personalized": user_counts["personalized"],
        "users_popular_only": user_counts["popular"],
        "explained_recommendations": explained,
        "because_share": explained / scored["rows"] if scored["rows"] else 0.0,
        "because_share_personalized": explained / champion_rows if champion_rows else 0.0,
        "reason_similarity": REASON_SIMILARITY,
        "reason_min_similarity": scored["min_similarity"],
        "reason_min_support": scored["min_support"],
        "k": serving.k,
        "scoring_shards": shard_count,
        "scoring_basis": state.basis,
        "model": f"{champion_name} {champion_version}",
        "seconds": dg.MetadataValue.json(seconds),  # the inputs read, each table's partition built, the check
        "checked": dg.MetadataValue.json(checked),  # the gate's counts on the partitions made live
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
                "product twice (the live publication; the same check gates the swap, and when this run's publish "
                "made the live publication, its gate's counts are reported instead of running it again).")
def every_user_gets_unseen_recommendations(context: dg.AssetCheckExecutionContext,
                                           warehouse: PostgresResource) -> dg.AssetCheckResult:
    with warehouse.connection() as conn:
        live = publishing.live_publication(conn)
        if live is not None and live[1]:
            # A rollback pinned an older publication: it was checked when it was built, and users who
            # arrived since are expected to be missing from it.
            return dg.AssetCheckResult(passed=True, metadata={"pinned_publication": live[0]})
        if live is not None and (gate := checked_by_this_run(context, live[0])) is not None:
            problems, k, how = {name: gate[name] for name in PROBLEMS}, gate["k"], "by publish before the swap"
        else:
            problems = recommendation_problems(conn, sql.SQL("recs.user_recommendations"),
                                               sql.SQL("recs.popular_products"))
            row = conn.execute("SELECT k FROM recs.recommendation_runs WHERE is_live").fetchone()
            k, how = (row[0] if row else None), "on the live views"
    reason = refusal(problems, k or 0)
    return dg.AssetCheckResult(passed=reason is None, metadata={
        **problems, "k": k, "checked": how, "live_publication": live[0] if live else None})


def checked_by_this_run(context: dg.AssetCheckExecutionContext, live_id: int) -> dict | None:
    """The counts publish's gate found, when the live publication is the one this run's publish made live:
    the gate ran the check's query on the very partitions now attached, seconds before the swap (at 10M
    interactions that query takes about 40 s; running it again found the same). None otherwise (the check
    launched alone, another run's publication, a publish from before the gate's counts were recorded)."""
    if context.run is None:
        return None
    event = context.instance.get_latest_materialization_event(RECOMMENDATIONS)
    if event is None or event.run_id != context.run.run_id or event.asset_materialization is None:
        return None
    metadata = event.asset_materialization.metadata
    published, checked = metadata.get("publication_id"), metadata.get("checked")
    if published is None or published.value != live_id or checked is None:
        return None
    gate = checked.value
    return gate if isinstance(gate, dict) and set(PROBLEMS) | {"k"} <= set(gate) else None


# Recommendations older than two hours (the hourly schedule missed two refreshes) are flagged as a
# warning on the asset; the sensor evaluates the check every five minutes under `make dev`.
RECOMMENDATIONS_MAX_AGE = timedelta(hours=2)
recommendations_freshness_checks = dg.build_last_update_freshness_checks(
    assets=[RECOMMENDATIONS], lower_bound_delta=RECOMMENDATIONS_MAX_AGE, severity=dg.AssetCheckSeverity.WARN)
recommendations_freshness_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=recommendations_freshness_checks, minimum_interval_seconds=300,
    name="recommendations_freshness", default_status=dg.DefaultSensorStatus.RUNNING)
