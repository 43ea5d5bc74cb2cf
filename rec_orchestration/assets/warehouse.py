"""The normalized warehouse: every dbt model is an asset (``staging/*``, ``core/*``), its tests asset checks."""


import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from dagster_dbt import DbtCliResource, dbt_assets
from pydantic import Field

from rec_orchestration.resources.dbt import WarehouseDbtTranslator, dbt_project
from rec_orchestration.resources.postgres import PostgresResource

BUILD_LOCK = "rec_orchestration.dbt_build"
INCREMENTAL_MODELS = ("users", "products", "reviews", "events", "interactions")


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


def _tables_from_before_incremental(conn: psycopg.Connection) -> list[str]:
    """Incremental core tables built by a project version that rebuilt them whole (issues 2 and 3): an
    incremental run on them would stop with dbt's "schema out of sync" error."""
    rows = conn.execute("""
        SELECT 'core.' || t.table_name FROM information_schema.tables t
        WHERE t.table_schema = 'core' AND t.table_name = ANY(%s)
          AND NOT EXISTS (SELECT 1 FROM information_schema.columns c WHERE c.table_schema = 'core'
                          AND c.table_name = t.table_name AND c.column_name = 'load_seq')
        ORDER BY 1""", (list(INCREMENTAL_MODELS),)).fetchall()
    return [row[0] for row in rows]


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
)
def warehouse_dbt_models(context: dg.AssetExecutionContext, config: WarehouseConfig, dbt: DbtCliResource,
                         warehouse: PostgresResource):
    """Builds and tests the dbt models (``dbt build``) against the warehouse database.

    The large core models are incremental: a build reads only the landing files committed since the
    last one. ``full_refresh: true`` rebuilds them from all of raw.
    """
    with _one_build_at_a_time(warehouse, context) as conn:
        full_refresh = config.full_refresh
        if not full_refresh and (outdated := _tables_from_before_incremental(conn)):
            context.log.warning(f"{', '.join(outdated)} predate the incremental models (no load_seq column): "
                                "rebuilding the warehouse from raw (--full-refresh)")
            full_refresh = True
        args = ["build", *(["--full-refresh"] if full_refresh else [])]
        with _environment(warehouse.database_settings().dbt_environment()):
            yield from dbt.cli(args, context=context).stream()
