"""Which database failures are worth waiting out, told from what the drivers and tools report.

psycopg gives most server errors a SQLSTATE (``retry.py`` classifies those), but a failed connect carries
text only, and the tools that open their own connections (dbt's CLI, Great Expectations through
SQLAlchemy and psycopg2) hand back their own exceptions or only a message. These helpers read that text:

- a *refused login* (wrong password, unknown role or database, no ``pg_hba.conf`` entry, a role without
  LOGIN) is a configuration error: retrying will not help;
- a *lost or refused connection* (server down, restarting, in recovery, connection dropped mid-query)
  goes away by itself: the step is retried.

No Dagster here.
"""

from __future__ import annotations

import re

import psycopg

# The server's and libpq's messages for a login that waiting will not fix.
_REFUSED_LOGIN = re.compile(
    r'authentication failed|no pg_hba\.conf entry|pg_hba\.conf rejects|role "[^"]*" does not exist'
    r'|database "[^"]*" does not exist|not permitted to log in|no password supplied'
    r'|permission denied for database')

# libpq's and the server's messages for a connection that failed, dropped or was cut by a restart.
_CONNECTION_LOST = re.compile(
    r"connection refused|could not connect to server|server closed the connection unexpectedly"
    r"|terminating connection due to administrator command|the database system is (starting up|shutting down"
    r"|in recovery mode|not yet accepting connections)|ssl syscall error|could not (receive|send) data (from|to) "
    r"server|no connection to the server|connection already closed|consuming input failed"
    r"|connection timed out|timeout expired|connection to server at .* failed",
    re.IGNORECASE)


class LoginRefused(RuntimeError):
    """PostgreSQL refused the login: a configuration error, not worth retrying."""


class DatabaseUnavailable(RuntimeError):
    """A tool (Great Expectations, dbt) lost or could not open its database connection: worth retrying."""


def refused_login(error: BaseException) -> str | None:
    """The server's reason when ``error`` is a refused login (see ``_REFUSED_LOGIN``), else None."""
    if not isinstance(error, psycopg.OperationalError) or error.sqlstate is not None:
        return None
    return refused_login_in(str(error))


def refused_login_in(text: str) -> str | None:
    """The reason, when ``text`` (a driver's or a tool's message) reports a refused login."""
    message = text.strip()
    if not _REFUSED_LOGIN.search(message):
        return None
    return message.rsplit("FATAL:", 1)[-1].strip()


def connection_lost_in(text: str) -> bool:
    """Whether ``text`` reports a lost or refused connection, and not a refused login."""
    return bool(_CONNECTION_LOST.search(text)) and refused_login_in(text) is None
