"""Throw-away databases for tests and benchmarks, on the configured server or the embedded one.

On the embedded server (nothing configured) they are created through its superuser and owned by the
application role, so the code under test connects exactly as the pipeline does; the server is started
if needed and stopped again by :meth:`ScratchDatabases.drop_all` if this object started it. With
``REC_DATABASE_URL`` / ``PG*`` set, that role must be allowed to create databases.
"""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

from rec_orchestration.db import servers
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.embedded import EMBEDDED_APP_ROLE, EmbeddedPostgres


class ScratchDatabases:
    """Creates databases named ``<prefix>_<random>`` and drops them all at the end."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.embedded: EmbeddedPostgres | None = None
        self.started_embedded = False
        if servers.external_database_configured():
            self.admin = servers.warehouse_settings()
        else:
            self.embedded = EmbeddedPostgres.default()
            self.started_embedded = not self.embedded.status().running
            self.embedded.ensure_running()
            self.admin = self.embedded.superuser_settings()

    def create(self, prefix: str) -> DatabaseSettings:
        """A new empty database; its settings connect as the role the pipeline uses."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        owner = EMBEDDED_APP_ROLE if self.embedded else self.admin.user
        with psycopg.connect(self.admin.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
        self.created.append(name)
        return self.embedded.app_settings(name) if self.embedded else self.admin.with_database(name)

    def psql_command(self, db: DatabaseSettings) -> tuple[list[str], dict[str, str]]:
        """argv and environment of a quiet psql on ``db`` that stops at the first error."""
        argv, env = self.embedded.psql_command(db.dbname) if self.embedded else db.psql_command()
        return [*argv, "-X", "-q", "-v", "ON_ERROR_STOP=1"], {**env, "PGCLIENTENCODING": "UTF8"}

    def describe(self) -> str:
        with psycopg.connect(self.admin.conninfo()) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        where = "embedded" if self.embedded else "external"
        return f"PostgreSQL {version} ({where}, {self.admin.host}:{self.admin.port})"

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        """Drop every database made here; stop the embedded server if this object started it."""
        for name in list(self.created):
            self.drop(name)
        if self.embedded and self.started_embedded:
            self.embedded.stop()  # leave the machine as it was found (CI starts from nothing)
