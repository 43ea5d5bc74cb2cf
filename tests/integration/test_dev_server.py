"""`rec dev` and `make dev` stop cleanly on SIGTERM and Ctrl-C, and plain `dagster` commands work in the
repository root with nothing exported.

Stopping: started in the background (SIGINT ignored, as a non-interactive shell's `cmd &` starts it) or
as a terminal's foreground job, the command is signalled once; it must exit, every process it had
started (webserver, daemon, code server, gRPC server, run workers) must be gone, and the UI's port
closed. Plain commands: in a clean environment (no REC_* / DAGSTER_* variable but REC_HOME and
REC_EMBEDDED_PORT, which point at a home and port of the test's own), `dagster definitions validate`,
`dagster asset materialize` and `dagster dev` find the embedded PostgreSQL themselves (starting it), as
`make run` does with the default REC_HOME.

Linux: the process tree is read from /proc. The bounds are liveness bounds for a loaded two-core machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from rec_orchestration.db.embedded import EMBEDDED_DAGSTER_DB, EMBEDDED_WAREHOUSE_DB, EmbeddedPostgres
from rec_orchestration.sample_data import SampleSpec, write_sample
from rec_orchestration.settings import PROJECT_ROOT
from tests.support import descendants, free_port, kill_leftovers, still_alive

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 300  # until the UI answers
STOP_TIMEOUT_S = 150  # from the signal until the command has exited
SHUTDOWN_GRACE_S = "90"  # rec dev --shutdown-timeout: generous, so that a slow stop is not mistaken for a hang


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


def wait_for_ui(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode} before the UI answered:\n{log_tail(log)}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"the UI did not answer on port {port} within {START_TIMEOUT_S} s:\n{log_tail(log)}")


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", json.dumps({"query": query}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def ignore_sigint() -> None:
    """What a non-interactive shell does to a command it starts with `&`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(argv: list[str], env: dict[str, str], log: Path,
          preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen:
    """Start ``argv`` in a process group of its own (its "terminal job"), output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec_fn)


def stop_and_check(process: subprocess.Popen, port: int, log: Path, send: Callable[[], None]) -> int:
    """Signal the running command with ``send``; it must exit, leaving no process and no open port."""
    tree = descendants(process.pid)
    assert len(tree) >= 4, f"expected dagster dev, webserver, daemon and code server: {still_alive(tree)}"
    try:
        send()
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_TIMEOUT_S} s after the signal:\n{log_tail(log)}")
        time.sleep(0.5)  # a process killed at the very end may need a moment to be reaped
        assert still_alive(tree) == {}, f"left running:\n{still_alive(tree)}\n{log_tail(log)}"
        assert not port_open(port)
        return code
    finally:
        process.kill()
        kill_leftovers(tree)


# -- the supervisor alone, on small shell trees (seconds) ---------------------------------------------------

def supervise(tmp_path: Path, script: str, grace_s: float, processes: int) -> tuple[subprocess.Popen, Path]:
    """``run_supervised(["sh", "-c", script])`` in a process of its own, started in the background
    (SIGINT ignored); returns it once the script runs ``processes`` processes."""
    log = tmp_path / "supervised.log"
    code = ("import sys\nfrom rec_orchestration.supervise import run_supervised\n"
            f"sys.exit(run_supervised(['sh', '-c', {script!r}], grace_s={grace_s}))\n")
    process = start([sys.executable, "-c", code], dict(os.environ), log, preexec_fn=ignore_sigint)
    deadline = time.monotonic() + 60
    while len(descendants(process.pid)) < processes and time.monotonic() < deadline:
        time.sleep(0.1)
    return process, log


def test_a_child_that_ignores_the_stop_request_is_killed_after_the_grace_period(tmp_path):
    process, log = supervise(tmp_path, "trap '' INT TERM; sleep 300 & sleep 300 & wait", grace_s=1,
                             processes=3)
    tree = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 1, log_tail(log)
    assert "killing what is left" in log_tail(log)
    time.sleep(0.5)
    assert still_alive(tree) == {}


def test_what_the_child_leaves_behind_in_its_session_is_ended(tmp_path):
    # A background job of a non-interactive shell ignores SIGINT: it outlives the shell's own stop.
    process, log = supervise(tmp_path, "sleep 300 & exec sleep 301", grace_s=30, processes=2)
    tree = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log_tail(log)
    time.sleep(0.5)
    assert still_alive(tree) == {}


# -- rec dev / make dev ---------------------------------------------------------------------------------------

@pytest.fixture()
def dev_env(warehouse_env, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The test's own databases and REC_HOME (warehouse_env); an empty landing directory, so that the
    landing sensor starts no ingestion while the UI is up."""
    landing = tmp_path / "empty_landing"
    landing.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("DAGSTER_") and key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(REC_LANDING_DIR=str(landing), DAGSTER_DISABLE_TELEMETRY="1")
    yield env


def test_rec_dev_started_in_the_background_stops_on_sigterm(dev_env, tmp_path):
    port, log = free_port(), tmp_path / "rec_dev.log"
    process = start([str(BIN / "rec"), "dev", "--port", str(port), "--shutdown-timeout", SHUTDOWN_GRACE_S],
                    dev_env, log, preexec_fn=ignore_sigint)
    wait_for_ui(process, port, log)
    code = stop_and_check(process, port, log, lambda: process.send_signal(signal.SIGTERM))
    assert code == 0, log_tail(log)


def test_rec_dev_stops_on_ctrl_c(dev_env, tmp_path):
    port, log = free_port(), tmp_path / "rec_dev.log"
    process = start([str(BIN / "rec"), "dev", "--port", str(port), "--shutdown-timeout", SHUTDOWN_GRACE_S],
                    dev_env, log)
    wait_for_ui(process, port, log)
    # Ctrl-C: the terminal sends SIGINT to every process of the foreground job's process group.
    code = stop_and_check(process, port, log, lambda: os.killpg(process.pid, signal.SIGINT))
    assert code == 0, log_tail(log)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("how", ["sigterm_in_background", "ctrl_c"])
def test_make_dev_stops(dev_env, tmp_path, how):
    port, log = free_port(), tmp_path / "make_dev.log"
    # -o: the manifest and the virtualenv count as up to date (other tests may be using them).
    argv = ["make", "--no-print-directory", "-o", ".venv/.installed", "-o", "dbt_project/target/manifest.json", "dev"]
    if how == "sigterm_in_background":
        process = start(argv, {**dev_env, "REC_DEV_PORT": str(port)}, log, preexec_fn=ignore_sigint)
        wait_for_ui(process, port, log)
        stop_and_check(process, port, log, lambda: process.send_signal(signal.SIGTERM))  # make passes it on
    else:
        process = start(argv, {**dev_env, "REC_DEV_PORT": str(port)}, log)
        wait_for_ui(process, port, log)
        stop_and_check(process, port, log, lambda: os.killpg(process.pid, signal.SIGINT))
    assert "rec dev: SIG" in log.read_text(errors="replace")


# -- plain dagster commands, nothing exported ---------------------------------------------------------------

@pytest.fixture(scope="module")
def bare_env() -> Iterator[dict[str, str]]:
    """A clean environment: PATH, HOME and an isolated REC_HOME / REC_EMBEDDED_PORT (the embedded server
    there is started by the first command that needs it, and stopped at the end), plus a landing
    directory with a small sample. Not under pytest's temporary directory: a concurrent pytest session
    may delete that, data directory included, while the server runs."""
    root = Path(tempfile.mkdtemp(prefix="rec-bare-dagster-"))
    write_sample(root / "landing", SampleSpec(n_users=50, n_products=30, seed=7))
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", str(root)),
           "REC_HOME": str(root / "rec_home"), "REC_EMBEDDED_PORT": str(port),
           "REC_LANDING_DIR": str(root / "landing"), "LANG": os.environ.get("LANG", "C.UTF-8")}
    try:
        yield env
    finally:
        try:
            bare_server(env).stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def bare_server(env: dict[str, str]) -> EmbeddedPostgres:
    return EmbeddedPostgres(Path(env["REC_HOME"]) / "postgres", int(env["REC_EMBEDDED_PORT"]))


