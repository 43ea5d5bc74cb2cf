"""The address of one PostgreSQL database, and the forms each client wants it in (libpq conninfo,
SQLAlchemy URL, a client program's argv and environment, dbt's profile variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo


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
