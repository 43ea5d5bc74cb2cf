"""Shared fixtures: a real PostgreSQL (the embedded server unless REC_DATABASE_URL / PG* name one),
fresh databases per test session, and a small generated sample in a temporary landing directory.
The helpers they use, and that tests import, are in tests/support.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.scratch import ScratchDatabases
from rec_orchestration.sample_data import write_sample
from tests.support import TEST_SPEC, prepare_warehouse_env


@pytest.fixture(scope="session")
def test_databases() -> Iterator[ScratchDatabases]:
    databases = ScratchDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def sample_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    landing = tmp_path_factory.mktemp("landing")
    write_sample(landing, TEST_SPEC)
    return landing


@pytest.fixture()
def warehouse_env(test_databases: ScratchDatabases, sample_landing: Path, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> DatabaseSettings:
    """Per test: its own databases and landing directory (``tmp_path / "landing"``)."""
    return prepare_warehouse_env(test_databases, sample_landing, tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def module_warehouse_env(test_databases: ScratchDatabases, sample_landing: Path,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DatabaseSettings, Path]]:
    """Per module: shared by read-only tests; yields the settings and the work directory."""
    workdir = tmp_path_factory.mktemp("module")
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield prepare_warehouse_env(test_databases, sample_landing, workdir, monkeypatch), workdir


@pytest.fixture()
def conn(warehouse_env: DatabaseSettings) -> Iterator[psycopg.Connection]:
    """An autocommit connection to this test's warehouse with the raw schema in place (what the loader needs)."""
    from rec_orchestration.sources.loader import ensure_raw_schema

    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as connection:
        with connection.transaction():
            ensure_raw_schema(connection)
        yield connection


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
