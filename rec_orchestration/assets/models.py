"""Models over the core tables: every model of ``ml.registry``, evaluated, and popularity (the fallback).

``ml/training_round`` decides once per refresh whether the fits the last evaluation compared stand (the data
grew little since, they are young, the parameters are the same) or every model is fitted again. Each
``models/<name>`` asset then reuses its kept fit, or fits its model on the shared time-based split and
evaluates it (``ml/training.py``); an artifact of the same data, parameters and code is reused, not refitted.
``models/popularity`` fits and evaluates both popularity baselines, time-decayed ``popularity`` and plain
``popularity_plain`` (``registry.FITTED_WITH``). ``ml/model_evaluations`` (assets/evaluation.py) compares
them all. ``ml/popular_products`` refits the stronger baseline on the holdout (``ml/champion.py``) on every
interaction, unless the round kept the baselines it was made from: the cold-start fallback that publishing
serves.
"""

import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from rec_orchestration.db import reads
from rec_orchestration.db.tables import ensure_ml_schema, replace_table
from rec_orchestration.deployment import k8s_step_tags, model_profile
from rec_orchestration.ml import registry
from rec_orchestration.ml.artifacts import ModelStore, artifact_version
from rec_orchestration.ml.champion import BASELINES, stronger_baseline
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.plots import inline_curve, markdown_image
from rec_orchestration.ml.popularity import PopularityRecommender
from rec_orchestration.ml.training import (
    CODE_VERSIONS,
    EVAL_K,
    SERVING_MAX_AGE_HOURS,
    SERVING_MAX_GROWTH,
    TRAINING_CURVE,
    ModelInputs,
    category_features,
    data_version,
    fit_and_evaluate,
    fitted_with,
    keep_round,
    training_split,
)
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.retry import retry_transient_db_errors
from rec_orchestration.runs import REFRESH_POOL, materialized_model_versions, run_key

INTERACTION_DEPS = [dg.AssetKey(["core", "interactions"])]
TRAINING_ROUND = dg.AssetKey(["ml", "training_round"])


# ---------------------------------------------------------------------------------------------- configs

class TrainingRoundConfig(dg.Config):
    max_growth: float = Field(default=SERVING_MAX_GROWTH, ge=0.0, description=(
        "Keep every model's last evaluated fit, unrefitted, while the interactions grew by at most this share since "
        "they were fitted (0.05 = 5 %) and each model is fitted with the same parameters: the models stage then "
        "takes seconds. 0 fits the models again on every change of the data."))
    max_age_hours: float = Field(default=SERVING_MAX_AGE_HOURS, gt=0.0, description=(
        "Fit every model again, however little the data grew, once the oldest of the kept fits is this old."))


class PopularityConfig(dg.Config):
    half_life_days: float = Field(default=registry.DEFAULTS["popularity"]["half_life_days"], gt=0, description=(
        "Weight of an interaction halves every this many days (the decayed baseline; popularity_plain, "
        "evaluated beside it, does not decay)."))


class PopularProductsConfig(dg.Config):
    per_category: int = Field(default=50, ge=1,
                              description="Products kept per category in ml.popular_products_by_category.")


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
    max_minutes: float = Field(default=20.0, gt=0, description=(
        "Training time budget: no epoch starts that would end past it (the mean epoch so far says), so the "
        "hourly refresh ends within the hour on a CPU; the run log and the artifact say how many epochs ran."))


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
    devices: int = Field(default=1, ge=1, description="Devices (GPUs, or CPU processes) per node; more than one "
                                                      "in all needs strategy 'ddp'.")
    num_nodes: int = Field(default=1, ge=1, description=(
        "Machines taking part in a 'ddp' fit (Lightning's num_nodes). More than one needs a launcher that runs "
        "the step on every node and a checkpoint directory they share: a step of this pipeline runs on one "
        "machine, so keep 1 here unless you launch it so."))
    strategy: str = Field(default="auto", pattern="^(auto|ddp)$", description=(
        "'auto': one process; 'ddp': data-parallel on spawned processes, one per device, each training on "
        "its share of every epoch's batches."))


