r"""Faults at every stage: kill the refresh anywhere, restart PostgreSQL under it, run it twice at once, give
it a wrong password or a path out of its directories; then check that the data stayed consistent and the
next run converged.

Every scenario runs the real ``refresh_recommendations`` job (Dagster with its PostgreSQL storage, the
project's embedded PostgreSQL or the one ``REC_DATABASE_URL`` names, dbt, Great Expectations, the models)
in a child process, on its own fresh warehouse, Dagster database, landing directory (the generated
sample) and model store. Scenarios:

    kill_dbt_build       SIGKILL the run's process while ``dbt build`` runs; dbt must end with it
    kill_lightgcn        SIGKILL inside LightGCN training (failpoint ``lightgcn.epoch_end``)
    kill_model_store     SIGKILL between an artifact's weights and its manifest (``model_store.before_manifest``)
    kill_evaluation      SIGKILL after scoring, before anything is recorded (``evaluation.before_record``)
    postgres_restart_dbt     restart the server (fast shutdown) during the dbt build (embedded server only)
    postgres_restart_models  ... while the models train
    two_runs_at_once     two refreshes of the same warehouse and store started together
    wrong_password       a run whose password is wrong fails at once, not after retries
    secrets              no password of the credentials in use appears in the Dagster event log
                         (PostgreSQL storage) or the run's output
    path_escape          a landing entry linking out of the landing directory, and run config naming a
                         directory outside it, are refused and load nothing

A killed or disturbed run is followed by a plain run (the schedule's next hour). A scenario *survives*
when, after that, the warehouse's core tables equal an undisturbed run's row for row, the published
recommendations have as many rows as the undisturbed run's with no duplicate (user, product), every
model was evaluated at the same version (a version is the hash of the data, parameters and code that made
it), the champion is one of them, and every artifact in the model store is complete (a manifest beside
its weights). ``rows_lost`` sums the rows missing from those tables against the undisturbed run,
``duplicates`` the repeated keys. Published rows are also compared for identity: equal when the same
model wins and trains deterministically (LightFM's multi-threaded SGD does not, so which model wins on
the small sample can differ between two undisturbed runs).

Last line: ``faults_survived=<n>/<N> rows_lost=<m> duplicates=<d>``.

    .venv/bin/python -m bench.faults [--only kill_dbt_build,secrets] [--json]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg

from bench.common import argument_parser, emit, machine, say
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.scratch import ScratchDatabases
from rec_orchestration.failpoints import VARIABLE as FAILPOINT_VARIABLE
from rec_orchestration.sample_data import SampleSpec, write_sample

REPO = Path(__file__).resolve().parents[1]
SPEC = SampleSpec(n_users=150, n_products=80, seed=7)
# Fewer epochs than the defaults, as in the test suite: the faults, not the models, are under test.
RUN_CONFIG = {"ops": {"models__lightgcn": {"config": {"epochs": 40, "patience": 5}},
                      "models__lightfm": {"config": {"epochs": 10}}}}
CORE_TABLES = {  # table: its key
    "users": "user_id", "products": "product_id", "reviews": "user_id, product_id, reviewed_at",
    "events": "user_id, product_id, event_type, occurred_at", "interactions": "user_id, product_id",
    "transactions": "order_id", "transaction_items": "order_id, product_id", "categories": "category_id",
    "product_categories": "product_id, category_id"}
PUBLISHED = {"recs.user_recommendations": "user_id, product_id", "recs.popular_products": "product_id"}
RUN_TIMEOUT_S = 1800

# The refresh as the hourly schedule launches it, in this process, on the instance of DAGSTER_HOME (the
# project's dagster.yaml: event log in PostgreSQL). Prints the run id; exit status 0 on success.
REFRESH = """
import json, os, sys
import dagster as dg
from rec_orchestration import settings
from rec_orchestration.db import servers
os.environ.update(servers.dagster_environment())
from rec_orchestration.definitions import defs
from rec_orchestration.partitions import sync_landing_partitions
from rec_orchestration.schedules import all_partitions_run_request
instance = dg.DagsterInstance.get()
sync_landing_partitions(instance, settings.landing_dir())
request = all_partitions_run_request(instance)
job = defs.resolve_job_def("refresh_recommendations")
result = job.execute_in_process(instance=instance, tags=request.tags, run_config=json.loads(sys.argv[1]),
                                raise_on_error=False)
