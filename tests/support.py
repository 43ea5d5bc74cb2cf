"""Helpers the tests share (the fixtures that use them are in conftest.py): the sample's size, a fresh
warehouse environment, the refresh run as the schedule launches it, throw-away logins and small queries."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from rec_orchestration import settings
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.scratch import ScratchDatabases
from rec_orchestration.sample_data import SampleSpec

if TYPE_CHECKING:  # Dagster is imported where it is used: collecting the unit tests stays quick
    import dagster as dg

# Small enough for seconds per run, large enough that every user can get 10 unseen products.
TEST_SPEC = SampleSpec(n_users=150, n_products=80, seed=7)



def prepare_warehouse_env(databases: ScratchDatabases, sample_landing: Path, workdir: Path,
                          monkeypatch: pytest.MonkeyPatch) -> DatabaseSettings:
    """A fresh warehouse database, Dagster storage database, landing dir copy and model store."""
    warehouse = databases.create("rec_test")
    dagster_db = databases.create("rec_test_dagster")
    landing = workdir / "landing"
    landing.mkdir()
    for source in sample_landing.iterdir():
        (landing / source.name).write_bytes(source.read_bytes())
    monkeypatch.setenv("REC_DATABASE_URL", warehouse.url())
    monkeypatch.setenv("REC_DAGSTER_DATABASE_URL", dagster_db.url())
    monkeypatch.setenv("REC_LANDING_DIR", str(landing))
    monkeypatch.setenv("REC_MODEL_STORE_DIR", str(workdir / "model_store"))
    monkeypatch.setenv("REC_HOME", str(workdir / "rec_home"))
    return warehouse


# Fewer training epochs than the pipeline's defaults, so the suite stays quick on two CPU cores; the
# models still learn the sample's planted tastes (tests/integration/test_models.py asserts it).
QUICK_MODELS = {"ops": {
    "models__lightgcn": {"config": {"epochs": 40, "patience": 5}},
    "models__lightfm": {"config": {"epochs": 10}},
}}


def materialize_everything(run_config: dict | None = None,
                           asset_selection: list | None = None) -> dg.ExecuteInProcessResult:
    """What the hourly schedule runs: the refresh job over every landing partition, after the landing
    directory's entries are added as partitions (the sensor's job). A fresh Dagster instance each call.
    The result's ``log_messages`` are the run log's messages, in order."""
    import dagster as dg

    from rec_orchestration.definitions import defs
    from rec_orchestration.partitions import sync_landing_partitions
    from rec_orchestration.schedules import all_partitions_run_request

    job = defs.resolve_job_def("refresh_recommendations")
    with dg.DagsterInstance.ephemeral() as instance:
        sync_landing_partitions(instance, settings.landing_dir())
        request = all_partitions_run_request(instance)
        assert request is not None, "no landing partitions"
        result = job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False,
                                        run_config=run_config if run_config is not None else QUICK_MODELS,
                                        asset_selection=asset_selection)
        # What the UI's run log shows, kept before the instance goes: its steps' log lines included.
        result.log_messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
        return result


@contextmanager
def throwaway_logins(admin: DatabaseSettings) -> Iterator[Callable[[str, DatabaseSettings], psycopg.Connection]]:
    """``connect(group, db)``: a new login role in ``group`` (created through ``admin``), connected to
    ``db`` with autocommit. The connections are closed and the roles dropped on exit."""
    made: list[str] = []
    connections: list[psycopg.Connection] = []

    def connect(group: str, db: DatabaseSettings) -> psycopg.Connection:
        name, password = f"test_{group}_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
        with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(name), sql.Literal(password), sql.Identifier(group)))
        made.append(name)
        connections.append(psycopg.connect(replace(db, user=name, password=password).conninfo(), autocommit=True))
        return connections[-1]

    try:
        yield connect
    finally:
        for conn in connections:
            conn.close()
        with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
            for name in made:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def assert_success(result: dg.ExecuteInProcessResult) -> None:
    """The run succeeded; otherwise the assertion shows every failure message of the run."""
    assert result.success, [e.message for e in result.all_events if e.is_failure]


def query(db: DatabaseSettings, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(db.conninfo()) as conn:
        return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]


def scalar(db: DatabaseSettings, statement: str, params: tuple = ()):
    return query(db, statement, params)[0][0]


# -- processes (Linux: read from /proc) ------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, int, str, str] | None:
    """(ppid, session, state, start time) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[3]), fields[0], fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root``: pid -> start time (so that a reused pid is not mistaken for it)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[2] != "Z":
            children.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[3]
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found[child] = starts[child]
            stack.append(child)
    return found


def still_alive(processes: dict[int, str]) -> dict[int, str]:
    """Those of ``processes`` still running (not zombies), with their command lines."""
    alive = {}
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[3] == start and stat[2] != "Z":
            try:
                alive[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
            except OSError:
                continue
    return alive


def kill_leftovers(processes: dict[int, str]) -> None:
    for pid in still_alive(processes):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def same_rows(rows: list[tuple], expected: list[tuple]) -> bool:
    """Published recommendations (``user_id, product_id, rank, score, ...``): row for row the same users,
    products, ranks, reasons and models; scores equal to float32 precision (a model scores a block of users
    with one matrix product, and BLAS may sum a different block's dot products in another order, so a score
    can move by one unit in the last place of a float32)."""
    assert len(rows) == len(expected)
    for row, other in zip(rows, expected, strict=True):
        assert row[:3] + row[4:] == other[:3] + other[4:], (row, other)
        assert abs(row[3] - other[3]) <= 1e-6 * max(1.0, abs(other[3])), (row, other)
    return True