def run_bare(argv: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_plain_dagster_definitions_validate_needs_nothing_exported(bare_env):
    done = run_bare([str(BIN / "dagster"), "definitions", "validate"], bare_env)  # [tool.dagster] of pyproject
    assert done.returncode == 0, done.stderr[-3000:]
    assert "All code locations passed validation" in done.stderr + done.stdout
    assert bare_server(bare_env).status().running  # the storage started the embedded server, as `rec` would


def test_plain_dagster_asset_materialize_needs_nothing_exported(bare_env):
    # The landing sensor's part (adding the partition), through the instance `dagster` builds here: the
    # dagster.yaml of the working directory with a temporary home.
    add_partitions = (
        "import os, tempfile\n"
        "from dagster import DagsterInstance\n"
        "from dagster._core.instance.ref import InstanceRef\n"
        "from rec_orchestration import settings\n"
        "from rec_orchestration.partitions import sync_landing_partitions\n"
        "with tempfile.TemporaryDirectory() as home, "
        "DagsterInstance.from_ref(InstanceRef.from_dir(home, config_dir=os.getcwd())) as instance:\n"
        "    print(sync_landing_partitions(instance, settings.landing_dir()))\n")
    done = run_bare([sys.executable, "-c", add_partitions], bare_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reviews.jsonl" in done.stdout
    done = run_bare([str(BIN / "dagster"), "asset", "materialize", "-m", "rec_orchestration.definitions",
                     "--select", "raw/reviews,raw/products,raw/users,raw/events", "--partition", "reviews.jsonl"],
                    bare_env)
    assert done.returncode == 0, done.stderr[-3000:]
    server = bare_server(bare_env)
    with psycopg.connect(server.app_settings(EMBEDDED_DAGSTER_DB).conninfo()) as conn:  # the run is recorded there
        assert ("SUCCESS",) in conn.execute("SELECT status FROM runs").fetchall()
    with psycopg.connect(server.app_settings(EMBEDDED_WAREHOUSE_DB).conninfo()) as conn:
        assert conn.execute("SELECT count(*) FROM raw.reviews").fetchone()[0] > 0


def test_plain_dagster_dev_needs_nothing_exported(bare_env, tmp_path):
    port, log = free_port(), tmp_path / "dagster_dev.log"
    process = start([str(BIN / "dagster"), "dev", "-p", str(port)], bare_env, log)
    tree: dict[int, str] = {}
    try:
        wait_for_ui(process, port, log)
        # The webserver reads runs from the PostgreSQL storage; the daemon and code server loaded the same
        # instance (dagster dev stops when either dies: it is still running).
        assert graphql(port, "{ runsOrError { __typename } }")["data"]["runsOrError"]["__typename"] == "Runs"
        time.sleep(6)  # dagster dev checks its webserver and daemon every 5 s
        assert process.poll() is None, log_tail(log)
        tree = descendants(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=STOP_TIMEOUT_S)
    finally:
        process.kill()
        deadline = time.monotonic() + 30
        while still_alive(tree) and time.monotonic() < deadline:  # Dagster's code server stops a little later
            time.sleep(0.5)
        kill_leftovers(tree)
