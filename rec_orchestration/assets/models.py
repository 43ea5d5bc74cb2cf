"""Models over the core tables: popularity (the fallback) and every model of ``ml.registry``, evaluated.

Each model asset fits its model on the training part of one time-based split (every user's latest
interaction held out), evaluates it on the held-out part, and saves the artifact (state dict + manifest
with the metrics) to the model store under a version derived from data, parameters and code. An
artifact whose version already exists is reused, not refitted: models retrain only when their input,
parameters or code changed. ``ml/model_evaluations`` (assets/evaluation.py) compares them.
"""

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd
from psycopg import sql
from pydantic import Field

from rec_orchestration.ml import registry
from rec_orchestration.ml.base import Recommender
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.metrics import evaluate
from rec_orchestration.ml.plots import markdown_image, training_curve
from rec_orchestration.ml.popularity import PopularityRecommender
from rec_orchestration.ml.splits import time_holdout
from rec_orchestration.resources.model_store import ModelStoreResource, artifact_version
from rec_orchestration.resources.postgres import PostgresResource, replace_table
from rec_orchestration.retry import retry_transient_db_errors

# Bumped when a model's code changes what it learns; part of every artifact version.
CODE_VERSIONS = {"popularity": "popularity-v1", "itemknn": "itemknn-v1", "ease": "ease-v1",
                 "lightfm": "lightfm-v1", "lightgcn": "lightgcn-v1"}
EVAL_K = 10                 # metrics at k, for every model
HOLDOUT_LATEST = 1          # each user's latest interaction is the test set
HOLDOUT_MIN_INTERACTIONS = 3  # users with fewer interactions are only trained on
# Part of every model's artifact version: a change to how models are evaluated re-evaluates them.
EVALUATION_VERSION = f"time-holdout-{HOLDOUT_LATEST}-min{HOLDOUT_MIN_INTERACTIONS}-k{EVAL_K}-v1"

# The training input: one row per (user, product), weighted by dbt (var interaction_weights). Ordered,
# so the split (ties in time broken by row order) and the data version are the same on every read.
INTERACTIONS_QUERY = sql.SQL("""
    SELECT user_id, product_id, weight, last_at AS ts
    FROM core.interactions
    ORDER BY user_id, last_at, product_id
""")
ITEM_CATEGORIES_QUERY = sql.SQL("""
    SELECT pc.product_id, array_to_string(c.path, ' > ') AS path
    FROM core.product_categories pc JOIN core.categories c USING (category_id)
    ORDER BY pc.product_id, path
""")
INTERACTION_DEPS = [dg.AssetKey(["core", "interactions"])]


