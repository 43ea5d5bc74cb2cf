"""The champion rule (ml/champion.py) and the training rules (ml/training.py) as the pipeline uses them.

The gate compares with the stronger of the two popularity baselines; the tests on generated interactions
fit and evaluate both for real (``fit_and_evaluate``, the pipeline's split and metrics), once where recent
popularity shifts (decay wins) and once where it is stationary over years (plain most-popular wins).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rec_orchestration.ml import registry, training
from rec_orchestration.ml.artifacts import ModelStore
from rec_orchestration.ml.champion import (
    BASELINES,
    ChampionRefused,
    approved,
    choose_champion,
    require_same_data,
    stronger_baseline,
)
from rec_orchestration.ml.training import (
    EVAL_K,
    ModelInputs,
    category_features,
    data_version,
    evaluation_sample,
    fit_and_evaluate,
    refit_on_everything,
    training_split,
)


def manifests(**ndcg: float) -> dict[str, dict]:
    return {name: {"version": f"{name}-v", "data_version": "d1", "metrics": {f"ndcg@{EVAL_K}": value}}
            for name, value in ndcg.items()}


def test_the_baselines_are_the_two_popularity_variants_the_pipeline_evaluates():
    assert BASELINES == registry.BASELINE_NAMES == ("popularity", "popularity_plain")
    assert set(BASELINES) <= set(registry.EVALUATED_NAMES) and set(registry.MODEL_NAMES) < set(registry.EVALUATED_NAMES)
    assert registry.build("popularity_plain").half_life_days is None
    assert registry.build("popularity").half_life_days == registry.DEFAULTS["popularity"]["half_life_days"]


def test_the_best_ndcg_is_champion_and_beats_the_stronger_baseline():
    choice = choose_champion(manifests(popularity=0.10, popularity_plain=0.12, ease=0.20, itemknn=0.15), EVAL_K)
    assert (choice.model_name, choice.model_version, choice.ndcg) == ("ease", "ease-v", 0.20)
    assert (choice.baseline_name, choice.baseline_version, choice.baseline_ndcg, choice.beats_baseline) == (
        "popularity_plain", "popularity_plain-v", 0.12, True)
    decayed = choose_champion(manifests(popularity=0.12, popularity_plain=0.10, ease=0.20), EVAL_K)
    assert (decayed.baseline_name, decayed.baseline_ndcg) == ("popularity", 0.12)
    # A tie between the baselines goes to the decayed one (the fallback the pipeline always had).
    assert stronger_baseline(manifests(popularity=0.1, popularity_plain=0.1), EVAL_K) == "popularity"


def test_min_lift_refuses_a_champion_that_wins_by_too_little():
    choice = choose_champion(manifests(popularity=0.10, popularity_plain=0.08, ease=0.104), EVAL_K, min_lift=0.05)
    assert choice.model_name == "ease" and not choice.beats_baseline
    assert choose_champion(manifests(popularity=0.10, popularity_plain=0.08, ease=0.106), EVAL_K,
                           min_lift=0.05).beats_baseline


def test_a_model_that_beats_only_the_weaker_baseline_is_refused():
    choice = choose_champion(manifests(popularity=0.10, popularity_plain=0.20, ease=0.15), EVAL_K)
    assert (choice.model_name, choice.baseline_name, choice.beats_baseline) == ("ease", "popularity_plain", False)


def test_no_baseline_is_ever_the_publishable_champion():
    for best in BASELINES:
        ndcg = {name: 0.30 if name == best else 0.10 for name in BASELINES}
        # The champion is the best model that is not a baseline, refused when a baseline does better.
        choice = choose_champion(manifests(**ndcg, ease=0.20, itemknn=0.25), EVAL_K)
        assert (choice.model_name, choice.ndcg, choice.baseline_name, choice.beats_baseline) == (
            "itemknn", 0.25, best, False)
        # With nothing but the baselines evaluated, the stronger one is recorded, never publishable.
        alone = choose_champion(manifests(**ndcg), EVAL_K)
        assert (alone.model_name, alone.baseline_name, alone.beats_baseline) == (best, best, False)
    tied = choose_champion(manifests(popularity=0.20, popularity_plain=0.10, ease=0.20), EVAL_K)
    assert tied.model_name == "ease" and not tied.beats_baseline  # a tie does not beat


def test_models_fitted_on_different_data_do_not_compare():
    fitted = manifests(popularity=0.1, popularity_plain=0.1, ease=0.2)
    fitted["ease"]["data_version"] = "d2"
    with pytest.raises(ValueError, match="different data"):
        require_same_data(fitted)
    # Both baselines must have been evaluated: the gate never compares with the weaker one alone.
    with pytest.raises(ValueError, match="baselines 'popularity_plain' must be among"):
        choose_champion(manifests(popularity=0.1, ease=0.2), EVAL_K)
    with pytest.raises(ValueError, match="baselines 'popularity', 'popularity_plain'"):
        choose_champion(manifests(ease=0.2), EVAL_K)


def test_only_a_champion_that_beat_the_baseline_is_approved():
    row = {"model_name": "ease", "model_version": "v", "k": 10, "ndcg_at_k": 0.2, "baseline_name": "popularity_plain",
           "baseline_ndcg_at_k": 0.1, "required_lift": 0.0, "beats_baseline": True}
    assert approved(row) is row
    with pytest.raises(ChampionRefused, match="does not beat the stronger popularity baseline, popularity_plain "):
        approved({**row, "beats_baseline": False})
    # A row recorded before there were two baselines (no baseline_name) was compared with popularity.
    old = {key: value for key, value in row.items() if key != "baseline_name"}
    with pytest.raises(ChampionRefused, match="does not beat the stronger popularity baseline, popularity "):
        approved({**old, "beats_baseline": False})
    with pytest.raises(ChampionRefused, match="no champion"):
        approved(None)


# ------------------------------------------------------------------ both baselines, fitted on generated data

def generated_interactions(seed: int, eras: int, days: float, n_users: int = 300, n_items: int = 120,
                           per_user: int = 8) -> pd.DataFrame:
    """Each user's interactions at uniform random times over ``days``, each item drawn from a power-law
    popularity whose order is reshuffled in each of ``eras`` equal periods (1: stationary popularity).
    One row per (user, product), as ``core.interactions`` has."""
    rng = np.random.default_rng(seed)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    power_law = 1.0 / np.arange(1, n_items + 1) ** 1.1
    popularity = []
    for _ in range(eras):
        shares = np.empty(n_items)
        shares[rng.permutation(n_items)] = power_law
        popularity.append(shares / shares.sum())
    rows = []
    for user in range(n_users):
        seen = set()
        for day in np.sort(rng.uniform(0, days, per_user)):
            item = int(rng.choice(n_items, p=popularity[min(int(day / days * eras), eras - 1)]))
            if item not in seen:
                seen.add(item)
                rows.append((user, item, float(rng.choice([1.0, 2.0])), start + timedelta(days=float(day))))
    return pd.DataFrame(rows, columns=["user_id", "product_id", "weight", "ts"])


def evaluated_baselines(frame: pd.DataFrame, store: ModelStore, half_life_days: float) -> dict[str, dict]:
    """Both popularity baselines fitted on the pipeline's split of ``frame`` and evaluated on its holdout,
    as ``models/popularity`` does: name -> manifest."""
    split = training_split(frame)
    decayed, _ = fit_and_evaluate("popularity", {"half_life_days": half_life_days}, split, store)
    plain, _ = fit_and_evaluate("popularity_plain", dict(registry.DEFAULTS["popularity_plain"]), split, store)
    assert plain["params"] == {"half_life_days": None}
    return {"popularity": decayed, "popularity_plain": plain}


def ndcg(manifest: dict) -> float:
    return float(manifest["metrics"][f"ndcg@{EVAL_K}"])


def assert_gate_compares_with(baselines: dict[str, dict], stronger: str) -> None:
    """The gate picks ``stronger`` as the baseline; a model between the two baselines is refused, one
    above both is published."""
    weaker = next(name for name in BASELINES if name != stronger)
    assert ndcg(baselines[stronger]) > ndcg(baselines[weaker])
    require_same_data(baselines)
    assert stronger_baseline(baselines, EVAL_K) == stronger   # the published fallback is this one too
    between = {"version": "between-v", "data_version": baselines[stronger]["data_version"],
               "metrics": {f"ndcg@{EVAL_K}": (ndcg(baselines[stronger]) + ndcg(baselines[weaker])) / 2}}
    choice = choose_champion({**baselines, "between": between}, EVAL_K)
    assert (choice.model_name, choice.baseline_name) == ("between", stronger)
    assert (choice.baseline_version, choice.baseline_ndcg) == (
        baselines[stronger]["version"], ndcg(baselines[stronger]))
    assert not choice.beats_baseline   # it beats the weaker baseline only
    above = {**between, "version": "above-v", "metrics": {f"ndcg@{EVAL_K}": ndcg(baselines[stronger]) * 1.01}}
    assert choose_champion({**baselines, "above": above}, EVAL_K).beats_baseline
    assert not choose_champion({**baselines, "above": above}, EVAL_K, min_lift=0.05).beats_baseline


def test_the_gate_compares_with_decayed_popularity_where_popularity_shifts(tmp_path):
    # Two years in four eras, each with its own hits: what users take next is what is popular now.
    baselines = evaluated_baselines(generated_interactions(seed=0, eras=4, days=730), ModelStore(str(tmp_path)),
                                    half_life_days=90.0)
    assert ndcg(baselines["popularity"]) > 1.5 * ndcg(baselines["popularity_plain"]), baselines
    assert_gate_compares_with(baselines, "popularity")


def test_the_gate_compares_with_plain_popularity_where_popularity_is_stationary(tmp_path):
    # The same hits for three years, and a half-life of a week: decay keeps a few noisy weeks of the signal.
    baselines = evaluated_baselines(generated_interactions(seed=0, eras=1, days=3 * 365), ModelStore(str(tmp_path)),
                                    half_life_days=7.0)
    assert ndcg(baselines["popularity_plain"]) > 1.5 * ndcg(baselines["popularity"]), baselines
    assert_gate_compares_with(baselines, "popularity_plain")


def interactions_frame(n_users: int = 30, n_items: int = 12) -> pd.DataFrame:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [(user, (user + step * 5) % n_items, 1.0, start + timedelta(days=step, hours=user))
            for user in range(n_users) for step in range(4)]
    return pd.DataFrame(rows, columns=["user_id", "product_id", "weight", "ts"])


def test_the_split_holds_out_each_users_latest_interaction():
    frame = interactions_frame()
    split = training_split(frame)
    assert len(split.test) == 30 and len(split.train) == len(frame) - 30
    latest = frame.sort_values("ts").groupby("user_id").tail(1)
    assert set(map(tuple, split.test[["user_id", "product_id"]].to_numpy())) == set(
        map(tuple, latest[["user_id", "product_id"]].to_numpy()))
    assert split.data_version == data_version(frame) != data_version(frame.iloc[1:])


def test_models_are_evaluated_on_the_same_capped_sample_of_held_out_users(tmp_path, monkeypatch):
    """Past EVAL_MAX_USERS held-out users, every model is ranked for the same EVAL_MAX_USERS of them (all
    their held-out rows), and the manifest says how many were held out and how many evaluated."""
    monkeypatch.setattr(training, "EVAL_MAX_USERS", 12)
    store, split = ModelStore(str(tmp_path)), training_split(interactions_frame(n_users=30))
    assert split.describe()["test_users"] == 30 and split.describe()["evaluated_users"] == 12
    given = []  # the held-out rows each evaluation was given (the real evaluate runs on them)
    evaluate = training.evaluate
    monkeypatch.setattr(training, "evaluate", lambda model, train, test, k: given.append(test) or evaluate(
        model, train, test, k=k))
    for name in ("itemknn", "popularity"):
        manifest, _ = fit_and_evaluate(name, dict(registry.DEFAULTS.get(name, {})), split, store)
        assert manifest["metrics"]["users"] == 12 and manifest["split"]["evaluated_users"] == 12
    evaluated = [set(test["user_id"]) for test in given]
    assert len(evaluated) == 2 and evaluated[0] == evaluated[1] and len(evaluated[0]) == 12
    assert len(given[0]) == len(split.test[split.test["user_id"].isin(evaluated[0])])


def test_the_evaluation_sample_keeps_its_users_as_users_are_added():
    """The sample is the users whose ids hash lowest: new users can push some out, never bring an older
    user in who was out; with no more users than the cap, it is the whole test set."""
    rows = pd.DataFrame({"user_id": np.arange(1, 2001).repeat(2), "product_id": np.arange(4000) % 50})
    small = set(evaluation_sample(rows, 300)["user_id"])
    grown = pd.concat([rows, pd.DataFrame({"user_id": np.arange(2001, 2201), "product_id": 1})])
    large = set(evaluation_sample(grown, 300)["user_id"])
    assert len(small) == len(large) == 300
    assert large & set(range(1, 2001)) <= small          # older users only leave
    assert len(large & small) > 240                       # and few do: 200 new users of 2,200
    assert evaluation_sample(rows, 300)["user_id"].value_counts().eq(2).all()  # every row of a chosen user
    assert evaluation_sample(rows, 5000) is rows


def test_a_model_is_fitted_once_per_data_params_and_code(tmp_path):
    store, frame = ModelStore(str(tmp_path)), interactions_frame()
    split = training_split(frame)
    first, reused = fit_and_evaluate("itemknn", {"neighbours": 5, "shrink_power": 1.0}, split, store)
    assert not reused and store.latest("itemknn") == first["version"]
    assert set(first["metrics"]) >= {f"ndcg@{EVAL_K}", f"precision@{EVAL_K}", "coverage"}
    again, reused = fit_and_evaluate("itemknn", {"neighbours": 5, "shrink_power": 1.0}, split, store)
    assert reused and again["version"] == first["version"]
    other, reused = fit_and_evaluate("itemknn", {"neighbours": 6, "shrink_power": 1.0}, split, store)
    assert not reused and other["version"] != first["version"] and store.latest("itemknn") == other["version"]
    # Inputs besides interactions (LightFM's category features) are part of the version.
    features = category_features({0: ["a"]})
    assert features.constructor == {"item_features": {0: ["a"]}}
    assert features.version != category_features({0: ["b"]}).version
    with_features, _ = fit_and_evaluate("itemknn", {"neighbours": 5, "shrink_power": 1.0}, split, store,
                                        ModelInputs(version=features.version))
    assert with_features["item_features"] and with_features["version"] != first["version"]

    refit, reused = refit_on_everything(first, frame, store)
    assert not reused and refit["refit_of"] == first["version"] and refit["n_interactions"] == len(frame)
    assert refit["data_version"] == data_version(frame) and refit["version"] != first["version"]
    assert refit_on_everything(first, frame, store)[1]  # the same refit is reused


def test_a_publication_is_refused_for_each_kind_of_problem():
    from rec_orchestration.publishing.checks import refusal

    clean = {"users_without_recommendations": 0, "recommendations_already_seen": 0, "duplicate_recommendations": 0,
             "max_per_user": 20, "popular_products": 100}
    assert refusal(clean, k=20) is None
    assert "max_per_user" in refusal(clean, k=10)
    for problem in ("users_without_recommendations", "recommendations_already_seen", "duplicate_recommendations"):
        assert problem in refusal({**clean, problem: 1}, k=20)
    assert "popular_products" in refusal({**clean, "popular_products": 0}, k=20)
