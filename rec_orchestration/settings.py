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
    The model store: a local directory (default ``<REC_HOME>/model_store``) or an fsspec URL such as
    ``s3://bucket/models``, which steps on other machines (``REC_EXECUTOR=dask`` or ``k8s``) can reach.
``REC_BACKUP_DIR``
    Where the ``backup_warehouse`` job and ``rec backup`` write dumps; default ``<REC_HOME>/backups``.
``REC_PG_BIN_DIR``
    Bin directory of the ``pg_dump`` / ``pg_restore`` to use; default the embedded server's, else PATH.
``REC_EMBEDDED_PORT``
    TCP port of the embedded server on 127.0.0.1; default 55432.
``REC_EXECUTOR``, ``REC_DASK_SCHEDULER``, ``REC_DASK_WORKERS``
    How a run executes its steps: see :func:`executor_name` and :func:`dask_cluster`.
``REC_SCORING_SHARDS``
    Steps the scoring of every user is split into (:func:`scoring_shards`); default 1.
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
    """The local model store directory (REC_MODEL_STORE_DIR when it is a path)."""
    return Path(os.environ.get("REC_MODEL_STORE_DIR", state_dir() / "model_store")).resolve()


def model_store_url() -> str:
    """The model store's root: REC_MODEL_STORE_DIR as given when it is a URL (``s3://...``, ``gs://...``),
    else the local directory."""
    configured = os.environ.get("REC_MODEL_STORE_DIR", "")
    return configured if "://" in configured else str(model_store_dir())


def backup_dir() -> Path:
    return Path(os.environ.get("REC_BACKUP_DIR", state_dir() / "backups")).resolve()


def dagster_home() -> Path:
    return state_dir() / "dagster_home"


def embedded_port() -> int:
    return int(os.environ.get("REC_EMBEDDED_PORT", EMBEDDED_DEFAULT_PORT))


EXECUTORS = ("multiprocess", "in_process", "dask", "k8s")
# How the multiprocess executor starts a step's process: forked from a server process that imported the
# code location once for the run, not a fresh interpreter per step (``spawn``, Dagster's default) that
# imports Dagster, dagster-dbt and the definitions again before the step can start (about 7 s of a core
# each; a refresh of the sample has 16 steps).
MULTIPROCESS_CONFIG = {"start_method": {"forkserver": {"preload_modules": ["rec_orchestration.definitions"]}}}


def local_executor_config(name: str) -> dict[str, dict]:
    """The config of Dagster's default executor that runs a run's steps as ``name`` (``multiprocess`` or
    ``in_process``) says: what a run whose config names no executor gets, and what ``rec materialize``
    passes."""
    return {name: MULTIPROCESS_CONFIG if name == "multiprocess" else {}}
DEFAULT_DASK_WORKERS = 2


def executor_name() -> str:
    """How a run executes its steps (``REC_EXECUTOR``): ``multiprocess`` (the default: a process per
    step, forked as :data:`MULTIPROCESS_CONFIG` says, steps side by side where the graph allows),
    ``in_process`` (every step in the run's own process: one start-up instead of one per step, which is
    faster on a small machine), ``dask`` (each step a task on a dask.distributed cluster, whose workers
    may be other machines: :func:`dask_cluster`) or ``k8s`` (each step a Kubernetes Job, with the
    ``dagster-k8s`` extra and the Helm chart's run launcher)."""
    name = os.environ.get("REC_EXECUTOR", "multiprocess").strip().lower().replace("-", "_")
    if name not in EXECUTORS:
        raise ValueError(f"REC_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")
    return name


def dask_cluster() -> dict[str, dict]:
    """The dask executor's cluster: the scheduler at ``REC_DASK_SCHEDULER`` (``tcp://host:8786``) when it is
    set, else a local cluster of ``REC_DASK_WORKERS`` worker processes (default 2) started for the run."""
    address = os.environ.get("REC_DASK_SCHEDULER", "").strip()
    if address:
        return {"existing": {"address": address}}
    workers = int(os.environ.get("REC_DASK_WORKERS", DEFAULT_DASK_WORKERS))
    if workers < 1:
        raise ValueError(f"REC_DASK_WORKERS={workers}: expected at least 1")
    # One thread per worker: Dagster runs one step at a time in a worker; the local scheduler listens on
    # 127.0.0.1 only, its dashboard is off.
    return {"local": {"n_workers": workers, "threads_per_worker": 1, "processes": True,
                      "host": "127.0.0.1", "dashboard_address": None}}


def scoring_shards() -> int:
    """How many steps score the users (``REC_SCORING_SHARDS``, default 1): each takes the users whose
    stable hash falls in its shard, so a distributed executor spreads them over its workers."""
    shards = int(os.environ.get("REC_SCORING_SHARDS", 1))
    if not 1 <= shards <= 256:
        raise ValueError(f"REC_SCORING_SHARDS={shards}: expected 1 to 256")
    return shards