MODEL_CONFIGS: dict[str, type[dg.Config]] = {"popularity": PopularityConfig, "itemknn": ItemKNNConfig,
                                             "ease": EASEConfig, "lightfm": LightFMConfig,
                                             "lightgcn": LightGCNConfig}
# Config fields that are not constructor parameters of the model.
WIRING_FIELDS = ("per_category", "use_categories")


def model_params(name: str, config: dg.Config) -> dict[str, Any]:
    """The model's constructor parameters from its asset config (registry defaults fill the rest)."""
    params = {**registry.DEFAULTS.get(name, {}), **config.model_dump()}
    for key in WIRING_FIELDS:
        params.pop(key, None)
    return params


def run_model_settings(run_config: dict[str, Any]) -> dict[str, tuple[dict[str, Any], bool]]:
    """Evaluated model name -> the parameters and item-feature flag a run with ``run_config`` fits it with (its
    asset's config there, else the config's defaults); the models of registry.FITTED_WITH with their defaults."""
    ops = run_config.get("ops") or {}
    settings = {}
    for name in registry.MODEL_NAMES:
        given = (ops.get(dg.AssetKey(["models", name]).to_python_identifier()) or {}).get("config") or {}
        config = MODEL_CONFIGS[name](**given)
        settings[name] = (model_params(name, config), bool(getattr(config, "use_categories", False)))
        settings |= {other: (dict(registry.DEFAULTS.get(other, {})), False)
                     for other in registry.FITTED_WITH.get(name, ())}
    return settings


def model_inputs(warehouse: PostgresResource, use_categories: bool) -> ModelInputs:
    return category_features(reads.item_categories(warehouse)) if use_categories else ModelInputs()


# ---------------------------------------------------------------------------------------------- assets

def model_metadata(manifest: dict[str, Any], store: ModelStore, reused: bool) -> dict[str, Any]:
    import pandas as pd
    name, version = manifest["model_name"], manifest["version"]
    metrics = manifest["metrics"]
    table = pd.DataFrame([{"metric": key, "value": round(float(value), 4)} for key, value in metrics.items()])
    metadata: dict[str, Any] = {}
    if manifest.get("history"):  # shown in place in the UI; the full-size plot behind the link below
        metadata["training_curve_chart"] = dg.MetadataValue.md(inline_curve(manifest["history"], f"{name} training"))
        metadata["epochs"] = len(manifest["history"])
    metadata |= {
        "model_version": version,
        "reused_artifact": reused,
        "artifact": dg.MetadataValue.path(store.location(name, version)),
        "fit_seconds": manifest["fit_seconds"],
        "params": dg.MetadataValue.json(manifest["params"]),
        "split": dg.MetadataValue.json(manifest["split"]),
        "metrics": dg.MetadataValue.md(table.to_markdown(index=False)),
        f"ndcg@{EVAL_K}": float(metrics[f"ndcg@{EVAL_K}"]),
        "coverage": float(metrics["coverage"]),
    }
    if "warm_start_from" in manifest:  # trained from the previous artifact (ml.training.warm_start_source)
        metadata["warm_start_from"] = manifest["warm_start_from"]
        metadata["warm_chain"] = int(manifest["warm_chain"])
        metadata["warm_started"] = dg.MetadataValue.json(manifest.get("warm_started") or {})
    if "epochs_trained" in manifest:  # fewer than params' epochs after a warm start, early stopping or the budget
        metadata["epochs_trained"] = int(manifest["epochs_trained"])
    if manifest.get("budget_minutes") is not None:  # max_minutes, or a share of it for a warm start
        metadata["budget_minutes"] = float(manifest["budget_minutes"])
    if "device_used" in manifest:
        metadata["device"] = manifest["device_used"]
        metadata["seconds_per_epoch"] = float(manifest["seconds_per_epoch"])
    if store.has_file(name, version, TRAINING_CURVE):
        metadata["training_curve"] = dg.MetadataValue.md(
            markdown_image(store.read_file(name, version, TRAINING_CURVE), "training curve"))
    return metadata


