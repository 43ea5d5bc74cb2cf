"""The modelling stage through Dagster on the generated sample: similarity, every model, evaluation, gate
(against the stronger of the two popularity baselines), and the fallback that gate names."""

import base64
import io
import json

import dagster as dg
import numpy as np
import psycopg
import pytest
import torch

from rec_orchestration import settings
from rec_orchestration.db.tables import packaged_sql
from rec_orchestration.ml import registry
from rec_orchestration.ml.champion import BASELINES
from tests.support import QUICK_MODELS, assert_success, materialize_everything, query, scalar


@pytest.fixture(scope="module")
def trained(module_warehouse_env):
    db, workdir = module_warehouse_env
    result = materialize_everything()
    assert_success(result)
    return db, result


def test_every_model_is_evaluated_on_the_same_time_split_and_a_champion_published(trained):
    db, result = trained
    rows = query(db, """SELECT model_name, ndcg_at_k, precision_at_k, recall_at_k, map, coverage, users,
                               split->>'kind', data_version
                        FROM ml.model_evaluations ORDER BY model_name""")
    assert [row[0] for row in rows] == sorted(registry.EVALUATED_NAMES)   # both popularity baselines too
    assert {row[7] for row in rows} == {"time"}
    assert len({row[8] for row in rows}) == 1                  # one data version: the metrics compare
    users = scalar(db, "SELECT count(*) FROM core.users u WHERE (SELECT count(*) FROM core.interactions i "
                       "WHERE i.user_id = u.user_id) >= 3")
    assert {row[6] for row in rows} == {users}                 # every user with enough history evaluated
    for name, ndcg, precision, recall, map_, coverage, *_ in rows:
        assert 0 <= ndcg <= 1 and 0 <= precision <= 1 and 0 <= recall <= 1 and 0 <= map_ <= 1, name
        assert 0 < coverage <= 1, name
    by_name = {row[0]: row[1] for row in rows}
    stronger = max(BASELINES, key=lambda baseline: by_name[baseline])
    # The sample plants per-user category tastes: personalised models must find them (beat decayed
    # popularity; the quickly trained LightGCN need not beat the stronger baseline, the champion must).
    for name in registry.MODEL_NAMES:
        if name not in BASELINES:
            assert by_name[name] > by_name["popularity"], (name, by_name)

    champion = query(db, """SELECT model_name, ndcg_at_k, baseline_name, baseline_ndcg_at_k, beats_baseline,
                                   baseline_version FROM ml.model_champions""")
    assert len(champion) == 1
    name, ndcg, baseline_name, baseline, beats, baseline_version = champion[0]
    assert ndcg == max(by_name.values()) and name not in BASELINES and beats
    # Compared with the stronger popularity baseline, time-decayed or plain.
    assert (baseline_name, baseline) == (stronger, by_name[stronger])
    assert baseline_version == scalar(db, "SELECT model_version FROM ml.model_evaluations WHERE model_name = %s",
                                      (stronger,))
    published = {row[0] for row in query(db, "SELECT DISTINCT model_name FROM recs.user_recommendations")}
    assert name in published
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["champion_beats_popularity"].passed is True
    gate = checks["champion_beats_popularity"].metadata
    assert gate["baseline"].value == stronger and gate["baseline_version"].value == baseline_version
    assert gate["baseline_ndcg@10"].value == baseline
    evaluation = query(db, "SELECT evaluation FROM recs.recommendation_runs WHERE is_live")[0][0]
    assert (evaluation["baseline_name"], evaluation["baseline_ndcg_at_k"]) == (stronger, baseline)


def test_the_fallback_is_the_stronger_popularity_baseline_refitted_on_every_interaction(trained):
    db, result = trained
    baseline_name = scalar(db, "SELECT baseline_name FROM ml.model_champions")
    version = scalar(db, "SELECT DISTINCT model_version FROM ml.popular_products")
    manifest = json.loads((settings.model_store_dir() / "popular_products" / version / "manifest.json").read_text())
    assert manifest["variant"] == baseline_name
    assert manifest["n_interactions"] == scalar(db, "SELECT count(*) FROM core.interactions")
    evaluated = dict(query(db, "SELECT model_name, params FROM ml.model_evaluations WHERE model_name = ANY(%s)",
                           (list(BASELINES),)))
    assert manifest["params"] == evaluated[baseline_name]
    assert evaluated["popularity_plain"] == {"half_life_days": None}
    # What cold-start users get is that ranking, served as popularity.
    assert query(db, "SELECT DISTINCT model_version FROM recs.popular_products") == [(version,)]
    assert query(db, "SELECT DISTINCT model_version FROM recs.user_recommendations WHERE model_name = 'popularity'"
                 ) in ([(version,)], [])
    materializations = {tuple(e.asset_key.path): e.step_materialization_data.materialization.metadata
                        for e in result.get_asset_materialization_events()}
    assert materializations[("ml", "popular_products")]["variant"].value == baseline_name
    popularity = materializations[("models", "popularity")]
    assert popularity["popularity_plain_ndcg@10"].value == scalar(
        db, "SELECT ndcg_at_k FROM ml.model_evaluations WHERE model_name = 'popularity_plain'")