print("RUN", result.run_id, "succeeded" if result.success else "failed", flush=True)
for event in result.all_events:
    if event.is_step_failure:
        print("STEP_FAILURE", event.step_key, str(event.step_failure_data.error).splitlines()[0][:500], flush=True)
    if event.event_type_value == "STEP_UP_FOR_RETRY":
        print("STEP_RETRY", event.step_key, flush=True)
sys.exit(0 if result.success else 1)
"""


@dataclass
class Site:
    """One warehouse, its Dagster database, landing directory, model store and REC_HOME."""

    warehouse: DatabaseSettings
    dagster: DatabaseSettings
    work: Path

    @classmethod
    def create(cls, databases: ScratchDatabases, root: Path, name: str) -> Site:
        work = root / name
        (work / "landing").mkdir(parents=True)
        write_sample(work / "landing", SPEC)
        return cls(databases.create("rec_faults"), databases.create("rec_faults_dagster"), work)

    @property
    def landing(self) -> Path:
        return self.work / "landing"

    @property
    def store(self) -> Path:
        return self.work / "model_store"

    def environment(self, **extra: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "REC_", "DAGSTER_"))}
        return {**env, "REC_DATABASE_URL": self.warehouse.url(), "REC_DAGSTER_DATABASE_URL": self.dagster.url(),
                "REC_LANDING_DIR": str(self.landing), "REC_MODEL_STORE_DIR": str(self.store),
                "REC_HOME": str(self.work / "rec_home"), "DAGSTER_DISABLE_TELEMETRY": "1", **extra}


@dataclass
class Run:
    returncode: int
    seconds: float
    output: str
    run_id: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0

    def failures(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("STEP_FAILURE")]

    def retries(self) -> int:
        return sum(line.startswith("STEP_RETRY") for line in self.output.splitlines())


def start_refresh(site: Site, run_config: dict | None = None, **env: str) -> subprocess.Popen:
    config = json.dumps(RUN_CONFIG if run_config is None else run_config)
    return subprocess.Popen([sys.executable, "-c", REFRESH, config], cwd=REPO, env=site.environment(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, started: float, on_line: Callable[[str], None] | None = None) -> Run:
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if on_line is not None:
            on_line(line)
    process.wait(timeout=RUN_TIMEOUT_S)
    output = "".join(lines)
    run_id = next((line.split()[1] for line in output.splitlines() if line.startswith("RUN ")), None)
    return Run(process.returncode, time.perf_counter() - started, output, run_id)


def refresh(site: Site, run_config: dict | None = None, **env: str) -> Run:
    started = time.perf_counter()
    return finish(start_refresh(site, run_config, **env), started)


# -- what a converged warehouse looks like ---------------------------------------------------------------

@dataclass
class State:
    core: dict[str, list[str]]
    published: dict[str, list[str]]
    counts: dict[str, int]
    duplicates: int
    champion: tuple[str, str] | None
    models: dict[str, str]  # model name -> version of its latest evaluation
    incomplete_artifacts: list[str] = field(default_factory=list)


def rows(conn: psycopg.Connection, table: str) -> list[str]:
    return [row[0] for row in conn.execute(
        f"SELECT (to_jsonb(t) - 'refreshed_at' - 'published_at' - 'publication_id')::text FROM {table} t ORDER BY 1")]


def state(site: Site) -> State:
    with psycopg.connect(site.warehouse.conninfo()) as conn:
        core = {table: rows(conn, f"core.{table}") for table in CORE_TABLES}
        published = {table: rows(conn, table) for table in PUBLISHED}
        counts = {**{f"core.{t}": len(r) for t, r in core.items()}, **{t: len(r) for t, r in published.items()}}
        duplicates = 0
        for table, key in [*((f"core.{t}", k) for t, k in CORE_TABLES.items()), *PUBLISHED.items()]:
            duplicates += conn.execute(f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}").fetchone()[0]
        champion = conn.execute("SELECT model_name, model_version FROM ml.model_champions "
                                "ORDER BY chosen_at DESC LIMIT 1").fetchone()
        models = dict(conn.execute("SELECT DISTINCT ON (model_name) model_name, model_version "
                                   "FROM ml.model_evaluations ORDER BY model_name, evaluated_at DESC").fetchall())
    incomplete = sorted(str(version.relative_to(site.store)) for model in site.store.iterdir() if model.is_dir()
                        for version in model.iterdir()
                        if version.is_dir() and not (version / "manifest.json").exists())
    return State(core, published, counts, duplicates, tuple(champion) if champion else None, models, incomplete)


@dataclass
class Outcome:
    name: str
    survived: bool
    detail: str
    rows_lost: int = 0
    duplicates: int = 0
    seconds: float = 0.0


def compare(name: str, reference: State, site: Site, detail: str, seconds: float) -> Outcome:
    got = state(site)
    lost = sum(max(0, count - got.counts.get(table, 0)) for table, count in reference.counts.items())
    core_equal = got.core == reference.core
    same_models = got.models == reference.models
    # Which model wins may differ between two undisturbed runs (LightFM's multi-threaded SGD is not
    # deterministic); the champion must be one of the same model versions.
    champion_known = got.champion is not None and reference.models.get(got.champion[0]) == got.champion[1]
    identical = got.published == reference.published
    survived = (core_equal and lost == 0 and got.duplicates == 0 and same_models and champion_known
                and not got.incomplete_artifacts)
    facts = [detail, f"core tables {'identical' if core_equal else 'DIFFER'}",
             f"model versions {'same' if same_models else f'DIFFER {got.models} vs {reference.models}'}",
             f"published {'identical' if identical else 'same counts' if lost == 0 else 'rows missing'}",
             f"champion {got.champion[0] if got.champion else None}"
             + ("" if champion_known else " NOT among the reference's model versions")]
    if got.incomplete_artifacts:
        facts.append(f"incomplete artifacts {got.incomplete_artifacts}")
    return Outcome(name, survived, "; ".join(facts), lost, got.duplicates, seconds)


# -- the scenarios ---------------------------------------------------------------------------------------

def children_of(pid: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the live processes whose parent is ``pid`` (Linux: read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z" and int(fields[1]) == pid:
                found.append((int(entry.name), cmdline))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def killed_then_rerun(site: Site, reference: State, name: str, disturbed: Run, extra: str = "") -> Outcome:
    killed = disturbed.returncode == -signal.SIGKILL
    recovery = refresh(site)
    detail = (f"run {'killed' if killed else f'NOT killed (exit {disturbed.returncode})'}{extra}; next run "
              f"{'succeeded' if recovery.succeeded else 'FAILED ' + '; '.join(recovery.failures())}")
    outcome = compare(name, reference, site, detail, disturbed.seconds + recovery.seconds)
    outcome.survived = outcome.survived and killed and recovery.succeeded
    return outcome


def kill_dbt_build(site: Site, reference: State) -> Outcome:
    started = time.perf_counter()
    process = start_refresh(site)
    dbt, deadline = None, time.monotonic() + RUN_TIMEOUT_S
    while dbt is None and process.poll() is None and time.monotonic() < deadline:
        dbt = next((pid for pid, cmd in children_of(process.pid) if "dbt" in cmd and " build" in cmd), None)
        time.sleep(0.2)
    time.sleep(3)  # well inside the build
    process.send_signal(signal.SIGKILL)
    disturbed = finish(process, started)
    gone_deadline = time.monotonic() + 15
    while dbt is not None and alive(dbt) and time.monotonic() < gone_deadline:
        time.sleep(0.2)
    orphan = dbt is not None and alive(dbt)
    outcome = killed_then_rerun(site, reference, "kill_dbt_build", disturbed,
                                "" if dbt is None else "; dbt " + ("ran on ORPHANED" if orphan else "ended with it"))
    outcome.survived = outcome.survived and dbt is not None and not orphan
    return outcome


def at_failpoint(point: str) -> Callable[[Site, State], Outcome]:
    def scenario(site: Site, reference: State) -> Outcome:
        return killed_then_rerun(site, reference, scenario.__name__, refresh(site, **{FAILPOINT_VARIABLE: point}))
    return scenario


def restart_postgres_during(step: str, wait_s: float) -> Callable[[Site, State], Outcome]:
    """Restart the server (fast shutdown: every session cut) ``wait_s`` after ``step`` starts."""

    def scenario(site: Site, reference: State) -> Outcome:
        from rec_orchestration.db.embedded import EmbeddedPostgres

        name = scenario.__name__
        if os.environ.get("REC_DATABASE_URL"):
            return Outcome(name, True, "skipped: an external server is not restarted by a benchmark")
        server = EmbeddedPostgres.default()
        restarted: list[float] = []

        def on_line(line: str) -> None:
            if not restarted and "STEP_START" in line and f'"{step}' in line:
                time.sleep(wait_s)
                started = time.perf_counter()
                server.stop()
                server.ensure_running()
                restarted.append(time.perf_counter() - started)

        started = time.perf_counter()
        disturbed = finish(start_refresh(site), started, on_line)
        detail = (f"server restarted in {restarted[0]:.1f} s, {wait_s:.0f} s into {step}" if restarted
                  else f"the run never reached {step}")
        outcome_word = "succeeded" if disturbed.succeeded else "failed"
        detail += f"; the run {outcome_word} with {disturbed.retries()} step retries"
        recovery = disturbed if disturbed.succeeded else refresh(site)
        if recovery is not disturbed:
            detail += f"; next run {'succeeded' if recovery.succeeded else 'FAILED'}"
        outcome = compare(name, reference, site, detail, time.perf_counter() - started)
        outcome.survived = outcome.survived and bool(restarted) and recovery.succeeded
        return outcome

    return scenario


def two_runs_at_once(site: Site, reference: State) -> Outcome:
    started = time.perf_counter()
    first, second = start_refresh(site), start_refresh(site)
    runs = [finish(first, started), finish(second, started)]
    detail = "runs " + ", ".join("succeeded" if run.succeeded else "failed: " + "; ".join(run.failures())
                                 for run in runs)
    if not all(run.succeeded for run in runs):
        recovery = refresh(site)
        detail += f"; next run {'succeeded' if recovery.succeeded else 'FAILED'}"
    return compare("two_runs_at_once", reference, site, detail, time.perf_counter() - started)


def wrong_password(site: Site, reference: State) -> Outcome:
    wrong = replace(site.warehouse, password="wrong-" + os.urandom(6).hex())
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", REFRESH, json.dumps(RUN_CONFIG)], cwd=REPO, text=True,
                               env={**site.environment(), "REC_DATABASE_URL": wrong.url()},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run = finish(process, started)
    clear = "refused the login" in run.output
    leaked = wrong.password in run.output
    survived = not run.succeeded and clear and run.retries() == 0 and not leaked
    return Outcome("wrong_password", survived,
                   f"failed after {run.seconds:.1f} s (process start and imports included), {run.retries()} retries, "
                   f"message {'names the refused login' if clear else 'UNCLEAR'}"
                   f"{', password LEAKED' if leaked else ''}", seconds=run.seconds)


def secrets(site: Site, reference: State, reference_run: Run) -> Outcome:
    from rec_orchestration.db import servers

    passwords = {p for p in (site.warehouse.password, site.dagster.password) if p}
    if not os.environ.get("REC_DATABASE_URL"):  # the embedded server's generated superuser and app role
        from rec_orchestration.db.embedded import EmbeddedPostgres

        server = EmbeddedPostgres.default()
        passwords |= {p for p in (server.superuser_settings().password,
                                  servers.warehouse_settings(start_embedded=False).password) if p}
    with psycopg.connect(site.dagster.conninfo()) as conn:
        events = [row[0] for row in conn.execute("SELECT event FROM event_logs WHERE run_id = %s",
                                                 (reference_run.run_id,))]
    logs_dir = site.work / "rec_home"
    texts = {"event log": "\n".join(events), "run output": reference_run.output}
    for path in logs_dir.rglob("*"):
        if path.is_file() and path.suffix in (".out", ".err", ".log", ".txt") and path.stat().st_size < 50_000_000:
            texts[f"file {path.relative_to(site.work)}"] = path.read_text(errors="replace")
    found = sorted({where for where, text in texts.items() for password in passwords if password in text})
    return Outcome("secrets", bool(events) and not found,
                   f"{len(passwords)} passwords searched in {len(events)} events, the run's output and "
                   f"{len(texts) - 2} log files: " + (f"FOUND in {', '.join(found)}" if found else "none found"))


def path_escape(site: Site, reference: State) -> Outcome:
    outside = site.work / "outside"
    outside.mkdir()
    (outside / "events.csv").write_text("user_id,item_id,event_type,value,timestamp\nintruder,i1,view,,1690000000\n")
    (site.landing / "linked_out").symlink_to(outside)
    linked = refresh(site)
    (site.landing / "linked_out").unlink()
    config = {**RUN_CONFIG, "ops": {**RUN_CONFIG["ops"], "raw_landing": {"config": {"landing_dir": "/etc"}}}}
    etc = refresh(site, config)
    with psycopg.connect(site.warehouse.conninfo()) as conn:
        intruders = conn.execute("SELECT count(*) FROM raw.events WHERE user_key = 'intruder'").fetchone()[0]
        from_etc = conn.execute("SELECT count(*) FROM raw.ingested_files WHERE path LIKE '/etc/%'").fetchone()[0]
    refused_link = not linked.succeeded and "linked_out resolves to" in linked.output
    refused_etc = not etc.succeeded and "landing_dir may only name a folder inside" in etc.output
    return Outcome("path_escape", refused_link and refused_etc and intruders == 0 and from_etc == 0,
                   f"symlinked entry {'refused' if refused_link else 'NOT refused'}, landing_dir=/etc "
                   f"{'refused' if refused_etc else 'NOT refused'}, rows loaded from outside: {intruders + from_etc}",
                   seconds=linked.seconds + etc.seconds)


SCENARIOS: dict[str, Callable[..., Outcome]] = {
    "kill_dbt_build": kill_dbt_build,
    "kill_lightgcn": at_failpoint("lightgcn.epoch_end"),
    "kill_model_store": at_failpoint("model_store.before_manifest"),
    "kill_evaluation": at_failpoint("evaluation.before_record"),
    "postgres_restart_dbt": restart_postgres_during("warehouse_dbt_models", 8),
    "postgres_restart_models": restart_postgres_during("models__", 1),
    "two_runs_at_once": two_runs_at_once,
    "wrong_password": wrong_password,
    "secrets": secrets,
    "path_escape": path_escape,
}
for _name, _scenario in SCENARIOS.items():
    _scenario.__name__ = _name


def main() -> None:
    parser = argument_parser("bench.faults", __doc__)
    parser.add_argument("--only", default="", help="comma-separated scenarios (default: all)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, the report on stderr")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")

    databases = ScratchDatabases()
    outcomes: list[Outcome] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rec_faults_") as tmp:
            root = Path(tmp)
            say("undisturbed reference run ...")
            reference_site = Site.create(databases, root, "reference")
            reference_run = refresh(reference_site)
            if not reference_run.succeeded:
                raise SystemExit("the undisturbed run failed:\n" + reference_run.output[-5000:])
            reference = state(reference_site)
            say(f"  {reference_run.seconds:.0f} s, champion {reference.champion}")
            for name in chosen:
                say(f"{name} ...")
                if name == "secrets":
                    outcome = secrets(reference_site, reference, reference_run)
                else:
                    outcome = SCENARIOS[name](Site.create(databases, root, name), reference)
                say(f"  {'survived' if outcome.survived else 'FAILED'}: {outcome.detail}")
                outcomes.append(outcome)
    finally:
        databases.drop_all()

    survived = sum(o.survived for o in outcomes)
    lost, duplicates = sum(o.rows_lost for o in outcomes), sum(o.duplicates for o in outcomes)
    report = [f"faults, refresh_recommendations on the generated sample ({SPEC.n_users} users, {SPEC.n_products} "
              f"products); undisturbed run {reference_run.seconds:.0f} s; {machine()}", ""]
    report += [f"{o.name:<24} {'survived' if o.survived else 'FAILED  '} rows_lost={o.rows_lost} "
               f"duplicates={o.duplicates} {o.seconds:6.0f} s  {o.detail}" for o in outcomes]
    report.append(f"faults_survived={survived}/{len(outcomes)} rows_lost={lost} duplicates={duplicates}")
    emit(report, {"scenarios": [o.__dict__ for o in outcomes], "survived": survived, "total": len(outcomes),
                  "rows_lost": lost, "duplicates": duplicates}, args.json)


if __name__ == "__main__":
    main()
