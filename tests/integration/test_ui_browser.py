"""The data engineer's first hour, in a real browser: Chromium, driven by Playwright, against `rec dev` (the
Dagster webserver and daemon) on a test database.

As a person would: dismiss the first-visit dialog, see the asset groups on the lineage page, open
recs/user_recommendations, launch the whole refresh by clicking "Materialize all…" on the job, wait on the
Runs page for it to succeed, see the blocking checks passed, and see the model comparison chart drawn as
an image on ml/model_evaluations. A screenshot of every page is kept (``REC_UI_SCREENSHOTS``, default
``test-artifacts/ui`` in the repo), and one of the page the test failed on. The server is stopped and no
process of it may be left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES

from rec_orchestration import settings
from rec_orchestration.db import servers
from rec_orchestration.partitions import sync_landing_partitions
from rec_orchestration.runs import reserve_refresh_pool
from tests.support import descendants, free_port, kill_leftovers, still_alive

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("REC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("REC_UI_SCREENSHOTS", REPO / "test-artifacts" / "ui"))
# Without the network flags Chromium keeps trying to reach Google's hosts from a machine that cannot.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
REFRESH_JOB = "refresh_recommendations"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (`make test` installs it with the dev extras)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: the browser test needs Debian's `chromium` package "
                    "(`apt-get install chromium`; `make test` installs it when run as root)")
    return sync_playwright


@pytest.fixture()
def dagster_ui(warehouse_env, tmp_path, monkeypatch) -> Iterator[tuple[str, dg.DagsterInstance]]:
    """`rec dev` on a free port against this test's databases and landing directory, its landing files
    already registered as partitions (what the landing sensor does); stopped with SIGTERM afterwards."""
    # Steps in the run's own process: the UI is under test here, not the executor, and a process per
    # step pays the code location's imports once per step (minutes of a 2-core machine).
    env = {**os.environ, **servers.dagster_environment(start_embedded=False), "REC_EXECUTOR": "in_process"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    log = (tmp_path / "rec-dev.log").open("wb")
    with dg.DagsterInstance.get() as instance:
        sync_landing_partitions(instance, settings.landing_dir())
        reserve_refresh_pool(instance)
        server = subprocess.Popen([str(BIN / "rec"), "dev", "--port", str(port)], cwd=REPO, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                assert server.poll() is None, (tmp_path / "rec-dev.log").read_text()[-3000:]
                try:
                    with urllib.request.urlopen(url + "/server_info", timeout=5):
                        break
                except OSError:
                    assert time.monotonic() < deadline, "the Dagster UI did not answer within 300 s"
                    time.sleep(1)
            yield url, instance
        finally:
            started = descendants(server.pid)  # webserver, daemon, code server, run workers
            os.kill(server.pid, signal.SIGTERM)  # what a service manager or `kill` sends
            try:
                server.wait(timeout=150)
            finally:
                left = still_alive(started)
                kill_leftovers(started)
                log.close()
            assert len(started) >= 3, f"rec dev should have started Dagster's processes: {started}"
            assert not left, f"processes left after SIGTERM: {left}"


class Pages:
    """The browser page, with a screenshot of each step kept under :data:`SCREENSHOTS`."""

    def __init__(self, page, base: str) -> None:
        self.page, self.base, self.step = page, base, 0
        shutil.rmtree(SCREENSHOTS, ignore_errors=True)
        SCREENSHOTS.mkdir(parents=True)

    def shot(self, name: str) -> None:
        self.step += 1
        self.page.screenshot(path=str(SCREENSHOTS / f"{self.step:02d}-{name}.png"), full_page=True)

    def open(self, path: str) -> None:
        self.page.goto(self.base + path, wait_until="domcontentloaded")

    def text(self, expected: str, timeout: float = 60_000) -> None:
        self.page.get_by_text(expected, exact=False).first.wait_for(state="visible", timeout=timeout)


def _wait_for_the_refresh(instance: dg.DagsterInstance, pages: Pages, timeout: float = 1500) -> list[dg.DagsterRun]:
    """The runs the click launched (the backfill's), once every one has finished; the Runs page reloaded
    meanwhile, as a person watching it would."""
    deadline = time.monotonic() + timeout
    while True:
        backfills = instance.get_backfills()
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfills[0].backfill_id})
                                 ) if backfills else []
        done = backfills and backfills[0].status in BULK_ACTION_TERMINAL_STATUSES
        if done and runs and all(run.status in FINISHED for run in runs):
            return runs
        assert time.monotonic() < deadline, f"the refresh did not finish in {timeout:.0f} s: " + str(
            [(run.job_name, run.status) for run in runs])
        pages.open("/runs")
        time.sleep(10)


def test_a_person_launches_the_refresh_from_the_ui_and_sees_it_succeed(dagster_ui):
    sync_playwright = _sync_playwright()
    url, instance = dagster_ui
    from rec_orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    groups = sorted({graph.get(key).group_name for key in graph.get_all_asset_keys()})

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        pages = Pages(page, url)
        try:
            pages.open("/")
            skip = page.get_by_role("button", name="Skip")  # "Join the Dagster community", on a first visit
            skip.wait_for(state="visible", timeout=60_000)
            pages.shot("first-visit-dialog")
            skip.click()
            skip.wait_for(state="hidden")

            page.locator("nav a[href='/asset-groups'], a[href='/asset-groups']").first.click()  # "Lineage"
            page.wait_for_url("**/asset-groups**")
            for group in groups:
                pages.text(group)
            pages.shot("lineage")

            pages.open("/assets/recs/user_recommendations")
            pages.text("Top-k products per user")  # its description
            pages.text("refresh_recommendations")  # the job that materializes it
            pages.shot("user-recommendations")

            pages.open(f"/locations/rec_orchestration/jobs/{REFRESH_JOB}")
            page.get_by_role("button", name="Materialize all…").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("All", exact=True).click()   # every landing partition
            pages.shot("launch-dialog")
            dialog.get_by_role("button", name="Launch backfill").click()
            dialog.wait_for(state="hidden")

            runs = _wait_for_the_refresh(instance, pages)
            pages.open("/runs")
            pages.text("Success")
            pages.shot("runs")
            assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}, [
                (run.run_id, run.status) for run in runs]
            assert any(run.job_name == REFRESH_JOB for run in runs)
            materialized = {key.to_user_string() for key in graph.get_all_asset_keys()
                            if instance.get_latest_materialization_event(key) is not None}
            assert {"raw/reviews", "core/interactions", "ml/model_evaluations", "recs/user_recommendations"} \
                <= materialized

            for asset, checks in (("raw/reviews", ("great_expectations", "ledger_reconciles")),
                                  ("recs/user_recommendations", ("every_user_gets_unseen_recommendations",))):
                pages.open(f"/assets/{asset}?view=checks")
                for check in checks:  # listed (a long name is shown cut in the middle, in full when selected)
                    page.get_by_text(check, exact=True).first.wait_for(state="attached")
                pages.text("Passed")  # the selected check's latest execution
                # and in the list of the asset's checks (freshness too, once evaluated) as many succeeded
                # as there are blocking checks, none failed
                assert page.get_by_text("Succeeded", exact=True).count() >= len(checks)
                assert page.get_by_text("Failed", exact=True).count() == 0
                pages.shot(f"{asset.replace('/', '-')}-checks")

            pages.open("/assets/ml/model_evaluations")
            chart = page.locator("img[src^='data:image/svg+xml']").first
            chart.wait_for(state="visible")
            chart.scroll_into_view_if_needed()
            width = chart.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width > 0, "the comparison chart did not render"
            pages.shot("model-evaluations")
        except BaseException:
            page.screenshot(path=str(SCREENSHOTS / "failed-here.png"), full_page=True)
            raise
        finally:
            browser.close()