def interactions_frame(warehouse: PostgresResource) -> pd.DataFrame:
    frame = warehouse.read_dataframe(INTERACTIONS_QUERY)
    if frame.empty:
        raise dg.Failure("core.interactions is empty: nothing to train on")
    frame["weight"] = frame["weight"].astype(float)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def data_version(frame: pd.DataFrame) -> str:
    """Hash of exactly the rows a model is fitted on (any changed id, weight or time changes it)."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return f"{len(frame)}:{digest.hexdigest()[:24]}"


def load_interactions(warehouse: PostgresResource) -> Interactions:
    return Interactions.from_frame(interactions_frame(warehouse))


def grouped_by_product(warehouse: PostgresResource, query: sql.Composable | str) -> dict[int, list]:
    """Product id -> the second column of every ``(product_id, value)`` row of ``query``, in row order."""
    groups: dict[int, list] = {}
    for product_id, value in warehouse.fetch_all(query):
        groups.setdefault(int(product_id), []).append(value)
    return groups


def item_categories(warehouse: PostgresResource) -> dict[int, list[str]]:
    """Product id -> the category paths it is in (Amazon category paths, MovieLens genres)."""
    return grouped_by_product(warehouse, ITEM_CATEGORIES_QUERY)


@dataclass(frozen=True)
class TrainingSplit:
    """The one split every model is fitted and evaluated on, so their metrics compare."""

    train: Interactions
    test: pd.DataFrame       # user_id, product_id: each evaluated user's latest interaction(s)
    data_version: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "time", "held_out_per_user": HOLDOUT_LATEST,
                "min_interactions": HOLDOUT_MIN_INTERACTIONS, "train_interactions": len(self.train),
                "test_interactions": len(self.test), "test_users": int(self.test["user_id"].nunique())}


def training_split(warehouse: PostgresResource) -> TrainingSplit:
    frame = interactions_frame(warehouse)
    train, test = time_holdout(frame, n_latest=HOLDOUT_LATEST, min_interactions=HOLDOUT_MIN_INTERACTIONS)
    return TrainingSplit(Interactions.from_frame(train), test[["user_id", "product_id"]].reset_index(drop=True),
                         data_version(frame))


# ---------------------------------------------------------------------------------------------- configs

class PopularityConfig(dg.Config):
    half_life_days: float = Field(default=90.0, gt=0, description="Weight of an interaction halves every this many days.")
    per_category: int = Field(default=50, ge=1, description="Products kept per category in ml.popular_products_by_category.")


class ItemKNNConfig(dg.Config):
    neighbours: int = Field(default=registry.DEFAULTS["itemknn"]["neighbours"], ge=1,
                            description="Most similar items kept per item.")
    shrink_power: float = Field(default=registry.DEFAULTS["itemknn"]["shrink_power"], gt=0,
                                description="Similarities are raised to this power before summing.")


class EASEConfig(dg.Config):
    l2: float = Field(default=registry.DEFAULTS["ease"]["l2"], gt=0, description="L2 regularisation (lambda).")
    max_items: int = Field(default=registry.DEFAULTS["ease"]["max_items"], ge=2, description=(
        "Most interacted items the dense model covers (memory grows with its square)."))


class LightFMConfig(dg.Config):
    factors: int = Field(default=registry.DEFAULTS["lightfm"]["factors"], ge=1)
    epochs: int = Field(default=registry.DEFAULTS["lightfm"]["epochs"], ge=1)
    learning_rate: float = Field(default=registry.DEFAULTS["lightfm"]["learning_rate"], gt=0)
    use_categories: bool = Field(default=True, description="Category paths as item features.")


class LightGCNConfig(dg.Config):
    factors: int = Field(default=registry.DEFAULTS["lightgcn"]["factors"], ge=1)
    layers: int = Field(default=registry.DEFAULTS["lightgcn"]["layers"], ge=1)
    lr: float = Field(default=registry.DEFAULTS["lightgcn"]["lr"], gt=0)
    reg: float = Field(default=registry.DEFAULTS["lightgcn"]["reg"], ge=0,
                       description="L2 on the batch's ego embeddings.")
    epochs: int = Field(default=registry.DEFAULTS["lightgcn"]["epochs"], ge=1,
                        description="Most epochs; early stopping on validation nDCG usually ends sooner.")
    patience: int = Field(default=registry.DEFAULTS["lightgcn"]["patience"], ge=1,
                          description="Epochs without a better validation nDCG before stopping.")
    accelerator: str = Field(default="auto", description="'auto' trains on a GPU when one is present.")
    max_minutes: float = Field(default=20.0, gt=0, description=(
        "Training time budget: training stops there, keeping the best epoch so far, so the hourly "
        "refresh ends within the hour on a CPU."))


MODEL_CONFIGS: dict[str, type[dg.Config]] = {"popularity": PopularityConfig, "itemknn": ItemKNNConfig,
                                             "ease": EASEConfig, "lightfm": LightFMConfig,
                                             "lightgcn": LightGCNConfig}


def model_params(name: str, config: dg.Config) -> dict[str, Any]:
    """The model's constructor parameters from its asset config (registry defaults fill the rest)."""
    params = {**registry.DEFAULTS.get(name, {}), **config.model_dump()}
    params.pop("per_category", None)
    params.pop("use_categories", None)
    return params


# ---------------------------------------------------------------------------------------------- assets

def training_plot(model: Recommender) -> bytes | None:
    """PNG of the training curve (loss and validation nDCG per epoch) where the model records one."""
    history = getattr(model, "history", None)
    if not history:
        return None
    return training_curve(history, title=model.name)


