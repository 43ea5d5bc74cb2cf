"""Offline evaluation: every model's metrics side by side, a champion, and the gate before publishing.

``ml/model_evaluations`` reads the artifact of each model that this run's model assets materialized (their
versions from Dagster's event log, not the store's ``LATEST`` pointers; their manifests carry the metrics
measured on the shared time-based split), records them per model version in ``ml.model_evaluations``,
picks the champion (``ml/champion.py``) into ``ml.model_champions``, and shows a metrics table and a
comparison plot in the UI. The blocking check ``champion_beats_popularity`` stops publishing when the
champion is not better than the stronger of the two popularity baselines (time-decayed ``popularity``,
plain ``popularity_plain``) on the holdout; ``ml.model_champions.baseline_name`` records which one it was.
"""

import json
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from rec_orchestration.db import reads
from rec_orchestration.db.tables import ensure_ml_schema
from rec_orchestration.deployment import k8s_step_tags
from rec_orchestration.failpoints import failpoint
from rec_orchestration.ml import registry
from rec_orchestration.ml.champion import DEFAULT_BASELINE, choose_champion, require_same_data
from rec_orchestration.ml.plots import inline_bars, markdown_image, metric_comparison
from rec_orchestration.ml.training import (
    EVAL_K,
    SERVING_MAX_AGE_HOURS,
    SERVING_MAX_GROWTH,
    ModelInputs,
    category_features,
    keep_deployed,
    refit_on_everything,
)
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.retry import retry_transient_db_errors
from rec_orchestration.runs import REFRESH_POOL, approved_champion, materialized_model_versions, run_key


class EvaluationConfig(dg.Config):
    min_lift: float = Field(default=0.0, ge=0.0, description=(
        "The champion must beat the stronger popularity baseline's nDCG@k by more than this fraction "
        "(0.05 = 5 %) to be published."))


class ChampionConfig(dg.Config):
    max_growth: float = Field(default=SERVING_MAX_GROWTH, ge=0.0, description=(
        "Keep serving the champion's fit on every interaction while the interactions grew by at most this share "
        "since it was fitted (0.05 = 5 %), the same model with the same parameters: the scoring then rescores only "
        "the users whose histories changed. 0 refits on every change of the data."))
    max_age_hours: float = Field(default=SERVING_MAX_AGE_HOURS, gt=0.0, description=(
        "Refit, however little the data grew, once the served fit is this old."))


@dg.asset(
    key=["ml", "model_evaluations"],
    group_name="evaluation",
    pool=REFRESH_POOL,
    op_tags=k8s_step_tags("light"),
    kinds={"python", "postgres"},
    deps=[dg.AssetKey(["models", name]) for name in registry.MODEL_NAMES],  # models/popularity: both baselines
)
@retry_transient_db_errors()
def model_evaluations(context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: PostgresResource,
                      model_store: ModelStoreResource) -> dg.MaterializeResult:
    """Each model's metrics at k on the held-out latest interactions, per version; the champion chosen."""
    import pandas as pd
    store = model_store.store()
    versions = materialized_model_versions(context, registry.EVALUATED_NAMES)
    manifests = {name: store.manifest(name, version) for name, version in versions.items()}
    try:
        require_same_data(manifests)
    except ValueError as error:
        raise dg.Failure(str(error)) from error
    choice = choose_champion(manifests, EVAL_K, config.min_lift)
    failpoint("evaluation.before_record")
    now = datetime.now(UTC)
    rows = []
    for name, manifest in manifests.items():
        m = manifest["metrics"]
        rows.append((name, manifest["version"], EVAL_K, m[f"precision@{EVAL_K}"], m[f"recall@{EVAL_K}"],
                     m[f"ndcg@{EVAL_K}"], m["map"], m["coverage"], int(m["users"]), manifest["fit_seconds"],
                     manifest["data_version"], json.dumps(manifest["split"]), json.dumps(manifest["params"]), now))
    with warehouse.connection() as conn:
        ensure_ml_schema(conn)
        with conn.cursor() as cur:
            cur.executemany("""
                INSERT INTO ml.model_evaluations VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (model_name, model_version, k) DO UPDATE SET evaluated_at = EXCLUDED.evaluated_at""",
                rows)
        conn.execute("""
            INSERT INTO ml.model_champions (run_id, chosen_at, model_name, model_version, k, ndcg_at_k,
                                              baseline_name, baseline_version, baseline_ndcg_at_k, required_lift,
                                              beats_baseline)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (run_id) DO UPDATE SET chosen_at = EXCLUDED.chosen_at, model_name = EXCLUDED.model_name,
                model_version = EXCLUDED.model_version, ndcg_at_k = EXCLUDED.ndcg_at_k,
                baseline_name = EXCLUDED.baseline_name, baseline_version = EXCLUDED.baseline_version,
                baseline_ndcg_at_k = EXCLUDED.baseline_ndcg_at_k,
                required_lift = EXCLUDED.required_lift, beats_baseline = EXCLUDED.beats_baseline,
                deployed_version = NULL""",
            (run_key(context), now, choice.model_name, choice.model_version, EVAL_K, choice.ndcg,
             choice.baseline_name, choice.baseline_version, choice.baseline_ndcg, choice.required_lift,
             choice.beats_baseline))
    table = pd.DataFrame([{"model": name, "version": m["version"],
                           **{key: round(float(value), 4) for key, value in m["metrics"].items() if key != "users"},
                           "fit_s": m["fit_seconds"]}
                          for name, m in manifests.items()]).sort_values(f"ndcg@{EVAL_K}", ascending=False)
    keys = [f"precision@{EVAL_K}", f"recall@{EVAL_K}", f"ndcg@{EVAL_K}", "map", "coverage"]
    plot = metric_comparison({name: m["metrics"] for name, m in manifests.items()}, keys,
                             f"held-out latest interaction per user, k={EVAL_K}")
    ndcg = {name: float(m["metrics"][f"ndcg@{EVAL_K}"]) for name, m in manifests.items()}
    return dg.MaterializeResult(metadata={
        # Shown in place in the UI (red: the champion); every model's nDCG and coverage as numbers, so the
        # UI's plots over materializations work; the full comparison behind its link.
        f"ndcg@{EVAL_K}_chart": dg.MetadataValue.md(
            inline_bars(ndcg, f"nDCG@{EVAL_K}, held-out latest interaction", highlight=choice.model_name)),
        **{f"{name}_ndcg@{EVAL_K}": value for name, value in ndcg.items()},
        **{f"{name}_coverage": float(m["metrics"]["coverage"]) for name, m in manifests.items()},
        "champion": f"{choice.model_name} {choice.model_version}",
        f"champion_ndcg@{EVAL_K}": choice.ndcg,
        "baseline": f"{choice.baseline_name} {choice.baseline_version}",
        f"baseline_ndcg@{EVAL_K}": choice.baseline_ndcg,
        "beats_baseline": choice.beats_baseline,
        "metrics": dg.MetadataValue.md(table.to_markdown(index=False)),
        "comparison": dg.MetadataValue.md(markdown_image(plot, "metric comparison")),
    })


