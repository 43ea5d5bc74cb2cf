"""Least-privilege roles: a downstream app (rec_reader) reads recs and nothing else; an analyst
(rec_analyst) reads raw and core, not recs, and writes nothing."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors, sql

from rec_orchestration.db.roles import ANALYST_ROLE, READER_ROLE
from tests.support import materialize_everything, query, throwaway_logins


@pytest.fixture()
def login_as(warehouse_env):
    """``login_as(group)``: a connection as a new login role in ``group``; dropped after the test."""
    with throwaway_logins(warehouse_env) as connect:
        yield lambda group: connect(group, warehouse_env)


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
    assert can_select(reader, "recs.user_recommendations_detailed") and can_select(reader, "recs.recommendation_runs")
    assert not can_select(reader, "core.users") and not can_select(reader, "raw.reviews")
    # The published views' storage and the model stage's tables are not part of the contract.
    assert not can_select(reader, "recs_store.user_recommendations") and not can_select(reader, "recs_store.live")
    assert not can_select(reader, "ml.model_evaluations")
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
    assert can_select(analyst, "ml.model_evaluations") and can_select(analyst, "ml.item_similarity")

    for conn, table in ((reader, "recs.user_recommendations"), (analyst, "core.users"), (analyst, "raw.reviews")):
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(*table.split("."))))

    # Tables rebuilt by the next run (dbt, the publish swap) are still readable: default privileges.
    assert materialize_everything().success
    assert can_select(reader, "recs.user_recommendations") and can_select(analyst, "core.products")
    assert not can_select(reader, "core.products")
