"""The automation `make dev` turns on, evaluated the way the daemon evaluates it (``evaluate_tick``) and
followed by the real runs its requests launch: the ``hourly_refresh`` schedule (nothing until landing
partitions exist, then one run over all of them that publishes recommendations; the next tick refits
nothing) and the ``landing_sensor`` (a new file becomes its own partition and ingestion run).

What tests/integration/test_ingestion_assets.py covers (the sensor's requests for new, changed and
partial entries; partition runs launched by hand) is not repeated here."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from rec_orchestration import settings
from rec_orchestration.db import servers
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.definitions import defs
from rec_orchestration.ml import registry
from rec_orchestration.partitions import LANDING_PARTITIONS_NAME, sync_landing_partitions
from tests.support import QUICK_MODELS, assert_success, query, scalar

SAMPLE_ENTRIES = ["meta.jsonl", "reviews.jsonl"]  # what write_sample puts in the landing directory
SCHEDULE_NAME_TAG = "dagster/schedule_name"


@contextmanager
def project_instance(monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """The instance the daemon of `rec dev` uses (the project's dagster.yaml: PostgreSQL storage, here in
    the test's own database). Schedule contexts need a persistent instance; an ephemeral one is dropped."""
    for key, value in servers.dagster_environment().items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.get() as instance:
        yield instance


def schedule_tick(instance: dg.DagsterInstance):
    """One evaluation of ``hourly_refresh``, as the daemon does it at the top of the hour."""
    schedule = defs.resolve_schedule_def("hourly_refresh")
    return schedule.evaluate_tick(dg.build_schedule_context(instance=instance))


def run_scheduled_refresh(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The run the schedule's request launches: its job with the request's tags (the partition range)."""
    (request,) = schedule_tick(instance).run_requests
    job = defs.resolve_job_def(defs.resolve_schedule_def("hourly_refresh").job_name)
    return job.execute_in_process(instance=instance, tags=request.tags, run_config=QUICK_MODELS,
                                  raise_on_error=False)


def test_the_schedule_skips_until_landing_partitions_exist_then_requests_one_run_over_all(warehouse_env,
                                                                                         monkeypatch):
    with project_instance(monkeypatch) as instance:
        nothing = schedule_tick(instance)
        assert nothing.run_requests == [] and "no landing files yet" in nothing.skip_message

        assert sync_landing_partitions(instance, settings.landing_dir()) == SAMPLE_ENTRIES
        (request,) = schedule_tick(instance).run_requests
        assert request.partition_key is None  # one run over the range, not one per partition
        assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == SAMPLE_ENTRIES[0]
        assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == SAMPLE_ENTRIES[-1]
        assert request.tags[SCHEDULE_NAME_TAG] == "hourly_refresh"


@pytest.fixture(scope="module")
def scheduled_refresh(module_warehouse_env) -> Iterator[tuple[DatabaseSettings, dg.DagsterInstance,
                                                              dg.ExecuteInProcessResult]]:
    """One full run launched from the schedule's request, shared by the tests below."""
    db, _ = module_warehouse_env
    with pytest.MonkeyPatch.context() as monkeypatch, project_instance(monkeypatch) as instance:
        sync_landing_partitions(instance, settings.landing_dir())
        yield db, instance, run_scheduled_refresh(instance)


def test_the_scheduled_run_ingests_every_partition_and_publishes_for_every_user(scheduled_refresh):
    db, _, result = scheduled_refresh
    assert_success(result)
    assert result.dagster_run.tags[SCHEDULE_NAME_TAG] == "hourly_refresh"
    assert [row[0] for row in query(db, "SELECT DISTINCT landing_entry FROM raw.ingested_files ORDER BY 1")] == \
        SAMPLE_ENTRIES
    assert scalar(db, "SELECT count(*) FROM core.users") > 0
    without_recommendations = scalar(db, """
        SELECT count(*) FROM core.users u
        WHERE NOT EXISTS (SELECT 1 FROM recs.user_recommendations r WHERE r.user_id = u.user_id)""")
    assert without_recommendations == 0


def stored_artifacts(store: Path) -> dict[str, tuple[int, int]]:
    """Every file of every stored model version (not the LATEST pointers), with its size and mtime."""
    return {str(path.relative_to(store)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in store.rglob("*") if path.is_file() and path.name != "LATEST"}


def test_the_next_tick_with_unchanged_data_refits_nothing(scheduled_refresh):
    db, instance, first = scheduled_refresh
    assert_success(first)
    store = settings.model_store_dir()
    artifacts = stored_artifacts(store)
    files_loaded = scalar(db, "SELECT count(*) FROM raw.ingested_files")

    second = run_scheduled_refresh(instance)
    assert_success(second)
    reused = {e.asset_key.to_user_string(): e.materialization.metadata["reused_artifact"].value
              for e in second.get_asset_materialization_events() if e.asset_key.path[0] == "models"}
    assert reused == {f"models/{name}": True for name in (*registry.MODEL_NAMES, "champion")}
    assert stored_artifacts(store) == artifacts  # no new version, no file rewritten
    assert scalar(db, "SELECT count(*) FROM raw.ingested_files") == files_loaded


def late_reviews(now_ms: int) -> str:
    """Three reviews in the Amazon Reviews 2023 format, as a later delivery would bring them."""
    return "".join(json.dumps({
        "rating": 5.0 - i, "title": "Late review", "text": "Arrived after the first load.", "images": [],
        "asin": f"B9{i:08d}", "parent_asin": f"B8{i:08d}", "user_id": f"ULATE{i}", "timestamp": now_ms - i * 1000,
        "helpful_vote": 0, "verified_purchase": True}) + "\n" for i in range(3))


def sensor_tick(instance: dg.DagsterInstance, cursor: str | None):
    """One evaluation of ``landing_sensor`` as the daemon does it (with the instance's ref, which resolving a
    partitioned request needs): the partitions it asks for are added before its runs are launched."""
    sensor = defs.resolve_sensor_def("landing_sensor")
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(),
                                                        cursor=cursor, definitions=defs))
    for request in tick.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return tick


def test_a_new_landing_file_is_ingested_by_the_run_its_sensor_request_launches(warehouse_env, monkeypatch):
    landing = settings.landing_dir()
    with project_instance(monkeypatch) as instance:
        first = sensor_tick(instance, None)  # the sample's entries; their runs are not launched here

        (landing / "reviews_late.jsonl").write_text(late_reviews(int(time.time() * 1000)))
        second = sensor_tick(instance, first.cursor)
        (request,) = second.run_requests
        assert request.partition_key == "reviews_late.jsonl"
        assert [(r.partitions_def_name, list(r.partition_keys)) for r in second.dynamic_partitions_requests] == [
            (LANDING_PARTITIONS_NAME, ["reviews_late.jsonl"])]

        job = defs.resolve_job_def(defs.resolve_sensor_def("landing_sensor").job_name)
        result = job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags,
                                        raise_on_error=False)
        assert_success(result)
        checks = [e.passed for e in result.get_asset_check_evaluations()]
        assert checks and all(checks)
        assert instance.get_materialized_partitions(dg.AssetKey(["raw", "reviews"])) == {"reviews_late.jsonl"}

        third = sensor_tick(instance, second.cursor)
        assert third.run_requests == [] and third.skip_message

    # Only the new file was loaded, all of it.
    assert query(warehouse_env, """
        SELECT landing_entry, source_format, rows_loaded, rows_rejected FROM raw.ingested_files""") == [
        ("reviews_late.jsonl", "amazon2023_reviews", 3, 0)]
    assert query(warehouse_env, "SELECT user_key FROM raw.reviews ORDER BY user_key") == [
        ("ULATE0",), ("ULATE1",), ("ULATE2",)]


