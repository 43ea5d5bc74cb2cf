"""Where the steps of a refresh run, and that it publishes the same wherever they do.

- On a real dask.distributed cluster (REC_EXECUTOR=dask): a scheduler and two worker processes on
  127.0.0.1, started and stopped here, run every step, the scoring in two shards; the published tables
  equal an in-process run's in one shard. The model store is given as a URL (``file://``), as a store
  that other machines reach (``s3://...``) would be.
- Under the multiprocess executor (the default of a run launched from the UI or a schedule): a process per
  step, forked from one server process that loaded the code location for the run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rec_orchestration.db.address import DatabaseSettings
from tests.support import QUICK_MODELS, descendants, free_port, kill_leftovers, query, same_rows, still_alive

BIN = Path(sys.executable).parent
PUBLISHED = {
    "recs.user_recommendations": "SELECT user_id, product_id, rank, score, reason, because_product_id, model_name, "
                                 "model_version FROM recs.user_recommendations ORDER BY user_id, rank",
    "recs.similar_products": "SELECT * FROM recs.similar_products ORDER BY 1, 2, 3, 4",
    "recs.popular_products": "SELECT * FROM recs.popular_products ORDER BY 1, 2",
    "recs.popular_products_by_category": "SELECT * FROM recs.popular_products_by_category ORDER BY 1, 2, 3",
}


def materialize(env: dict[str, str], executor: str, run_config: Path, succeed: bool = True) -> str:
    done = subprocess.run([sys.executable, "-m", "rec_orchestration.cli", "materialize", "--executor", executor,
                           "--config", str(run_config)], env=env, capture_output=True, text=True, timeout=1500)
    assert (done.returncode == 0) == succeed, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


def published(db: DatabaseSettings) -> dict[str, list[tuple]]:
    return {table: query(db, statement) for table, statement in PUBLISHED.items()}


def step_pids(dagster_db: DatabaseSettings) -> tuple[dict[str, int], int]:
    """Each step's process (the pid its STEP_START event was made in) and the run's process, of the latest run."""
    steps, run_pid = {}, None
    for event_type, step_key, event in query(dagster_db, """
            SELECT dagster_event_type, step_key, event FROM event_logs
            WHERE dagster_event_type IN ('STEP_START', 'PIPELINE_START', 'RUN_START')
              AND run_id = (SELECT run_id FROM runs ORDER BY create_timestamp DESC LIMIT 1)"""):
        pid = json.loads(event)["dagster_event"]["pid"]
        if event_type == "STEP_START":
            steps[step_key] = pid
        else:
            run_pid = pid
    return steps, run_pid


@pytest.fixture
def dask_cluster(tmp_path: Path):
    """A scheduler and two single-threaded worker processes on 127.0.0.1 (no dashboards), stopped after."""
    processes: list[subprocess.Popen] = []
    started: dict[int, str] = {}

    def start(env: dict[str, str]) -> str:
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        log = open(tmp_path / "dask.log", "ab")  # noqa: SIM115 - closed with the processes below
        processes.append(subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env, stdout=log, stderr=log, start_new_session=True))
        processes.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1",
             "--no-dashboard"], env=env, stdout=log, stderr=log, start_new_session=True))
        return address

    yield start, processes, started
    for process in processes:
        started |= descendants(process.pid) | {process.pid: "dask"}
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    time.sleep(1)
    left = still_alive(started)
    kill_leftovers(left)
    assert not left, f"dask processes left running: {left}"


def test_the_default_executor_forks_every_step_from_one_loaded_code_location_and_publishes_the_same(
        warehouse_env, test_databases, tmp_path: Path):
    """Each step gets a process of its own, forked from a server that imported the code location once for
    the run: the definitions are imported twice per run (the run's process and that server), not again
    by each step's process as with Dagster's default start (``spawn``). What it publishes is what a run
    with every step in one process publishes."""
    run_config = tmp_path / "quick.yaml"
    run_config.write_text(yaml.safe_dump(QUICK_MODELS))
    in_process_env = dict(os.environ) | {"REC_STEP_THREADS": "1"}  # the same numbers need the same threads
    materialize(in_process_env, "in_process", run_config)
    expected = published(warehouse_env)
    assert expected["recs.user_recommendations"]

    warehouse = test_databases.create("rec_multiprocess")
    dagster_db = test_databases.create("rec_multiprocess_dagster")
    env = in_process_env | {"REC_DATABASE_URL": warehouse.url(), "REC_DAGSTER_DATABASE_URL": dagster_db.url(),
                            "REC_MODEL_STORE_DIR": str(tmp_path / "multiprocess_model_store"),
                            "REC_HOME": str(tmp_path / "multiprocess_rec_home"),
                            # every Python process of the run prints the modules it imports on stderr
                            "PYTHONPROFILEIMPORTTIME": "1"}
    output = materialize(env, "multiprocess", run_config)

    steps, run_pid = step_pids(dagster_db)
    assert {"publish_recommendations", "models__lightgcn", "warehouse_dbt_models"} <= set(steps) and len(steps) >= 10
    assert run_pid not in set(steps.values()) and len(set(steps.values())) == len(steps)
    # A process that loads the code location imports rec_orchestration.schedules once (the definitions alone
    # import it; Dagster's loader runs the definitions module itself without an import-time line of its own).
    loads = re.findall(r"^import time:.*\|\s*rec_orchestration\.schedules$", output, re.MULTILINE)
    assert len(loads) == 2, f"the code location was loaded {len(loads)} times for {len(steps)} steps"
    got = published(warehouse)
    assert same_rows(got.pop("recs.user_recommendations"), expected.pop("recs.user_recommendations"))
    assert got == expected


def worker_pids(address: str, expected: int) -> set[int]:
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(expected, timeout=120)
        return set(client.run(os.getpid).values())


def test_the_refresh_runs_on_dask_workers_and_publishes_what_an_in_process_run_does(
        warehouse_env, test_databases, tmp_path: Path, dask_cluster):
    start, processes, _ = dask_cluster
    run_config = tmp_path / "quick.yaml"
    run_config.write_text(yaml.safe_dump(QUICK_MODELS))
    # One thread per step in both runs: LightFM's Hogwild threads and BLAS reductions give the same
    # numbers only with the same thread count, and dask's workers run one thread each.
    in_process_env = dict(os.environ) | {"REC_STEP_THREADS": "1"}
    materialize(in_process_env, "in_process", run_config)
    expected = published(warehouse_env)
    assert expected["recs.user_recommendations"]

    # The dask run: its own warehouse, Dagster storage and model store; the workers get the same
    # environment a worker on another machine would (database URLs, model store), nothing else.
    warehouse = test_databases.create("rec_dask")
    dagster_db = test_databases.create("rec_dask_dagster")
    store = tmp_path / "dask_model_store"
    env = in_process_env | {"REC_DATABASE_URL": warehouse.url(), "REC_DAGSTER_DATABASE_URL": dagster_db.url(),
                            "REC_MODEL_STORE_DIR": store.as_uri(), "REC_HOME": str(tmp_path / "dask_rec_home"),
                            "REC_SCORING_SHARDS": "2"}
    address = start(env)
    workers = worker_pids(address, 2)
    assert len(workers) == 2
    materialize(env | {"REC_DASK_SCHEDULER": address}, "dask", run_config)

    steps, run_pid = step_pids(dagster_db)
    assert {"publish_recommendations", "models__lightgcn", "ml__scored_users_0_of_2",
            "ml__scored_users_1_of_2"} <= set(steps) and len(steps) >= 10
    # Each step ran in a process of its own that a dask worker started, never in the run's process.
    assert run_pid not in set(steps.values()) and len(set(steps.values())) == len(steps)
    tasks = query(dagster_db, """SELECT count(*) FROM event_logs WHERE dagster_event_type = 'STEP_WORKER_STARTING'
                                 AND event LIKE '%%as dask task%%'""")[0][0]
    assert tasks == len(steps)
    assert all(process.poll() is None for process in processes)  # the cluster outlives the run

    assert any(store.glob("lightgcn/*/state_dict.pt"))  # the workers wrote the models through the URL
    got = published(warehouse)
    assert same_rows(got.pop("recs.user_recommendations"), expected.pop("recs.user_recommendations"))
    assert got == expected

    # A failed blocking check stops what depends on it on the cluster too: with a lift no model reaches,
    # the champion is refused and neither scoring nor publishing starts; the live tables stay.
    refusing = tmp_path / "refusing.yaml"
    refusing.write_text(yaml.safe_dump({"ops": {**QUICK_MODELS["ops"],
                                                "ml__model_evaluations": {"config": {"min_lift": 10.0}}}}))
    live = query(warehouse, PUBLISHED["recs.user_recommendations"])
    materialize(env | {"REC_DASK_SCHEDULER": address}, "dask", refusing, succeed=False)
    steps, _ = step_pids(dagster_db)
    assert "ml__model_evaluations" in steps
    assert not {"ml__scored_users_0_of_2", "ml__scored_users_1_of_2", "publish_recommendations"} & set(steps)
    assert query(warehouse, PUBLISHED["recs.user_recommendations"]) == live
