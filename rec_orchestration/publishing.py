"""Versioned publications of the tables downstream applications read: the ``recs`` contract.

A *publication* is one consistent set of published tables (recommendations, similar products,
popular products, the product metadata they refer to), made by one publish run. Storage is private,
in schema ``recs_store`` (``rec_reader`` cannot read it):

- ``publications``: one row per publication (run, model, metrics, row counts, times, retirement);
- ``live``: one row, the live publication id and whether it is pinned (by a rollback);
- ``switches``: every change of the live publication (publish, rollback), for "which model made
  which recommendation, over time";
- one table per published table, LIST-partitioned by ``publication_id``: a partition per publication.

Readers use the views in ``recs``, which select the partitions of the live publication
(``WHERE publication_id = (SELECT publication_id FROM recs_store.live)``). A publish builds, loads,
indexes and checks its partitions as standalone tables, attaches them (still not what the pointer
names, so invisible) and commits; then, once the transactions that opened the tables before the
attach have ended (``_settle``), a second transaction updates the one-row pointer. ``ATTACH
PARTITION`` takes SHARE UPDATE EXCLUSIVE on the parent, which does not conflict with readers'
ACCESS SHARE, and the pointer update is a row update: no reader waits for the swap, and the swap
takes no lock a reader holds. Every statement reads the pointer once, with its snapshot, so it sees
the old publication or the new one, never a mix. A publish that fails or is killed before the
pointer moves leaves the live publication untouched; killed between the two commits, it leaves a
complete publication attached but never made live (shown as kept, retired in turn).

Old publications are kept for rollback (``keep``); older ones are retired after the swap committed:
``DETACH PARTITION ... CONCURRENTLY`` (waits for queries still using them without blocking anyone)
and ``DROP``. A retirement that cannot finish (a reader holds an old partition past the lock
timeout) is finished by the next publish.

No Dagster import here: the CLI (``rec recs ...``) and the benchmark use it too.
"""

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from rec_orchestration.resources.postgres import copy_rows, set_lock_timeout
from rec_orchestration.resources.roles import READER_ROLE

log = logging.getLogger(__name__)

STORE = "recs_store"
CONTRACT = "recs"
# Bump when a view definition changes: views are replaced only then, because DROP/CREATE VIEW takes
# an ACCESS EXCLUSIVE lock and so waits for (and blocks) readers. Storage tables are created if
# missing, never altered: a change to their columns needs a migration of its own.
LAYOUT_VERSION = "1"
DEFAULT_KEEP = 3
MIN_KEEP = 2  # the live publication and the one before it: a reader's snapshot may still name it
PUBLISH_LOCK = "rec_orchestration.publish"
LIVE = sql.SQL("(SELECT publication_id FROM recs_store.live)")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = False


