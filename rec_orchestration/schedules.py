"""Jobs and schedules."""

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from rec_orchestration.partitions import LANDING_PARTITIONS_NAME, landing_partitions

# Everything from the landing files to the published tables, over every landing partition in one run
# (the raw assets' single-run backfill policy). Ingestion skips content it has loaded, so the run
# picks up what the sensor has not ingested yet, re-runs the raw tables' blocking checks and then
# refreshes the warehouse, models and recommendations.
refresh_recommendations_job = dg.define_asset_job(
    name="refresh_recommendations",
    selection=dg.AssetSelection.all(),
    partitions_def=landing_partitions,
    description="Ingest new landing files, rebuild the warehouse, refit models, publish recommendations.",
)


def all_partitions_run_request(instance: dg.DagsterInstance, run_key: str | None = None) -> dg.RunRequest | None:
    """One run over every landing partition, or None when there is none yet."""
    keys = instance.get_dynamic_partitions(LANDING_PARTITIONS_NAME)
    if not keys:
        return None
    return dg.RunRequest(run_key=run_key, tags={ASSET_PARTITION_RANGE_START_TAG: keys[0],
                                                ASSET_PARTITION_RANGE_END_TAG: keys[-1]})


@dg.schedule(
    name="hourly_refresh",
    job=refresh_recommendations_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refresh the whole pipeline at the top of every hour.",
)
def hourly_refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    request = all_partitions_run_request(context.instance)
    return request or dg.SkipReason("no landing files yet: the landing sensor adds them as they arrive")
