"""What the scoring shards (``assets/scoring.py``) and the publish step (``assets/publish.py``) share: the
shards' names and tables, and the inputs both read with the *basis* they make.

The basis is a hash of every input of a shard's rows: the champion's version (which names its artifact),
the popularity ranking, the users, the interactions, the similarity rows, the product titles and
categories, the category rankings and the serving settings. A shard records the basis it was brought up to
date with, and publishing takes only shards of the basis it sees itself.

The *serving key* is the part of it that every user's rows depend on: the champion's version, the serving
settings, the shard count and the scoring code (SCORING_VERSION). While it stays the same (models/champion
keeps serving its fit while the data grew little, ``ml.training.keep_deployed``), a shard rescores only
the users whose histories changed (``ml.serving.history_digests``); the other users keep the rows they were
scored with, popular products and reasons included, until the next full scoring.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np

from rec_orchestration import settings
from rec_orchestration.db import reads
from rec_orchestration.deployment import k8s_step_tags
from rec_orchestration.ml import registry
from rec_orchestration.ml.base import Recommender
from rec_orchestration.ml.popularity import PopularityRecommender
from rec_orchestration.ml.serving import Source
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.resources.serving import ServingResource
from rec_orchestration.runs import approved_champion

if TYPE_CHECKING:
    import pandas as pd

SHARD_COUNT = settings.scoring_shards()
# Bumped when the code that makes a user's rows changes (ml.serving.assemble, the reasons): part of the serving
# key, so the next scoring rescores every user instead of keeping rows the old code made.
# v2: a user the champion's fit does not know gets their categories' popular products, as any user it does not rank.
SCORING_VERSION = "scoring-v2"
SHARD_RECORDS = "ml.scoring_shards"
SHARD_COLUMNS = (("user_id", "bigint"), ("product_id", "bigint"), ("rank", "integer"), ("score", "double precision"),
                 ("reason", "text"), ("because_product_id", "bigint"), ("model_name", "text"),
                 ("model_version", "text"))
SERVING_DEPS = [dg.AssetKey(["models", "champion"]), dg.AssetKey(["ml", "popular_products"]),
                dg.AssetKey(["ml", "popular_products_by_category"]), dg.AssetKey(["ml", "item_similarity"]),
                dg.AssetKey(["core", "users"]), dg.AssetKey(["core", "interactions"]),
                dg.AssetKey(["core", "products"])]


def shard_table(shard: int, shards: int) -> str:
    return f"ml.scored_users_{shard}_of_{shards}"


def history_table(shard: int, shards: int) -> str:
    """The history digest (``ml.serving.history_digests``) each of a shard's users was last scored with."""
    return f"{shard_table(shard, shards)}_histories"


def reasons_table(shard: int, shards: int) -> str:
    """The neighbour pairs strong enough to name in a reason (``ml.serving.strong_neighbours``) that a shard's last
    reckoning of the evidence found, kept for its rescorings of changed users while the similarity rows are the
    same (``ServingState.similarity_basis``)."""
    return f"{shard_table(shard, shards)}_reasons"


def shard_key(shard: int, shards: int) -> dg.AssetKey:
    return dg.AssetKey(["ml", f"scored_users_{shard}_of_{shards}"])


def popularity_model(ranked: pd.DataFrame) -> PopularityRecommender:
    """The published popularity ranking (``ml.popular_products``: the stronger baseline on the holdout, decayed
    or plain, refitted on every interaction) as a model. Served under the name ``popularity`` either way; its
    version tells the variants apart."""
    model = PopularityRecommender()
    model.item_ids = ranked["product_id"].to_numpy(dtype=np.int64)
    model.item_scores = ranked["score"].to_numpy(dtype=float)
    return model


def champion_row(context: dg.AssetExecutionContext, warehouse: PostgresResource) -> dict:
    """The approved champion's row, refitted on every interaction for publishing (``deployed_version``)."""
    row = approved_champion(context, warehouse)
    if not row.get("deployed_version"):
        raise dg.Failure(f"champion {row['model_name']} {row['model_version']} is not refitted for publishing yet: "
                         "materialize models/champion first")
    return row


def champion_model(row: dict, model_store: ModelStoreResource) -> Recommender:
    state, _ = model_store.store().load(row["model_name"], row["deployed_version"])
    return registry.served_model(row["model_name"], state)


@dataclass
class ServingState:
    """What both the shards and the publish step read, and the basis it makes: every input of a shard's rows
    except the champion's artifact, which its version names."""

    row: dict                        # the approved champion's row (ml.model_champions)
    champion: Source
    popularity: Source
    ranked: pd.DataFrame             # ml.popular_products: product_id, score, model_version, best first
    users: np.ndarray
    interactions: pd.DataFrame | None  # core.interactions (reads.interactions_frame); None: not read (publish)
    similarity: pd.DataFrame
    products: pd.DataFrame
    by_category: pd.DataFrame
    item_categories: dict[int, list[int]]
    basis: str
    serving_key: str                 # what every user's rows depend on (see the module's docstring)
    similarity_basis: str            # a hash of the similarity rows read (what a shard's kept reason pairs are of)


def _frame_digest(frame: pd.DataFrame) -> bytes:
    """A digest of a frame's rows whatever their order (the similarity query has no ORDER BY)."""
    import pandas as pd
    return np.sort(pd.util.hash_pandas_object(frame, index=False).to_numpy()).tobytes()


def serving_state(context: dg.AssetExecutionContext, warehouse: PostgresResource, serving: ServingResource,
                  shards: int, read_interactions: bool = True) -> ServingState:
    """The inputs and their basis. The interactions enter the basis by their version (``reads.interactions_version``,
    made by the database); ``read_interactions`` False leaves the rows themselves unread (publish needs only the
    basis: at 10M interactions its reading took 43.6 s with them and 24.4 s without, measured back to back)."""
    row = champion_row(context, warehouse)
    ranked = reads.popularity_ranking(warehouse)
    champion = Source(row["model_name"], row["deployed_version"])
    popularity = Source("popularity", str(ranked["model_version"].iloc[0]))
    users = reads.user_ids(warehouse)
    if read_interactions:
        interactions, interactions_version = reads.interactions_snapshot(warehouse)
    else:
        interactions, interactions_version = None, reads.interactions_version(warehouse)
    similarity = reads.item_similarity(warehouse)
    products = reads.product_metadata(warehouse)
    by_category = reads.popularity_by_category(warehouse)
    item_categories = reads.product_category_ids(warehouse)
    digest = hashlib.sha256(json.dumps([champion.name, champion.version, popularity.version, shards,
                                        serving.settings_key(), interactions_version,
                                        sorted(item_categories.items())]).encode())
    similarity_digest = _frame_digest(similarity)
    for part in (users.tobytes(), _frame_digest(ranked), similarity_digest,
                 _frame_digest(products[["product_id", "title"]]), _frame_digest(by_category)):
        digest.update(part)
    serving_key = hashlib.sha256(json.dumps([SCORING_VERSION, champion.name, champion.version, shards,
                                             serving.settings_key()]).encode()).hexdigest()[:16]
    return ServingState(row, champion, popularity, ranked, users, interactions, similarity, products, by_category,
                        item_categories, digest.hexdigest()[:16], serving_key,
                        hashlib.sha256(similarity_digest).hexdigest()[:16])


def scoring_tags() -> dict:
    """The Kubernetes resources of a scoring step (``deployment.py``): the shards and publish."""
    return k8s_step_tags("scoring")


SHARD_KEYS = [shard_key(shard, SHARD_COUNT) for shard in range(SHARD_COUNT)]
