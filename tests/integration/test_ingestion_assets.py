"""The raw assets as users drive them: the landing sensor, per-entry partitions, a bad entry failing
only its partition, and a failing Great Expectations check stopping everything downstream."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from rec_orchestration.definitions import defs
from rec_orchestration.partitions import LANDING_PARTITIONS_NAME
from rec_orchestration.sensors import landing_sensor
from tests.support import materialize_everything, query, scalar
from tests.unit.test_formats import ML_100K


def evaluate_sensor(instance: dg.DagsterInstance, cursor: str | None):
    result = landing_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_sensor_adds_a_partition_per_new_entry_and_requests_its_ingestion(warehouse_env):
    landing = Path(os.environ["REC_LANDING_DIR"])
    with dg.DagsterInstance.ephemeral() as instance:
        first = evaluate_sensor(instance, None)
        assert sorted(r.partition_key for r in first.run_requests) == ["meta.jsonl", "reviews.jsonl"]
        assert instance.get_dynamic_partitions(LANDING_PARTITIONS_NAME) == ["meta.jsonl", "reviews.jsonl"]

        assert isinstance(evaluate_sensor(instance, first.cursor), dg.SkipReason)  # nothing new

        shutil.copytree(ML_100K, landing / "ml-100k")
        (landing / "upload.jsonl.part").write_text("in flight")  # partial downloads are not landed yet
        second = evaluate_sensor(instance, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["ml-100k"]

        with (landing / "reviews.jsonl").open("ab") as fh:  # a changed file is ingested again
            fh.write(b"\n")
        third = evaluate_sensor(instance, second.cursor)
        assert [r.partition_key for r in third.run_requests] == ["reviews.jsonl"]
        assert instance.get_dynamic_partitions(LANDING_PARTITIONS_NAME) == ["meta.jsonl", "reviews.jsonl", "ml-100k"]


def run_partition(instance: dg.DagsterInstance, key: str) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("ingest_landing_files")
    return job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)


def test_a_movielens_folder_is_one_partition_and_a_bad_entry_fails_only_its_own(warehouse_env):
    landing = Path(os.environ["REC_LANDING_DIR"])
    shutil.copytree(ML_100K, landing / "ml-100k")
    (landing / "notes.txt").write_text("not a data file")
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(LANDING_PARTITIONS_NAME, ["ml-100k", "notes.txt"])

        result = run_partition(instance, "ml-100k")
        assert result.success
        assert query(warehouse_env, """
            SELECT source_format, landing_entry, rows_loaded FROM raw.ingested_files ORDER BY source_format""") == [
            ("movielens_100k_movies", "ml-100k", 1682), ("movielens_100k_ratings", "ml-100k", 100_000),
            ("movielens_100k_users", "ml-100k", 943)]
        checks = {(e.asset_key.to_user_string(), e.check_name): e.passed
                  for e in result.get_asset_check_evaluations()}
        assert len(checks) == 8 and all(checks.values())
        materialized = instance.get_materialized_partitions(dg.AssetKey(["raw", "users"]))
        assert materialized == {"ml-100k"}

        failed = run_partition(instance, "notes.txt")
        assert not failed.success
        (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
        assert "notes.txt: unknown landing file format" in failure.step_failure_data.error.message
        assert scalar(warehouse_env, "SELECT count(*) FROM raw.reviews") == 100_000  # nothing else lost


def test_a_failing_great_expectations_check_stops_everything_downstream(warehouse_env):
    assert materialize_everything().success
    recommendations = scalar(warehouse_env, "SELECT count(*) FROM recs.user_recommendations")

    # A second record for an existing product key inside the same delivery (written around the loader, as
    # another writer or a loader bug could); the ledger is kept consistent so that only GX can object.
    file_id, line = query(warehouse_env, "SELECT file_id, max(line_number) FROM raw.products GROUP BY 1")[0]
    with __import__("psycopg").connect(warehouse_env.conninfo()) as conn:
        conn.execute("""INSERT INTO raw.products (file_id, line_number, item_key, title)
                        SELECT file_id, %s, item_key, 'conflicting title' FROM raw.products
                        WHERE file_id = %s ORDER BY line_number LIMIT 1""", (line + 1, file_id))
        conn.execute("""UPDATE raw.ingested_files SET rows_read = rows_read + 1, rows_loaded = rows_loaded + 1
                        WHERE file_id = %s""", (file_id,))

    result = materialize_everything()
    assert not result.success
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    gx = evaluations[("raw/products", "great_expectations")]
    assert not gx.passed and evaluations[("raw/products", "ledger_reconciles")].passed
    results = gx.metadata["results"].value
    (failed,) = [r for r in results["results"] if not r["success"]]
    assert failed["expectation"] == "expect_compound_columns_to_be_unique" and failed["unexpected_count"] == 2
    assert {row["line_number"] for row in failed["sample"]} == {1, line + 1}
    # Nothing downstream of the raw tables ran: only the ingestion step started, only raw/* materialized.
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"raw_landing"}
    materialized = {e.asset_key.path[0] for e in result.get_asset_materialization_events()}
    assert materialized == {"raw"}
    assert scalar(warehouse_env, "SELECT count(*) FROM recs.user_recommendations") == recommendations