@dataclass(frozen=True)
class PublishedTable:
    """One published table: its columns (without ``publication_id``) and primary key."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    description: str

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def partition(self, publication_id: int) -> str:
        return f"{self.name}_p{publication_id}"


def _columns(*spec: str) -> tuple[Column, ...]:
    """``"name type"`` or ``"name type null"``."""
    columns = []
    for item in spec:
        name, _, rest = item.partition(" ")
        nullable = rest.endswith(" null")
        columns.append(Column(name, rest.removesuffix(" null"), nullable))
    return tuple(columns)


TABLES: dict[str, PublishedTable] = {table.name: table for table in (
    PublishedTable(
        "user_recommendations",
        _columns("user_id bigint", "product_id bigint", "rank integer", "score double precision", "reason text",
                 "because_product_id bigint null", "model_name text", "model_version text", "run_id text",
                 "generated_at timestamptz"),
        ("user_id", "rank"),
        "Top-k products per user, best first; products the user interacted with are excluded."),
    PublishedTable(
        "similar_products",
        _columns("product_id bigint", "similar_product_id bigint", "rank integer", "score double precision",
                 "method text"),
        ("product_id", "method", "rank"),
        "Nearest products per product, per method (collaborative, content, embedding) and 'blended'."),
    PublishedTable(
        "popular_products",
        _columns("product_id bigint", "rank integer", "score double precision", "model_version text"),
        ("rank",),
        "Every product ranked by time-decayed, weighted popularity."),
    PublishedTable(
        "popular_products_by_category",
        _columns("category_id bigint", "category text", "product_id bigint", "rank integer",
                 "score double precision"),
        ("category_id", "rank"),
        "The popularity ranking within each (leaf) category."),
    PublishedTable(
        "products",
        _columns("product_id bigint", "title text null", "main_category text null", "category text null",
                 "price numeric(12, 2) null", "average_rating numeric(3, 2) null", "rating_count integer null"),
        ("product_id",),
        "Product metadata as of the publication, for the hydrating views."),
)}

# Hydrating views: the published rows with the product metadata of the same publication.
DETAILED_VIEWS = {
    "user_recommendations_detailed": """
        SELECT r.user_id, r.rank, r.product_id, p.title, p.main_category, p.category, p.price,
               p.average_rating, p.rating_count, r.score, r.reason, r.because_product_id,
               b.title AS because_title, r.model_name, r.model_version, r.generated_at
        FROM recs_store.user_recommendations r
        JOIN recs_store.products p ON p.publication_id = r.publication_id AND p.product_id = r.product_id
        LEFT JOIN recs_store.products b ON b.publication_id = r.publication_id AND b.product_id = r.because_product_id
        WHERE r.publication_id = {live}""",
    "similar_products_detailed": """
        SELECT s.product_id, s.method, s.rank, s.similar_product_id, p.title, p.main_category, p.category,
               p.price, p.average_rating, p.rating_count, s.score
        FROM recs_store.similar_products s
        JOIN recs_store.products p ON p.publication_id = s.publication_id AND p.product_id = s.similar_product_id
        WHERE s.publication_id = {live}""",
    "popular_products_detailed": """
        SELECT r.rank, r.product_id, p.title, p.main_category, p.category, p.price, p.average_rating,
               p.rating_count, r.score
        FROM recs_store.popular_products r
        JOIN recs_store.products p ON p.publication_id = r.publication_id AND p.product_id = r.product_id
        WHERE r.publication_id = {live}""",
}

STORE_DDL = [
    """CREATE TABLE IF NOT EXISTS recs_store.meta (key text PRIMARY KEY, value text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS recs_store.publications (
        publication_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id                text NOT NULL,
        model_name            text NOT NULL,
        model_version         text NOT NULL,
        evaluation            jsonb NOT NULL,
        k                     integer NOT NULL,
        users                 integer NOT NULL,
        users_personalized    integer NOT NULL,
        users_popular         integer NOT NULL,
        row_counts            jsonb NOT NULL,
        started_at            timestamptz NOT NULL,
        published_at          timestamptz NOT NULL,
        retired_at            timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS recs_store.live (
        singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        publication_id  bigint NOT NULL REFERENCES recs_store.publications,
        pinned          boolean NOT NULL DEFAULT false,
        changed_at      timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS recs_store.switches (
        switched_at       timestamptz NOT NULL,
        publication_id    bigint NOT NULL REFERENCES recs_store.publications,
        previous_id       bigint REFERENCES recs_store.publications,
        action            text NOT NULL CHECK (action IN ('publish', 'rollback', 'unpin')),
        PRIMARY KEY (switched_at, publication_id)
    )""",
]

CONTRACT_VIEWS = {
    "recommendation_runs": """
        SELECT p.publication_id, p.run_id, p.model_name, p.model_version, p.evaluation, p.k, p.users,
               p.users_personalized, p.users_popular, p.row_counts,
               (p.row_counts ->> 'user_recommendations')::bigint AS rows_written,
               p.started_at, p.published_at AS finished_at, p.retired_at,
               p.publication_id = {live} AS is_live, p.retired_at IS NULL AS can_roll_back
        FROM recs_store.publications p""",
    "publication_history": """
        SELECT s.switched_at, s.action, s.publication_id, s.previous_id, p.model_name, p.model_version, p.run_id
        FROM recs_store.switches s JOIN recs_store.publications p USING (publication_id)""",
}

# Tables an earlier layout kept in recs: replaced by views of the same name.
LEGACY_TABLES = ("user_recommendations", "popular_products", "popular_products_by_category", "recommendation_runs")
# Derived tables an earlier layout kept in recs, now in ml (rebuilt there by their assets).
LEGACY_DERIVED = ("item_similarity",)


class PublishError(RuntimeError):
    """The publication is refused; nothing changed for readers."""


@dataclass(frozen=True)
class Publication:
    publication_id: int
    live: bool
    pinned: bool
    row_counts: dict[str, int]
    retired: list[int]


# ------------------------------------------------------------------------------------------ the layout

def _column_sql(column: Column) -> sql.Composable:
    return sql.SQL("{} {}{}").format(sql.Identifier(column.name), sql.SQL(column.type),
                                     sql.SQL("" if column.nullable else " NOT NULL"))


def _create_parent(conn: psycopg.Connection, table: PublishedTable) -> None:
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (publication_id bigint NOT NULL, {}, PRIMARY KEY (publication_id, {})) "
        "PARTITION BY LIST (publication_id)").format(
        sql.Identifier(STORE, table.name), sql.SQL(", ").join(map(_column_sql, table.columns)),
        sql.SQL(", ").join(map(sql.Identifier, table.primary_key))))


def _relkind(conn: psycopg.Connection, schema: str, name: str) -> str | None:
    row = conn.execute("""SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = %s AND c.relname = %s""", (schema, name)).fetchone()
    return row[0] if row else None


def _move_legacy_tables(conn: psycopg.Connection) -> None:
    """An earlier layout wrote plain tables into recs; they make way for the views (kept, renamed)."""
    for name in LEGACY_TABLES:
        if _relkind(conn, CONTRACT, name) == "r":
            legacy = f"legacy_{name}"
            log.warning("moving the old table recs.%s to %s.%s: recs.%s is now a view", name, STORE, legacy, name)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(STORE, legacy)))
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(CONTRACT, name),
                                                                       sql.Identifier(legacy)))
            conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(sql.Identifier(CONTRACT, legacy),
                                                                        sql.Identifier(STORE)))
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,)).fetchone():
                conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(STORE, legacy),
                                                                       sql.Identifier(READER_ROLE)))
    for name in LEGACY_DERIVED:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(CONTRACT, name)))


def ensure_layout(conn: psycopg.Connection) -> None:
    """Create storage and views when missing or of another layout version; otherwise touch nothing.

    Run inside the caller's transaction, under the publish lock.
    """
    for schema in (STORE, CONTRACT):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    if _relkind(conn, STORE, "meta") == "r":
        current = conn.execute("SELECT value FROM recs_store.meta WHERE key = 'layout_version'").fetchone()
        if current and current[0] == LAYOUT_VERSION:
            return
    for statement in STORE_DDL:
        conn.execute(statement)
    for table in TABLES.values():
        _create_parent(conn, table)
    _move_legacy_tables(conn)
    views = {name: sql.SQL("SELECT {} FROM {} WHERE publication_id = {live}").format(
        sql.SQL(", ").join(map(sql.Identifier, table.column_names)), sql.Identifier(STORE, name), live=LIVE)
        for name, table in TABLES.items()}
    views |= {name: sql.SQL(text).format(live=LIVE) for name, text in {**DETAILED_VIEWS, **CONTRACT_VIEWS}.items()}
    for name, query in views.items():
        # DROP + CREATE, not CREATE OR REPLACE: a changed layout may drop or reorder columns.
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(CONTRACT, name)))
        conn.execute(sql.SQL("CREATE VIEW {} AS {}").format(sql.Identifier(CONTRACT, name), query))
    for name, table in TABLES.items():
        conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(sql.Identifier(CONTRACT, name),
                                                                sql.Literal(table.description)))
    conn.execute("""INSERT INTO recs_store.meta VALUES ('layout_version', %s)
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""", (LAYOUT_VERSION,))


# ------------------------------------------------------------------------------------------ publish

def publish(
    conn: psycopg.Connection,
    rows: Mapping[str, Iterable[Sequence[Any]]],
    *,
    run_id: str,
    model_name: str,
    model_version: str,
    evaluation: Mapping[str, Any],
    k: int,
    user_counts: Mapping[str, int],
    started_at: datetime,
    validate: Callable[[psycopg.Connection, Mapping[str, sql.Composable]], None] | None = None,
    keep: int = DEFAULT_KEEP,
    lock_timeout_ms: int = 5000,
    settle_timeout_ms: int = 60_000,
    retire_timeout_ms: int = 30_000,
) -> Publication:
    """Write one publication of every table in ``TABLES`` and make it live (unless a rollback pinned
    the live one: then it is kept beside it).

    ``rows`` maps each table name to its rows, columns in ``TABLES`` order. ``validate`` gets the
    connection and each table's new partition (not yet visible to readers) and raises to refuse the
    publication. ``conn`` must be in autocommit mode: the publication commits here, in two
    transactions (see ``_settle``), then older publications beyond ``keep`` are retired. A crash
    between the two leaves a complete publication attached but not live (like one made while the
    live one is pinned); the next publish goes on as usual and retirement drops it in turn.
    """
    if set(rows) != set(TABLES):
        raise ValueError(f"a publication has exactly the tables {sorted(TABLES)}, got {sorted(rows)}")
    if keep < MIN_KEEP:
        raise ValueError(f"keep must be at least {MIN_KEEP}: the live publication and the previous one")
    if not conn.autocommit:
        raise ValueError("publish needs a connection in autocommit mode: it commits twice, then retires")
    # One publish at a time, across both transactions (rollback and retire take the same key).
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (PUBLISH_LOCK,))
    try:
        with conn.transaction():  # build, check and attach: complete, but not what the pointer names
            # Nothing here may queue behind a reader for long (a layout change's DROP VIEW would, and
            # every reader after it would queue behind that): give up instead.
            set_lock_timeout(conn, lock_timeout_ms)
            ensure_layout(conn)
            publication_id = conn.execute(
                """INSERT INTO recs_store.publications (run_id, model_name, model_version, evaluation, k, users,
                       users_personalized, users_popular, row_counts, started_at, published_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, '{}', %s, now()) RETURNING publication_id""",
                (run_id, model_name, model_version, json.dumps(dict(evaluation), default=float), k,
                 user_counts.get("users", 0), user_counts.get("personalized", 0), user_counts.get("popular", 0),
                 started_at)).fetchone()[0]
            counts = {name: _load_partition(conn, table, publication_id, rows[name])
                      for name, table in TABLES.items()}
            partitions = {name: sql.Identifier(STORE, table.partition(publication_id))
                          for name, table in TABLES.items()}
            if validate is not None:
                validate(conn, partitions)
            # ATTACH waits for no reader (SHARE UPDATE EXCLUSIVE on the parent, see the module docstring).
            for name, table in TABLES.items():
                conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    sql.Identifier(STORE, name), partitions[name], sql.Literal(publication_id)))
            conn.execute("UPDATE recs_store.publications SET row_counts = %s WHERE publication_id = %s",
                         (json.dumps(counts), publication_id))
        _settle(conn, settle_timeout_ms)
        with conn.transaction():  # the swap: one row
            live = conn.execute("SELECT publication_id, pinned FROM recs_store.live FOR UPDATE").fetchone()
            pinned = bool(live and live[1])
            conn.execute("UPDATE recs_store.publications SET published_at = clock_timestamp() "
                         "WHERE publication_id = %s", (publication_id,))
            if not pinned:
                _switch(conn, publication_id, live[0] if live else None, "publish")
            else:
                log.warning("the live publication %s is pinned (rolled back): publication %s is kept, not made "
                            "live; `rec recs unpin` makes the newest publication live again", live[0], publication_id)
    finally:
        if not conn.closed:  # a lost connection has released the lock, and its error is the one to raise
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (PUBLISH_LOCK,))
    try:
        retired = retire(conn, keep, retire_timeout_ms)
    except psycopg.Error as error:  # the publication is live: retiring is left to the next publish
        log.warning("retiring old publications failed, the next publish tries again: %s", error)
        retired = []
    return Publication(publication_id, not pinned, pinned, counts, retired)


def _settle(conn: psycopg.Connection, timeout_ms: int) -> None:
    """Wait until the transactions that may have opened the tables before the partitions were
    attached have ended (at most ``timeout_ms``), before the pointer moves.

    A statement fixes the set of partitions when it opens the tables and reads the pointer a moment
    later, with its snapshot. Were the attach and the pointer update one commit, a statement opening
    the tables just before it and taking its snapshot just after would see the new pointer without
    the new partitions: no rows at all (bench/read_path.py caught this: a few empty reads in 100,000
    under load). Committing the attach first and moving the pointer only once the transactions that
    may hold the old partition set have ended closes that window. This waits for no lock: readers go
    on as before; only the pointer moves later, after a long query (a minute at most by default).
    A single statement still running at the timeout took its snapshot long ago and reads the old
    pointer; a transaction kept open past it may not see the new partitions in a later statement.
    """
    parents = [f"{STORE}.{name}" for name in TABLES]
    # Transactions holding a lock on a parent now opened it before the attach or just after; wait
    # for them to end (their virtual transaction id's lock goes away). pg_locks, unlike the other
    # sessions' columns of pg_stat_activity, is visible without extra privileges.
    holders = [row[0] for row in conn.execute(
        "SELECT DISTINCT virtualtransaction FROM pg_locks WHERE relation = ANY(%s::regclass[]) "
        "AND pid <> pg_backend_pid()", (parents,))]
    deadline = time.monotonic() + timeout_ms / 1000
    while holders and time.monotonic() < deadline:
        time.sleep(0.02)
        holders = [row[0] for row in conn.execute(
            "SELECT virtualxid FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid = ANY(%s)", (holders,))]
    if holders:
        pids = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid = ANY(%s)", (holders,))]
        log.warning("moving the pointer although sessions %s have held the published tables since before the "
                    "attach (over %s ms): a further statement in one of those transactions may read no rows",
                    pids, timeout_ms)


def _load_partition(conn: psycopg.Connection, table: PublishedTable, publication_id: int,
                    rows: Iterable[Sequence[Any]]) -> int:
    """Build the publication's partition as a standalone table: load, constrain, index, analyse."""
    name = table.partition(publication_id)
    target = sql.Identifier(STORE, name)
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
        target, sql.Identifier(STORE, table.name)))
    written = copy_rows(conn, f"{STORE}.{name}", ["publication_id", *table.column_names],
                        ["bigint", *(_copy_type(c.type) for c in table.columns)],
                        ((publication_id, *row) for row in rows))
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (publication_id, {})").format(
        target, sql.SQL(", ").join(map(sql.Identifier, table.primary_key))))
    # The partition constraint, proved up front: ATTACH then skips its validation scan.
    conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (publication_id = {})").format(
        target, sql.Identifier(f"{name}_publication"), sql.Literal(publication_id)))
    conn.execute(sql.SQL("ANALYZE {}").format(target))
    return written


