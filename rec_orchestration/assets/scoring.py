"""Scoring: every user's top k with its reason, split into shards that are separate steps.

The users are split by a stable hash of their id (``ml.serving.user_shards``) into ``REC_SCORING_SHARDS``
shards (default 1). Each shard is its own asset, ``ml/scored_users_<i>_of_<n>``, so a distributed executor
(``REC_EXECUTOR=dask``) runs them on different workers at once. A shard reads what it needs from the
warehouse and the model store and writes its rows to its own table, ``ml.scored_users_<i>_of_<n>``,
replaced atomically, with a record in ``ml.scoring_shards``: the *basis* it was scored on (a hash of the
champion's version, the popularity ranking's, the similarity rows, the users, the product titles and the
serving settings). Nothing passes through memory or local disk, so the workers may be other machines.

A shard rescores only the users whose histories changed (``ml.serving.history_digests``, kept per user in
``ml.scored_users_<i>_of_<n>_histories``) while the *serving key* it last scored every user with stays the
same: the champion's version, the serving settings, the shard count and the scoring code (``shards.py``).
models/champion keeps serving its fit while the interactions grew by at most 5 % and it is under a day old,
so the hourly refresh after a few new reviews rewrites their users' rows, not every user's. The other users
keep their rows (popular products and reasons as they were scored) until the champion is refitted; the
reason thresholds stay those of the last full scoring, so every user's reasons pass the same bar.

Publishing (``assets/publish.py``) assembles every shard of the same basis into one publication and
swaps it in atomically, as one step always did: a shard that is missing or was scored on other inputs
fails the publish with the shards to materialize, and the live recommendations stay as they are.
"""

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import psycopg
from psycopg import sql

from rec_orchestration.db.tables import copy_rows, ensure_ml_schema, qualified, replace_table
from rec_orchestration.ml.base import index_of
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.serving import (
    ReasonThresholds,
    ServingInputs,
    assemble,
    blend_similarities,
    history_digests,
    neighbour_evidence,
    reason_thresholds,
    strong_neighbours,
    strong_pairs,
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
    history_table,
    popularity_model,
    reasons_table,
    scoring_tags,
    serving_state,
    shard_key,
    shard_table,
)
from rec_orchestration.threads import limited, step_threads

if TYPE_CHECKING:
    import pandas as pd

# ---------------------------------------------------------------------------------------------- a shard