def test_the_published_model_is_the_champion_refitted_on_every_interaction(trained):
    db, _ = trained
    name, evaluated, deployed = query(
        db, "SELECT model_name, model_version, deployed_version FROM ml.model_champions")[0]
    assert deployed and deployed != evaluated
    manifest = json.loads((settings.model_store_dir() / name / deployed / "manifest.json").read_text())
    assert manifest["refit_of"] == evaluated
    assert manifest["n_interactions"] == scalar(db, "SELECT count(*) FROM core.interactions")
    published = query(db, "SELECT DISTINCT model_version FROM recs.user_recommendations WHERE model_name = %s",
                      (name,))
    assert published == [(deployed,)]
    # The refit knows each user's latest interaction, which the evaluated model never saw; like every
    # interaction it is never recommended back.
    latest_seen = scalar(db, """
        SELECT count(*) FROM recs.user_recommendations r
        JOIN core.interactions i ON i.user_id = r.user_id AND i.product_id = r.product_id""")
    assert latest_seen == 0


def test_artifacts_load_weights_only_on_a_cpu_and_plots_reach_the_ui(trained):
    db, result = trained
    store = settings.model_store_dir()
    for name in registry.EVALUATED_NAMES:
        version = (store / name / "LATEST").read_text().strip()
        state = torch.load(io.BytesIO((store / name / version / "state_dict.pt").read_bytes()),
                           map_location="cpu", weights_only=True)
        model = registry.model_class(name).from_state_dict(state)
        users = model.user_ids[:5] if name not in BASELINES else np.array([1, 2])
        assert all(len(items) == 5 for items in model.recommend(users, 5).items), name
    materializations = {tuple(e.asset_key.path): e.step_materialization_data.materialization.metadata
                        for e in result.get_asset_materialization_events()}
    gnn = materializations[("models", "lightgcn")]
    # accelerator "auto": the GPU where there is one, else the CPU
    assert gnn["device"].value == ("cuda" if torch.cuda.is_available() else "cpu")
    assert gnn["training_curve"].value.startswith("![training curve](data:image/png;base64,")
    evaluation = materializations[("ml", "model_evaluations")]
    assert "| lightgcn" in evaluation["metrics"].value
    assert evaluation["comparison"].value.startswith("![metric comparison](data:image/png;base64,")
    # The UI shows Markdown in place only under 1,000 characters: these charts are SVG that fit.
    inline = [gnn["training_curve_chart"], materializations[("models", "lightfm")]["training_curve_chart"],
              evaluation["ndcg@10_chart"]]
    for chart in inline:
        assert chart.value.startswith("![chart](data:image/svg+xml;base64,") and len(chart.value) < 1000
    svg = base64.b64decode(evaluation["ndcg@10_chart"].value.split("base64,")[1].rstrip(")")).decode()
    champion_name = evaluation["champion"].value.split()[0]
    for name in registry.EVALUATED_NAMES:  # every model as a bar labelled with its nDCG; numbers to plot
        ndcg = evaluation[f"{name}_ndcg@10"].value
        assert f">{name} {ndcg:.3f}</text>" in svg
        assert 0 <= evaluation[f"{name}_coverage"].value <= 1
    assert svg.count("fill='tomato'") == 1 and evaluation[f"{champion_name}_ndcg@10"].value == max(
        evaluation[f"{name}_ndcg@10"].value for name in registry.EVALUATED_NAMES)
    assert gnn["epochs"].value == len(torch.load(io.BytesIO(
        (store / "lightgcn" / gnn["model_version"].value / "state_dict.pt").read_bytes()),
        weights_only=True)["history"]["epoch"])


def test_training_reports_every_epoch_in_the_run_log(trained):
    _, result = trained
    store = settings.model_store_dir()
    for model in ("lightgcn", "lightfm"):
        epochs = [m for m in result.log_messages if m.startswith(f"{model} epoch ")]
        assert epochs, f"no epoch lines for {model}"
        assert all("elapsed" in line and "loss " in line for line in epochs), epochs
        # one line per epoch the evaluated fit trained, each with its nDCG; the champion's refit on every
        # interaction, which has no held-out rows (LightFM) to report on, logs its own lines after them
        version = (store / model / "LATEST").read_text().strip()
        trained_epochs = len(json.loads((store / model / version / "manifest.json").read_text())["history"])
        assert len(epochs) >= trained_epochs and epochs[trained_epochs - 1].startswith(
            f"{model} epoch {trained_epochs}/")
        assert all("ndcg" in line for line in epochs[:trained_epochs]), epochs


