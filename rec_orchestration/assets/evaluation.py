"""Offline evaluation: every model's metrics side by side, a champion, and the gate before publishing.

``ml/model_evaluations`` reads the latest artifact of each model (their manifests carry the metrics
measured on the shared time-based split), records them per model version in ``ml.model_evaluations``,
picks the champion (highest nDCG@k) into ``ml.model_champions``, and shows a metrics table and a
comparison plot in the UI. The blocking check ``champion_beats_popularity`` stops publishing when the
champion is not better than the popularity baseline.
"""

import json
import time
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
from psycopg import sql
from pydantic import Field

from rec_orchestration.assets.models import (
    CODE_VERSIONS,
    EVAL_K,
    data_version,
    interactions_frame,
    model_inputs,
)
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.resources.model_store import artifact_version
from rec_orchestration.ml import registry
from rec_orchestration.ml.plots import markdown_image, metric_comparison
from rec_orchestration.resources.model_store import ModelStoreResource
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.resources.roles import ensure_roles
from rec_orchestration.retry import retry_transient_db_errors

BASELINE = "popularity"
EVALUATIONS_DDL = sql.SQL("""
    CREATE TABLE IF NOT EXISTS ml.model_evaluations (
        model_name     text NOT NULL,
        model_version  text NOT NULL,
        k              integer NOT NULL,
        precision_at_k double precision NOT NULL,
        recall_at_k    double precision NOT NULL,
        ndcg_at_k      double precision NOT NULL,
        map            double precision NOT NULL,
        coverage       double precision NOT NULL,
        users          integer NOT NULL,
        fit_seconds    double precision NOT NULL,
        data_version   text NOT NULL,
        split          jsonb NOT NULL,
        params         jsonb NOT NULL,
        evaluated_at   timestamptz NOT NULL,
        PRIMARY KEY (model_name, model_version, k)
    )""")
CHAMPIONS_DDL = sql.SQL("""
    CREATE TABLE IF NOT EXISTS ml.model_champions (
        run_id              text PRIMARY KEY,
        chosen_at           timestamptz NOT NULL,
        model_name          text NOT NULL,
        model_version       text NOT NULL,
        k                   integer NOT NULL,
        ndcg_at_k           double precision NOT NULL,
        baseline_version    text NOT NULL,
        baseline_ndcg_at_k  double precision NOT NULL,
        required_lift       double precision NOT NULL,
        beats_baseline      boolean NOT NULL,
        deployed_version    text
    )""")
CHAMPIONS_MIGRATION = sql.SQL("ALTER TABLE ml.model_champions ADD COLUMN IF NOT EXISTS deployed_version text")


def move_history_to_ml(conn) -> None:
    """An earlier layout kept the evaluation history in recs (readable by downstream apps): move it to
    ml, as ``legacy_<name>`` when ml has the table already."""
    for name in ("model_evaluations", "model_champions"):
        legacy, current = conn.execute("SELECT to_regclass(%s), to_regclass(%s)",
                                       (f"recs.{name}", f"ml.{name}")).fetchone()
        if legacy is None:
            continue
        if current is not None:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("ml", f"legacy_{name}")))
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier("recs", name),
                                                                       sql.Identifier(f"legacy_{name}")))
            name = f"legacy_{name}"
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA ml").format(sql.Identifier("recs", name)))


