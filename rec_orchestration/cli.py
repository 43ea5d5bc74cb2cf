"""``rec``: the project's command line (database, sample data, dbt manifest, runs, UI, summary)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import psycopg
from psycopg import sql

from rec_orchestration import settings
from rec_orchestration.backup import DEFAULT_KEEP_DUMPS
from rec_orchestration.db import servers
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.supervise import DEFAULT_GRACE_S, run_supervised

SUMMARY_TABLES = (
    ("raw.ingested_files", "landing files loaded (ledger)"),
    ("raw.products", "product metadata records"),
    ("raw.reviews", "review and rating records"),
    ("raw.users", "user attribute records"),
    ("raw.events", "interaction event records"),
    ("raw.rejected_records", "quarantined records"),
    ("core.users", "users"),
    ("core.products", "products"),
    ("core.categories", "categories"),
    ("core.reviews", "reviews"),
    ("core.events", "interaction events"),
    ("core.interactions", "user-product interactions (training input)"),
    ("core.transactions", "orders"),
    ("ml.popular_products", "popularity ranking"),
    ("ml.item_similarity", "similar products (collaborative, content, embedding)"),
    ("ml.model_evaluations", "model versions evaluated"),
    ("recs.user_recommendations", "recommendations (live publication)"),
    ("recs.similar_products", "similar products, per method and blended (live)"),
    ("recs.recommendation_runs", "publications"),
)

MODELS_QUERY = """SELECT e.model_name, e.ndcg_at_k, e.precision_at_k, e.recall_at_k,
       CASE WHEN e.model_name = c.model_name THEN 'champion' ELSE '' END, e.k
FROM ml.model_evaluations e
JOIN (SELECT * FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1) c
  ON e.evaluated_at = c.chosen_at  -- the versions compared by the latest evaluation (one timestamp per run)
ORDER BY e.ndcg_at_k DESC"""

EXAMPLE_QUERY = """SELECT rank, title, main_category, round(score::numeric, 3) AS score, reason
FROM recs.user_recommendations_detailed
WHERE user_id = 1
ORDER BY rank
LIMIT 10;"""


def _embedded():
    from rec_orchestration.db.embedded import EmbeddedPostgres

    return EmbeddedPostgres.default()


def _run(argv: list[str], env: dict[str, str], cwd: Path = settings.PROJECT_ROOT) -> None:
    code = subprocess.call(argv, env=env, cwd=cwd)
    if code != 0:
        raise click.ClickException(f"{' '.join(argv[:3])} ... exited with {code}")


def _venv_bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


@click.group()
def main() -> None:
    """rec_orchestration: batch recommender pipeline on Dagster, dbt and PostgreSQL."""


# -- database ----------------------------------------------------------------------------------------

@main.group()
def db() -> None:
    """The embedded PostgreSQL server (used when REC_DATABASE_URL / PG* are not set)."""


@db.command("start")
def db_start() -> None:
    """Initialise (first time) and start the embedded server; no-op when it is running."""
    if servers.external_database_configured():
        click.echo(f"using configured database {servers.warehouse_settings().redacted_url()}; nothing to start")
        return
    click.echo(_embedded().ensure_running().describe())


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server."""
    click.echo("stopped" if _embedded().stop() else "not running")


@db.command("status")
def db_status() -> None:
    """Whether the embedded server runs, and where."""
    if servers.external_database_configured():
        click.echo(f"configured database: {servers.warehouse_settings().redacted_url()}")
        return
    click.echo(_embedded().status().describe())


@db.command("url")
@click.option("--dagster", is_flag=True, help="The Dagster storage database instead of the warehouse.")
@click.option("--show-password", is_flag=True, help="Print the password instead of ****.")
def db_url(dagster: bool, show_password: bool) -> None:
    """Print the connection URL of the warehouse (starts the embedded server if needed)."""
    target = servers.dagster_storage_settings() if dagster else servers.warehouse_settings()
    click.echo(target.url() if show_password else target.redacted_url())


