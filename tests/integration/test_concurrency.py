"""Two refresh runs at once (the hourly schedule and a person in the UI) go through the run queue one after
the other: the project's dagster.yaml limits the `rec_refresh` concurrency pool to one run in progress.

Real Dagster: the runs are submitted with `dagster job launch` to the queue of an instance built from the
project's dagster.yaml (storage in the test's PostgreSQL), and the real `dagster-daemon` dequeues and
launches them. Each run is made to fail at its first step (run config naming a landing directory outside
the landing directory, which is refused): what is under test is when the queue starts them, not what they do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from rec_orchestration.db import servers
from rec_orchestration.runs import REFRESH_POOL, reserve_refresh_pool

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def test_the_assets_that_rebuild_shared_state_are_in_the_refresh_pool():
    from rec_orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    pooled = {key.to_user_string() for key in graph.get_all_asset_keys()
              if graph.get(key).is_materializable and graph.get(key).pools == {REFRESH_POOL}}
    for key in ("core/users", "core/interactions", "ml/item_similarity", "recs/user_recommendations"):
        assert key in pooled
    assert not pooled & {"raw/reviews", "raw/events"}, "ingestion must not wait for a refresh"


def test_two_refresh_runs_wait_for_each_other_in_the_queue(warehouse_env, monkeypatch):
    env = {**os.environ, **servers.dagster_environment(start_embedded=False)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = json.dumps({"ops": {"raw_landing": {"config": {"landing_dir": "/"}}}})
    launch = [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "refresh_recommendations",
              "--config-json", config, "--tags", json.dumps({"dagster/max_retries": "0"})]
    for _ in range(2):  # the schedule's run and the one launched from the UI
        subprocess.run(launch, cwd=REPO, env=env, check=True, timeout=300, capture_output=True)

    with dg.DagsterInstance.get() as instance:
        reserve_refresh_pool(instance)  # as `rec dev` does before starting Dagster
        run_ids = [run.run_id for run in instance.get_runs()]
        assert len(run_ids) == 2
        assert {instance.get_run_by_id(run_id).status for run_id in run_ids} == {dg.DagsterRunStatus.QUEUED}

        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline, both_in_progress = time.monotonic() + 600, False
            while time.monotonic() < deadline:
                statuses = [instance.get_run_by_id(run_id).status for run_id in run_ids]
                both_in_progress |= all(s in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)
                                        for s in statuses)
                if all(status in FINISHED for status in statuses):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"the queued runs did not finish: {statuses}")
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()

        records = sorted(instance.get_run_records(dg.RunsFilter(run_ids=run_ids)), key=lambda r: r.start_time)
        assert not both_in_progress
        first, second = records
        assert first.end_time is not None and second.start_time >= first.end_time, \
            "the second refresh started while the first was still running"
        # Both ran, and failed where their run config said: on the refused landing directory.
        for record in records:
            assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE
            errors = [str(event.dagster_event.step_failure_data.error)
                      for event in instance.all_logs(record.dagster_run.run_id)
                      if event.dagster_event is not None and event.dagster_event.is_step_failure]
            assert any("landing_dir may only name a folder inside" in error for error in errors), errors