@dg.asset(key=TRAINING_ROUND, group_name="models", kinds={"python", "postgres"}, pool=REFRESH_POOL,
          op_tags=k8s_step_tags("light"), deps=INTERACTION_DEPS,
          description="This refresh's decision for every model: keep the fits the last evaluation compared while the "
                      "interactions grew by at most max_growth since and they are younger than max_age_hours, or "
                      "fit them all on today's interactions (ml.training_rounds).")
@retry_transient_db_errors()
def training_round(context: dg.AssetExecutionContext, config: TrainingRoundConfig, warehouse: PostgresResource,
                   model_store: ModelStoreResource) -> dg.MaterializeResult:
    """One decision for all models, so that they stay evaluated on one split: a model's asset keeps its last
    evaluated fit only when this run's round kept them all (``ml.training.keep_round``). Reads the count of
    core.interactions, not its rows."""
    store = model_store.store()
    wanted = run_model_settings(context.run.run_config)
    versions = reads.last_evaluated_versions(warehouse)
    evaluated = {name: store.manifest(name, version) if store.exists(name, version) else None
                 for name, version in versions.items()}
    n_interactions = reads.interaction_count(warehouse)
    kept, why = keep_round(evaluated, wanted, n_interactions, max_growth=config.max_growth,
                           max_age_hours=config.max_age_hours, now=datetime.now(UTC))
    kept_versions = {name: versions[name] for name in wanted} if kept else {}
    context.log.info(("keeping every model's last evaluated fit: " if kept else "fitting the models: ") + why)
    with warehouse.connection() as conn:
        ensure_ml_schema(conn)
        conn.execute("""
            INSERT INTO ml.training_rounds (run_id, decided_at, kept, n_interactions, versions, why)
            VALUES (%s, now(), %s, %s, %s, %s)
            ON CONFLICT (run_id) DO UPDATE SET decided_at = EXCLUDED.decided_at, kept = EXCLUDED.kept,
                n_interactions = EXCLUDED.n_interactions, versions = EXCLUDED.versions, why = EXCLUDED.why""",
            (run_key(context), kept, n_interactions, json.dumps(kept_versions), why))
    return dg.MaterializeResult(metadata={"kept": kept, "why": why, "n_interactions": n_interactions,
                                          "versions": dg.MetadataValue.json(kept_versions)})


def kept_fit(round_: dict[str, Any] | None, name: str, params: dict[str, Any], item_features: bool,
             store: ModelStore) -> dict[str, Any] | None:
    """The manifest of ``name``'s fit that this run's training round kept, when it kept one with these
    parameters and inputs and its artifact is there; else None (fit as usual)."""
    if round_ is None or not round_["kept"] or (version := round_["versions"].get(name)) is None:
        return None
    if not store.exists(name, version):
        return None
    manifest = store.manifest(name, version)
    return manifest if fitted_with(manifest, params, item_features) else None


