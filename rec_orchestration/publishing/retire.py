"""Dropping the data of publications beyond the ones kept for rollback."""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from rec_orchestration.db.tables import set_lock_timeout
from rec_orchestration.publishing.catalog import ids_with_data, kept_ids
from rec_orchestration.publishing.layout import DEFAULT_KEEP, PUBLISH_LOCK, STORE, TABLES, PublishedTable, relkind

log = logging.getLogger(__name__)


def retire(conn: psycopg.Connection, keep: int = DEFAULT_KEEP, lock_timeout_ms: int = 30_000) -> list[int]:
    """Drop the data of publications beyond the ``keep`` newest (never the live one); returns their ids.

    A publication is marked retired (committed) before its first partition goes, so a rollback never
    picks one whose data is half gone. Needs an autocommit connection: ``DETACH PARTITION
    CONCURRENTLY`` cannot run in a transaction. A detach that times out (a query still reads an old
    partition) is finished by the next call.
    """
    if not conn.autocommit:
        raise ValueError("retire needs a connection in autocommit mode (DETACH PARTITION CONCURRENTLY)")
    if relkind(conn, STORE, "live") != "r":
        return []
    retired = []
    # One retirement at a time, and none while a publish or rollback runs (they take the same key):
    # a publish's ATTACH would otherwise queue behind a detach waiting for a long reader.
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (PUBLISH_LOCK,))
    try:
        set_lock_timeout(conn, lock_timeout_ms, local=False)
        live, kept = kept_ids(conn)  # under the lock
        for publication_id in kept[keep:]:
            if publication_id != live:
                conn.execute("UPDATE recs_store.publications SET retired_at = now() WHERE publication_id = %s",
                             (publication_id,))
                retired.append(publication_id)
        # Oldest first: a parent allows one pending detach at a time, and a postponed one is the oldest.
        for publication_id in sorted(ids_with_data(conn) - set(kept[:keep]) - {live}):
            try:
                for table in TABLES.values():
                    drop_partition(conn, table, publication_id)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as error:
                log.warning("publication %s: retirement postponed until the next publish (%s)", publication_id,
                            error)
                break
    finally:
        if not conn.closed:
            conn.execute("RESET lock_timeout")
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (PUBLISH_LOCK,))
    return retired


def drop_partition(conn: psycopg.Connection, table: PublishedTable, publication_id: int) -> None:
    name = table.partition(publication_id)
    state = conn.execute("""SELECT i.inhdetachpending FROM pg_inherits i
                            JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = %s AND c.relname = %s""", (STORE, name)).fetchone()
    if state is not None:
        mode = "FINALIZE" if state[0] else "CONCURRENTLY"  # finish a detach an earlier call left pending
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(
            sql.Identifier(STORE, table.name), sql.Identifier(STORE, name), sql.SQL(mode)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(STORE, name)))