def run_key(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    """The run a champion belongs to: a retry of a run keeps its original run's id."""
    run = context.run
    return run.root_run_id or run.run_id


def champion_row(warehouse: PostgresResource, run_id: str | None) -> dict | None:
    """The champion chosen by run ``run_id``, or (None) the latest chosen by any run; None if none."""
    if not warehouse.table_exists("ml.model_champions"):
        return None
    if run_id is None:
        frame = warehouse.read_dataframe(sql.SQL("SELECT * FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1"))
    else:
        frame = warehouse.read_dataframe(sql.SQL("SELECT * FROM ml.model_champions WHERE run_id = %s"), (run_id,))
    return None if frame.empty else frame.iloc[0].to_dict()


class EvaluationConfig(dg.Config):
    min_lift: float = Field(default=0.0, ge=0.0, description=(
        "The champion must beat popularity's nDCG@k by more than this fraction (0.05 = 5 %) to be published."))


def latest_manifests(model_store: ModelStoreResource) -> dict[str, dict]:
    manifests = {}
    for name in registry.MODEL_NAMES:
        version = model_store.latest(name)
        if version is None:
            raise dg.Failure(f"model {name} has no artifact yet: materialize models/{name} first")
        manifests[name] = model_store.manifest(name, version)
    data_versions = {m["data_version"] for m in manifests.values()}
    if len(data_versions) > 1:
        raise dg.Failure("the models' latest artifacts were fitted on different data; materialize the models "
                         f"together so their metrics compare: {sorted(data_versions)}")
    return manifests


@dg.asset(
    key=["ml", "model_evaluations"],
    group_name="evaluation",
    kinds={"python", "postgres"},
    deps=[dg.AssetKey(["models", name]) for name in registry.MODEL_NAMES],
)
@retry_transient_db_errors()
def model_evaluations(context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: PostgresResource,
                      model_store: ModelStoreResource) -> dg.MaterializeResult:
    """Each model's metrics at k on the held-out latest interactions, per version; the champion chosen."""
    manifests = latest_manifests(model_store)
    now = datetime.now(UTC)
    rows = []
    for name, manifest in manifests.items():
        m = manifest["metrics"]
        rows.append((name, manifest["version"], EVAL_K, m[f"precision@{EVAL_K}"], m[f"recall@{EVAL_K}"],
                     m[f"ndcg@{EVAL_K}"], m["map"], m["coverage"], int(m["users"]), manifest["fit_seconds"],
                     manifest["data_version"], json.dumps(manifest["split"]), json.dumps(manifest["params"]), now))
    best = max(manifests, key=lambda name: (manifests[name]["metrics"][f"ndcg@{EVAL_K}"], name != BASELINE))
    champion_ndcg = manifests[best]["metrics"][f"ndcg@{EVAL_K}"]
    baseline_ndcg = manifests[BASELINE]["metrics"][f"ndcg@{EVAL_K}"]
    beats = best != BASELINE and champion_ndcg > baseline_ndcg * (1.0 + config.min_lift)
    run_id = run_key(context)
    with warehouse.connection() as conn:
        ensure_roles(conn)
        move_history_to_ml(conn)
        conn.execute(EVALUATIONS_DDL)
        conn.execute(CHAMPIONS_DDL)
        conn.execute(CHAMPIONS_MIGRATION)
        with conn.cursor() as cur:
            cur.executemany("""
                INSERT INTO ml.model_evaluations VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (model_name, model_version, k) DO UPDATE SET evaluated_at = EXCLUDED.evaluated_at""",
                rows)
        conn.execute("""
            INSERT INTO ml.model_champions (run_id, chosen_at, model_name, model_version, k, ndcg_at_k,
                                              baseline_version, baseline_ndcg_at_k, required_lift, beats_baseline)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (run_id) DO UPDATE SET chosen_at = EXCLUDED.chosen_at, model_name = EXCLUDED.model_name,
                model_version = EXCLUDED.model_version, ndcg_at_k = EXCLUDED.ndcg_at_k,
                baseline_version = EXCLUDED.baseline_version, baseline_ndcg_at_k = EXCLUDED.baseline_ndcg_at_k,
                required_lift = EXCLUDED.required_lift, beats_baseline = EXCLUDED.beats_baseline,
                deployed_version = NULL""",
            (run_id, now, best, manifests[best]["version"], EVAL_K, champion_ndcg,
             manifests[BASELINE]["version"], baseline_ndcg, config.min_lift, beats))
    table = pd.DataFrame([{"model": name, "version": m["version"],
                           **{key: round(float(value), 4) for key, value in m["metrics"].items() if key != "users"},
                           "fit_s": m["fit_seconds"]}
                          for name, m in manifests.items()]).sort_values(f"ndcg@{EVAL_K}", ascending=False)
    keys = [f"precision@{EVAL_K}", f"recall@{EVAL_K}", f"ndcg@{EVAL_K}", "map", "coverage"]
    plot = metric_comparison({name: m["metrics"] for name, m in manifests.items()}, keys,
                             f"held-out latest interaction per user, k={EVAL_K}")
    return dg.MaterializeResult(metadata={
        "champion": f"{best} {manifests[best]['version']}",
        f"champion_ndcg@{EVAL_K}": float(champion_ndcg),
        f"popularity_ndcg@{EVAL_K}": float(baseline_ndcg),
        "beats_popularity": beats,
        "metrics": dg.MetadataValue.md(table.to_markdown(index=False)),
        "comparison": dg.MetadataValue.md(markdown_image(plot, "metric comparison")),
    })


@dg.asset_check(asset=model_evaluations, blocking=True,
                description="The champion beats the popularity baseline (by more than min_lift); otherwise "
                            "nothing downstream publishes it.")
def champion_beats_popularity(context: dg.AssetCheckExecutionContext,
                              warehouse: PostgresResource) -> dg.AssetCheckResult:
    row = champion_row(warehouse, run_key(context))
    if row is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "this run chose no champion"})
    return dg.AssetCheckResult(passed=bool(row["beats_baseline"]), metadata={
        "champion": f"{row['model_name']} {row['model_version']}",
        f"champion_ndcg@{EVAL_K}": float(row["ndcg_at_k"]),
        f"popularity_ndcg@{EVAL_K}": float(row["baseline_ndcg_at_k"]),
        "required_lift": float(row["required_lift"]),
    })


