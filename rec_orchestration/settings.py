"""Where the project keeps its state and which PostgreSQL it talks to.

Everything is configured from the environment (nothing secret is ever written to a config file in
the repository):

``REC_DATABASE_URL``
    The warehouse database (``postgresql://user:password@host:port/dbname``). When it, or any of the
    usual libpq variables ``PGHOST`` / ``PGDATABASE``, is set the project uses that server and starts
    nothing.
``REC_DAGSTER_DATABASE_URL``
    Where Dagster keeps its run and event storage. Defaults to the warehouse database with an
    external server, and to the ``rec_dagster`` database of the embedded server.
``REC_HOME``
    The project's local state directory (embedded server, Dagster home, model store); default
    ``<project>/.rec``.
``REC_LANDING_DIR``
    The directory the ingestion assets read raw files from; default ``<project>/data/landing``.
``REC_MODEL_STORE_DIR``
    Local model store directory; default ``<REC_HOME>/model_store``.
``REC_BACKUP_DIR``
    Where the ``backup_warehouse`` job and ``rec backup`` write dumps; default ``<REC_HOME>/backups``.
``REC_PG_BIN_DIR``
    Bin directory of the ``pg_dump`` / ``pg_restore`` to use; default the embedded server's, else PATH.
``REC_EMBEDDED_PORT``
    TCP port of the embedded server on 127.0.0.1; default 55432.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"

EMBEDDED_DEFAULT_PORT = 55432
EMBEDDED_WAREHOUSE_DB = "rec"
EMBEDDED_DAGSTER_DB = "rec_dagster"
EMBEDDED_APP_ROLE = "rec"


def state_dir() -> Path:
    return Path(os.environ.get("REC_HOME", PROJECT_ROOT / ".rec")).resolve()


def landing_dir() -> Path:
    return Path(os.environ.get("REC_LANDING_DIR", PROJECT_ROOT / "data" / "landing")).resolve()


def model_store_dir() -> Path:
    return Path(os.environ.get("REC_MODEL_STORE_DIR", state_dir() / "model_store")).resolve()


def backup_dir() -> Path:
    return Path(os.environ.get("REC_BACKUP_DIR", state_dir() / "backups")).resolve()


def dagster_home() -> Path:
    return state_dir() / "dagster_home"


def embedded_port() -> int:
    return int(os.environ.get("REC_EMBEDDED_PORT", EMBEDDED_DEFAULT_PORT))


@dataclass(frozen=True)
class DatabaseSettings:
    """Connection parameters of one PostgreSQL database."""

    host: str
    port: int
    user: str
    password: str | None
    dbname: str
    embedded: bool = False

    @classmethod
    def from_url(cls, url: str, *, embedded: bool = False) -> DatabaseSettings:
        params = conninfo_to_dict(url)
        return cls(
            host=str(params.get("host") or "127.0.0.1"),
            port=int(params.get("port") or 5432),
            user=str(params.get("user") or os.environ.get("USER", "postgres")),
            password=params.get("password") or None,  # type: ignore[arg-type]
            dbname=str(params.get("dbname") or "postgres"),
            embedded=embedded,
        )

    def with_database(self, dbname: str) -> DatabaseSettings:
        return replace(self, dbname=dbname)

    def conninfo(self, **extra: str) -> str:
        """libpq connection string, for psycopg."""
        params: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "application_name": "rec_orchestration",
            **extra,
        }
        if self.password:
            params["password"] = self.password
        return make_conninfo(**params)  # type: ignore[arg-type]

    def url(self, driver: str | None = None) -> str:
        """URL form; ``driver="psycopg2"`` gives the SQLAlchemy URL dagster-postgres needs."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"{scheme}://{auth}@{self.host}:{self.port}/{quote(self.dbname, safe='')}"

    def redacted_url(self) -> str:
        return replace(self, password="****" if self.password else None).url()

    def client_env(self) -> dict[str, str]:
        """The environment for a PostgreSQL client program: the password goes in PGPASSWORD, never in
        its arguments (which every user of the machine can read in `ps`). Without a password of its
        own it inherits PGPASSWORD, as psycopg's connections do."""
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def client_conninfo(self, application_name: str) -> str:
        """``conninfo`` without the password, for a client program's ``--dbname`` (with ``client_env``)."""
        return replace(self, password=None).conninfo(application_name=application_name)

    def psql_command(self, psql: str = "psql") -> tuple[list[str], dict[str, str]]:
        """argv and environment that open ``psql`` on this database (password via PGPASSWORD, not argv)."""
        return [psql, "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", self.dbname], self.client_env()

    def dbt_environment(self) -> dict[str, str]:
        """Variables read by ``dbt_project/profiles.yml``; dbt scrubs DBT_ENV_SECRET_* from its logs."""
        return {
            "REC_PGHOST": self.host,
            "REC_PGPORT": str(self.port),
            "REC_PGUSER": self.user,
            "REC_PGDATABASE": self.dbname,
            "DBT_ENV_SECRET_REC_PGPASSWORD": self.password or "",
        }


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
    from rec_orchestration.resources.embedded_postgres import EmbeddedPostgres

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
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    source_yaml = PROJECT_ROOT / "dagster.yaml"
    if not instance_yaml.exists() or instance_yaml.read_bytes() != source_yaml.read_bytes():
        instance_yaml.write_bytes(source_yaml.read_bytes())
    warehouse = warehouse_settings(start_embedded=start_embedded)
    storage = dagster_storage_settings(warehouse=warehouse)
    return {
        "DAGSTER_HOME": str(home),
        "REC_DAGSTER_PG_URL": storage.url(driver="psycopg2"),
        "REC_HOME": str(state_dir()),
        "REC_LANDING_DIR": str(landing_dir()),
        **warehouse.dbt_environment(),
    }
