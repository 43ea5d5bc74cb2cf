"""Schedules: the hourly refresh of the whole pipeline and the nightly backup."""

import dagster as dg

from rec_orchestration.jobs import backup_warehouse, refresh_recommendations_job
from rec_orchestration.partitions import LANDING_PARTITIONS_NAME, PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG


def all_partitions_run_request(instance: dg.DagsterInstance, run_key: str | None = None) -> dg.RunRequest | None:
    """One run over every landing partition, or None when there is none yet."""
    keys = instance.get_dynamic_partitions(LANDING_PARTITIONS_NAME)
    if not keys:
        return None
    return dg.RunRequest(run_key=run_key, tags={PARTITION_RANGE_START_TAG: keys[0],
                                                PARTITION_RANGE_END_TAG: keys[-1]})


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


daily_backup_schedule = dg.ScheduleDefinition(
    name="daily_backup",
    job=backup_warehouse,
    cron_schedule="30 3 * * *",  # not at minute 0, when hourly_refresh starts
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Back up the warehouse every day at 03:30 UTC.",
)
