"""The dbt project as Dagster sees it: one DbtProject, its CLI resource and the asset-key translator.

The manifest is built before Dagster loads the code (``rec dbt-parse``, run by `make run`, `make dev`
and the test suite), never parsed at import time.
"""


from collections.abc import Mapping
from functools import cache
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject

from rec_orchestration.dbt_child import wrapper_executable
from rec_orchestration.settings import DBT_PROJECT_DIR


@cache
def dbt_project() -> DbtProject:
    return DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def dbt_resource() -> DbtCliResource:
    """dbt through ``rec-dbt``, which ends dbt when the step's process dies (see ``dbt_child.py``)."""
    return DbtCliResource(project_dir=dbt_project(), profiles_dir=str(DBT_PROJECT_DIR),
                          dbt_executable=wrapper_executable())


class WarehouseDbtTranslator(DagsterDbtTranslator):
    """Models are keyed ``[schema, model]`` (``core/users``), matching the PostgreSQL table they build;
    sources use their ``meta.dagster.asset_key`` (the raw ingestion assets)."""

    def __init__(self) -> None:
        super().__init__(DagsterDbtTranslatorSettings(enable_asset_checks=True))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "warehouse"