@db.command("psql", context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def db_psql(psql_args: tuple[str, ...]) -> None:
    """Open psql on the warehouse (extra arguments go to psql, e.g. -c 'SELECT 1')."""
    if servers.external_database_configured():
        argv, env = servers.warehouse_settings().psql_command(shutil.which("psql") or "psql")
    else:
        server = _embedded()
        server.ensure_running()
        argv, env = server.psql_command()
    os.execvpe(argv[0], [*argv, *psql_args], env)


@db.command("reset")
@click.confirmation_option(prompt="Delete the embedded server and all its data?")
def db_reset() -> None:
    """Stop the embedded server and delete its data directory."""
    _embedded().destroy()
    click.echo("embedded PostgreSQL removed")


# -- data and runs -----------------------------------------------------------------------------------

@main.command("sample")
@click.option("--users", default=None, type=int, help="Number of users (default from SampleSpec).")
@click.option("--products", default=None, type=int, help="Number of products.")
@click.option("--seed", default=None, type=int)
@click.option("--landing-dir", default=None, type=click.Path(file_okay=False, path_type=Path))
def sample(users: int | None, products: int | None, seed: int | None, landing_dir: Path | None) -> None:
    """Write deterministic Amazon-2023-format sample files into the landing directory."""
    from dataclasses import replace

    from rec_orchestration.sample_data import SampleSpec, write_sample

    spec = SampleSpec()
    overrides = {k: v for k, v in {"n_users": users, "n_products": products, "seed": seed}.items() if v is not None}
    spec = replace(spec, **overrides)
    target = landing_dir or settings.landing_dir()
    files = write_sample(target, spec)
    state = "written" if files.changed else "unchanged (already there)"
    click.echo(f"sample data {state}: {files.n_reviews} reviews by {files.n_users} users of "
               f"{files.n_products} products in {target}")


@main.command("dbt-parse")
def dbt_parse() -> None:
    """Build the dbt manifest that Dagster loads (dbt_project/target/manifest.json)."""
    env = {**os.environ, **servers.warehouse_settings(start_embedded=False).dbt_environment()}
    _run([_venv_bin("dbt"), "parse", "--quiet", "--project-dir", str(settings.DBT_PROJECT_DIR),
          "--profiles-dir", str(settings.DBT_PROJECT_DIR)], env)


def _dagster_env() -> dict[str, str]:
    return {**os.environ, **servers.dagster_environment()}


@main.command("env")
def env_cmd() -> None:
    """Print `export` lines so plain `dagster` / `dbt` commands use this project's instance and database."""
    for key, value in servers.dagster_environment().items():
        click.echo(f"export {key}={shlex.quote(value)}")


@main.command("materialize")
@click.option("--select", default=None,
              help="Dagster asset selection of unpartitioned assets (e.g. 'recs/*'). Default: the whole "
                   "refresh_recommendations job over every landing partition.")
@click.option("--executor", "executor_name", type=click.Choice(settings.EXECUTORS), default="in_process",
              show_default=True, help="in_process: every step in one process (fastest on a small machine); "
              "multiprocess: a process per step; dask: steps on the dask cluster of REC_DASK_SCHEDULER (else a "
              "local one of REC_DASK_WORKERS workers); k8s: a Kubernetes Job per step.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A run config YAML (e.g. ops: {models__lightgcn: {config: {epochs: 40}}}) for the run.")
def materialize(select: str | None, executor_name: str, config_file: str | None) -> None:
    """Materialize assets through the Dagster instance (the run is recorded in PostgreSQL).

    Without --select: adds a landing partition for every new file or folder in the landing directory
    (what the landing sensor does under `make dev`), then runs the refresh_recommendations job over
    all landing partitions in one run: ingestion, its blocking checks, dbt, models, publish.
    """
    # The code location's executor is REC_EXECUTOR's (jobs.run_executor); its default config is the one wanted.
    env = _dagster_env() | {"REC_EXECUTOR": executor_name}
    local = executor_name in ("in_process", "multiprocess")
    run_config = {"execution": {"config": settings.local_executor_config(executor_name)}} if local else {}
    if config_file is not None:
        import yaml  # a dagster dependency

        given = yaml.safe_load(Path(config_file).read_text()) or {}
        if "execution" in given:
            raise click.UsageError("--config: choose the executor with --executor, not an execution block")
        run_config |= given
    if select is not None:
        _run([_venv_bin("dagster"), "asset", "materialize", "-m", "rec_orchestration.definitions",
              "--select", select, "--config-json", json.dumps(run_config)], env)
        return
    from rec_orchestration.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG

    keys = _sync_landing_partitions()
    tags = {PARTITION_RANGE_START_TAG: keys[0], PARTITION_RANGE_END_TAG: keys[-1]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="rec_run_config_") as config_file:
        json.dump(run_config, config_file)  # JSON is YAML
        config_file.flush()
        _run([_venv_bin("dagster"), "job", "execute", "-m", "rec_orchestration.definitions",
              "-j", "refresh_recommendations", "--tags", json.dumps(tags), "-c", config_file.name], env)


def _sync_landing_partitions() -> list[str]:
    import dagster as dg

    from rec_orchestration.partitions import LANDING_PARTITIONS_NAME, sync_landing_partitions

    landing = settings.landing_dir()
    if not landing.is_dir():
        raise click.ClickException(f"landing directory {landing} does not exist (run `rec sample` or set "
                                   "REC_LANDING_DIR)")
    os.environ.update(servers.dagster_environment())
    with dg.DagsterInstance.get() as instance:
        added = sync_landing_partitions(instance, landing)
        keys = instance.get_dynamic_partitions(LANDING_PARTITIONS_NAME)
    if added:
        click.echo(f"landing partitions added: {', '.join(added)}")
    if not keys:
        raise click.ClickException(f"no landing files in {landing} (run `rec sample` or add files)")
    return keys


@main.command("dev")
@click.option("--port", default=3000, show_default=True, envvar="REC_DEV_PORT",
              help="Port of the UI (environment: REC_DEV_PORT).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--shutdown-timeout", default=DEFAULT_GRACE_S, show_default=True, type=click.FloatRange(min=0),
              help="Seconds Dagster gets to stop after SIGTERM or Ctrl-C before what is left is killed.")
def dev(port: int, host: str, shutdown_timeout: float) -> None:
    """Start the Dagster UI and daemon (schedules, sensors, run queue) on http://127.0.0.1:3000.

    Stays the parent of `dagster dev`: SIGTERM, SIGINT (Ctrl-C) or SIGHUP stop the webserver, the daemon,
    the code servers and any run they started, and nothing of them is left running afterwards. The
    embedded PostgreSQL is a shared server and stays up (`rec db stop`).
    """
    import dagster as dg

    from rec_orchestration.runs import reserve_refresh_pool

    env = _dagster_env()
    os.environ.update(env)
    with dg.DagsterInstance.get() as instance:
        reserve_refresh_pool(instance)  # two refreshes queued at once wait for each other from the start
    argv = [_venv_bin("dagster"), "dev", "-w", str(settings.PROJECT_ROOT / "workspace.yaml"),
            "-h", host, "-p", str(port)]
    code = run_supervised(argv, env=env, cwd=settings.PROJECT_ROOT, grace_s=shutdown_timeout,
                          say=lambda message: click.echo(f"rec dev: {message}", err=True))
    sys.exit(code)


@main.command("run")
@click.pass_context
def run_all(ctx: click.Context) -> None:
    """Everything `make run` does: start the database, write sample data, materialize all, summarise."""
    started = time.perf_counter()
    stages = [("start the database", lambda: ctx.invoke(db_start)),
              ("write the sample data into the landing directory", lambda: ctx.invoke(sample)),
              ("parse the dbt project", lambda: ctx.invoke(dbt_parse)),
              ("materialize the refresh: ingestion and checks, dbt build, similarity, models, evaluation, "
               "publish (each step's start, its progress and its end are logged below)",
               lambda: ctx.invoke(materialize, select=None, in_process=True)),
              ("summarise the results", lambda: ctx.invoke(summary))]
    for number, (what, step) in enumerate(stages, start=1):
        click.secho(f"\n==> [{number}/{len(stages)}] {what} ({time.perf_counter() - started:.0f} s so far)",
                    bold=True, err=True)
        step()
    click.echo(f"\ntotal {time.perf_counter() - started:.1f} s")


# -- publications -------------------------------------------------------------------------------------

@main.group("recs")
def recs_group() -> None:
    """The published recommendation tables: list publications, roll back, unpin."""


def _publishing_connection() -> psycopg.Connection:
    return psycopg.connect(servers.warehouse_settings().conninfo(), autocommit=True)


@recs_group.command("publications")
def recs_publications() -> None:
    """Every publication, newest first: which model made it, its size, whether it is live or kept."""
    from rec_orchestration import publishing

    with _publishing_connection() as conn:
        rows = publishing.publications(conn)
        live = publishing.live_publication(conn)
    if not rows:
        click.echo("nothing published yet")
        return
    click.echo(f"{'id':>5}  {'state':<14} {'published (UTC)':<19}  {'model':<28} {'rows':>9}  run")
    for row in rows:
        state = ("live, pinned" if live and live[1] else "live") if row["is_live"] else (
            "kept" if row["can_roll_back"] else "retired")
        click.echo(f"{row['publication_id']:>5}  {state:<14} {row['finished_at']:%Y-%m-%d %H:%M:%S}  "
                   f"{row['model_name'] + ' ' + row['model_version'][:16]:<28} {row['rows_written']:>9}  "
                   f"{row['run_id']}")


@recs_group.command("rollback")
@click.option("--to", "to", type=int, default=None,
              help="Publication id to make live (default: the newest kept one older than the live one).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def recs_rollback(to: int | None, yes: bool) -> None:
    """Make an earlier publication live at once and pin it: scheduled publishes keep theirs aside
    until `rec recs unpin`."""
    from rec_orchestration import publishing

    if not yes:
        click.confirm(f"Make publication {to if to is not None else '(previous)'} live and pin it?", abort=True)
    with _publishing_connection() as conn:
        try:
            live = publishing.rollback(conn, to)
        except publishing.PublishError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"publication {live} is live and pinned; `rec recs unpin` makes the newest live again")


@recs_group.command("unpin")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def recs_unpin(yes: bool) -> None:
    """Release a rollback's pin: the newest kept publication goes live, and publishes swap again."""
    from rec_orchestration import publishing

    if not yes:
        click.confirm("Make the newest publication live and let publishes swap again?", abort=True)
    with _publishing_connection() as conn:
        try:
            live = publishing.unpin(conn)
        except publishing.PublishError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"publication {live} is live; publishes swap again")


