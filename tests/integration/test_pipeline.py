"""The whole asset graph, materialized by Dagster against a real PostgreSQL, on a generated sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from rec_orchestration.sample_data import SampleSpec, write_sample
from tests.support import TEST_SPEC, assert_success, materialize_everything, query, scalar


def sample_counts(landing: Path) -> tuple[int, int, int]:
    reviews = [json.loads(line) for line in (landing / "reviews.jsonl").read_text().splitlines()]
    products = (landing / "meta.jsonl").read_text().splitlines()
    return len(reviews), len(products), len({r["user_id"] for r in reviews})


def table_counts(db) -> dict[str, int]:
    tables = ["raw.ingested_files", "raw.reviews", "raw.products", "raw.rejected_records", "core.users",
              "core.products", "core.reviews", "recs.popular_products", "recs.user_recommendations"]
    return {t: scalar(db, f"SELECT count(*) FROM {t}") for t in tables}


@pytest.fixture(scope="module")
def materialized_module(module_warehouse_env):
    db, workdir = module_warehouse_env
    result = materialize_everything()
    assert_success(result)
    return db, workdir, result


@pytest.fixture()
def materialized(materialized_module):
    return materialized_module[0]


def test_full_materialization_builds_every_table_from_the_landing_files(materialized_module):
    materialized, workdir, _ = materialized_module
    n_reviews, n_products, n_users = sample_counts(workdir / "landing")
    counts = table_counts(materialized)
    assert counts["raw.ingested_files"] == 2
    assert counts["raw.reviews"] == n_reviews
    assert counts["raw.products"] == n_products
    assert counts["raw.rejected_records"] == 0
    assert counts["core.users"] == n_users
    assert counts["core.products"] == n_products
    assert counts["core.reviews"] == n_reviews  # the generator never repeats (user, product, time)
    assert counts["recs.popular_products"] == n_products
    assert counts["recs.user_recommendations"] == n_users * 20  # k defaults to 20
    ledger = query(materialized, "SELECT rows_read, rows_loaded, rows_rejected FROM raw.ingested_files")
    assert all(read == loaded + rejected for read, loaded, rejected in ledger)


def test_no_password_reaches_the_run_s_event_log(materialized_module, test_databases):
    """Every event of a whole refresh (messages, metadata, errors) is free of the credentials in use: the
    warehouse's role and the server's administrator (with the embedded server, its generated superuser)."""
    db, _, result = materialized_module
    passwords = {password for password in (db.password, test_databases.admin.password) if password}
    assert passwords
    event_log = "\n".join(dg.serialize_value(event) for event in result.all_events)
    assert len(result.all_events) > 100 and "recs/user_recommendations" in event_log
    assert [password for password in passwords if password in event_log] == []


def test_every_user_gets_twenty_recommendations_none_already_reviewed(materialized):
    per_user = query(materialized, """
        SELECT u.user_id, count(r.product_id), count(DISTINCT r.product_id), array_agg(r.rank ORDER BY r.rank)
        FROM core.users u LEFT JOIN recs.user_recommendations r USING (user_id)
        GROUP BY u.user_id""")
    assert per_user
    for user_id, n, distinct, ranks in per_user:
        assert (n, distinct, ranks) == (20, 20, list(range(1, 21))), user_id
    reviewed = scalar(materialized, """
        SELECT count(*) FROM recs.user_recommendations r
        JOIN core.reviews v ON v.user_id = r.user_id AND v.product_id = r.product_id""")
    assert reviewed == 0
    # Every sample user has at least 5 reviews: all are ranked by the champion model, topped up from
    # popularity only where the champion has fewer than 20 unseen items for them.
    champion = query(materialized, "SELECT model_name FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1")[0][0]
    sources = dict(query(materialized, """SELECT model_name, count(*) FROM recs.user_recommendations GROUP BY 1"""))
    assert set(sources) <= {champion, "popularity"} and sources[champion] > 0
    assert scalar(materialized, """SELECT count(DISTINCT user_id) FROM recs.user_recommendations
                                   WHERE model_name = %s AND rank = 1""", (champion,)) == scalar(
        materialized, "SELECT count(*) FROM core.users")
    # "because you liked X": X is a product the user interacted with and one of the recommended
    # product's blended neighbours; recommendations without such a product say "personalized".
    explained = query(materialized, """
        SELECT count(*), count(*) FILTER (WHERE EXISTS (
                   SELECT 1 FROM core.interactions i
                   WHERE i.user_id = r.user_id AND i.product_id = r.because_product_id)
               AND EXISTS (
                   SELECT 1 FROM recs.similar_products s WHERE s.method = 'blended' AND s.product_id = r.product_id
                   AND s.similar_product_id = r.because_product_id)
               AND r.reason = 'because you liked ' || p.title)
        FROM recs.user_recommendations r JOIN core.products p ON p.product_id = r.because_product_id
        WHERE r.because_product_id IS NOT NULL""")[0]
    assert explained[0] > sources[champion] / 2 and explained[0] == explained[1], (explained, sources)
    assert scalar(materialized, """SELECT count(*) FROM recs.user_recommendations WHERE because_product_id IS NULL
                                   AND reason NOT IN ('personalized', 'popular')""") == 0


def test_the_recommendations_check_reports_the_gate_in_the_refresh_and_queries_the_live_set_alone(
        materialized_module):
    """In the refresh, the blocking check on recs/user_recommendations reports what publish's gate found on the
    partitions it made live, without running the query again; launched alone it checks the live views, and
    fails when a live recommendation is a product the user already has."""
    from rec_orchestration.assets.publish import every_user_gets_unseen_recommendations, publish_recommendations
    from rec_orchestration.definitions import defs

    db, _, result = materialized_module
    (in_refresh,) = [e for e in result.get_asset_check_evaluations()
                     if e.check_name == "every_user_gets_unseen_recommendations"]
    live = scalar(db, "SELECT publication_id FROM recs.recommendation_runs WHERE is_live")
    gate = [m.metadata["checked"].value for m in result.asset_materializations_for_node("publish_recommendations")
            if m.asset_key == dg.AssetKey(["recs", "user_recommendations"])]
    metadata = {name: value.value for name, value in in_refresh.metadata.items()}
    assert in_refresh.passed and metadata["checked"] == "by publish before the swap"
    assert metadata["live_publication"] == live
    assert gate[0]["users_without_recommendations"] == 0 and gate[0]["max_per_user"] == 20
    assert {name: metadata[name] for name in gate[0]} == gate[0]

    def check_alone() -> tuple[bool, dict]:
        alone = dg.materialize([publish_recommendations, every_user_gets_unseen_recommendations],
                               selection=dg.AssetSelection.checks(every_user_gets_unseen_recommendations),
                               resources=defs.resources, raise_on_error=False)
        (evaluation,) = alone.get_asset_check_evaluations()
        assert {e.step_key for e in alone.all_events if e.event_type_value == "STEP_START"} == {
            "recs__user_recommendations_every_user_gets_unseen_recommendations"}  # publish did not run
        return evaluation.passed, {name: value.value for name, value in evaluation.metadata.items()}

    passed, alone = check_alone()
    assert passed and alone["checked"] == "on the live views" and alone["users_without_recommendations"] == 0
    # A product the user interacted with, slipped into the live set behind publish's back.
    user_id, product_id = query(db, "SELECT user_id, product_id FROM core.interactions ORDER BY 1, 2 LIMIT 1")[0]
    partition = f"recs_store.user_recommendations_p{live}"
    with psycopg.connect(db.conninfo()) as conn:
        conn.execute(f"""
            INSERT INTO {partition} (publication_id, user_id, product_id, rank, score, reason, model_name,
                                     model_version, run_id, generated_at)
            SELECT publication_id, user_id, %s, 21, score, reason, model_name, model_version, run_id, generated_at
            FROM {partition} WHERE user_id = %s AND rank = 1""", (product_id, user_id))
    try:
        passed, alone = check_alone()
    finally:
        with psycopg.connect(db.conninfo()) as conn:
            conn.execute(f"DELETE FROM {partition} WHERE user_id = %s AND rank = 21", (user_id,))
    assert not passed
    assert (alone["recommendations_already_seen"], alone["max_per_user"]) == (1, 21)


def test_recommendations_follow_the_stronger_popularity_ranking(materialized):
    # The fallback is the popularity baseline the gate compared with: the stronger on the holdout.
    baseline = scalar(materialized, "SELECT baseline_name FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1")
    assert baseline in ("popularity", "popularity_plain")
    # Recompute the documented score independently in SQL: sum(rating/5 * 0.5^(age_days/90)), or for plain
    # popularity sum(rating * 0.6), each weight a float4 as the model holds it (plain sums tie often, and a
    # tie must be one for the model too; ties go to the smaller id).
    score = ("rating / 5.0 * power(0.5, extract(epoch FROM newest.t - reviewed_at) / 86400 / 90)"
             if baseline == "popularity" else "(rating * 0.6)::real::float8")
    expected = query(materialized, f"""
        WITH newest AS (SELECT max(reviewed_at) AS t FROM core.reviews)
        SELECT product_id
        FROM core.reviews, newest
        GROUP BY product_id
        ORDER BY sum({score}) DESC, product_id
        LIMIT 20""")
    ranked = query(materialized, "SELECT product_id FROM recs.popular_products ORDER BY rank LIMIT 20")
    assert ranked == expected
    # Users with too little history get the popular products of the categories they interacted with,
    # then overall: publish again with a threshold no sample user reaches.
    from rec_orchestration.assets.publish import publish_recommendations
    from rec_orchestration.assets.scoring import scoring_shard_assets
    from rec_orchestration.definitions import defs

    assert_success(dg.materialize([*scoring_shard_assets, publish_recommendations], resources=defs.resources,
                                  run_config={"resources": {"serving": {"config": {"min_interactions": 1000}}}}))
    assert set(query(materialized, "SELECT DISTINCT reason, model_name FROM recs.user_recommendations")) == {
        ("popular", "popularity_by_category"), ("popular", "popularity")}
    # Each user's first product: the most popular one they have not interacted with in the first of
    # their categories (most interactions first, ties: the smaller id) that has one left; overall
    # popularity when every category of theirs is exhausted. Computed independently here in SQL.
    by_category = dict(query(materialized, """
        WITH categories AS (
            SELECT i.user_id, pc.category_id, count(*) AS n
            FROM core.interactions i JOIN core.product_categories pc USING (product_id) GROUP BY 1, 2)
        SELECT DISTINCT ON (c.user_id) c.user_id, b.product_id
        FROM categories c JOIN recs.popular_products_by_category b USING (category_id)
        WHERE NOT EXISTS (SELECT 1 FROM core.interactions i WHERE i.user_id = c.user_id AND i.product_id = b.product_id)
        ORDER BY c.user_id, c.n DESC, c.category_id, b.rank"""))
    overall = dict(query(materialized, """
        SELECT DISTINCT ON (u.user_id) u.user_id, p.product_id FROM core.users u CROSS JOIN recs.popular_products p
        WHERE NOT EXISTS (SELECT 1 FROM core.interactions i WHERE i.user_id = u.user_id AND i.product_id = p.product_id)
        ORDER BY u.user_id, p.rank"""))
    first = dict(query(materialized, "SELECT user_id, product_id FROM recs.user_recommendations WHERE rank = 1"))
    assert by_category and set(first) == set(overall)
    assert first == {user: by_category.get(user, overall[user]) for user in overall}


def test_rerunning_changes_nothing_and_a_new_landing_file_is_loaded_once(warehouse_env, tmp_path):
    materialized = warehouse_env
    assert_success(materialize_everything())
    before = table_counts(materialized)
    result = materialize_everything()
    assert result.success
    assert table_counts(materialized) == before
    duplicates = scalar(materialized, """
        SELECT count(*) FROM (SELECT user_id, rank FROM recs.user_recommendations
                              GROUP BY 1, 2 HAVING count(*) > 1) d""")
    assert duplicates == 0

    # More reviews arrive in a second file (another seed: new users, same catalogue).
    extra_dir = tmp_path / "extra"
    extra = write_sample(extra_dir, SampleSpec(n_users=30, n_products=TEST_SPEC.n_products, seed=99))
    (tmp_path / "landing" / "reviews_2.jsonl").write_bytes(extra.reviews.read_bytes())
    assert materialize_everything().success
    after = table_counts(materialized)
    assert after["raw.ingested_files"] == before["raw.ingested_files"] + 1
    assert after["raw.reviews"] == before["raw.reviews"] + extra.n_reviews
    assert after["core.users"] > before["core.users"]
    assert after["recs.user_recommendations"] == after["core.users"] * 20
    assert materialize_everything().success
    assert table_counts(materialized) == after


def test_real_movielens_100k_and_amazon_2014_files_run_through_the_whole_graph(warehouse_env, tmp_path,
                                                                                monkeypatch):
    from tests.unit.test_formats import AMAZON_2014, ML_100K

    landing = tmp_path / "real_landing"
    landing.mkdir()
    shutil.copytree(ML_100K, landing / "ml-100k")
    shutil.copy(AMAZON_2014, landing / AMAZON_2014.name)
    monkeypatch.setenv("REC_LANDING_DIR", str(landing))
    assert_success(materialize_everything())

    assert scalar(warehouse_env, "SELECT count(*) FROM raw.rejected_records") == 0
    assert scalar(warehouse_env, "SELECT count(*) FROM core.reviews") == 100_000 + 10_261
    assert scalar(warehouse_env, "SELECT count(*) FROM core.users") == 943 + 1_429
    assert scalar(warehouse_env, "SELECT count(*) FROM core.products") == 1_682 + 900
    assert scalar(warehouse_env, "SELECT count(*) FROM recs.user_recommendations") == (943 + 1_429) * 20
    # MovieLens users keep their profile; Amazon reviewers have none.
    assert query(warehouse_env, """SELECT age, gender, occupation, postal_code FROM core.users
                                   WHERE user_key = '1'""") == [(24, "M", "technician", "85711")]
    assert scalar(warehouse_env, "SELECT count(*) FROM core.users WHERE age IS NOT NULL") == 943
    # MovieLens movies keep their titles and genres through dbt.
    assert query(warehouse_env, """SELECT title, categories FROM core.products WHERE product_key = '1'
                                   AND title IS NOT NULL""") == [("Toy Story (1995)", ["Animation", "Children's",
                                                                                        "Comedy"])]
    # Genres become categories; the release date, the date first available; the rating figures come
    # from the loaded ratings (MovieLens has no figures of its own).
    assert query(warehouse_env, """
        SELECT array_agg(c.name ORDER BY c.name), min(c.taxonomy) FROM core.product_categories pc
        JOIN core.categories c USING (category_id) JOIN core.products p USING (product_id)
        WHERE p.product_key = '1' AND p.title IS NOT NULL""") == [(["Animation", "Children's", "Comedy"], "genre")]
    assert query(warehouse_env, """
        SELECT date_first_available::text, average_rating::text, rating_count, rating_bin FROM core.products
        WHERE product_key = '1' AND title IS NOT NULL""") == [("1995-01-01", "3.88", 452, "Medium")]
    assert scalar(warehouse_env, "SELECT count(*) FROM core.categories WHERE depth = 1 AND taxonomy = 'genre'") == 19
    # Amazon 2014 has reviews only: its products exist, without metadata or categories.
    assert scalar(warehouse_env, "SELECT count(*) FROM core.products WHERE taxonomy IS NULL") == 900
    assert scalar(warehouse_env, "SELECT count(*) FROM core.interactions") == 100_000 + 10_261


def test_a_failing_dbt_test_stops_the_python_assets_downstream(warehouse_env):
    from rec_orchestration.assets.models import popular_products
    from rec_orchestration.assets.publish import publish_recommendations
    from rec_orchestration.assets.warehouse import warehouse_dbt_models
    from rec_orchestration.definitions import defs

    assert_success(materialize_everything())
    publishes = scalar(warehouse_env, "SELECT count(*) FROM recs.recommendation_runs")
    # An impossible average rating reaches raw around the loader (which would have nulled it); only the
    # dbt test on core.products (0-5) stands between it and the models when the warehouse is rebuilt
    # alone (a full refresh: the file it sits in was processed already).
    with psycopg.connect(warehouse_env.conninfo()) as conn:
        assert conn.execute("UPDATE raw.products SET average_rating = 7 WHERE line_number = 1").rowcount == 1

    result = dg.materialize([warehouse_dbt_models, popular_products, publish_recommendations],
                            resources=defs.resources, raise_on_error=False,
                            run_config={"ops": {"warehouse_dbt_models": {"config": {"full_refresh": True}}}})
    assert not result.success
    failed_checks = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed_checks == {"value_between_products_average_rating__5__0"}
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"warehouse_dbt_models"}  # the popularity model and publish never ran
    assert scalar(warehouse_env, "SELECT count(*) FROM recs.recommendation_runs") == publishes
