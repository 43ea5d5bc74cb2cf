"""Where the project keeps its state, read from the environment (which PostgreSQL it talks to is
:mod:`rec_orchestration.db.servers`).

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
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"

EMBEDDED_DEFAULT_PORT = 55432


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


EXECUTORS = ("multiprocess", "in_process")


def executor_name() -> str:
    """How a run executes its steps (``REC_EXECUTOR``): ``multiprocess`` (the default: a process per
    step, steps side by side where the graph allows) or ``in_process`` (every step in the run's own
    process: one start-up instead of one per step, which is faster on a small machine)."""
    name = os.environ.get("REC_EXECUTOR", "multiprocess").strip().lower().replace("-", "_")
    if name not in EXECUTORS:
        raise ValueError(f"REC_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")
    return name