def _copy_type(sql_type: str) -> str:
    return "numeric" if sql_type.startswith("numeric") else sql_type


def _switch(conn: psycopg.Connection, publication_id: int, previous: int | None, action: str,
            pinned: bool = False) -> None:
    conn.execute("""INSERT INTO recs_store.live (publication_id, pinned, changed_at) VALUES (%s, %s, clock_timestamp())
                    ON CONFLICT (singleton) DO UPDATE SET publication_id = EXCLUDED.publication_id,
                        pinned = EXCLUDED.pinned, changed_at = EXCLUDED.changed_at""", (publication_id, pinned))
    conn.execute("INSERT INTO recs_store.switches VALUES (clock_timestamp(), %s, %s, %s)",
                 (publication_id, previous, action))


# ------------------------------------------------------------------------------------------ retire

def _kept_ids(conn: psycopg.Connection) -> tuple[int | None, list[int]]:
    live = conn.execute("SELECT publication_id FROM recs_store.live").fetchone()
    kept = [row[0] for row in conn.execute(
        "SELECT publication_id FROM recs_store.publications WHERE retired_at IS NULL ORDER BY publication_id DESC")]
    return (live[0] if live else None), kept


def retire(conn: psycopg.Connection, keep: int = DEFAULT_KEEP, lock_timeout_ms: int = 30_000) -> list[int]:
    """Drop the data of publications beyond the ``keep`` newest (never the live one); returns their ids.

    A publication is marked retired (committed) before its first partition goes, so a rollback never
    picks one whose data is half gone. Needs an autocommit connection: ``DETACH PARTITION
    CONCURRENTLY`` cannot run in a transaction. A detach that times out (a query still reads an old
    partition) is finished by the next call.
    """
    if not conn.autocommit:
        raise ValueError("retire needs a connection in autocommit mode (DETACH PARTITION CONCURRENTLY)")
    if _relkind(conn, STORE, "live") != "r":
        return []
    retired = []
    # One retirement at a time, and none while a publish or rollback runs (they take the same key):
    # a publish's ATTACH would otherwise queue behind a detach waiting for a long reader.
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (PUBLISH_LOCK,))
    try:
        set_lock_timeout(conn, lock_timeout_ms, local=False)
        live, kept = _kept_ids(conn)  # under the lock
        for publication_id in kept[keep:]:
            if publication_id != live:
                conn.execute("UPDATE recs_store.publications SET retired_at = now() WHERE publication_id = %s",
                             (publication_id,))
                retired.append(publication_id)
        # Oldest first: a parent allows one pending detach at a time, and a postponed one is the oldest.
        for publication_id in sorted(_ids_with_data(conn) - set(kept[:keep]) - {live}):
            try:
                for table in TABLES.values():
                    _drop_partition(conn, table, publication_id)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as error:
                log.warning("publication %s: retirement postponed until the next publish (%s)", publication_id,
                            error)
                break
    finally:
        if not conn.closed:
            conn.execute("RESET lock_timeout")
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (PUBLISH_LOCK,))
    return retired