def test_similarity_has_three_methods_with_sensible_neighbours(trained):
    db, _ = trained
    per_method = dict(query(db, "SELECT method, count(DISTINCT item_id) FROM ml.item_similarity GROUP BY method"))
    assert set(per_method) == {"collaborative", "content", "embedding"}
    products = scalar(db, "SELECT count(*) FROM core.products")
    assert per_method["content"] == products and per_method["embedding"] == products
    assert scalar(db, "SELECT count(*) FROM ml.item_similarity WHERE item_id = neighbor_id") == 0
    assert scalar(db, "SELECT count(*) FROM ml.item_similarity WHERE score <= 0 AND method <> 'embedding'") == 0
    # Products of one leaf category share words and buyers. A product picked at random shares the leaf
    # category of about 1 in 20 others (the sample has 20): every method's nearest neighbour does far
    # better than that.
    same_category = dict(query(db, """
        SELECT s.method, avg((pa.main_category = pb.main_category AND pa.categories = pb.categories)::int)
        FROM ml.item_similarity s
        JOIN core.products pa ON pa.product_id = s.item_id
        JOIN core.products pb ON pb.product_id = s.neighbor_id
        WHERE s.rank = 1 GROUP BY s.method"""))
    assert same_category["content"] > 0.9, same_category
    chance = scalar(db, """SELECT sum(n * n)::float / (sum(n) * sum(n)) FROM (
                               SELECT count(*) AS n FROM core.products GROUP BY main_category, categories) c""")
    assert chance < 0.1
    assert same_category["collaborative"] > 5 * chance, (same_category, chance)
    assert same_category["embedding"] > 3 * chance, (same_category, chance)


def test_retraining_is_skipped_when_nothing_changed(trained):
    db, first = trained
    similarity_before = query(db, "SELECT * FROM ml.item_similarity ORDER BY item_id, method, rank")
    basis_before = query(db, "SELECT basis, run_id, row_count, computed_at FROM ml.item_similarity_basis")
    assert len(basis_before) == 1 and basis_before[0][2] == len(similarity_before) > 0
    assert basis_before[0][1] == first.run_id  # computed by the first refresh
    result = materialize_everything()
    assert_success(result)
    reused = {tuple(e.asset_key.path): e.step_materialization_data.materialization.metadata["reused_artifact"].value
              for e in result.get_asset_materialization_events() if e.asset_key.path[0] == "models"}
    assert reused == {("models", name): True for name in (*registry.MODEL_NAMES, "champion")}
    # Nothing the similarity is computed from changed: the table is kept, not computed again.
    similarity = result.asset_materializations_for_node("ml__item_similarity")[0].metadata
    assert similarity["reused"].value is True and similarity["rows"].value == len(similarity_before)
    assert query(db, "SELECT basis, run_id, row_count, computed_at FROM ml.item_similarity_basis") == basis_before
    assert query(db, "SELECT * FROM ml.item_similarity ORDER BY item_id, method, rank") == similarity_before
    assert scalar(db, "SELECT count(DISTINCT model_version) FROM ml.model_evaluations") == len(
        registry.EVALUATED_NAMES)


def test_the_gate_blocks_publishing_a_champion_that_does_not_beat_popularity(trained):
    db, _ = trained
    runs_before = scalar(db, "SELECT count(*) FROM recs.recommendation_runs")
    live_before = query(db, "SELECT user_id, product_id, rank FROM recs.user_recommendations ORDER BY 1, 3")
    # Require a 1000 % lift over the stronger popularity baseline: no model reaches it, so the champion is refused.
    result = materialize_everything(run_config={
        **QUICK_MODELS, "ops": {**QUICK_MODELS["ops"], "ml__model_evaluations": {"config": {"min_lift": 10.0}}}})
    assert not result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["champion_beats_popularity"] is False
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "publish_recommendations" not in started
    assert scalar(db, "SELECT count(*) FROM recs.recommendation_runs") == runs_before
    assert query(db, "SELECT user_id, product_id, rank FROM recs.user_recommendations ORDER BY 1, 3") == live_before
    assert scalar(db, "SELECT beats_baseline FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1") is False

    # Publishing on its own (from the UI, say) refuses the refused champion too.
    from rec_orchestration.assets.publish import publish_recommendations
    from rec_orchestration.definitions import defs

    alone = dg.materialize([publish_recommendations], resources=defs.resources, raise_on_error=False)
    assert not alone.success
    failure = next(e for e in alone.all_events if e.event_type_value == "STEP_FAILURE")
    baseline_name = scalar(db, "SELECT baseline_name FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1")
    assert f"does not beat the stronger popularity baseline, {baseline_name} (" in str(
        failure.event_specific_data.error)
    assert scalar(db, "SELECT count(*) FROM recs.recommendation_runs") == runs_before
    assert query(db, "SELECT user_id, product_id, rank FROM recs.user_recommendations ORDER BY 1, 3") == live_before


