"""Least-privilege roles: a downstream app (rec_reader) reads recs and nothing else; an analyst
(rec_analyst) reads raw and core, not recs, and writes nothing."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace

import psycopg
import pytest
from psycopg import errors, sql

from rec_orchestration.resources.roles import ANALYST_ROLE, READER_ROLE
from tests.conftest import materialize_everything, query


@pytest.fixture()
def login_as(warehouse_env):
    """Makes a throw-away login role in a group and returns a connection as it; drops the roles after."""
    made: list[str] = []
    connections: list[psycopg.Connection] = []

    def connect(group: str) -> psycopg.Connection:
        name, password = f"test_{group}_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
        with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(name), sql.Literal(password), sql.Identifier(group)))
        made.append(name)
        conn = psycopg.connect(replace(warehouse_env, user=name, password=password).conninfo(), autocommit=True)
        connections.append(conn)
        return conn

    yield connect
    for conn in connections:
        conn.close()
    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as admin:
        for name in made:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def can_select(conn: psycopg.Connection, table: str) -> bool:
    try:
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split(".")))).fetchone()
        return True
    except errors.InsufficientPrivilege:
        return False


def test_reader_sees_only_recs_and_analyst_only_raw_and_core(warehouse_env, login_as):
    assert materialize_everything().success
    reader, analyst = login_as(READER_ROLE), login_as(ANALYST_ROLE)

    assert can_select(reader, "recs.user_recommendations") and can_select(reader, "recs.popular_products")
    assert not can_select(reader, "core.users") and not can_select(reader, "raw.reviews")
    # A top-K lookup for one user works for the app role.
    assert reader.execute("SELECT count(*) FROM recs.user_recommendations WHERE user_id = 1").fetchone()[0] == 20

    assert can_select(analyst, "raw.reviews") and can_select(analyst, "raw.rejected_records")
    core_tables = [f"core.{name}" for (name,) in query(
        warehouse_env, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'core'")]
    assert {"core.users", "core.interactions", "core.categories", "core.transactions"} <= set(core_tables)
    for table in core_tables:
        assert can_select(analyst, table), table
        assert not can_select(reader, table), table
    assert not can_select(analyst, "recs.user_recommendations")

    for conn, table in ((reader, "recs.user_recommendations"), (analyst, "core.users"), (analyst, "raw.reviews")):
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(*table.split("."))))

    # Tables rebuilt by the next run (dbt, the publish swap) are still readable: default privileges.
    assert materialize_everything().success
    assert can_select(reader, "recs.user_recommendations") and can_select(analyst, "core.products")
    assert not can_select(reader, "core.products")
