"""Least-privilege database roles for the people and programs that read the warehouse.

- ``rec_reader``: SELECT on the ``recs`` schema only: the published views (downstream apps: shop front,
  e-mail, API). Their storage, ``recs_store``, is readable by nobody but the pipeline.
- ``rec_analyst``: SELECT on ``raw``, ``core`` and ``ml`` (ad hoc analysis, model evaluations), nothing
  in ``recs``, no writes.

Both are NOLOGIN groups: give a program or person its own login role in the group, e.g.
``CREATE ROLE shop_front LOGIN PASSWORD '...' IN ROLE rec_reader`` (the embedded server's ``rec``
role may do this; `rec db psql`). Idempotent; run by the pipeline before it writes. Default
privileges make every table the pipeline creates later (dbt rebuilds, published table swaps)
readable by the right group without another grant.
"""

import logging

import psycopg
from psycopg import errors, sql

READER_ROLE = "rec_reader"
ANALYST_ROLE = "rec_analyst"
# role -> schemas it may read
ROLE_SCHEMAS = {READER_ROLE: ("recs",), ANALYST_ROLE: ("raw", "core", "ml")}

log = logging.getLogger(__name__)


def _create_role(conn: psycopg.Connection, role: str) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if exists:
        return
    try:
        with conn.transaction():  # a savepoint: a concurrent creator or a missing privilege is not fatal
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    except errors.DuplicateObject:
        pass  # another database of the same server created it first
    except errors.InsufficientPrivilege:
        log.warning("cannot create role %s (needs CREATEROLE); ask the DBA: CREATE ROLE %s NOLOGIN", role, role)


def ensure_roles(conn: psycopg.Connection) -> None:
    """Create the groups if missing and grant them their schemas, now and for tables created later."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('rec_orchestration.roles'))")
    for role, schemas in ROLE_SCHEMAS.items():
        _create_role(conn, role)
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            continue
        for schema in schemas:
            ident = {"schema": sql.Identifier(schema), "role": sql.Identifier(role)}
            for statement in (
                "CREATE SCHEMA IF NOT EXISTS {schema}",
                "GRANT USAGE ON SCHEMA {schema} TO {role}",
                "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {role}",
            ):
                conn.execute(sql.SQL(statement).format(**ident))