def model_asset(name: str) -> dg.AssetsDefinition:
    """``models/<name>``: fit on the shared split, evaluate, store the artifact."""
    config_class = MODEL_CONFIGS[name]

    fitted_with = registry.FITTED_WITH.get(name, ())
    also = f" With it, {', '.join(fitted_with)} (registry defaults), on the same split." if fitted_with else ""

    @dg.asset(name=name, key_prefix=["models"], group_name="models", kinds={"python", "pytorch"}, pool=REFRESH_POOL,
              op_tags=k8s_step_tags(model_profile(name)),
              deps=INTERACTION_DEPS + [TRAINING_ROUND]
              + ([dg.AssetKey(["core", "product_categories"])] if name == "lightfm" else []),
              description=f"The {name} model fitted on core.interactions (all but each user's latest "
                          f"interaction), evaluated at k={EVAL_K} on the held-out ones; artifact in the model "
                          f"store.{also}")
    @retry_transient_db_errors()
    def _asset(context: dg.AssetExecutionContext, config: config_class, warehouse: PostgresResource,  # type: ignore[valid-type]
               model_store: ModelStoreResource) -> dg.MaterializeResult:
        store = model_store.store()
        params, use_categories = model_params(name, config), bool(getattr(config, "use_categories", False))
        round_ = reads.training_round(warehouse, run_key(context))
        wanted = {name: (params, use_categories)} | {other: (dict(registry.DEFAULTS.get(other, {})), False)
                                                      for other in fitted_with}
        kept = {model: kept_fit(round_, model, *settings, store) for model, settings in wanted.items()}
        if round_ is not None and round_["kept"] and (missing := [m for m, fit in kept.items() if fit is None]):
            # Fitting it alone would put it on another split than the kept models: the evaluation would refuse.
            raise dg.Failure(f"this run's training round kept the last evaluated fits, but {', '.join(missing)}'s "
                             "is gone or was made with other parameters: materialize ml/training_round and the "
                             "models again")
        split = None
        if all(manifest is not None for manifest in kept.values()):
            manifest, reused = kept[name], True
            store.set_latest(name, manifest["version"])
            context.log.info(f"{name} {manifest['version']}: kept by this run's training round ({round_['why']})")
        else:
            split = training_split(reads.interactions_frame(warehouse))
            inputs = model_inputs(warehouse, use_categories)
            manifest, reused = fit_and_evaluate(name, params, split, store, inputs, progress=context.log.info)
            if reused:
                context.log.info(f"{name} {manifest['version']}: data, parameters and code unchanged; reusing the "
                                 "artifact")
        metadata = model_metadata(manifest, store, reused=reused) | {"kept_by_round": split is None}
        for other in fitted_with:  # e.g. popularity_plain beside popularity: its registry defaults, the same split
            if split is None:
                other_manifest, other_reused = kept[other], True
                store.set_latest(other, other_manifest["version"])
            else:
                other_manifest, other_reused = fit_and_evaluate(other, wanted[other][0], split, store)
            metadata |= {f"{other}_version": other_manifest["version"],
                         f"{other}_params": dg.MetadataValue.json(other_manifest["params"]),
                         f"{other}_ndcg@{EVAL_K}": float(other_manifest["metrics"][f"ndcg@{EVAL_K}"])}
            metadata["reused_artifact"] = bool(metadata["reused_artifact"]) and other_reused
        return dg.MaterializeResult(metadata=metadata)

    return _asset


