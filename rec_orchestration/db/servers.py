"""Which PostgreSQL the project talks to: a server named by the environment, else the embedded one.

``REC_DATABASE_URL`` (or the libpq ``PGHOST`` / ``PGDATABASE``) names an external warehouse, and
``REC_DAGSTER_DATABASE_URL`` Dagster's storage; with neither, the project's embedded server is started
on demand (:mod:`rec_orchestration.db.embedded`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rec_orchestration import settings
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.embedded import EMBEDDED_DAGSTER_DB, EMBEDDED_WAREHOUSE_DB, EmbeddedPostgres


def external_database_configured(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("REC_DATABASE_URL") or env.get("PGHOST") or env.get("PGDATABASE"))


def _external_settings(env: Mapping[str, str]) -> DatabaseSettings:
    if env.get("REC_DATABASE_URL"):
        return DatabaseSettings.from_url(env["REC_DATABASE_URL"])
    # libpq variables; an empty conninfo lets libpq's own defaults fill in what is unset.
    return DatabaseSettings(
        host=env.get("PGHOST", "127.0.0.1"),
        port=int(env.get("PGPORT", 5432)),
        user=env.get("PGUSER", env.get("USER", "postgres")),
        password=env.get("PGPASSWORD") or None,
        dbname=env.get("PGDATABASE", env.get("PGUSER", "postgres")),
    )


def warehouse_settings(*, start_embedded: bool = True) -> DatabaseSettings:
    """Settings of the warehouse database; starts the embedded server when none is configured.

    With ``start_embedded=False`` the embedded settings are returned without touching the server
    (used where only the address is needed, e.g. to print it).
    """
    if external_database_configured():
        return _external_settings(os.environ)
    server = EmbeddedPostgres.default()
    if start_embedded:
        server.ensure_running()
    return server.app_settings(EMBEDDED_WAREHOUSE_DB)


def dagster_storage_settings(*, start_embedded: bool = True,
                             warehouse: DatabaseSettings | None = None) -> DatabaseSettings:
    """Settings of the database that holds Dagster's run, event and schedule storage.

    ``warehouse``: the already resolved warehouse settings, when the caller has them.
    """
    if os.environ.get("REC_DAGSTER_DATABASE_URL"):
        return DatabaseSettings.from_url(os.environ["REC_DAGSTER_DATABASE_URL"])
    warehouse = warehouse or warehouse_settings(start_embedded=start_embedded)
    if warehouse.embedded:
        return warehouse.with_database(EMBEDDED_DAGSTER_DB)
    return warehouse


def dagster_environment(*, start_embedded: bool = True) -> dict[str, str]:
    """Environment for ``dagster`` commands: DAGSTER_HOME with the project's dagster.yaml, storage URL."""
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    source_yaml = settings.PROJECT_ROOT / "dagster.yaml"
    if not instance_yaml.exists() or instance_yaml.read_bytes() != source_yaml.read_bytes():
        instance_yaml.write_bytes(source_yaml.read_bytes())
    warehouse = warehouse_settings(start_embedded=start_embedded)
    storage = dagster_storage_settings(warehouse=warehouse)
    return {
        "DAGSTER_HOME": str(home),
        "REC_DAGSTER_PG_URL": storage.url(driver="psycopg2"),
        "REC_HOME": str(settings.state_dir()),
        "REC_LANDING_DIR": str(settings.landing_dir()),
        **warehouse.dbt_environment(),
    }
