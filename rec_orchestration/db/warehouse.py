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
NULL_TEXT = "\\N"  # how read_columns' COPY writes a NULL


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

    def read_columns(self, query: sql.Composable, dtypes: dict[str, str]) -> pd.DataFrame:
        """A query's rows as a DataFrame of the columns ``dtypes`` names: :func:`copy_columns` on a connection
        of its own."""
        with self.connection() as conn:
            return copy_columns(conn, query, dtypes)

    def row_count(self, table: str) -> int:
        return int(self.fetch_value(sql.SQL("SELECT count(*) FROM {}").format(qualified(table))))

    def table_exists(self, table: str) -> bool:
        return self.fetch_value("SELECT to_regclass(%s) IS NOT NULL", (table,))


def copy_columns(conn: psycopg.Connection, query: sql.Composable, dtypes: dict[str, str]) -> pd.DataFrame:
    """A query's rows as a DataFrame of the columns ``dtypes`` names (every one of them, in the query's
    order), through ``COPY (query) TO STDOUT`` as CSV parsed by pandas: no Python object per value (a
    plain fetch of 10M interactions builds 40 million of them); a column of numbers arrives as one
    array. The query takes no parameters (COPY does not); floats come back exactly (PostgreSQL writes
    the shortest text that reads back to the same double, pandas 3 reads it back exactly). A NULL
    arrives as NaN (give nullable columns a float or object dtype); an empty text stays empty, but a
    text of exactly ``\\N`` (COPY's NULL marker here) would read as NULL."""
    import io

    import pandas as pd

    buffer = io.BytesIO()
    copy_out = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true, NULL {})").format(
        query, sql.Literal(NULL_TEXT))
    with conn.cursor() as cur, cur.copy(copy_out) as copy:
        for chunk in copy:
            buffer.write(chunk)
    buffer.seek(0)
    frame = pd.read_csv(buffer, dtype=dtypes, keep_default_na=False, na_values=[NULL_TEXT])
    if list(frame.columns) != list(dtypes):
        raise ValueError(f"the query's columns {list(frame.columns)} are not {list(dtypes)}")
    return frame


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