@main.command("summary")
def summary() -> None:
    """Rows per table, where the UI is, and an example query."""
    target = servers.warehouse_settings()
    click.echo("\n== rec_orchestration: results ==")
    click.echo(f"warehouse: {target.redacted_url()}  (`rec db url --show-password`, `rec db psql`)")
    with psycopg.connect(target.conninfo()) as conn:
        for table, label in SUMMARY_TABLES:
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
            count = (conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split("."))))
                     .fetchone()[0] if exists else "missing")
            click.echo(f"  {table:<28} {count!s:>10}  {label}")
        if conn.execute("SELECT to_regclass('recs.user_recommendations') IS NOT NULL").fetchone()[0]:
            click.echo("\nexample: top recommendations of user 1\n")
            click.echo("  " + EXAMPLE_QUERY.replace("\n", "\n  "))
            for row in conn.execute(EXAMPLE_QUERY).fetchall():
                click.echo(f"    {row[0]:>2}  {str(row[1])[:45]:<45} {str(row[2])[:22]:<22} {row[3]}  {row[4]}")
        if conn.execute("SELECT to_regclass('ml.model_champions') IS NOT NULL").fetchone()[0]:
            click.echo("\nmodels, evaluated on each user's latest interaction (ml.model_evaluations):\n")
            for row in conn.execute(MODELS_QUERY).fetchall():
                name, ndcg, precision, recall, role, k = row
                click.echo(f"    {name:<11} nDCG@{k} {ndcg:.4f}  P@{k} {precision:.4f}  R@{k} {recall:.4f}  {role}")
    click.echo("\nUI: `make dev`, then open http://127.0.0.1:3000 (asset graph, runs, checks)")