def approved_champion(context: dg.AssetExecutionContext, warehouse: PostgresResource) -> dict:
    """The champion this run chose (its blocking check passed, or the caller would not run); when this run
    chose none, the latest one, and only if it beat popularity."""
    row = champion_row(warehouse, run_key(context)) or champion_row(warehouse, None)
    if row is None:
        raise dg.Failure("no champion model yet: materialize ml/model_evaluations first")
    if not row["beats_baseline"]:
        raise dg.Failure(
            f"the latest champion, {row['model_name']} {row['model_version']} (nDCG@{row['k']} "
            f"{row['ndcg_at_k']:.4f}), does not beat popularity ({row['baseline_ndcg_at_k']:.4f}, required lift "
            f"{row['required_lift']}): not publishing it; the live recommendations stay as they are")
    return row


@dg.asset(
    key=["models", "champion"],
    group_name="evaluation",
    kinds={"python", "pytorch"},
    deps=[model_evaluations],
)
@retry_transient_db_errors()
def champion(context: dg.AssetExecutionContext, warehouse: PostgresResource,
             model_store: ModelStoreResource) -> dg.MaterializeResult:
    """The champion refitted, with the parameters it was evaluated with, on every interaction (its
    evaluation held out each user's latest one): what ``recs/user_recommendations`` publishes."""
    row = approved_champion(context, warehouse)
    name, evaluated_version = row["model_name"], row["model_version"]
    evaluated = model_store.manifest(name, evaluated_version)
    frame = interactions_frame(warehouse)
    frame_version = data_version(frame)
    inputs = model_inputs(warehouse, evaluated.get("item_features", False))
    version = artifact_version(frame_version, {**evaluated["params"], **inputs.get("version", {})},
                               f"{CODE_VERSIONS[name]}/all-interactions")
    reused = model_store.exists(name, version)
    if not reused:
        started = time.perf_counter()
        model = registry.build(name, **evaluated["params"], **inputs.get("constructor", {}))
        model.fit(Interactions.from_frame(frame))
        model_store.save(name, version, model.state_dict(), {
            "params": evaluated["params"], "refit_of": evaluated_version, "metrics": evaluated["metrics"],
            "data_version": frame_version, "n_interactions": len(frame),
            "fit_seconds": round(time.perf_counter() - started, 3)})
    with warehouse.connection() as conn:
        conn.execute("UPDATE ml.model_champions SET deployed_version = %s WHERE run_id = %s",
                     (version, row["run_id"]))
    manifest = model_store.manifest(name, version)
    return dg.MaterializeResult(metadata={
        "model": name,
        "model_version": version,
        "evaluated_version": evaluated_version,
        "reused_artifact": reused,
        "n_interactions": manifest["n_interactions"],
        "fit_seconds": manifest["fit_seconds"],
        f"evaluated_ndcg@{EVAL_K}": float(evaluated["metrics"][f"ndcg@{EVAL_K}"]),
        "artifact": dg.MetadataValue.path(model_store.location(name, version)),
    })