def shard_asset(shard: int, shards: int) -> dg.AssetsDefinition:
    @dg.asset(key=shard_key(shard, shards), group_name="publish", kinds={"python", "postgres"}, deps=SERVING_DEPS,
              pool=REFRESH_POOL, op_tags=scoring_tags(),
              description=f"The champion's top k with reasons for shard {shard} of {shards} of the users (by a "
                          f"stable hash of the user id), in {shard_table(shard, shards)}; only the users whose "
                          "histories changed while the champion's fit and the serving settings stay the same. "
                          "recs/user_recommendations publishes every shard together.")
    @retry_transient_db_errors()
    def _shard(context: dg.AssetExecutionContext, warehouse: PostgresResource, model_store: ModelStoreResource,
               serving: ServingResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        seconds = Stopwatch()
        state = serving_state(context, warehouse, serving, shards)
        seconds.lap("reading inputs")
        mine = state.users[user_shards(state.users, shards) == shard]
        digests = user_digests(state.interactions, mine)
        seconds.lap("history digests")
        table, histories = shard_table(shard, shards), history_table(shard, shards)
        reasons = reasons_table(shard, shards)
        with warehouse.connection() as conn:
            ensure_ml_schema(conn)
        with warehouse.connection() as conn:
            previous = previous_scoring(conn, shard, shards, state.serving_key)
            similarity_basis = state.similarity_basis
            removed = np.empty(0, dtype=np.int64)
            kept_pairs = None
            if previous is None:
                rescore, thresholds = mine, None
            else:
                rescore, removed = changed_users(conn, histories, mine, digests)
                thresholds = previous.thresholds
                if len(rescore) and previous.reasons_basis == similarity_basis:
                    kept_pairs = read_pairs(conn, reasons)
        seconds.lap("finding changed users")
        pairs = None  # the strong neighbour pairs reckoned now, to keep; None: those kept stay
        if previous is not None and not len(rescore):  # no history changed: nothing to rank, not even reasons
            rows, thresholds_used = iter(()), previous.thresholds
        else:
            rows, thresholds_used, pairs = score_users(context, state, model_store, serving, rescore, shards,
                                                       thresholds, seconds, kept_pairs)
        scored = dict(zip(rescore.tolist(), digests[np.searchsorted(mine, rescore)].tolist(), strict=True))
        # Rows, histories and record in one transaction: all or nothing, so a failure or a kill leaves the shard
        # as it was. The record is locked first and must still be the one the changed users were found from.
        with warehouse.connection() as conn:
            current = scoring_record(conn, shard, shards, lock=True)
            if previous is not None and current != previous.record:
                raise dg.Failure(f"shard {shard} of {shards} was scored by another run meanwhile ({current}): "
                                 "materialize it again")
            if pairs is not None:
                columns = (pairs[name].tolist() for name, _ in PAIR_COLUMNS)
                replace_table(conn, reasons, PAIR_COLUMNS, zip(*columns, strict=True),
                              primary_key=("product_id", "similar_product_id"))
            if previous is None:
                written = replace_table(conn, table, SHARD_COLUMNS, rows, primary_key=("user_id", "rank"),
                                        nullable=("because_product_id",))
                replace_table(conn, histories, HISTORY_COLUMNS, scored.items(), primary_key=("user_id",))
                row_count = written
            else:
                deleted, written = replace_users(conn, table, histories, np.union1d(rescore, removed), rows,
                                                 scored)
                row_count = previous.row_count - deleted + written
            conn.execute(sql.SQL("""
                INSERT INTO {records} (shard_count, shard, basis, run_id, user_count, row_count, min_support,
                                       min_similarity, scored_at, serving_key, rescored_users, scored_fully_at,
                                       reasons_basis)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now(), %s, %s, coalesce(%s, now()), %s)
                ON CONFLICT (shard_count, shard) DO UPDATE SET
                    basis = excluded.basis, run_id = excluded.run_id, user_count = excluded.user_count,
                    row_count = excluded.row_count,
                    min_support = excluded.min_support, min_similarity = excluded.min_similarity,
                    scored_at = excluded.scored_at, serving_key = excluded.serving_key,
                    rescored_users = excluded.rescored_users,
                    scored_fully_at = excluded.scored_fully_at,
                    reasons_basis = excluded.reasons_basis""").format(records=qualified(SHARD_RECORDS)),
                (shards, shard, state.basis, context.run.run_id if context.run else "", len(mine), row_count,
                 thresholds_used.min_support, float(thresholds_used.min_similarity), state.serving_key,
                 len(rescore), previous.scored_fully_at if previous else None,
                 similarity_basis if pairs is not None else previous.reasons_basis if previous else None))
        seconds.lap("reasons, popular top-ups and writing")
        how = ("every user" if previous is None else
               f"{len(rescore):,} users whose histories changed or who are new, {len(removed):,} gone")
        context.log.info(f"shard {shard} of {shards}: {len(mine):,} users, {row_count:,} rows; rescored {how}; "
                         f"seconds: {seconds.laps}")
        return dg.MaterializeResult(metadata={
            "basis": state.basis, "serving_key": state.serving_key, "users": len(mine), "rows": row_count,
            "scoring": "full" if previous is None else "changed users",
            "rescored_users": len(rescore), "users_gone": len(removed), "rows_written": written,
            "table": table, "model": f"{state.champion.name} {state.champion.version}",
            "seconds": round(time.perf_counter() - started, 2),
            "seconds_by_part": dg.MetadataValue.json(seconds.laps)})

    return _shard


class Stopwatch:
    """Seconds between successive ``lap`` calls, by name: where a step's time went, for its metadata."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._last, 2)
        self._last = now


HISTORY_COLUMNS = (("user_id", "bigint"), ("history", "bigint"))
PAIR_COLUMNS = (("product_id", "bigint"), ("similar_product_id", "bigint"), ("support", "bigint"),
                ("similarity", "double precision"))


@dataclass(frozen=True)
class PreviousScoring:
    """A shard's record from a scoring with the same serving key: what its rows were made with."""

    thresholds: ReasonThresholds
    row_count: int
    scored_fully_at: object  # a timestamptz: when every user was last scored
    record: tuple            # its run and time (scoring_record)
    reasons_basis: str | None  # the similarity rows' hash its kept strong neighbour pairs are of (reasons_table)


def scoring_record(conn: psycopg.Connection, shard: int, shards: int, lock: bool = False) -> tuple | None:
    """The run and time of the shard's last scoring, None if none; ``lock`` locks its record until the
    transaction ends."""
    row = conn.execute(sql.SQL("SELECT run_id, scored_at FROM {} WHERE shard_count = %s AND shard = %s{}").format(
        qualified(SHARD_RECORDS), sql.SQL(" FOR UPDATE" if lock else "")), (shards, shard)).fetchone()
    return tuple(row) if row else None


def previous_scoring(conn: psycopg.Connection, shard: int, shards: int, serving_key: str) -> PreviousScoring | None:
    """The shard's last scoring if its rows may be kept for users whose histories did not change: same serving
    key, and its table and history digests there."""
    record = conn.execute(sql.SQL("""
        SELECT serving_key, min_support, min_similarity, row_count, scored_fully_at, run_id, scored_at,
               to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL,
               CASE WHEN to_regclass(%s) IS NOT NULL THEN reasons_basis END
        FROM {} WHERE shard_count = %s AND shard = %s""").format(qualified(SHARD_RECORDS)),
        (shard_table(shard, shards), history_table(shard, shards), reasons_table(shard, shards), shards,
         shard)).fetchone()
    if record is None or record[0] != serving_key or not record[7]:
        return None
    return PreviousScoring(ReasonThresholds(min_similarity=float(record[2]), min_support=int(record[1])),
                           int(record[3]), record[4], (record[5], record[6]), record[8])


def read_pairs(conn: psycopg.Connection, table: str) -> "pd.DataFrame":
    """A shard's kept strong neighbour pairs (``PAIR_COLUMNS``)."""
    import pandas as pd
    rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(name) for name, _ in PAIR_COLUMNS), qualified(table))).fetchall()
    return pd.DataFrame(rows, columns=[name for name, _ in PAIR_COLUMNS]).astype(
        {"product_id": "int64", "similar_product_id": "int64", "support": "int64", "similarity": "float64"})


