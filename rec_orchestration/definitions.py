"""The code location: one Definitions with every asset, check, resource, job and schedule."""


import dagster as dg

from rec_orchestration.assets.ingestion import raw_products, raw_reviews
from rec_orchestration.assets.models import popular_products
from rec_orchestration.assets.publish import every_user_gets_k_unseen_recommendations, user_recommendations
from rec_orchestration.assets.warehouse import warehouse_dbt_models
from rec_orchestration.resources.dbt import dbt_resource
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.schedules import hourly_refresh_schedule, refresh_recommendations_job

defs = dg.Definitions(
    assets=[raw_products, raw_reviews, warehouse_dbt_models, popular_products, user_recommendations],
    asset_checks=[every_user_gets_k_unseen_recommendations],
    jobs=[refresh_recommendations_job],
    schedules=[hourly_refresh_schedule],
    resources={
        "warehouse": PostgresResource(),
        "dbt": dbt_resource(),
        "model_store": ModelStoreResource(),
    },
)
