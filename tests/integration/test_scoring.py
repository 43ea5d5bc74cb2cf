"""Sharded scoring: the users split into REC_SCORING_SHARDS steps, assembled into one publication."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import numpy as np
import psycopg

from rec_orchestration import settings
from rec_orchestration.ml.serving import user_shards
from tests.support import QUICK_MODELS, assert_success, materialize_everything, query, same_rows, scalar

PUBLISHED = """SELECT user_id, product_id, rank, score, reason, because_product_id, model_name, model_version
               FROM recs.user_recommendations ORDER BY user_id, rank"""

# Shards and publish materialized in a fresh process, where REC_SCORING_SHARDS is read as the code location
# loads (the assets are made per shard).
SHARDED_PUBLISH = """
import json, sys
import dagster as dg
from rec_orchestration.assets.publish import publish_recommendations
from rec_orchestration.assets.scoring import scoring_shard_assets
from rec_orchestration.definitions import defs
assets = [*scoring_shard_assets, publish_recommendations] if sys.argv[1] == "all" else [publish_recommendations]
result = dg.materialize(assets, resources=defs.resources, raise_on_error=False,
                        run_config=json.loads(sys.argv[2]))
failures = [str(e.event_specific_data.error) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
print(json.dumps({"success": result.success, "steps": sorted({e.step_key for e in result.all_events
                  if e.event_type_value == "STEP_SUCCESS"}), "failures": failures}))
"""


def publish_with_shards(shards: int, which: str, run_config: dict | None = None) -> dict:
    import json

    env = dict(os.environ) | {"REC_SCORING_SHARDS": str(shards)}
    done = subprocess.run([sys.executable, "-c", SHARDED_PUBLISH, which, json.dumps(run_config or {})],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_scoring_shards_publish_exactly_what_one_does(warehouse_env):
    db = warehouse_env
    assert_success(materialize_everything())  # REC_SCORING_SHARDS unset: one shard
    one_shard = query(db, PUBLISHED)
    assert one_shard and scalar(db, "SELECT count(*) FROM ml.scoring_shards WHERE shard_count = 1") == 1

    outcome = publish_with_shards(4, "all")
    assert outcome["success"], outcome["failures"]
    assert outcome["steps"] == ["ml__scored_users_0_of_4", "ml__scored_users_1_of_4", "ml__scored_users_2_of_4",
                                "ml__scored_users_3_of_4", "publish_recommendations"]
    assert same_rows(query(db, PUBLISHED), one_shard)

    # Each shard holds the users its stable hash gives it, and together they hold every user once.
    users = np.array([u for (u,) in query(db, "SELECT user_id FROM core.users")], dtype=np.int64)
    shard_of = dict(zip(users.tolist(), user_shards(users, 4).tolist(), strict=True))
    seen_users = []
    for shard in range(4):
        held = [u for (u,) in query(db, f"SELECT DISTINCT user_id FROM ml.scored_users_{shard}_of_4")]
        assert held, f"shard {shard} is empty"
        assert {shard_of[u] for u in held} == {shard}
        seen_users += held
    assert sorted(seen_users) == sorted(users.tolist())
    assert scalar(db, "SELECT sum(user_count) FROM ml.scoring_shards WHERE shard_count = 4") == len(users)


def test_publish_refuses_shards_scored_on_other_settings(warehouse_env):
    """Publishing alone with serving settings the shards were not scored with fails, naming the shards to
    materialize, and leaves the live publication as it is."""
    db = warehouse_env
    assert_success(materialize_everything())
    live = query(db, PUBLISHED)
    runs = scalar(db, "SELECT count(*) FROM recs.recommendation_runs")

    outcome = publish_with_shards(1, "publish", {"resources": {"serving": {"config": {"k": 5}}}})
    assert not outcome["success"]
    assert "scoring shards ml/scored_users_0_of_1 are missing or were scored on other inputs" in outcome["failures"][0]
    assert query(db, PUBLISHED) == live
    assert scalar(db, "SELECT count(*) FROM recs.recommendation_runs") == runs

    # Shards of another count were never scored: publishing with 2 asks for both.
    outcome = publish_with_shards(2, "publish")
    assert not outcome["success"]
    assert "ml/scored_users_0_of_2, ml/scored_users_1_of_2" in outcome["failures"][0]

    # Interactions changed since the shards were scored (the warehouse rebuilt alone, say): refused too.
    with psycopg.connect(db.conninfo()) as conn:
        conn.execute("UPDATE core.interactions SET weight = weight + 1 WHERE (user_id, product_id) = "
                     "(SELECT user_id, product_id FROM core.interactions ORDER BY 1, 2 LIMIT 1)")
    outcome = publish_with_shards(1, "publish")
    assert not outcome["success"] and "scored on other inputs" in outcome["failures"][0]
    assert query(db, PUBLISHED) == live

    # With the shards scored on the same data and settings, it publishes k = 5.
    outcome = publish_with_shards(1, "all", {"resources": {"serving": {"config": {"k": 5}}}})
    assert outcome["success"], outcome["failures"]
    assert scalar(db, "SELECT max(rank) FROM recs.user_recommendations") == 5


# The models the latest evaluation compared: name, version, the data they were fitted on.
LAST_EVALUATION = """SELECT model_name, model_version, data_version FROM ml.model_evaluations
                     WHERE evaluated_at = (SELECT max(evaluated_at) FROM ml.model_evaluations) ORDER BY model_name"""
CHAMPION_ROWS = """SELECT user_id, product_id, rank, score, model_version FROM recs.user_recommendations
                   WHERE model_name = (SELECT model_name FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1)
                   ORDER BY user_id, rank"""


def test_new_reviews_rescore_only_their_users_with_the_fit_being_served(warehouse_env):
    """The hourly refresh after a few new reviews: the champion keeps the fit it serves and the similarity
    table stays (the data grew by far less than 5 %), the scoring rewrites only the rows of the users who
    reviewed (one new to the shop), every other user keeps the rows of the last refresh, and the champion's
    rows then equal a full scoring's."""
    import json

    db = warehouse_env
    assert_success(materialize_everything())
    served = scalar(db, "SELECT deployed_version FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1")
    evaluated = query(db, LAST_EVALUATION)
    popular = query(db, "SELECT product_id, rank, score, model_version FROM ml.popular_products ORDER BY rank")
    before = query(db, PUBLISHED)
    (rescored_first,) = query(db, "SELECT rescored_users FROM ml.scoring_shards WHERE shard_count = 1")[0]
    similarity = query(db, "SELECT basis, computed_at, n_interactions FROM ml.item_similarity_basis")
    assert rescored_first == scalar(db, "SELECT count(*) FROM core.users")

    # An existing user reviews the product at the top of their recommendations; a new user reviews it too.
    landing = settings.landing_dir()
    reviewer, top_product = query(db, """
        SELECT u.user_key, p.product_key FROM recs.user_recommendations r JOIN core.users u USING (user_id)
        JOIN core.products p USING (product_id) WHERE r.rank = 1 AND r.model_name <> 'popularity'
        AND EXISTS (SELECT 1 FROM recs.user_recommendations o WHERE o.user_id = r.user_id AND o.rank > 1
                    AND o.because_product_id IS NOT NULL)
        ORDER BY r.user_id LIMIT 1""")[0]

    # The shard keeps the neighbour pairs strong enough to name in a reason, with a hash of the similarity rows
    # they were reckoned from; every reason published names one of them.
    reasons_basis = scalar(db, "SELECT reasons_basis FROM ml.scoring_shards WHERE shard_count = 1")
    assert reasons_basis and scalar(db, "SELECT count(*) FROM ml.scored_users_0_of_1_reasons") > 0
    assert not query(db, """SELECT 1 FROM recs.user_recommendations r WHERE because_product_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM ml.scored_users_0_of_1_reasons p
                        WHERE (p.product_id, p.similar_product_id) = (r.product_id, r.because_product_id))""")
    # Rescoring changed users takes those pairs as they are, not reckoning every pair's evidence again: with
    # them emptied, the reviewer's new list names no reason, while every other user keeps theirs.
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        conn.execute("DELETE FROM ml.scored_users_0_of_1_reasons")
    template = json.loads((landing / "reviews.jsonl").open().readline())
    new_reviews = [{**template, "user_id": user, "parent_asin": top_product, "asin": top_product, "rating": 5.0,
                    "timestamp": 1_760_000_000_000} for user in (reviewer, "NEWUSER1")]
    (landing / "reviews_hour2.jsonl").write_text("".join(json.dumps(review) + "\n" for review in new_reviews))
    second = materialize_everything()
    assert_success(second)

    # Nor is any model fitted again: the training round kept the fits the first run evaluated, which are
    # evaluated again as they are.
    kept, versions, why = query(db, "SELECT kept, versions, why FROM ml.training_rounds WHERE run_id = %s",
                                (second.run_id,))[0]
    assert kept and "grew" in why
    assert versions == {name: version for name, version, _ in evaluated}
    assert query(db, LAST_EVALUATION) == evaluated
    assert all(second.asset_materializations_for_node(f"models__{name}")[0].metadata["kept_by_round"].value
               for name in ("popularity", "itemknn", "ease", "lightfm", "lightgcn"))
    # The cold-start ranking, made from the same baselines, stays as it was too.
    assert query(db, "SELECT product_id, rank, score, model_version FROM ml.popular_products ORDER BY rank") == popular

    # The champion was evaluated again, but the fit it serves stays: no refit for 2 more reviews; nor is the
    # similarity table recomputed (its basis row is the first run's).
    assert query(db, "SELECT basis, computed_at, n_interactions FROM ml.item_similarity_basis") == similarity
    assert similarity[0][2] == scalar(db, "SELECT count(*) FROM core.interactions") - 2
    assert scalar(db, "SELECT deployed_version FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1") == served
    assert scalar(db, "SELECT count(*) FROM ml.model_champions") == 2
    changed = {user_id for (user_id,) in query(db, "SELECT user_id FROM core.users WHERE user_key = ANY(%s)",
                                                 ([reviewer, "NEWUSER1"],))}
    assert len(changed) == 2
    rescored, user_count = query(db, "SELECT rescored_users, user_count FROM ml.scoring_shards")[0]
    assert (rescored, user_count) == (2, scalar(db, "SELECT count(*) FROM core.users"))

    after = query(db, PUBLISHED)
    kept = [row for row in after if row[0] not in changed]
    assert kept == [row for row in before if row[0] not in changed]
    (reviewer_id,) = changed & {row[0] for row in before}
    top_id = scalar(db, "SELECT product_id FROM core.products WHERE product_key = %s", (top_product,))
    assert top_id not in {row[1] for row in after if row[0] == reviewer_id}  # reviewed now: not recommended
    assert all(row[7] == served for row in after if row[0] == reviewer_id and row[6] != "popularity")
    assert not [row for row in after if row[0] in changed and row[5] is not None]  # the emptied pairs
    assert scalar(db, "SELECT reasons_basis FROM ml.scoring_shards WHERE shard_count = 1") == reasons_basis
    k = scalar(db, "SELECT k FROM recs.recommendation_runs WHERE is_live")
    assert len([row for row in after if row[0] in changed - {reviewer_id}]) == k  # the new user has k rows

    # A full scoring (the shard's history digests gone) with the same fit gives the same champion rows.
    delta = query(db, CHAMPION_ROWS)
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE ml.scored_users_0_of_1_histories")
    outcome = publish_with_shards(1, "all")
    assert outcome["success"], outcome["failures"]
    assert scalar(db, "SELECT rescored_users FROM ml.scoring_shards WHERE shard_count = 1") == user_count
    assert same_rows(query(db, CHAMPION_ROWS), delta)

    # A round that allows no growth (max_growth 0) fits every model on today's interactions, with the 2 reviews.
    models = [dg.AssetKey(["ml", "training_round"]), dg.AssetKey(["ml", "model_evaluations"]),
              *(dg.AssetKey(["models", name]) for name in ("popularity", "itemknn", "ease", "lightfm", "lightgcn"))]
    refit = materialize_everything({**QUICK_MODELS, "ops": {**QUICK_MODELS["ops"], "ml__training_round": {
        "config": {"max_growth": 0.0}}}}, asset_selection=models)
    assert_success(refit)
    assert query(db, "SELECT kept, versions FROM ml.training_rounds WHERE run_id = %s",
                 (refit.run_id,)) == [(False, {})]
    again = query(db, LAST_EVALUATION)
    assert {name for name, _, _ in again} == {name for name, _, _ in evaluated}
    assert not {version for _, version, _ in again} & {version for _, version, _ in evaluated}
    (data_version,) = {data for _, _, data in again}  # one split, of today's interactions
    assert data_version.startswith(f"{scalar(db, 'SELECT count(*) FROM core.interactions')}:")
