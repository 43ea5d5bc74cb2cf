"""Dagster's run, event-log and schedule storage, in the PostgreSQL the project resolves itself.

``dagster.yaml`` names :class:`RecPostgresStorage` instead of ``storage: postgres`` with an
environment variable, so that every way of starting Dagster finds the same database with nothing
exported first: ``rec dev`` / ``make run`` (which set ``REC_DAGSTER_PG_URL``), and plain
``dagster dev``, ``dagster definitions validate`` or ``dagster asset materialize`` in the repository
root (Dagster reads the ``dagster.yaml`` of the working directory when ``DAGSTER_HOME`` is unset).

The database is, in order: ``postgres_url`` in the storage's config; ``REC_DAGSTER_PG_URL`` (what
``rec env`` exports); otherwise what ``rec`` itself would pick (:func:`servers.dagster_storage_settings`:
``REC_DAGSTER_DATABASE_URL``, else the warehouse named by ``REC_DATABASE_URL`` / ``PG*``, else the
``rec_dagster`` database of the embedded server under ``REC_HOME``, started as ``rec db start`` does).
Nothing secret is written anywhere: the URL is resolved in each process that loads the instance
(the webserver, the daemon, code servers, run and step workers), never serialised into the
instance's config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster import Field, StringSource
from dagster_postgres import DagsterPostgresStorage

STORAGE_URL_VARIABLE = "REC_DAGSTER_PG_URL"


def dagster_storage_url() -> str:
    """The SQLAlchemy URL of Dagster's storage, resolved as ``rec`` does (see the module's docstring)."""
    if os.environ.get(STORAGE_URL_VARIABLE):
        return os.environ[STORAGE_URL_VARIABLE]
    from rec_orchestration.db import servers

    return servers.dagster_storage_settings().url(driver="psycopg2")


class RecPostgresStorage(DagsterPostgresStorage):
    """dagster-postgres' storage, on the database the project resolves (no variable needs exporting).

    dagster.yaml::

        storage:
          custom:
            module: rec_orchestration.instance
            class: RecPostgresStorage
            config: {}
    """

    @classmethod
    def config_type(cls) -> Mapping[str, Field]:
        return {
            "postgres_url": Field(StringSource, is_required=False,
                                  description="Fixed storage URL; default: resolved as `rec` does."),
            "should_autocreate_tables": Field(bool, is_required=False, default_value=True),
        }

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: Any, config_value: Mapping[str, Any]  # inst_data: dagster's ConfigurableClassData
    ) -> RecPostgresStorage:
        return cls(
            postgres_url=config_value.get("postgres_url") or dagster_storage_url(),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
        )

    # dagster-postgres names its own classes with this storage's config; ours would not load there.
    @property
    def event_storage_data(self) -> None:
        return None

    @property
    def run_storage_data(self) -> None:
        return None

    @property
    def schedule_storage_data(self) -> None:
        return None
