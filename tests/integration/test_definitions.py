"""The code location loads, and its asset graph, checks, jobs and schedules are the ones users rely on.

Snapshot of keys: an accidental rename of an asset (which downstream SQL and schedules depend on)
shows up here in review."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg

from rec_orchestration import settings
from rec_orchestration.definitions import defs

EXPECTED_ASSETS = {
    "raw/products", "raw/reviews", "raw/users", "raw/events",
    "staging/load_ceiling", "staging/stg_products", "staging/stg_reviews", "staging/stg_users", "staging/stg_events",
    "core/users", "core/products", "core/reviews", "core/events", "core/interactions",
    "core/categories", "core/product_categories", "core/transactions", "core/transaction_items",
    "ml/training_round", "ml/popular_products", "ml/popular_products_by_category", "ml/item_similarity",
    "models/popularity", "models/itemknn", "models/ease", "models/lightfm", "models/lightgcn",
    "ml/model_evaluations", "models/champion", "ml/scored_users_0_of_1", "recs/user_recommendations",
    "recs/similar_products",
    "recs/popular_products", "recs/popular_products_by_category",
}


def test_asset_keys_are_the_documented_ones():
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == EXPECTED_ASSETS


def ancestors(key: dg.AssetKey) -> set[str]:
    graph = defs.resolve_asset_graph()
    seen: set[dg.AssetKey] = set()
    stack = [key]
    while stack:
        for parent in graph.get(stack.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return {k.to_user_string() for k in seen}


def test_lineage_runs_from_raw_files_to_user_recommendations():
    assert ancestors(dg.AssetKey(["recs", "user_recommendations"])) >= EXPECTED_ASSETS - {
        "recs/user_recommendations", "recs/similar_products", "recs/popular_products",
        "recs/popular_products_by_category", "core/transactions", "core/transaction_items"}
    assert "ml/item_similarity" in ancestors(dg.AssetKey(["recs", "similar_products"]))
    # Publishing waits for the evaluation, which waits for every model.
    assert ancestors(dg.AssetKey(["ml", "model_evaluations"])) >= {
        "models/popularity", "models/itemknn", "models/ease", "models/lightfm", "models/lightgcn"}
    assert "models/lightgcn" in ancestors(dg.AssetKey(["ml", "item_similarity"]))
    assert ancestors(dg.AssetKey(["staging", "stg_reviews"])) == {"raw/reviews"}
    # Every build reads the same landing files: the ceiling comes first, from all four raw tables.
    assert ancestors(dg.AssetKey(["staging", "load_ceiling"])) == {"raw/reviews", "raw/products", "raw/users",
                                                                   "raw/events"}
    assert "staging/load_ceiling" in ancestors(dg.AssetKey(["core", "reviews"]))
    assert ancestors(dg.AssetKey(["core", "interactions"])) >= {"core/reviews", "core/events", "raw/events"}
    assert ancestors(dg.AssetKey(["core", "product_categories"])) >= {"core/categories", "core/products"}


def test_dbt_tests_are_asset_checks_and_publish_has_a_blocking_check():
    graph = defs.resolve_asset_graph()
    check_keys = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("core/users", "unique_users_user_id") in check_keys
    assert any(asset == "core/reviews" and name.startswith("relationships") for asset, name in check_keys)
    assert any(asset == "core/interactions" and name.startswith("value_between") for asset, name in check_keys)
    assert any(asset == "core/categories" and name.startswith("accepted_values") for asset, name in check_keys)
    publish_check = dg.AssetCheckKey(dg.AssetKey(["recs", "user_recommendations"]),
                                     "every_user_gets_unseen_recommendations")
    assert graph.get_check_spec(publish_check).blocking
    gate = dg.AssetCheckKey(dg.AssetKey(["ml", "model_evaluations"]), "champion_beats_popularity")
    assert graph.get_check_spec(gate).blocking


def test_raw_tables_have_blocking_quality_and_reconciliation_checks():
    graph = defs.resolve_asset_graph()
    for kind in ("reviews", "products", "users", "events"):
        for name in ("great_expectations", "ledger_reconciles"):
            assert graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey(["raw", kind]), name)).blocking


def test_raw_assets_are_partitioned_by_landing_entry_and_a_sensor_feeds_them():
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["raw", "reviews"])).partitions_def.name == "landing_files"
    sensor = defs.resolve_sensor_def("landing_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    job = defs.resolve_job_def(sensor.job_name)
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "raw/reviews", "raw/products", "raw/users", "raw/events"}


def test_hourly_schedule_refreshes_every_asset():
    schedule = defs.resolve_schedule_def("hourly_refresh")
    assert schedule.cron_schedule == "0 * * * *"
    job = defs.resolve_job_def(schedule.job_name)
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == EXPECTED_ASSETS


def test_dagster_cli_validates_the_workspace(warehouse_env):
    # The environment `rec env` prints: DAGSTER_HOME with the project's dagster.yaml (PostgreSQL storage).
    from rec_orchestration.db.servers import dagster_environment
    from rec_orchestration.settings import PROJECT_ROOT

    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "definitions", "validate", "-w",
         "workspace.yaml"],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, env={**os.environ, **dagster_environment()},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "passed validation" in done.stderr + done.stdout


def test_loading_the_code_location_imports_no_model_training_library():
    """Every step process and the webserver import the definitions: torch, Lightning, LightFM and Great
    Expectations, and pandas, scipy and numba (about a second and a half of every step's start-up) are
    imported by the steps that use them, not by loading the code location."""
    heavy = ("torch", "pytorch_lightning", "lightning", "lightfm", "great_expectations", "pandas", "scipy", "numba")
    done = subprocess.run(
        [sys.executable, "-c", "import sys, rec_orchestration.definitions\n"
                               f"print(sorted(m for m in {heavy!r} if m in sys.modules))"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_runs_use_the_executor_named_by_rec_executor():
    """REC_EXECUTOR picks how a run of the code location executes its steps when its config names no
    executor (a run launched from the UI or a schedule); run config can still choose either (`rec
    materialize` does); a wrong name is an error that names the choices, not a silent default. ``dask``
    runs on the scheduler of REC_DASK_SCHEDULER, ``k8s`` is dagster-k8s's executor."""
    script = ("import json\n"
              "from rec_orchestration.definitions import defs\n"
              "jobs = defs.resolve_job_def('refresh_recommendations'), defs.resolve_implicit_global_asset_job_def()\n"
              "for job in jobs:\n"
              "    default = job.executor_def.config_schema.default_value if "
              "job.executor_def.config_schema.default_provided else {}\n"
              "    print(job.executor_def.name, json.dumps(default, sort_keys=True).replace(' ', ''))\n")
    seen = {}
    for value in ("in_process", "multiprocess", None, "threads", "dask", "k8s"):
        env = {k: v for k, v in os.environ.items() if k != "REC_EXECUTOR"} | ({"REC_EXECUTOR": value} if value else {})
        env["REC_DASK_SCHEDULER"] = "tcp://127.0.0.1:8786"
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        seen[value] = (done.returncode, done.stdout.split() if done.returncode == 0 else done.stderr)
    local = "multi_or_in_process_executor"
    assert seen["in_process"] == (0, [local, '{"in_process":{}}'] * 2)
    forkserver = json.dumps({"multiprocess": settings.MULTIPROCESS_CONFIG}, sort_keys=True).replace(" ", "")
    assert seen["multiprocess"] == seen[None] == (0, [local, forkserver] * 2)
    assert seen["threads"][0] != 0 and "expected one of multiprocess, in_process, dask, k8s" in seen["threads"][1]
    assert seen["dask"][0] == 0 and seen["dask"][1][0::2] == ["dask", "dask"]
    for default in seen["dask"][1][1::2]:  # the scheduler of REC_DASK_SCHEDULER, Dagster's retries on
        assert json.loads(default) == {"cluster": {"existing": {"address": "tcp://127.0.0.1:8786"}},
                                       "retries": {"enabled": {}}}
    assert seen["k8s"][0] == 0 and seen["k8s"][1][0::2] == ["k8s", "k8s"]
    executor = defs.resolve_job_def("refresh_recommendations").executor_def
    for choice in ("multiprocess", "in_process"):  # either, whatever the default
        assert dg.validate_run_config(defs.resolve_job_def("refresh_recommendations"),
                                      {"execution": {"config": {choice: {}}}})
    assert executor.name == "multi_or_in_process_executor"
