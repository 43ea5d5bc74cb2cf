"""Which database the project uses, from the environment."""
from __future__ import annotations

import pytest

from rec_orchestration.db import servers
from rec_orchestration.db.address import DatabaseSettings


def test_rec_database_url_wins_and_passwords_are_redacted(monkeypatch):
    monkeypatch.setenv("REC_DATABASE_URL", "postgresql://app:s3cr%40t@db.example:6543/warehouse")
    monkeypatch.delenv("REC_DAGSTER_DATABASE_URL", raising=False)
    target = servers.warehouse_settings()
    assert (target.host, target.port, target.user, target.password, target.dbname) == (
        "db.example", 6543, "app", "s3cr@t", "warehouse")
    assert "s3cr" not in target.redacted_url()
    assert servers.dagster_storage_settings() == target  # Dagster shares the configured database
    assert target.url(driver="psycopg2") == "postgresql+psycopg2://app:s3cr%40t@db.example:6543/warehouse"
    assert target.dbt_environment()["DBT_ENV_SECRET_REC_PGPASSWORD"] == "s3cr@t"


def test_pg_variables_select_an_external_server(monkeypatch):
    monkeypatch.delenv("REC_DATABASE_URL", raising=False)
    for key, value in {"PGHOST": "10.0.0.5", "PGPORT": "5433", "PGUSER": "u", "PGDATABASE": "d"}.items():
        monkeypatch.setenv(key, value)
    assert servers.external_database_configured()
    assert servers.warehouse_settings() == DatabaseSettings("10.0.0.5", 5433, "u", None, "d")


def test_nothing_configured_means_embedded(monkeypatch):
    for key in ("REC_DATABASE_URL", "PGHOST", "PGDATABASE"):
        monkeypatch.delenv(key, raising=False)
    assert not servers.external_database_configured()
    target = servers.warehouse_settings(start_embedded=False)
    assert target.embedded and target.host == "127.0.0.1" and target.dbname == "rec"


def test_the_model_store_may_be_a_url_that_other_machines_reach(monkeypatch, tmp_path):
    """REC_MODEL_STORE_DIR as a URL is kept as given (a path would be resolved on this machine)."""
    from rec_orchestration import settings

    monkeypatch.setenv("REC_MODEL_STORE_DIR", "s3://rec-models/store")
    assert settings.model_store_url() == "s3://rec-models/store"
    monkeypatch.setenv("REC_MODEL_STORE_DIR", str(tmp_path / "store" / ".." / "models"))
    assert settings.model_store_url() == str(tmp_path / "models")
    monkeypatch.delenv("REC_MODEL_STORE_DIR")
    monkeypatch.setenv("REC_HOME", str(tmp_path))
    assert settings.model_store_url() == str(tmp_path / "model_store")


def test_scoring_shards_and_dask_cluster_come_from_the_environment(monkeypatch):
    from rec_orchestration import settings

    monkeypatch.delenv("REC_SCORING_SHARDS", raising=False)
    assert settings.scoring_shards() == 1
    monkeypatch.setenv("REC_SCORING_SHARDS", "4")
    assert settings.scoring_shards() == 4
    monkeypatch.setenv("REC_SCORING_SHARDS", "0")
    with pytest.raises(ValueError, match="REC_SCORING_SHARDS=0"):
        settings.scoring_shards()
    monkeypatch.setenv("REC_DASK_SCHEDULER", "tcp://10.0.0.5:8786")
    assert settings.dask_cluster() == {"existing": {"address": "tcp://10.0.0.5:8786"}}
    monkeypatch.delenv("REC_DASK_SCHEDULER")
    monkeypatch.setenv("REC_DASK_WORKERS", "3")
    local = settings.dask_cluster()["local"]
    assert local["n_workers"] == 3 and local["host"] == "127.0.0.1" and local["threads_per_worker"] == 1