model_assets = [model_asset(name) for name in registry.MODEL_NAMES]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(["ml", "popular_products"], group_name="models", kinds={"python", "postgres"},
                     deps=INTERACTION_DEPS + [dg.AssetKey(["core", "products"]), dg.AssetKey(["models", "popularity"])],
                     description="Products ranked by weighted popularity, time-decayed or plain, whichever had "
                                 "the higher held-out nDCG in models/popularity (the cold-start fallback)."),
        dg.AssetSpec(["ml", "popular_products_by_category"], group_name="models", kinds={"python", "postgres"},
                     deps=INTERACTION_DEPS + [dg.AssetKey(["core", "product_categories"]),
                                              dg.AssetKey(["models", "popularity"])],
                     description="The same ranking within each category."),
    ],
    pool=REFRESH_POOL,
    op_tags=k8s_step_tags("light"),
)
@retry_transient_db_errors()
def popular_products(context: dg.AssetExecutionContext, config: PopularProductsConfig, warehouse: PostgresResource,
                     model_store: ModelStoreResource):
    """The stronger popularity baseline on the holdout refitted with its parameters on every interaction,
    overall and per category; the model saved to the model store. Both variants are the artifacts this
    run's ``models/popularity`` materialized (else its latest materialization), compared by the rule of
    ``ml/champion.py`` as the gate compares them."""
    store = model_store.store()
    evaluated = {name: store.manifest(name, version)
                 for name, version in materialized_model_versions(context, BASELINES).items()}
    variant = stronger_baseline(evaluated, EVAL_K)
    versions = {name: manifest["version"] for name, manifest in evaluated.items()}
    if (kept := kept_ranking(warehouse, store, reads.training_round(warehouse, run_key(context)), versions,
                             config.per_category)) is not None:
        context.log.info(f"keeping ml.popular_products {kept['version']}: this run's training round kept the "
                         "baselines it was chosen from")
        for key in (["ml", "popular_products"], ["ml", "popular_products_by_category"]):
            yield dg.MaterializeResult(asset_key=key, metadata={
                "model_version": kept["version"], "variant": kept["variant"], "kept_by_round": True,
                "n_interactions": int(kept["n_interactions"])})
        return
    frame = reads.interactions_frame(warehouse)
    if (evaluated_on := evaluated[variant]["data_version"]) != data_version(frame):
        context.log.warning(f"the popularity baselines were evaluated on other data ({evaluated_on}); {variant} was "
                            "the stronger there. Materialize models/popularity to re-evaluate.")
    interactions = Interactions.from_frame(frame)
    params = dict(evaluated[variant]["params"])
    model = PopularityRecommender(**params).fit(interactions)  # both variants are this class
    version = artifact_version(data_version(frame), params, CODE_VERSIONS[variant])
    held_out = {name: float(manifest["metrics"][f"ndcg@{EVAL_K}"]) for name, manifest in evaluated.items()}
    location = store.save("popular_products", version, model.state_dict(), {
        "params": params, "n_interactions": len(interactions), "variant": variant,
        "per_category": config.per_category, "chosen_by": {"k": EVAL_K, "ndcg": held_out, "versions": versions}})
    items, scores = model.ranking()
    rows = [(int(item), rank, float(score), version)
            for rank, (item, score) in enumerate(zip(items.tolist(), scores.tolist(), strict=True), start=1)]
    by_category = [(int(category), int(item), rank, float(score), version)
                   for category, item, rank, score in model.ranking_by_category(
                       reads.product_category_ids(warehouse), top=config.per_category)]
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
    yield dg.MaterializeResult(asset_key=["ml", "popular_products"], metadata={
        "model_version": version,
        "variant": variant,
        "kept_by_round": False,
        "params": dg.MetadataValue.json(params),
        **{f"{name}_ndcg@{EVAL_K}": ndcg for name, ndcg in held_out.items()},
        "artifact": dg.MetadataValue.path(location),
        "n_interactions": len(interactions),
        "n_products": len(rows),
        "top_10": dg.MetadataValue.md(reads.top_popular_products(warehouse, 10).to_markdown(index=False)),
    })
    yield dg.MaterializeResult(asset_key=["ml", "popular_products_by_category"], metadata={
        "model_version": version,
        "variant": variant,
        "rows": len(by_category),
        "categories": len({row[0] for row in by_category}),
    })


def kept_ranking(warehouse: PostgresResource, store: ModelStore, round_: dict[str, Any] | None,
                 versions: dict[str, str], per_category: int) -> dict[str, Any] | None:
    """The manifest of the popularity ranking in ml.popular_products when this run's training round kept the
    models and the ranking was made from the very baseline fits evaluated now, with ``per_category``: it then
    stands as it is (made from every interaction at most the round's growth ago); else None."""
    if round_ is None or not round_["kept"] or not all(
            warehouse.table_exists(table) for table in ("ml.popular_products", "ml.popular_products_by_category")):
        return None
    version = warehouse.fetch_value("SELECT model_version FROM ml.popular_products LIMIT 1")
    if version is None or not store.exists("popular_products", version):
        return None
    manifest = store.manifest("popular_products", version)
    if manifest.get("chosen_by", {}).get("versions") != versions or manifest.get("per_category") != per_category:
        return None
    return manifest