def fit_and_evaluate(context: dg.AssetExecutionContext, name: str, params: dict[str, Any],
                     split: TrainingSplit, model_store: ModelStoreResource,
                     extra_inputs: dict[str, Any] | None = None) -> dg.MaterializeResult:
    version = artifact_version(split.data_version, {**params, **(extra_inputs or {}).get("version", {})},
                               f"{CODE_VERSIONS[name]}/{EVALUATION_VERSION}")
    if model_store.exists(name, version):
        manifest = model_store.manifest(name, version)
        model_store.set_latest(name, version)
        context.log.info(f"{name} {version}: data, parameters and code unchanged; reusing the artifact")
        return dg.MaterializeResult(metadata=model_metadata(manifest, model_store, reused=True))
    model = registry.build(name, **params, **(extra_inputs or {}).get("constructor", {}))
    started = time.perf_counter()
    model.fit(split.train)
    fit_seconds = time.perf_counter() - started
    metrics = evaluate(model, split.train, split.test, k=EVAL_K)
    manifest = {"params": params, "item_features": bool((extra_inputs or {}).get("version")),
                "metrics": metrics, "split": split.describe(),
                "data_version": split.data_version, "code_version": CODE_VERSIONS[name],
                "fit_seconds": round(fit_seconds, 3), "n_users": split.train.n_users,
                "n_items": split.train.n_items}
    for attribute in ("device_used", "seconds_per_epoch", "best_val_ndcg"):
        if getattr(model, attribute, None) is not None:
            manifest[attribute] = getattr(model, attribute)
    files = {}
    plot = training_plot(model)
    if plot is not None:
        files["training_curve.png"] = plot
        manifest["history"] = model.history
    model_store.save(name, version, model.state_dict(), manifest, files=files)
    model_store.set_latest(name, version)
    return dg.MaterializeResult(metadata=model_metadata(model_store.manifest(name, version), model_store,
                                                        reused=False))


def model_metadata(manifest: dict[str, Any], model_store: ModelStoreResource, reused: bool) -> dict[str, Any]:
    name, version = manifest["model_name"], manifest["version"]
    metrics = manifest["metrics"]
    table = pd.DataFrame([{"metric": key, "value": round(float(value), 4)} for key, value in metrics.items()])
    metadata: dict[str, Any] = {
        "model_version": version,
        "reused_artifact": reused,
        "artifact": dg.MetadataValue.path(model_store.location(name, version)),
        "fit_seconds": manifest["fit_seconds"],
        "params": dg.MetadataValue.json(manifest["params"]),
        "split": dg.MetadataValue.json(manifest["split"]),
        "metrics": dg.MetadataValue.md(table.to_markdown(index=False)),
        f"ndcg@{EVAL_K}": float(metrics[f"ndcg@{EVAL_K}"]),
    }
    if "device_used" in manifest:
        metadata["device"] = manifest["device_used"]
        metadata["seconds_per_epoch"] = float(manifest["seconds_per_epoch"])
    if model_store.has_file(name, version, "training_curve.png"):
        metadata["training_curve"] = dg.MetadataValue.md(
            markdown_image(model_store.read_file(name, version, "training_curve.png"), "training curve"))
    return metadata


def model_inputs(warehouse: PostgresResource, use_categories: bool) -> dict[str, Any]:
    """Inputs besides interactions: category paths as item features (LightFM), with their hash for the
    artifact version. ``constructor`` goes to the model's constructor; ``version`` into its version."""
    if not use_categories:
        return {}
    categories = item_categories(warehouse)
    digest = hashlib.sha256(json.dumps(sorted((k, sorted(v)) for k, v in categories.items())).encode())
    return {"constructor": {"item_features": categories},
            "version": {"item_features": digest.hexdigest()}}