def _ids_with_data(conn: psycopg.Connection) -> set[int]:
    """Publications that still have a partition table, attached, pending detach or detached."""
    ids = set()
    for (name,) in conn.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                   WHERE n.nspname = %s AND c.relkind = 'r'""", (STORE,)):
        match = PARTITION_NAME.match(name)
        if match and match["table"] in TABLES:
            ids.add(int(match["id"]))
    return ids


def _drop_partition(conn: psycopg.Connection, table: PublishedTable, publication_id: int) -> None:
    name = table.partition(publication_id)
    state = conn.execute("""SELECT i.inhdetachpending FROM pg_inherits i
                            JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = %s AND c.relname = %s""", (STORE, name)).fetchone()
    if state is not None:
        mode = "FINALIZE" if state[0] else "CONCURRENTLY"  # finish a detach an earlier call left pending
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(
            sql.Identifier(STORE, table.name), sql.Identifier(STORE, name), sql.SQL(mode)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(STORE, name)))


# ------------------------------------------------------------------------------------------ operate

def publications(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every publication, newest first, as ``recs.recommendation_runs`` shows them."""
    if _relkind(conn, CONTRACT, "recommendation_runs") != "v":
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM recs.recommendation_runs ORDER BY publication_id DESC").fetchall()


def live_publication(conn: psycopg.Connection) -> tuple[int, bool] | None:
    if _relkind(conn, STORE, "live") != "r":
        return None
    row = conn.execute("SELECT publication_id, pinned FROM recs_store.live").fetchone()
    return (row[0], row[1]) if row else None


