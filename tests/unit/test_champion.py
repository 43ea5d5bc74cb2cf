"""The champion rule (ml/champion.py) and the training rules (ml/training.py) as the pipeline uses them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from rec_orchestration.ml.artifacts import ModelStore
from rec_orchestration.ml.champion import (
    BASELINE,
    ChampionRefused,
    approved,
    choose_champion,
    require_same_data,
)
from rec_orchestration.ml.training import (
    EVAL_K,
    ModelInputs,
    category_features,
    data_version,
    fit_and_evaluate,
    refit_on_everything,
    training_split,
)


def manifests(**ndcg: float) -> dict[str, dict]:
    return {name: {"version": f"{name}-v", "data_version": "d1", "metrics": {f"ndcg@{EVAL_K}": value}}
            for name, value in ndcg.items()}


def test_the_best_ndcg_is_champion_and_beats_the_baseline():
    choice = choose_champion(manifests(popularity=0.10, ease=0.20, itemknn=0.15), EVAL_K)
    assert (choice.model_name, choice.model_version, choice.ndcg) == ("ease", "ease-v", 0.20)
    assert (choice.baseline_version, choice.baseline_ndcg, choice.beats_baseline) == ("popularity-v", 0.10, True)


def test_min_lift_refuses_a_champion_that_wins_by_too_little():
    choice = choose_champion(manifests(popularity=0.10, ease=0.104), EVAL_K, min_lift=0.05)
    assert choice.model_name == "ease" and not choice.beats_baseline
    assert choose_champion(manifests(popularity=0.10, ease=0.106), EVAL_K, min_lift=0.05).beats_baseline


def test_the_baseline_best_or_tied_never_beats_itself():
    assert choose_champion(manifests(popularity=0.30, ease=0.20), EVAL_K).model_name == BASELINE
    assert not choose_champion(manifests(popularity=0.30, ease=0.20), EVAL_K).beats_baseline
    tied = choose_champion(manifests(popularity=0.20, ease=0.20), EVAL_K)
    assert tied.model_name == "ease" and not tied.beats_baseline  # a tie goes to the model, but it does not beat


def test_models_fitted_on_different_data_do_not_compare():
    fitted = manifests(popularity=0.1, ease=0.2)
    fitted["ease"]["data_version"] = "d2"
    with pytest.raises(ValueError, match="different data"):
        require_same_data(fitted)
    with pytest.raises(ValueError, match="baseline"):
        choose_champion(manifests(ease=0.2), EVAL_K)


def test_only_a_champion_that_beat_the_baseline_is_approved():
    row = {"model_name": "ease", "model_version": "v", "k": 10, "ndcg_at_k": 0.2, "baseline_ndcg_at_k": 0.1,
           "required_lift": 0.0, "beats_baseline": True}
    assert approved(row) is row
    with pytest.raises(ChampionRefused, match="does not beat popularity"):
        approved({**row, "beats_baseline": False})
    with pytest.raises(ChampionRefused, match="no champion"):
        approved(None)


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
