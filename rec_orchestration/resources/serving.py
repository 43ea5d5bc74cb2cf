"""The serving settings as a Dagster resource: one run config sets them for every scoring shard and the
publish step (``resources: serving: config: {k: 20, min_interactions: 3, similar_products: 20}``)."""

import dagster as dg
from pydantic import Field


class ServingResource(dg.ConfigurableResource):
    """What every user is served: shared by the scoring shards and the publish step, so one run config
    (``resources: serving: config: ...``) sets it for all of them."""

    k: int = Field(default=20, ge=1, le=1000, description="Recommendations per user.")
    min_interactions: int = Field(default=3, ge=0, description=(
        "Users with fewer interactions get popular products (of their categories first) instead of the champion's."))
    similar_products: int = Field(default=20, ge=1, le=500, description="Blended similar products kept per product.")

    def settings_key(self) -> list[int]:
        return [self.k, self.min_interactions, self.similar_products]