def rollback(conn: psycopg.Connection, to: int | None = None) -> int:
    """Make an earlier, still kept publication live (default: the newest one older than the live one)
    and pin it, so scheduled publishes keep theirs aside until ``unpin``. Returns its id."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (PUBLISH_LOCK,))
        current = live_publication(conn)
        if current is None:
            raise PublishError("nothing is published yet: there is nothing to roll back")
        live, _ = current
        _, kept = _kept_ids(conn)
        if to is None:
            older = [pid for pid in kept if pid < live]
            if not older:
                raise PublishError(f"publication {live} is live and no older publication is kept "
                                   f"(kept: {kept}); nothing to roll back to")
            to = older[0]
        elif to not in kept:
            raise PublishError(f"publication {to} is not kept (kept: {kept}); its data is gone")
        _require_complete(conn, to)
        _switch(conn, to, live, "rollback", pinned=True)
    return to


def unpin(conn: psycopg.Connection) -> int:
    """Undo a rollback's pin and make the newest kept publication live again. Returns its id."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (PUBLISH_LOCK,))
        current = live_publication(conn)
        if current is None:
            raise PublishError("nothing is published yet")
        _, kept = _kept_ids(conn)
        _require_complete(conn, kept[0])
        _switch(conn, kept[0], current[0], "unpin")
    return kept[0]


def _require_complete(conn: psycopg.Connection, publication_id: int) -> None:
    missing = [name for name, ids in partitions(conn).items() if publication_id not in ids]
    if missing:
        raise PublishError(f"publication {publication_id} lacks its {', '.join(missing)} data; not making it live")


PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<id>\d+)$")


def partitions(conn: psycopg.Connection) -> dict[str, list[int]]:
    """Publication ids readers can be pointed at, per table (attached partitions, no detach pending)."""
    found: dict[str, list[int]] = {name: [] for name in TABLES}
    for (name,) in conn.execute("""SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                                   JOIN pg_namespace n ON n.oid = c.relnamespace
                                   WHERE n.nspname = %s AND NOT i.inhdetachpending
                                   ORDER BY c.relname""", (STORE,)):
        match = PARTITION_NAME.match(name)
        if match and match["table"] in found:
            found[match["table"]].append(int(match["id"]))
    return {name: sorted(ids) for name, ids in found.items()}
