"""The normalized warehouse: every dbt model is an asset (``staging/*``, ``core/*``), its tests asset checks."""


import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets

from rec_orchestration.resources.dbt import WarehouseDbtTranslator, dbt_project
from rec_orchestration.resources.postgres import PostgresResource


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


@dbt_assets(
    manifest=dbt_project().manifest_path,
    project=dbt_project(),
    dagster_dbt_translator=WarehouseDbtTranslator(),
)
def warehouse_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: PostgresResource):
    """Builds and tests the dbt models (``dbt build``) against the warehouse database."""
    with _environment(warehouse.database_settings().dbt_environment()):
        yield from dbt.cli(["build"], context=context).stream()
