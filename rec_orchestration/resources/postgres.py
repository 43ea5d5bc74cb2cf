"""The warehouse as a Dagster resource: a connection pool per step, opened on first use and closed with
the step, and the query helpers of :class:`rec_orchestration.db.warehouse.Queries`."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from psycopg_pool import ConnectionPool
from pydantic import Field, PrivateAttr

from rec_orchestration.db import servers
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.warehouse import Queries, open_pool


class PostgresResource(dg.ConfigurableResource, Queries):
    """The warehouse PostgreSQL database.

    With ``database_url`` unset (the default) the address comes from the environment:
    ``REC_DATABASE_URL``, the libpq ``PG*`` variables, or else the project's embedded server, which
    is started when needed. Keep passwords in the environment, not in run config.
    """

    database_url: str | None = Field(
        default=None,
        description="Override of the warehouse URL. Leave unset to use REC_DATABASE_URL / PG* / embedded.",
    )
    pool_max_size: int = Field(default=4, description="Most connections one step holds open.")
    statement_timeout_s: int = Field(default=0, description="Per-statement timeout in seconds (0: none).")

    _pool: ConnectionPool | None = PrivateAttr(default=None)
    _settings: DatabaseSettings | None = PrivateAttr(default=None)

    # -- lifecycle --------------------------------------------------------------------------------

    def database_settings(self) -> DatabaseSettings:
        if self._settings is None:
            self._settings = (
                DatabaseSettings.from_url(self.database_url)
                if self.database_url
                else servers.warehouse_settings(start_embedded=True)
            )
        return self._settings

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = open_pool(self.database_settings(), self.pool_max_size, self.statement_timeout_s)
        return self._pool

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- connections ------------------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; commits on success, rolls back on error (one transaction)."""
        with self._get_pool().connection() as conn:
            yield conn
