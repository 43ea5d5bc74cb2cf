"""The code location: one Definitions with every asset, check, resource, job, schedule and sensor."""


import dagster as dg

from rec_orchestration import settings
from rec_orchestration.assets.evaluation import champion, champion_beats_popularity, model_evaluations
from rec_orchestration.assets.ingestion import raw_landing
from rec_orchestration.assets.models import model_assets, popular_products, training_round
from rec_orchestration.assets.publish import (
    every_user_gets_unseen_recommendations,
    publish_recommendations,
    recommendations_freshness_checks,
    recommendations_freshness_sensor,
)
from rec_orchestration.assets.scoring import scoring_shard_assets
from rec_orchestration.assets.similarity import item_similarity
from rec_orchestration.assets.warehouse import warehouse_dbt_models
from rec_orchestration.jobs import backup_warehouse, ingest_landing_job, refresh_recommendations_job, run_executor
from rec_orchestration.resources.dbt import dbt_resource
from rec_orchestration.resources.great_expectations import GreatExpectationsResource
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.resources.serving import ServingResource
from rec_orchestration.schedules import daily_backup_schedule, hourly_refresh_schedule
from rec_orchestration.sensors import landing_sensor

defs = dg.Definitions(
    assets=[raw_landing, warehouse_dbt_models, training_round, popular_products, *model_assets, model_evaluations,
            champion, item_similarity, *scoring_shard_assets, publish_recommendations],
    asset_checks=[champion_beats_popularity, every_user_gets_unseen_recommendations,
                  *recommendations_freshness_checks],
    jobs=[refresh_recommendations_job, ingest_landing_job, backup_warehouse],
    schedules=[hourly_refresh_schedule, daily_backup_schedule],
    sensors=[landing_sensor, recommendations_freshness_sensor],
    executor=run_executor(settings.executor_name()),
    resources={
        "warehouse": PostgresResource(),
        "great_expectations": GreatExpectationsResource(),
        "dbt": dbt_resource(),
        "model_store": ModelStoreResource(),
        "serving": ServingResource(),
    },
)