def model_asset(name: str) -> dg.AssetsDefinition:
    """``models/<name>``: fit on the shared split, evaluate, store the artifact."""
    config_class = MODEL_CONFIGS[name]

    @dg.asset(name=name, key_prefix=["models"], group_name="models", kinds={"python", "pytorch"},
              deps=INTERACTION_DEPS + ([dg.AssetKey(["core", "product_categories"])] if name == "lightfm" else []),
              description=f"The {name} model fitted on core.interactions (all but each user's latest "
                          f"interaction), evaluated at k={EVAL_K} on the held-out ones; artifact in the model store.")
    @retry_transient_db_errors()
    def _asset(context: dg.AssetExecutionContext, config: config_class, warehouse: PostgresResource,  # type: ignore[valid-type]
               model_store: ModelStoreResource) -> dg.MaterializeResult:
        split = training_split(warehouse)
        params = model_params(name, config)
        extra = model_inputs(warehouse, getattr(config, "use_categories", False))
        return fit_and_evaluate(context, name, params, split, model_store, extra)

    return _asset


model_assets = [model_asset(name) for name in registry.MODEL_NAMES]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(["ml", "popular_products"], group_name="models", kinds={"python", "postgres"},
                     deps=INTERACTION_DEPS + [dg.AssetKey(["core", "products"])],
                     description="Products ranked by time-decayed, weighted popularity (the cold-start fallback)."),
        dg.AssetSpec(["ml", "popular_products_by_category"], group_name="models", kinds={"python", "postgres"},
                     deps=INTERACTION_DEPS + [dg.AssetKey(["core", "product_categories"])],
                     description="The same ranking within each category."),
    ],
)
@retry_transient_db_errors()
def popular_products(context: dg.AssetExecutionContext, config: PopularityConfig, warehouse: PostgresResource,
                     model_store: ModelStoreResource):
    """Popularity over all interactions, overall and per category; the model saved to the model store."""
    frame = interactions_frame(warehouse)
    interactions = Interactions.from_frame(frame)
    model = PopularityRecommender(half_life_days=config.half_life_days).fit(interactions)
    params = {"half_life_days": config.half_life_days}
    version = artifact_version(data_version(frame), params, CODE_VERSIONS["popularity"])
    location = model_store.save("popular_products", version, model.state_dict(),
                                {"params": params, "n_interactions": len(interactions)})
    items, scores = model.ranking()
    rows = [(int(item), rank, float(score), version)
            for rank, (item, score) in enumerate(zip(items.tolist(), scores.tolist(), strict=True), start=1)]
    by_category = [(int(category), int(item), rank, float(score), version)
                   for category, item, rank, score in model.ranking_by_category(
                       product_category_ids(warehouse), top=config.per_category)]
    with warehouse.connection() as conn:
        replace_table(
            conn, "ml.popular_products",
            columns=[("product_id", "bigint"), ("rank", "integer"),
                     ("score", "double precision"), ("model_version", "text")],
            rows=rows, primary_key=["product_id"], indexes=[["rank"]],
        )
        replace_table(
            conn, "ml.popular_products_by_category",
            columns=[("category_id", "bigint"), ("product_id", "bigint"), ("rank", "integer"),
                     ("score", "double precision"), ("model_version", "text")],
            rows=by_category, primary_key=["category_id", "rank"], indexes=[["product_id"]],
        )
    top = warehouse.read_dataframe(sql.SQL("""
        SELECT pp.rank, p.title, p.main_category, round(pp.score::numeric, 2) AS score
        FROM ml.popular_products pp JOIN core.products p USING (product_id)
        ORDER BY pp.rank LIMIT 10"""))
    yield dg.MaterializeResult(asset_key=["ml", "popular_products"], metadata={
        "model_version": version,
        "artifact": dg.MetadataValue.path(location),
        "n_interactions": len(interactions),
        "n_products": len(rows),
        "top_10": dg.MetadataValue.md(top.to_markdown(index=False)),
    })
    yield dg.MaterializeResult(asset_key=["ml", "popular_products_by_category"], metadata={
        "model_version": version,
        "rows": len(by_category),
        "categories": len({row[0] for row in by_category}),
    })


def product_category_ids(warehouse: PostgresResource) -> dict[int, list[int]]:
    return grouped_by_product(warehouse, "SELECT product_id, category_id FROM core.product_categories")
