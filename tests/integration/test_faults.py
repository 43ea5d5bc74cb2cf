"""Faults at a stage boundary: a step killed during the dbt build, a wrong password, paths that would
escape the landing directory or the model store.

Real PostgreSQL, real dbt, real Dagster; the killed step is a real process killed with SIGKILL."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.faults import alive, children_of
from rec_orchestration.assets.ingestion import RAW_ASSET_KEYS
from tests.integration.test_warehouse import rebuild_warehouse_from_scratch, snapshot
from tests.support import assert_success, materialize_everything, scalar

REPO = Path(__file__).resolve().parents[2]

BUILD_IN_A_CHILD = """
import dagster as dg
from rec_orchestration.assets.warehouse import warehouse_dbt_models
from rec_orchestration.definitions import defs
dg.materialize([warehouse_dbt_models], resources=defs.resources)
"""


def test_a_step_killed_during_the_dbt_build_takes_dbt_with_it_and_the_next_build_converges(warehouse_env):
    assert_success(materialize_everything(asset_selection=RAW_ASSET_KEYS))
    step = subprocess.Popen([sys.executable, "-c", BUILD_IN_A_CHILD], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, dbt = time.monotonic() + 300, None
        while dbt is None and time.monotonic() < deadline and step.poll() is None:
            dbt = next((pid for pid, cmd in children_of(step.pid) if " build" in cmd and "dbt" in cmd), None)
            time.sleep(0.2)
        assert dbt is not None, "the step never started dbt build"
        time.sleep(3)  # dbt is connected and building by now (the sample's build takes far longer)
        os.kill(step.pid, signal.SIGKILL)
        step.wait(timeout=30)
        deadline = time.monotonic() + 15
        while alive(dbt) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(dbt), "dbt build ran on after the step that started it was killed"
    finally:
        if step.poll() is None:
            step.kill()

    # The next run builds over whatever the killed build left, and equals a rebuild from raw.
    from rec_orchestration.assets.warehouse import warehouse_dbt_models

    assert_success(materialize_everything(asset_selection=list(warehouse_dbt_models.keys)))
    after_recovery = snapshot(warehouse_env)
    assert after_recovery["interactions"], "the recovered build is empty"
    rebuild_warehouse_from_scratch()
    assert snapshot(warehouse_env) == after_recovery


def test_a_wrong_password_fails_the_step_at_once_with_a_message_that_names_the_role_not_the_password(
        warehouse_env, monkeypatch):
    wrong = "not-the-password-" + secrets.token_urlsafe(8)
    monkeypatch.setenv("REC_DATABASE_URL", replace(warehouse_env, password=wrong).url())
    result = materialize_everything(asset_selection=RAW_ASSET_KEYS)

    assert not result.success
    failures = [event for event in result.all_events if event.is_step_failure]
    assert failures, "no step failed"
    message = "\n".join(str(event.step_failure_data.error) for event in failures)
    assert "refused the login" in message and repr(warehouse_env.user) in message
    assert not [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"], \
        "a refused login was retried"
    everything_logged = "\n".join(str(event) for event in result.all_events)
    assert wrong not in everything_logged and warehouse_env.password not in everything_logged


def failure_messages(result) -> str:
    return "\n".join(str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure)


def test_landing_paths_that_leave_the_landing_directory_are_refused(warehouse_env, tmp_path):
    from rec_orchestration import settings

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "events.csv").write_text("user_id,item_id,event_type,value,timestamp\nintruder,i1,view,,1690000000\n")
    (settings.landing_dir() / "linked_out").symlink_to(outside)

    result = materialize_everything(asset_selection=RAW_ASSET_KEYS)
    assert not result.success
    assert "linked_out resolves to" in failure_messages(result) and "refused" in failure_messages(result)
    # The other entries were loaded; nothing of the linked folder was.
    assert scalar(warehouse_env, "SELECT count(*) FROM raw.reviews") > 0
    assert scalar(warehouse_env, "SELECT count(*) FROM raw.events WHERE user_key = 'intruder'") == 0

    (settings.landing_dir() / "linked_out").unlink()
    for landing_dir in ("/etc", "../outside"):
        result = materialize_everything(
            run_config={"ops": {"raw_landing": {"config": {"landing_dir": landing_dir}}}},
            asset_selection=RAW_ASSET_KEYS)
        assert not result.success and "landing_dir may only name a folder inside" in failure_messages(result)
