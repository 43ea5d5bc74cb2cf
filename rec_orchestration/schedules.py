"""Jobs and schedules."""


import dagster as dg

# Everything from the landing files to the published tables. Ingestion skips files it has loaded, so
# an hourly run picks up new landing files and refreshes models and recommendations.
refresh_recommendations_job = dg.define_asset_job(
    name="refresh_recommendations",
    selection=dg.AssetSelection.all(),
    description="Ingest new landing files, rebuild the warehouse, refit models, publish recommendations.",
)

hourly_refresh_schedule = dg.ScheduleDefinition(
    name="hourly_refresh",
    job=refresh_recommendations_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refresh the whole pipeline at the top of every hour.",
)