def test_a_warehouse_from_before_two_baselines_gets_baseline_name(trained):
    """ml.model_champions without baseline_name (as warehouses made before had it) gains the column when the
    schema runs again; its rows were all compared with popularity. Running it again changes nothing."""
    db, _ = trained
    with psycopg.connect(db.conninfo()) as conn:
        conn.execute("ALTER TABLE ml.model_champions DROP COLUMN baseline_name")
        conn.execute(packaged_sql("ml_schema.sql"))
        conn.execute(packaged_sql("ml_schema.sql"))
    assert query(db, "SELECT DISTINCT baseline_name FROM ml.model_champions") == [("popularity",)]
    assert scalar(db, """SELECT attnotnull AND atthasdef FROM pg_attribute
                         WHERE attrelid = 'ml.model_champions'::regclass AND attname = 'baseline_name'""") is True
    # A row written without it (the eleven columns there were) was compared with popularity, too.
    with psycopg.connect(db.conninfo()) as conn:
        conn.execute("""INSERT INTO ml.model_champions VALUES
            ('old-run', '2020-01-01', 'ease', 'v1', 10, 0.3, 'v0', 0.1, 0, true, NULL)""")
    assert scalar(db, "SELECT baseline_name FROM ml.model_champions WHERE run_id = 'old-run'") == "popularity"


def test_evaluation_reads_the_versions_materialized_by_dagster_not_the_stores_latest_pointer(trained):
    """Another run moving a model's LATEST pointer between this run's model steps and its evaluation (two
    refreshes at once) does not make this run evaluate that other fit."""
    from rec_orchestration.assets.evaluation import model_evaluations
    from rec_orchestration.assets.models import model_assets
    from rec_orchestration.definitions import defs
    from rec_orchestration.ml.artifacts import ModelStore

    db, _ = trained
    store = ModelStore(str(settings.model_store_dir()))
    with dg.DagsterInstance.ephemeral() as instance:
        models = dg.materialize(model_assets, instance=instance, resources=defs.resources,
                                run_config=QUICK_MODELS)
        assert_success(models)
        real = store.latest("itemknn")
        state, manifest = store.load("itemknn", real)
        forged = {key: value for key, value in manifest.items() if key not in ("model_name", "version")}
        forged["metrics"] = {**forged["metrics"], "ndcg@10": 0.999}
        store.save("itemknn", "anotherrunsfit", state, forged)
        store.set_latest("itemknn", "anotherrunsfit")  # what a concurrent run's models/itemknn would do
        try:
            assert_success(dg.materialize([model_evaluations], instance=instance, resources=defs.resources))
        finally:
            store.set_latest("itemknn", real)
    assert scalar(db, "SELECT count(*) FROM ml.model_evaluations WHERE model_version = 'anotherrunsfit'") == 0
    assert query(db, "SELECT model_version FROM ml.model_evaluations WHERE model_name = 'itemknn'") == [(real,)]
    assert scalar(db, "SELECT model_version FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1") != \
        "anotherrunsfit"


def test_the_similarity_basis_changes_with_each_thing_the_table_is_computed_from():
    import pandas as pd

    from rec_orchestration.assets.similarity import similarity_basis

    frame = pd.DataFrame({"user_id": [1, 1, 2], "product_id": [10, 11, 10], "weight": [1.0, 2.0, 1.0],
                          "ts": pd.to_datetime([1, 2, 3], unit="s", utc=True)})
    products = pd.DataFrame({"product_id": [10, 11], "text": ["red shoe", "blue shoe"]})
    base = similarity_basis(frame, products, "v1", 20)
    assert similarity_basis(frame.copy(), products.copy(), "v1", 20) == base
    changed = [similarity_basis(frame.assign(weight=[1.0, 2.0, 3.0]), products, "v1", 20),
               similarity_basis(frame, products.assign(text=["red shoe", "green shoe"]), "v1", 20),
               similarity_basis(frame, products, "v2", 20),
               similarity_basis(frame, products, "v1", 5)]
    assert len({base, *changed}) == 5
