"""The normalized warehouse: every dbt model is an asset (``staging/*``, ``core/*``), its tests asset checks."""


import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from dagster_dbt import DbtCliResource, dbt_assets
from pydantic import Field

from rec_orchestration.dbt_child import PARENT_PID_VARIABLE
from rec_orchestration.deployment import k8s_step_tags
from rec_orchestration.resources.dbt import WarehouseDbtTranslator, dbt_project
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.retry import retry_transient_db_errors
from rec_orchestration.runs import REFRESH_POOL

BUILD_LOCK = "rec_orchestration.dbt_build"
# How often the server checks, during a long statement, that dbt is still there (PostgreSQL 14+): a
# killed build's statements are cancelled within this, not run to their end holding their locks.
CLIENT_CHECK_INTERVAL = "2s"


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """dbt reads its connection from the environment (profiles.yml); scope the change to this step."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextmanager
def _one_build_at_a_time(warehouse: PostgresResource,
                         context: dg.AssetExecutionContext) -> Iterator[psycopg.Connection]:
    """Two builds at once (the hourly schedule and a materialization from the UI) would number the same
    new users twice. A session advisory lock queues the second; it is released when the build ends or
    its process dies (the connection closes)."""
    with psycopg.connect(warehouse.database_settings().conninfo(), autocommit=True) as conn:
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (BUILD_LOCK,)).fetchone()[0]:
            context.log.info("another warehouse build is running; waiting for it to finish")
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (BUILD_LOCK,))
        yield conn


def _dbt_process_environment(warehouse: PostgresResource, conn: psycopg.Connection) -> dict[str, str]:
    """The connection variables of ``profiles.yml``, the pid ``rec-dbt`` must find as its parent, and
    (on a server that has it) the dead-client check for dbt's sessions through libpq's ``PGOPTIONS``."""
    environment = {**warehouse.database_settings().dbt_environment(), PARENT_PID_VARIABLE: str(os.getpid())}
    if conn.info.server_version >= 140000:
        options = os.environ.get("PGOPTIONS", "")
        environment["PGOPTIONS"] = f"{options} -c client_connection_check_interval={CLIENT_CHECK_INTERVAL}".strip()
    return environment


def _incremental_tables_out_of_date(conn: psycopg.Connection) -> list[str]:
    """Incremental tables whose columns differ from their model's contract, e.g. built by an earlier
    version of the project: an incremental run would stop on them with dbt's "schema out of sync"."""
    manifest = json.loads(dbt_project().manifest_path.read_text())
    outdated = []
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model" or node["config"].get("materialized") != "incremental":
            continue
        table = node.get("alias") or node["name"]
        actual = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (node["schema"], table)).fetchall()}
        if actual and actual != set(node["columns"]):
            outdated.append(f"{node['schema']}.{table}")
    return sorted(outdated)


class WarehouseConfig(dg.Config):
    full_refresh: bool = Field(
        default=False,
        description="Rebuild the incremental models (core.users, products, reviews, events, interactions) "
                    "from all of raw instead of adding the landing files loaded since the last build.",
    )


@dbt_assets(
    manifest=dbt_project().manifest_path,
    project=dbt_project(),
    dagster_dbt_translator=WarehouseDbtTranslator(),
    pool=REFRESH_POOL,
    op_tags=k8s_step_tags("light"),
)
@retry_transient_db_errors()
def warehouse_dbt_models(context: dg.AssetExecutionContext, config: WarehouseConfig, dbt: DbtCliResource,
                         warehouse: PostgresResource):
    """Builds and tests the dbt models (``dbt build``) against the warehouse database.

    The large core models are incremental: a build reads only the landing files committed since the
    last one. ``full_refresh: true`` rebuilds them from all of raw. A build that fails on a lost or
    refused connection (dbt's messages say so) is retried like the Python assets; the load_seq protocol
    makes the retry pick up where the failed build's committed models left off.
    """
    if config.full_refresh and context.is_subset:
        # Rebuilding one incremental model drops the foreign keys pointing at it (dbt swaps the table,
        # dropping the old one with CASCADE) and resets the activity columns the others roll up.
        raise dg.Failure("full_refresh rebuilds the whole warehouse: select every dbt asset (the whole "
                         "warehouse group), not a subset")
    with _one_build_at_a_time(warehouse, context) as conn:
        full_refresh = config.full_refresh
        if not full_refresh and (outdated := _incremental_tables_out_of_date(conn)):
            context.log.warning(f"{', '.join(outdated)} do not have the columns of their model (built by an "
                                "earlier version?): rebuilding the warehouse from raw (--full-refresh)")
            full_refresh = True
        args = ["build", *(["--full-refresh"] if full_refresh else [])]
        with _environment(_dbt_process_environment(warehouse, conn)):
            yield from dbt.cli(args, context=context).stream()
