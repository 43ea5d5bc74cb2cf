"""Operating the live publication by hand: roll back to a kept one (pinned), and unpin."""

from __future__ import annotations

import psycopg

from rec_orchestration.publishing.catalog import PublishError, kept_ids, live_publication, partitions, switch
from rec_orchestration.publishing.layout import PUBLISH_LOCK


def rollback(conn: psycopg.Connection, to: int | None = None) -> int:
    """Make an earlier, still kept publication live (default: the newest one older than the live one)
    and pin it, so scheduled publishes keep theirs aside until ``unpin``. Returns its id."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (PUBLISH_LOCK,))
        current = live_publication(conn)
        if current is None:
            raise PublishError("nothing is published yet: there is nothing to roll back")
        live, _ = current
        _, kept = kept_ids(conn)
        if to is None:
            older = [pid for pid in kept if pid < live]
            if not older:
                raise PublishError(f"publication {live} is live and no older publication is kept "
                                   f"(kept: {kept}); nothing to roll back to")
            to = older[0]
        elif to not in kept:
            raise PublishError(f"publication {to} is not kept (kept: {kept}); its data is gone")
        require_complete(conn, to)
        switch(conn, to, live, "rollback", pinned=True)
    return to


def unpin(conn: psycopg.Connection) -> int:
    """Undo a rollback's pin and make the newest kept publication live again. Returns its id."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (PUBLISH_LOCK,))
        current = live_publication(conn)
        if current is None:
            raise PublishError("nothing is published yet")
        _, kept = kept_ids(conn)
        require_complete(conn, kept[0])
        switch(conn, kept[0], current[0], "unpin")
    return kept[0]


def require_complete(conn: psycopg.Connection, publication_id: int) -> None:
    missing = [name for name, ids in partitions(conn).items() if publication_id not in ids]
    if missing:
        raise PublishError(f"publication {publication_id} lacks its {', '.join(missing)} data; not making it live")
