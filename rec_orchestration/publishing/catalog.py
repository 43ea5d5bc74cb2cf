"""What is published: the live pointer, the kept publications, their partitions, and switching the pointer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from rec_orchestration.publishing.layout import CONTRACT, STORE, TABLES, relkind


class PublishError(RuntimeError):
    """The publication is refused; nothing changed for readers."""


@dataclass(frozen=True)
class Publication:
    publication_id: int
    live: bool
    pinned: bool
    row_counts: dict[str, int]
    retired: list[int]
    # Seconds each part of the build took: every table's partition (load, key, analyse) and the check.
    seconds: dict[str, float] = field(default_factory=dict)


def publications(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every publication, newest first, as ``recs.recommendation_runs`` shows them."""
    if relkind(conn, CONTRACT, "recommendation_runs") != "v":
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM recs.recommendation_runs ORDER BY publication_id DESC").fetchall()


def live_publication(conn: psycopg.Connection) -> tuple[int, bool] | None:
    if relkind(conn, STORE, "live") != "r":
        return None
    row = conn.execute("SELECT publication_id, pinned FROM recs_store.live").fetchone()
    return (row[0], row[1]) if row else None


def kept_ids(conn: psycopg.Connection) -> tuple[int | None, list[int]]:
    live = conn.execute("SELECT publication_id FROM recs_store.live").fetchone()
    kept = [row[0] for row in conn.execute(
        "SELECT publication_id FROM recs_store.publications WHERE retired_at IS NULL ORDER BY publication_id DESC")]
    return (live[0] if live else None), kept


def switch(conn: psycopg.Connection, publication_id: int, previous: int | None, action: str,
            pinned: bool = False) -> None:
    conn.execute("""INSERT INTO recs_store.live (publication_id, pinned, changed_at) VALUES (%s, %s, clock_timestamp())
                    ON CONFLICT (singleton) DO UPDATE SET publication_id = EXCLUDED.publication_id,
                        pinned = EXCLUDED.pinned, changed_at = EXCLUDED.changed_at""", (publication_id, pinned))
    conn.execute("INSERT INTO recs_store.switches VALUES (clock_timestamp(), %s, %s, %s)",
                 (publication_id, previous, action))


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


def ids_with_data(conn: psycopg.Connection) -> set[int]:
    """Publications that still have a partition table, attached, pending detach or detached."""
    ids = set()
    for (name,) in conn.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                   WHERE n.nspname = %s AND c.relkind = 'r'""", (STORE,)):
        match = PARTITION_NAME.match(name)
        if match and match["table"] in TABLES:
            ids.add(int(match["id"]))
    return ids
