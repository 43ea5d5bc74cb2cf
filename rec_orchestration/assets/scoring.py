"""Scoring: every user's top k with its reason, split into shards that are separate steps.

The users are split by a stable hash of their id (``ml.serving.user_shards``) into ``REC_SCORING_SHARDS``
shards (default 1). Each shard is its own asset, ``ml/scored_users_<i>_of_<n>``, so a distributed executor
(``REC_EXECUTOR=dask``) runs them on different workers at once. A shard reads what it needs from the
warehouse and the model store and writes its rows to its own table, ``ml.scored_users_<i>_of_<n>``,
replaced atomically, with a record in ``ml.scoring_shards``: the *basis* it was scored on (a hash of the
champion's version, the popularity ranking's, the similarity rows, the users, the product titles and the
serving settings). Nothing passes through memory or local disk, so the workers may be other machines.

Publishing (``assets/publish.py``) assembles every shard of the same basis into one publication and
swaps it in atomically, as one step always did: a shard that is missing or was scored on other inputs
fails the publish with the shards to materialize, and the live recommendations stay as they are.
"""

import time
from collections.abc import Iterator

import dagster as dg
import numpy as np
from psycopg import sql

from rec_orchestration.db.tables import qualified, replace_table
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.serving import (
    ReasonThresholds,
    ServingInputs,
    assemble,
    blend_similarities,
    neighbour_evidence,
    reason_thresholds,
    strong_neighbours,
    user_shards,
)
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.resources.serving import ServingResource
from rec_orchestration.retry import retry_transient_db_errors
from rec_orchestration.runs import REFRESH_POOL
from rec_orchestration.shards import (
    SERVING_DEPS,
    SHARD_COLUMNS,
    SHARD_COUNT,
    SHARD_RECORDS,
    ServingState,
    champion_model,
    popularity_model,
    scoring_tags,
    serving_state,
    shard_key,
    shard_table,
)
from rec_orchestration.threads import limited, step_threads

# ---------------------------------------------------------------------------------------------- a shard

def shard_asset(shard: int, shards: int) -> dg.AssetsDefinition:
    @dg.asset(key=shard_key(shard, shards), group_name="publish", kinds={"python", "postgres"}, deps=SERVING_DEPS,
              pool=REFRESH_POOL, op_tags=scoring_tags(),
              description=f"The champion's top k with reasons for shard {shard} of {shards} of the users (by a "
                          f"stable hash of the user id), in {shard_table(shard, shards)}; "
                          "recs/user_recommendations publishes every shard together.")
    @retry_transient_db_errors()
    def _shard(context: dg.AssetExecutionContext, warehouse: PostgresResource, model_store: ModelStoreResource,
               serving: ServingResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        state = serving_state(context, warehouse, serving, shards)
        rows, thresholds_used = score_users(context, state, model_store, serving, shard, shards)
        with warehouse.connection() as conn:  # rows and record in one transaction: both or neither
            written = replace_table(conn, shard_table(shard, shards), SHARD_COLUMNS, rows,
                                    primary_key=("user_id", "rank"), nullable=("because_product_id",))
            users = rows.users_seen()
            conn.execute(sql.SQL("""
                INSERT INTO {records} (shard_count, shard, basis, run_id, user_count, row_count, min_support,
                                       min_similarity, scored_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
                ON CONFLICT (shard_count, shard) DO UPDATE SET
                    basis = excluded.basis, run_id = excluded.run_id, user_count = excluded.user_count,
                    row_count = excluded.row_count,
                    min_support = excluded.min_support, min_similarity = excluded.min_similarity,
                    scored_at = excluded.scored_at""").format(records=qualified(SHARD_RECORDS)),
                (shards, shard, state.basis, context.run.run_id if context.run else "", users, written,
                 thresholds_used.min_support, float(thresholds_used.min_similarity)))
        context.log.info(f"shard {shard} of {shards}: {users:,} users, {written:,} rows")
        return dg.MaterializeResult(metadata={
            "basis": state.basis, "users": users, "rows": written,
            "table": shard_table(shard, shards), "model": f"{state.champion.name} {state.champion.version}",
            "seconds": round(time.perf_counter() - started, 2)})

    return _shard


class ScoredRows:
    """A shard's rows, made as they are written (a list of them all would hold k rows per user in memory),
    counting the users they cover."""

    def __init__(self, rows: Iterator[tuple]):
        self._rows = rows
        self._users: set[int] = set()

    def __iter__(self) -> Iterator[tuple]:
        for row in self._rows:
            self._users.add(row[0])
            yield row

    def users_seen(self) -> int:
        return len(self._users)


def score_users(context: dg.AssetExecutionContext, state: ServingState, model_store: ModelStoreResource,
                serving: ServingResource, shard: int, shards: int) -> tuple[ScoredRows, ReasonThresholds]:
    """The rows of this shard's users (``SHARD_COLUMNS``), made from ``state`` alone as they are consumed, and
    the reason thresholds they are made with."""
    mine = state.users[user_shards(state.users, shards) == shard]
    champion = champion_model(state.row, model_store)
    popular = popularity_model(state.ranked)
    interactions = Interactions.from_frame(state.interactions)
    seen = interactions.items_by_user(mine)  # this shard's users' histories only
    active = np.array([user for user in mine.tolist() if len(seen.get(user, ())) >= serving.min_interactions],
                      dtype=np.int64)
    # The thresholds come from every neighbour pair, so every shard draws the same ones.
    blended = blend_similarities(state.similarity, serving.similar_products)
    evidence = neighbour_evidence(blended, interactions)
    thresholds = reason_thresholds(evidence)
    category_groups = state.by_category.groupby("category_id", sort=False)
    # The champion's scoring: the step's share of the cores. Nothing but the shards runs at this level of the
    # refresh (publish waits for them all), so they share the cores among themselves alone: the one shard of
    # the default takes every core (on 2 cores it had one while the other idled, 1,846 s at 10M reviews).
    with limited(step_threads(width=shards)):
        personal = champion.recommend(active, serving.k, exclude=seen) if len(active) else None
        fallback = popular.recommend(mine, 2 * serving.k, exclude=seen)  # 2k: enough after the category picks
    inputs = ServingInputs(
        k=serving.k, min_interactions=serving.min_interactions, seen=seen, personal=personal,
        champion=state.champion, popular=fallback, popularity=state.popularity,
        category_ranking={int(c): group["product_id"].tolist() for c, group in category_groups},
        category_scores={int(c): group["score"].tolist() for c, group in category_groups},
        item_categories=state.item_categories,
        strong_neighbours=strong_neighbours(evidence, thresholds),
        titles=dict(zip(state.products["product_id"].tolist(), state.products["title"].tolist(), strict=True)),
    )
    rows = ((row.user_id, row.product_id, row.rank, row.score, row.reason, row.because_product_id,
             row.source.name, row.source.version) for row in assemble(mine, inputs))
    context.log.info(f"shard {shard} of {shards}: scoring {len(mine):,} users ({len(active):,} with the champion)")
    return ScoredRows(rows), thresholds


scoring_shard_assets = [shard_asset(shard, SHARD_COUNT) for shard in range(SHARD_COUNT)]