# -- backups -----------------------------------------------------------------------------------------

@main.command("backup")
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the dump (default REC_BACKUP_DIR, else <REC_HOME>/backups).")
@click.option("--keep", default=DEFAULT_KEEP_DUMPS, show_default=True, type=click.IntRange(min=1),
              help="Complete dumps to keep in the directory; older ones are deleted.")
def backup_cmd(directory: Path | None, keep: int) -> None:
    """Dump the warehouse's core, ml, recs and recs_store schemas (those that exist) with pg_dump."""
    from rec_orchestration.backup import BackupError, backup, dump_schemas

    target = servers.warehouse_settings()
    try:
        dump = backup(target, directory or settings.backup_dir(), keep=keep)
        schemas = dump_schemas(dump)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"backed up {', '.join(schemas)} of {target.redacted_url()} to {dump} "
               f"({dump.stat().st_size:,} bytes)")


@main.command("restore")
@click.argument("dump", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--database-url", default=None,
              help="Database to restore into (default: the configured warehouse). It must exist.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def restore_cmd(dump: Path, database_url: str | None, yes: bool) -> None:
    """Restore a dump made by `rec backup` or the backup_warehouse job, in one transaction.

    The dump's schemas in the target are replaced; on any error nothing changes.
    """
    from rec_orchestration.backup import BackupError, dump_schemas, restore

    target = DatabaseSettings.from_url(database_url) if database_url else servers.warehouse_settings()
    try:
        schemas = dump_schemas(dump)
        if not yes:
            click.confirm(f"Replace the tables of {', '.join(schemas)} in {target.redacted_url()} with those "
                          f"of {dump}?", abort=True)
        restore(dump, target)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"restored {', '.join(schemas)} from {dump} into {target.redacted_url()}")


if __name__ == "__main__":
    main()
