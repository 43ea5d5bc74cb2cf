"""Every job of the code location: the hourly refresh, the ingestion of one landing entry, the backup.

The schedules (``schedules.py``) and the landing sensor (``sensors.py``) start them; a person can launch
any of them from the UI."""

import time

import dagster as dg
from pydantic import Field

from rec_orchestration import settings
from rec_orchestration.assets.ingestion import RAW_ASSET_KEYS
from rec_orchestration.backup import BACKUP_SCHEMAS, DEFAULT_KEEP_DUMPS, backup, complete_dumps, dump_schemas
from rec_orchestration.resources.postgres import PostgresResource


class BackupConfig(dg.Config):
    keep: int = Field(default=DEFAULT_KEEP_DUMPS, ge=1, description=(
        "Complete dumps to keep in the backup directory; older ones are deleted after a successful backup."))


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


def run_executor(name: str) -> dg.ExecutorDefinition:
    """The executor of every job, named by REC_EXECUTOR (``settings.executor_name``).

    ``multiprocess`` and ``in_process`` are Dagster's default executor (run config can still pick either,
    as ``rec materialize`` does) with ``name`` as the choice of a run whose config names none: a run
    launched from the UI or by a schedule. ``dask`` runs each step as a task on the dask.distributed
    cluster of ``settings.dask_cluster`` (``dask_executor.py``; run config can name another); ``k8s`` is
    dagster-k8s's ``k8s_job_executor`` (installed with the ``k8s`` extra, configured by the Helm chart).
    Steps pass nothing through memory or local disk (tables in PostgreSQL, artifacts in the model store),
    so any of them can run a step anywhere.
    """
    if name == "dask":
        from rec_orchestration.dask_executor import dask_step_executor  # imports dask.distributed: only here

        return dask_step_executor(settings.dask_cluster())
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as error:
            raise ImportError("REC_EXECUTOR=k8s needs dagster-k8s: pip install 'rec-orchestration[k8s]' "
                              "(the Dockerfile does)") from error
        return k8s_job_executor
    base = dg.multi_or_in_process_executor
    # its selector (multiprocess | in_process, each with its own options), with another default
    return _with_default(base, settings.local_executor_config(name), requirements=lambda config: (
        dg.multiple_process_executor_requirements() if "multiprocess" in config else []))


def _with_default(base: dg.ExecutorDefinition, default: dict, requirements) -> dg.ExecutorDefinition:
    """``base`` with ``default`` as the config of a run whose config names none."""
    return dg.ExecutorDefinition(
        name=base.name, description=base.description,
        config_schema=dg.Field(base.config_schema.config_type, default_value=default),
        executor_creation_fn=base.executor_creation_fn, requirements=requirements)


# Everything from the landing files to the published tables, over every landing partition in one run
# (the raw assets' single-run backfill policy; Dagster infers the landing_files partitions from them).
# Ingestion skips content it has loaded, so the run picks up what the sensor has not ingested yet,
# re-runs the raw tables' blocking checks and then refreshes the warehouse, models and recommendations.
refresh_recommendations_job = dg.define_asset_job(
    name="refresh_recommendations",
    selection=dg.AssetSelection.all(),
    description="Ingest new landing files, rebuild the warehouse, refit models, publish recommendations.",
)

ingest_landing_job = dg.define_asset_job(
    name="ingest_landing_files",
    selection=dg.AssetSelection.assets(*RAW_ASSET_KEYS),
    description="Load one landing entry (file or folder) into the raw tables and run their checks.",
)
