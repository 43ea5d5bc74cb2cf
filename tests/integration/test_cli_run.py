"""`rec sample` + `rec materialize` (what `make run` does) through the real Dagster CLI and instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rec_orchestration.ml import registry
from tests.support import query, scalar

REC = [sys.executable, "-m", "rec_orchestration.cli"]


def rec(*args: str) -> str:
    done = subprocess.run([*REC, *args], capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_running_twice_adds_no_rows_and_runs_are_recorded_in_postgres(warehouse_env, tmp_path: Path):
    landing = tmp_path / "cli_landing"
    os.environ["REC_LANDING_DIR"] = str(landing)  # restored by monkeypatch in warehouse_env
    rec("sample", "--users", "60", "--products", "40", "--landing-dir", str(landing))
    rec("materialize")
    tables = ["raw.reviews", "raw.products", "core.users", "core.reviews", "recs.user_recommendations"]
    first = {t: scalar(warehouse_env, f"SELECT count(*) FROM {t}") for t in tables}
    assert first["recs.user_recommendations"] == first["core.users"] * 20 > 0

    output = rec("sample", "--users", "60", "--products", "40", "--landing-dir", str(landing))
    assert "unchanged" in output
    rec("materialize")
    second = {t: scalar(warehouse_env, f"SELECT count(*) FROM {t}") for t in tables}
    assert second == first
    assert scalar(warehouse_env, "SELECT count(*) FROM raw.ingested_files") == 2
    assert scalar(warehouse_env, "SELECT count(*) FROM recs.recommendation_runs") == 2

    # Dagster's own storage is the PostgreSQL database named by REC_DAGSTER_DATABASE_URL.
    from rec_orchestration.db.address import DatabaseSettings

    dagster_db = DatabaseSettings.from_url(os.environ["REC_DAGSTER_DATABASE_URL"])
    statuses = query(dagster_db, "SELECT status FROM runs ORDER BY create_timestamp")
    assert [s for (s,) in statuses] == ["SUCCESS", "SUCCESS"]

    summary = rec("summary")
    assert "recs.user_recommendations" in summary and str(first["recs.user_recommendations"]) in summary
    # The models of the latest evaluation, each once, one of them the champion.
    models = summary.split("models, evaluated on", 1)[1].splitlines()
    listed = [line.split()[0] for line in models if "nDCG@10" in line]
    assert sorted(listed) == sorted(registry.EVALUATED_NAMES)
    assert sum("champion" in line for line in models) == 1


def test_summary_labels_the_metrics_with_the_k_they_were_measured_at(warehouse_env):
    """``rec summary`` prints each model's metrics at the k recorded with them, whatever EVAL_K is."""
    import psycopg

    from rec_orchestration.db.tables import packaged_sql

    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
        conn.execute(packaged_sql("ml_schema.sql"))
        conn.execute("""INSERT INTO ml.model_evaluations VALUES
            ('ease', 'v1', 5, 0.1, 0.2, 0.345, 0.1, 0.5, 10, 1.0, 'd', '{}', '{}', '2026-01-01'),
            ('popularity', 'v1', 5, 0.1, 0.2, 0.123, 0.1, 0.5, 10, 1.0, 'd', '{}', '{}', '2026-01-01')""")
        conn.execute("""INSERT INTO ml.model_champions VALUES
            ('run-1', '2026-01-01', 'ease', 'v1', 5, 0.345, 'v1', 0.123, 0, true, NULL)""")
    models = rec("summary").split("models, evaluated on", 1)[1].splitlines()
    lines = {line.split()[0]: line for line in models if line.strip().startswith(("ease", "popularity"))}
    assert "nDCG@5 0.3450" in lines["ease"] and "P@5" in lines["ease"] and "champion" in lines["ease"]
    assert "nDCG@5 0.1230" in lines["popularity"] and "@10" not in "".join(models)
