"""The few query helpers every step uses, over any object that hands out pooled connections, and the pool.

:class:`rec_orchestration.resources.postgres.PostgresResource` is the Dagster resource built on them; the
warehouse reads (``db/reads.py``) take anything with these helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.failures import LoginRefused, refused_login
from rec_orchestration.db.tables import qualified

if TYPE_CHECKING:
    import pandas as pd

Params = Sequence[Any] | dict | None


class Queries:
    """Query helpers over ``connection()``, a context manager giving one transaction on a pooled connection
    (committed on success, rolled back on error)."""

    def connection(self) -> AbstractContextManager[psycopg.Connection]:
        raise NotImplementedError

    def execute(self, query: sql.Composable | str, params: Params = None) -> None:
        with self.connection() as conn:
            conn.execute(query, params)  # type: ignore[arg-type]

    def fetch_all(self, query: sql.Composable | str, params: Params = None) -> list[tuple]:
        with self.connection() as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def fetch_value(self, query: sql.Composable | str, params: Params = None) -> Any:
        rows = self.fetch_all(query, params)
        return rows[0][0] if rows else None

    def read_dataframe(self, query: sql.Composable | str, params: Params = None) -> pd.DataFrame:
        """Run a query and return a pandas DataFrame (column names from the cursor)."""
        import pandas as pd

        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(query, params)  # type: ignore[arg-type]
            columns = [col.name for col in cur.description or []]
            return pd.DataFrame(cur.fetchall(), columns=columns)

    def row_count(self, table: str) -> int:
        return int(self.fetch_value(sql.SQL("SELECT count(*) FROM {}").format(qualified(table))))

    def table_exists(self, table: str) -> bool:
        return self.fetch_value("SELECT to_regclass(%s) IS NOT NULL", (table,))


def check_login(settings: DatabaseSettings, connect_timeout_s: int = 10) -> None:
    """Connect once. A refused login raises :class:`LoginRefused` at once, naming the role, database and
    server but never the password; any other failure (a server down or restarting) propagates as the
    ``psycopg.OperationalError`` it is, which steps retry."""
    try:
        psycopg.connect(settings.conninfo(), connect_timeout=connect_timeout_s).close()
    except psycopg.OperationalError as error:
        reason = refused_login(error)
        if reason is None:
            raise
        raise LoginRefused(
            f"PostgreSQL at {settings.host}:{settings.port} refused the login of role {settings.user!r} to "
            f"database {settings.dbname!r}: {reason}. Check REC_DATABASE_URL or the PG* variables; retrying "
            "will not help.") from None


def open_pool(settings: DatabaseSettings, max_size: int, statement_timeout_s: int = 0) -> ConnectionPool:
    """A pool that opens connections only when asked (``min_size=0``), with a per-statement timeout (0: none).

    The login is checked first (:func:`check_login`): the pool would otherwise retry a wrong password in
    the background until its 30 s timeout and then report only that it timed out."""
    check_login(settings)
    return ConnectionPool(settings.conninfo(options=f"-c statement_timeout={statement_timeout_s * 1000}"),
                          min_size=0, max_size=max_size, open=True, name="rec_warehouse")
