"""Making a publication: build and check its partitions, attach them, then move the live pointer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from rec_orchestration.db.tables import copy_rows, set_lock_timeout
from rec_orchestration.publishing.catalog import Publication, switch
from rec_orchestration.publishing.layout import (
    DEFAULT_KEEP,
    MIN_KEEP,
    PUBLISH_LOCK,
    STORE,
    TABLES,
    PublishedTable,
    ensure_layout,
)
from rec_orchestration.publishing.retire import retire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Query:
    """A table's rows as a query the database runs inside the publish transaction (``INSERT ... SELECT``),
    for tables too big to pass through Python: ``statement`` selects the table's columns in order (without
    ``publication_id``); ``params`` fill its placeholders."""

    statement: sql.Composable
    params: Sequence[Any] = ()


def publish(
    conn: psycopg.Connection,
    rows: Mapping[str, Iterable[Sequence[Any]] | Query],
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

    ``rows`` maps each table name to its rows, columns in ``TABLES`` order, or to a :class:`Query` that
    selects them (rows are streamed either way: an iterable is consumed once). ``validate`` gets the
    connection and each table's new partition (not yet visible to readers) and raises to refuse the
    publication. ``conn`` must be in autocommit mode: the publication commits here, in two
    transactions (see ``settle``), then older publications beyond ``keep`` are retired. A crash
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
            counts, seconds = {}, {}
            for name, table in TABLES.items():
                began = time.perf_counter()
                counts[name] = load_partition(conn, table, publication_id, rows[name])
                seconds[name] = round(time.perf_counter() - began, 2)
            partitions = {name: sql.Identifier(STORE, table.partition(publication_id))
                          for name, table in TABLES.items()}
            if validate is not None:
                began = time.perf_counter()
                validate(conn, partitions)
                seconds["check"] = round(time.perf_counter() - began, 2)
            # ATTACH waits for no reader (SHARE UPDATE EXCLUSIVE on the parent, see the module docstring).
            for name in TABLES:
                conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    sql.Identifier(STORE, name), partitions[name], sql.Literal(publication_id)))
            conn.execute("UPDATE recs_store.publications SET row_counts = %s WHERE publication_id = %s",
                         (json.dumps(counts), publication_id))
        settle(conn, settle_timeout_ms)
        with conn.transaction():  # the swap: one row
            live = conn.execute("SELECT publication_id, pinned FROM recs_store.live FOR UPDATE").fetchone()
            pinned = bool(live and live[1])
            conn.execute("UPDATE recs_store.publications SET published_at = clock_timestamp() "
                         "WHERE publication_id = %s", (publication_id,))
            if not pinned:
                switch(conn, publication_id, live[0] if live else None, "publish")
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
    return Publication(publication_id, not pinned, pinned, counts, retired, seconds)


def settle(conn: psycopg.Connection, timeout_ms: int) -> None:
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


def load_partition(conn: psycopg.Connection, table: PublishedTable, publication_id: int,
                    rows: Iterable[Sequence[Any]] | Query) -> int:
    """Build the publication's partition as a standalone table: load, constrain, index, analyse."""
    name = table.partition(publication_id)
    target = sql.Identifier(STORE, name)
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
        target, sql.Identifier(STORE, table.name)))
    columns = ["publication_id", *table.column_names]
    if isinstance(rows, Query):
        written = conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT %s::bigint, q.* FROM ({}) AS q").format(
            target, sql.SQL(", ").join(map(sql.Identifier, columns)), rows.statement),
            (publication_id, *rows.params)).rowcount
    else:
        written = copy_rows(conn, f"{STORE}.{name}", columns,
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
