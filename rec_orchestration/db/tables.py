"""SQL helpers the Python steps share: quoted names, binary COPY, lock timeouts, an atomic table swap.

SQL built here always goes through :mod:`psycopg.sql` (identifiers) and bound parameters (values).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql


def packaged_sql(name: str) -> str:
    """The text of ``rec_orchestration/sql/<name>``: DDL the Python steps run, kept beside each other."""
    return resources.files("rec_orchestration").joinpath("sql", name).read_text()


def ensure_ml_schema(conn: psycopg.Connection) -> None:
    """The model stage's tables in schema ml (``sql/ml_schema.sql``), with the roles they are granted to."""
    from rec_orchestration.db.roles import ensure_roles

    ensure_roles(conn)
    conn.execute(packaged_sql("ml_schema.sql"))


def qualified(name: str) -> sql.Composable:
    """``"schema"."table"`` from ``"schema.table"``, safely quoted."""
    return sql.Identifier(*name.split("."))


def copy_rows(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> int:
    """Binary ``COPY`` of ``rows`` into ``table`` on an open connection (inside its transaction).

    Binary COPY with declared types is the fastest load path psycopg offers (``bench.ingest`` sets the
    loader built on it beside ``psql \\copy`` and ``DataFrame.to_sql``). Returns the number of rows written.
    """
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        qualified(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    written = 0
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)
            written += 1
    return written


def set_lock_timeout(conn: psycopg.Connection, milliseconds: int, local: bool = True) -> None:
    """Give up on a lock after ``milliseconds``: for this transaction (``SET LOCAL``) or the session."""
    conn.execute(sql.SQL("SET {} lock_timeout = {}").format(
        sql.SQL("LOCAL" if local else "SESSION"), sql.Literal(f"{int(milliseconds)}ms")))


def replace_table(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]],
    primary_key: Sequence[str],
    indexes: Sequence[Sequence[str]] = (),
    lock_timeout_ms: int = 5000,
    nullable: Sequence[str] = (),
) -> int:
    """Replace ``table`` with a freshly built one holding ``rows``, atomically, inside ``conn``'s transaction.

    ``columns`` are ``(name, sql_type)``, NOT NULL unless named in ``nullable``. The new table is built
    beside the live one (``<table>__next``), loaded by binary COPY and indexed while readers keep using the live table;
    only the final renames take an exclusive lock, for the moment between them and COMMIT. If
    anything fails or the process dies, the transaction rolls back and the live table is untouched.
    """
    schema, name = table.split(".")
    staging = f"{name}__next"
    retired = f"{name}__old"
    token = uuid.uuid4().hex[:8]  # index names must be unique per schema and survive the renames
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, staging)))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(
        sql.Identifier(schema, staging),
        sql.SQL(", ").join(sql.SQL("{} {}{}").format(sql.Identifier(col), sql.SQL(kind),
                                                     sql.SQL("" if col in nullable else " NOT NULL"))
                           for col, kind in columns),
    ))
    written = copy_rows(conn, f"{schema}.{staging}", [c for c, _ in columns], [k for _, k in columns], rows)
    conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
        sql.Identifier(schema, staging), sql.Identifier(f"{name}_{token}_pkey"),
        sql.SQL(", ").join(map(sql.Identifier, primary_key))))
    for number, index_columns in enumerate(indexes):
        conn.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
            sql.Identifier(f"{name}_{token}_{number}_idx"), sql.Identifier(schema, staging),
            sql.SQL(", ").join(map(sql.Identifier, index_columns))))
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, staging)))
    set_lock_timeout(conn, lock_timeout_ms)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, retired)))
    conn.execute(sql.SQL("ALTER TABLE IF EXISTS {} RENAME TO {}").format(
        sql.Identifier(schema, name), sql.Identifier(retired)))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(schema, staging), sql.Identifier(name)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, retired)))
    return written