@dg.asset_check(asset=model_evaluations, blocking=True,
                description="The champion beats the stronger popularity baseline on the holdout, time-decayed or "
                            "plain (by more than min_lift); otherwise nothing downstream publishes it.")
def champion_beats_popularity(context: dg.AssetCheckExecutionContext,
                              warehouse: PostgresResource) -> dg.AssetCheckResult:
    row = reads.champion_row(warehouse, run_key(context))
    if row is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "this run chose no champion"})
    return dg.AssetCheckResult(passed=bool(row["beats_baseline"]), metadata={
        "champion": f"{row['model_name']} {row['model_version']}",
        f"champion_ndcg@{EVAL_K}": float(row["ndcg_at_k"]),
        "baseline": row.get("baseline_name") or DEFAULT_BASELINE,  # the stronger one, compared with
        "baseline_version": row["baseline_version"],
        f"baseline_ndcg@{EVAL_K}": float(row["baseline_ndcg_at_k"]),
        "required_lift": float(row["required_lift"]),
    })


@dg.asset(
    key=["models", "champion"],
    group_name="evaluation",
    pool=REFRESH_POOL,
    op_tags=k8s_step_tags("training"),
    kinds={"python", "pytorch"},
    deps=[model_evaluations],
)
@retry_transient_db_errors()
def champion(context: dg.AssetExecutionContext, config: ChampionConfig, warehouse: PostgresResource,
             model_store: ModelStoreResource) -> dg.MaterializeResult:
    """The champion refitted, with the parameters it was evaluated with, on every interaction (its
    evaluation held out each user's latest one): what ``recs/user_recommendations`` publishes. The fit already
    served is kept instead while the data grew by at most ``max_growth`` since and it is younger than
    ``max_age_hours`` (``ml.training.keep_deployed``): the metadata says which, and why."""
    from datetime import UTC, datetime

    row = approved_champion(context, warehouse)
    store = model_store.store()
    evaluated = store.manifest(row["model_name"], row["model_version"])
    served = reads.deployed_champion(warehouse, other_than_run=row["run_id"])
    served_manifest = (store.manifest(served["model_name"], served["deployed_version"])
                       if served is not None and store.exists(served["model_name"], served["deployed_version"])
                       else None)
    keep, why = keep_deployed(served_manifest, evaluated, reads.interaction_count(warehouse),
                              max_growth=config.max_growth, max_age_hours=config.max_age_hours, now=datetime.now(UTC))
    if keep:
        context.log.info(f"keeping the served fit {served_manifest['version']}: {why}")
        manifest, reused = served_manifest, True
    else:
        context.log.info(f"refitting {row['model_name']} on every interaction: {why}")
        # The refit gets the inputs the evaluated fit had: category features where it used them.
        inputs = (category_features(reads.item_categories(warehouse)) if evaluated.get("item_features")
                  else ModelInputs())
        manifest, reused = refit_on_everything(evaluated, reads.interactions_frame(warehouse), store, inputs,
                                               progress=context.log.info)
    with warehouse.connection() as conn:
        conn.execute("UPDATE ml.model_champions SET deployed_version = %s WHERE run_id = %s",
                     (manifest["version"], row["run_id"]))
    return dg.MaterializeResult(metadata={
        "model": row["model_name"],
        "model_version": manifest["version"],
        "evaluated_version": row["model_version"],
        "reused_artifact": reused,
        "kept_served_fit": keep,  # within max_growth and max_age_hours of the fit served before: not refitted
        "why": why,
        "refit_of": manifest.get("refit_of", ""),  # the evaluated fit it was refitted from
        # The artifact the refit continued from (LightFM, LightGCN: the evaluated fit), if any.
        "warm_start_from": manifest.get("warm_start_from", ""),
        "n_interactions": manifest["n_interactions"],
        "fit_seconds": manifest["fit_seconds"],
        f"evaluated_ndcg@{EVAL_K}": float(evaluated["metrics"][f"ndcg@{EVAL_K}"]),
        "artifact": dg.MetadataValue.path(store.location(row["model_name"], manifest["version"])),
    })