def user_digests(interactions: "pd.DataFrame", users: np.ndarray) -> np.ndarray:
    """The history digest of each of ``users`` (ascending), 0 for a user without interactions."""
    known, digests = history_digests(interactions)
    position = index_of(known, users)
    return np.where(position >= 0, digests[np.maximum(position, 0)], 0)


def changed_users(conn: psycopg.Connection, histories: str, users: np.ndarray, digests: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Of ``users`` (ascending, with their ``digests``), those whose digest differs from the one stored in
    ``histories`` or who have none there; and the users stored there who are no longer among them."""
    stored = np.array(conn.execute(sql.SQL("SELECT user_id, history FROM {} ORDER BY user_id").format(
        qualified(histories))).fetchall(), dtype=np.int64).reshape(-1, 2)
    position = index_of(stored[:, 0], users)
    changed = (position < 0) | (stored[np.maximum(position, 0), 1] != digests) if len(stored) else np.ones(
        len(users), dtype=bool)
    return users[changed], stored[~np.isin(stored[:, 0], users), 0]


def replace_users(conn: psycopg.Connection, table: str, histories: str, users: np.ndarray, rows: Iterable[tuple],
                  scored: dict[int, int]) -> tuple[int, int]:
    """Delete every row of ``users`` from the shard's ``table`` and ``histories``, then add ``rows`` and the
    ``scored`` users' digests, inside the connection's transaction. Returns the rows deleted and written."""
    conn.execute("CREATE TEMP TABLE rescored_users (user_id bigint PRIMARY KEY) ON COMMIT DROP")
    copy_rows(conn, "rescored_users", ["user_id"], ["bigint"], ((user,) for user in users.tolist()))
    conn.execute("ANALYZE rescored_users")
    deleted = conn.execute(sql.SQL("DELETE FROM {} AS t USING rescored_users AS r WHERE t.user_id = r.user_id")
                           .format(qualified(table))).rowcount
    conn.execute(sql.SQL("DELETE FROM {} AS h USING rescored_users AS r WHERE h.user_id = r.user_id")
                 .format(qualified(histories)))
    written = copy_rows(conn, table, [name for name, _ in SHARD_COLUMNS], [kind for _, kind in SHARD_COLUMNS], rows)
    copy_rows(conn, histories, [name for name, _ in HISTORY_COLUMNS], [kind for _, kind in HISTORY_COLUMNS],
              scored.items())
    return deleted, written


def score_users(context: dg.AssetExecutionContext, state: ServingState, model_store: ModelStoreResource,
                serving: ServingResource, mine: np.ndarray, shards: int, thresholds: ReasonThresholds | None = None,
                seconds: "Stopwatch | None" = None, kept_pairs: "pd.DataFrame | None" = None
                ) -> tuple[Iterator[tuple], ReasonThresholds, "pd.DataFrame | None"]:
    """The rows of the users ``mine`` (``SHARD_COLUMNS``) of one of ``shards`` shards, made from ``state`` alone as
    they are consumed, the reason thresholds they are made with (``thresholds``, else drawn from every
    neighbour pair) and the neighbour pairs strong enough to name, reckoned now from every pair's evidence;
    with ``kept_pairs`` (and ``thresholds``) those pairs are taken as they are instead, and None is returned
    for them. ``seconds`` times its parts."""
    seconds = seconds or Stopwatch()
    champion = champion_model(state.row, model_store)
    popular = popularity_model(state.ranked)
    interactions = Interactions.from_frame(state.interactions)
    seen = interactions.items_by_user(mine)  # this shard's users' histories only
    active = np.array([user for user in mine.tolist() if len(seen.get(user, ())) >= serving.min_interactions],
                      dtype=np.int64)
    seconds.lap("loading the champion and histories")
    pairs = None
    if kept_pairs is None or thresholds is None:
        # The thresholds come from every neighbour pair, so every shard draws the same ones.
        blended = blend_similarities(state.similarity, serving.similar_products)
        evidence = neighbour_evidence(blended, interactions)
        thresholds = thresholds or reason_thresholds(evidence)
        pairs = strong_pairs(evidence, thresholds)
    seconds.lap("neighbour evidence")
    category_groups = state.by_category.groupby("category_id", sort=False)
    # The champion's scoring: the step's share of the cores. Nothing but the shards runs at this level of the
    # refresh (publish waits for them all), so they share the cores among themselves alone: the one shard of
    # the default takes every core (on 2 cores it had one while the other idled, 1,846 s at 10M reviews).
    with limited(step_threads(width=shards)):
        personal = champion.recommend(active, serving.k, exclude=seen) if len(active) else None
        fallback = popular.recommend(mine, 2 * serving.k, exclude=seen)  # 2k: enough after the category picks
    seconds.lap("ranking")
    inputs = ServingInputs(
        k=serving.k, min_interactions=serving.min_interactions, seen=seen, personal=personal,
        champion=state.champion, popular=fallback, popularity=state.popularity,
        category_ranking={int(c): group["product_id"].tolist() for c, group in category_groups},
        category_scores={int(c): group["score"].tolist() for c, group in category_groups},
        item_categories=state.item_categories,
        strong_neighbours=strong_neighbours(kept_pairs if pairs is None else pairs, thresholds),
        titles=dict(zip(state.products["product_id"].tolist(), state.products["title"].tolist(), strict=True)),
    )
    rows = ((row.user_id, row.product_id, row.rank, row.score, row.reason, row.because_product_id,
             row.source.name, row.source.version) for row in assemble(mine, inputs))
    context.log.info(f"scoring {len(mine):,} users ({len(active):,} with the champion)")
    return rows, thresholds, pairs


scoring_shard_assets = [shard_asset(shard, SHARD_COUNT) for shard in range(SHARD_COUNT)]
