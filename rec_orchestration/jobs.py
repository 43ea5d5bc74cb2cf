"""Operational jobs that are not assets: the nightly warehouse backup."""

import time

import dagster as dg
from pydantic import Field

from rec_orchestration import settings
from rec_orchestration.backup import BACKUP_SCHEMAS, DEFAULT_KEEP_DUMPS, backup, complete_dumps, dump_schemas
from rec_orchestration.resources.postgres import PostgresResource


class BackupConfig(dg.Config):
    keep: int = Field(default=DEFAULT_KEEP_DUMPS, ge=1, description="Complete dumps to keep in the backup directory; older "
                                                   "ones are deleted after a successful backup.")


@dg.op(out=dg.Out(dg.Nothing))
def dump_warehouse(context: dg.OpExecutionContext, config: BackupConfig, warehouse: PostgresResource) -> dg.Output:
    """pg_dump of the warehouse's core, ml, recs and recs_store schemas (those that exist) into
    REC_BACKUP_DIR (default <REC_HOME>/backups), then deletes the oldest dumps beyond `keep`."""
    directory = settings.backup_dir()
    started = time.perf_counter()
    dump = backup(warehouse.database_settings(), directory, BACKUP_SCHEMAS, keep=config.keep)
    seconds = time.perf_counter() - started
    schemas = dump_schemas(dump)
    context.log.info(f"backed up {', '.join(schemas)} to {dump}")
    return dg.Output(None, metadata={
        "path": dg.MetadataValue.path(str(dump)),
        "size_bytes": dg.MetadataValue.int(dump.stat().st_size),
        "schemas": dg.MetadataValue.text(", ".join(schemas)),
        "seconds": dg.MetadataValue.float(round(seconds, 2)),
        "dumps_kept": dg.MetadataValue.int(len(complete_dumps(directory))),
    })


@dg.job(description="Back up the warehouse (pg_dump of core, ml, recs, recs_store) into REC_BACKUP_DIR, "
                    "keeping the newest dumps.")
def backup_warehouse() -> None:
    dump_warehouse()


daily_backup_schedule = dg.ScheduleDefinition(
    name="daily_backup",
    job=backup_warehouse,
    cron_schedule="30 3 * * *",  # not at minute 0, when hourly_refresh starts
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Back up the warehouse every day at 03:30 UTC.",
)
