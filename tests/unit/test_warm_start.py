"""Warm starts: after a little more data, LightFM's and LightGCN's next fits start from the previous artifact."""

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from rec_orchestration.ml import factorization, training
from rec_orchestration.ml.artifacts import ModelStore, artifact_version
from rec_orchestration.ml.factorization import LightFMRecommender
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.lightgcn import LightGCN
from rec_orchestration.ml.lightgcn.recommender import WARM_EPOCHS, _carry_over
from rec_orchestration.ml.training import fit_and_evaluate, refit_on_everything, training_split

PARAMS = {"factors": 8, "layers": 1, "lr": 0.05, "reg": 1e-4, "epochs": 30, "patience": 4}
LIGHTFM = {"factors": 8, "epochs": 30, "learning_rate": 0.05, "num_threads": 1}


def planted(n_users: int, seed: int, start_user: int = 1) -> pd.DataFrame:
    """Users in 4 taste groups, each interacting with 8 of their group's 15 items, at random times."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(start_user, start_user + n_users):
        group = user % 4
        for item in rng.choice(15, size=8, replace=False):
            rows.append((user, 100 + group * 15 + int(item), 1.0, int(rng.integers(0, 10**7))))
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "weight", "ts"])
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    return frame


@pytest.fixture
def store(tmp_path):
    return ModelStore(str(tmp_path / "store"))


def test_a_refit_after_one_percent_more_starts_from_the_previous_artifact(store):
    base = planted(300, seed=1)
    cold, reused = fit_and_evaluate("lightgcn", PARAMS, training_split(base), store)
    assert not reused and "warm_start_from" not in cold

    grown = pd.concat([base, planted(3, seed=2, start_user=301)], ignore_index=True)  # 1 % more users
    split = training_split(grown)
    warm, reused = fit_and_evaluate("lightgcn", PARAMS, split, store)
    assert not reused
    assert warm["warm_start_from"] == cold["version"] and warm["warm_chain"] == 1
    # Its version records the start: not the version a cold fit of the same data gets.
    code = f"{training.CODE_VERSIONS['lightgcn']}/{training.EVALUATION_VERSION}"
    assert warm["version"] != artifact_version(split.data_version, PARAMS, code)
    assert warm["warm_started"] == {"users": 300, "items": 60}
    assert len(warm["history"]) <= WARM_EPOCHS < PARAMS["epochs"]
    assert store.latest("lightgcn") == warm["version"]
    assert warm["metrics"]["ndcg@10"] > 0.5 * cold["metrics"]["ndcg@10"] > 0  # still a model of the tastes

    # The same data again: the warm artifact is reused, nothing is fitted.
    again, reused = fit_and_evaluate("lightgcn", PARAMS, split, store)
    assert reused and again["version"] == warm["version"]


def test_other_parameters_or_other_data_start_cold(store, monkeypatch):
    base = planted(300, seed=1)
    fit_and_evaluate("lightgcn", PARAMS, training_split(base), store)
    other = fit_and_evaluate("lightgcn", {**PARAMS, "reg": 1e-3}, training_split(base), store)[0]
    assert "warm_start_from" not in other  # other parameters: another model
    # Mostly new users: too little is known to start from.
    strangers = pd.concat([base, planted(200, seed=3, start_user=1000)], ignore_index=True)
    assert "warm_start_from" not in fit_and_evaluate("lightgcn", {**PARAMS, "reg": 1e-3},
                                                     training_split(strangers), store)[0]
    # A chain of warm fits ends with a cold one.
    monkeypatch.setattr(training, "WARM_CHAIN_MAX", 1)
    first = fit_and_evaluate("lightgcn", PARAMS, training_split(planted(300, seed=1)), store)[0]
    grown = pd.concat([planted(300, seed=1), planted(3, seed=2, start_user=301)], ignore_index=True)
    second = fit_and_evaluate("lightgcn", PARAMS, training_split(grown), store)[0]
    assert second["warm_start_from"] == first["version"]
    grown_more = pd.concat([grown, planted(3, seed=4, start_user=310)], ignore_index=True)
    assert "warm_start_from" not in fit_and_evaluate("lightgcn", PARAMS, training_split(grown_more), store)[0]


def test_known_users_and_items_carry_their_embeddings_over():
    frame = planted(20, seed=5)
    interactions = Interactions.from_frame(frame)
    module = LightGCN(interactions.n_users, interactions.n_items, interactions.user_index, interactions.item_index,
                      factors=4, layers=1, lr=0.01, reg=0.0, seed=0)
    fresh = module.user_embedding.detach().clone()
    known_users = interactions.user_ids[::2]
    state = {"user_ids": torch.as_tensor(np.concatenate([known_users, [10**9]])),
             "user_ego": torch.arange((len(known_users) + 1) * 4, dtype=torch.float32).reshape(-1, 4),
             "item_ids": torch.as_tensor(interactions.item_ids[:0]), "item_ego": torch.zeros(0, 4)}
    carried = _carry_over(module, state, interactions)
    assert carried == {"users": len(known_users), "items": 0}
    users = module.user_embedding.detach()
    assert torch.equal(users[::2], state["user_ego"][:-1])   # the known ones, in their new places
    assert torch.equal(users[1::2], fresh[1::2])             # the new ones keep their random start


def test_lightfm_continues_from_the_previous_artifact_for_a_few_epochs(store):
    epochs = []
    base = planted(300, seed=1)
    cold, _ = fit_and_evaluate("lightfm", LIGHTFM, training_split(base), store, progress=epochs.append)
    assert "warm_start_from" not in cold and len(cold["history"]) == LIGHTFM["epochs"]

    grown = pd.concat([base, planted(3, seed=2, start_user=301)], ignore_index=True)
    warm, reused = fit_and_evaluate("lightfm", LIGHTFM, training_split(grown), store, progress=epochs.append)
    assert not reused and warm["warm_start_from"] == cold["version"] and warm["warm_chain"] == 1
    assert warm["warm_started"] == {"users": 300, "items": 60}
    assert len(warm["history"]) == factorization.WARM_EPOCHS < LIGHTFM["epochs"]
    # Five epochs on from the previous model rank as well as thirty from scratch.
    assert warm["metrics"]["ndcg@10"] >= 0.9 * cold["metrics"]["ndcg@10"] > 0.3


def test_a_warm_start_has_a_quarter_of_the_time_budget(store):
    """At 10M interactions a warm start's few epochs would otherwise take the whole budget of a cold fit,
    and every hourly refresh after a little more data as long as the first."""
    params = {**LIGHTFM, "max_minutes": 40.0}
    base = planted(300, seed=1)
    cold, _ = fit_and_evaluate("lightfm", params, training_split(base), store)
    grown = pd.concat([base, planted(3, seed=2, start_user=301)], ignore_index=True)
    warm, _ = fit_and_evaluate("lightfm", params, training_split(grown), store)
    assert "warm_start_from" in warm
    assert (cold["budget_minutes"], warm["budget_minutes"]) == (40.0, 10.0)
    assert cold["epochs_trained"] == params["epochs"] and warm["epochs_trained"] == factorization.WARM_EPOCHS


def test_lightfm_carries_users_items_and_feature_names_over_to_their_new_rows():
    from lightfm import LightFM

    frame = planted(40, seed=5)
    categories = {item: [f"group{(item - 100) // 15}"] for item in frame["product_id"].unique()}
    before = LightFMRecommender(factors=4, epochs=2, num_threads=1, item_features=categories)
    before.fit(Interactions.from_frame(frame[frame["user_id"] <= 20]))  # the first half of the users
    state = before.state_dict()
    old_items, old_names = state["item_ids"].numpy(), list(state["feature_names"])
    assert sorted(old_names) == ["group0", "group1", "group2", "group3"]
    assert state["lightfm_item_embeddings"].shape == (len(old_items) + 4, 4)

    # Every user, and one more category name: the first 20 users, the items and the four names are known.
    categories[100] = ["new", "group0"]
    interactions = Interactions.from_frame(frame)
    features, names = factorization.item_feature_matrix(interactions.item_ids, categories)
    model = LightFM(no_components=4, loss="warp", random_state=np.random.RandomState(0))
    model._initialize(4, features.shape[1], interactions.n_users)
    fresh = model.user_embeddings.copy()
    carried = factorization._carry_over(model, state, interactions, names)
    assert carried == {"users": 20, "items": len(old_items)}

    known = interactions.user_ids <= 20
    # ids are sorted both times: the first 20 rows
    assert np.array_equal(model.user_embeddings[known], state["lightfm_user_embeddings"].numpy())
    assert np.array_equal(model.user_embeddings[~known], fresh[~known])
    for row, item in enumerate(interactions.item_ids):
        if item in old_items:
            assert np.array_equal(model.item_embeddings[row],
                                  state["lightfm_item_embeddings"].numpy()[np.searchsorted(old_items, item)])
    n_items = interactions.n_items
    assert names[:2] == ["new", "group0"] and old_names[0] == "group0"  # the known names moved a column on
    for column, name in enumerate(names):
        if name in old_names:  # a known name: its row, wherever the new matrix puts it
            assert np.array_equal(model.item_embeddings[n_items + column],
                                  state["lightfm_item_embeddings"].numpy()[len(old_items) + old_names.index(name)])
    # AdaGrad's accumulators come along: the continued training keeps its per-row step sizes.
    assert np.array_equal(model.user_embedding_gradients[known], state["lightfm_user_embedding_gradients"].numpy())


def test_the_champion_refit_continues_from_the_evaluated_fit(store):
    frame = planted(300, seed=1)
    evaluated, _ = fit_and_evaluate("lightfm", LIGHTFM, training_split(frame), store)
    refit, reused = refit_on_everything(evaluated, frame, store)
    assert not reused and refit["warm_start_from"] == evaluated["version"] == refit["refit_of"]
    assert refit_on_everything(evaluated, frame, store) == (refit, True)
    # A model that cannot continue (item-kNN) is refitted from scratch.
    knn, _ = fit_and_evaluate("itemknn", {"neighbours": 5, "shrink_power": 1.0}, training_split(frame), store)
    assert "warm_start_from" not in refit_on_everything(knn, frame, store)[0]


@pytest.mark.parametrize("name, params", [("itemknn", {"neighbours": 10, "shrink_power": 1.0}),
                                          ("ease", {"l2": 10.0, "max_items": 100})])
def test_item_models_keep_their_matrix_after_a_little_more_data_and_refit_after_more(store, name, params):
    base = planted(300, seed=1)
    cold, _ = fit_and_evaluate(name, params, training_split(base), store)
    grown = pd.concat([base, planted(3, seed=2, start_user=301)], ignore_index=True)  # 1 % more
    warm, reused = fit_and_evaluate(name, params, training_split(grown), store)
    assert not reused and warm["warm_start_from"] == cold["version"]
    assert warm["warm_started"] == {"users": 300, "items": 60}
    assert warm["cold_train_interactions"] == cold["split"]["train_interactions"]

    def matrix(manifest):
        state, _ = store.load(name, manifest["version"])
        if name == "ease":
            return state["weights"].numpy()
        part = state["similarity"]
        return sp.csr_matrix((part["data"].numpy(), part["indices"].numpy(), part["indptr"].numpy()),
                             shape=tuple(part["shape"])).toarray()

    assert np.array_equal(matrix(warm), matrix(cold))  # the item-item matrix is kept, not recomputed ...
    state, _ = store.load(name, warm["version"])        # ... and the histories are today's
    assert len(state["user_ids"]) == 303
    assert warm["metrics"]["ndcg@10"] >= 0.9 * cold["metrics"]["ndcg@10"] > 0.3

    # 10 % more data since the cold fit (still 91 % known users): the matrix is recomputed.
    more = pd.concat([grown, planted(30, seed=3, start_user=400)], ignore_index=True)
    assert "warm_start_from" not in fit_and_evaluate(name, params, training_split(more), store)[0]


@pytest.mark.parametrize("name", ["itemknn", "ease"])
def test_a_kept_item_matrix_follows_the_items_by_id_when_items_come_and_go(name):
    """Today's items are not yesterday's: new ones fall between known ids and one is gone. Every pair of
    items both days know keeps its weight, by external id; a new item has none."""
    from rec_orchestration.ml import registry

    before_frame = planted(200, seed=6).assign(product_id=lambda f: f["product_id"] * 2)  # even ids 200..318
    params = {"neighbours": 10, "shrink_power": 1.0} if name == "itemknn" else {"l2": 10.0, "max_items": 100}
    before = registry.build(name, **params).fit(Interactions.from_frame(before_frame))
    gone = 210
    today = pd.concat([before_frame[before_frame["product_id"] != gone],
                       before_frame.iloc[:3].assign(product_id=[201, 251, 301])], ignore_index=True)
    after = registry.build(name, **params)
    after.warm_start(before.state_dict())
    after.fit(Interactions.from_frame(today))
    assert after.warm_started["items"] == 59

    def weights(model) -> dict[tuple[int, int], float]:
        if name == "ease":
            ids = model.item_ids[model.modelled]
            return {(int(a), int(b)): float(model.weights[i, j]) for i, a in enumerate(ids) for j, b in enumerate(ids)}
        coo = model.similarity.tocoo()
        return {(int(model.item_ids[i]), int(model.item_ids[j])): float(v)
                for i, j, v in zip(coo.row, coo.col, coo.data, strict=True)}

    old, new = weights(before), weights(after)
    expected = {pair: value for pair, value in old.items() if gone not in pair and value != 0}
    assert {pair: value for pair, value in new.items() if value != 0} == expected
    assert not any(pair[0] % 2 or pair[1] % 2 for pair in new)  # the new (odd) items have no weights yet


def test_lightfm_initialised_then_fit_partial_is_lightfms_own_fit():
    """The recommender initialises LightFM itself (so a warm start can replace rows) and calls
    ``fit_partial``: with one thread that is the very model ``LightFM.fit`` trains."""
    from lightfm import LightFM

    interactions = Interactions.from_frame(planted(60, seed=8))
    ours = LightFMRecommender(factors=4, epochs=3, num_threads=1).fit(interactions)
    features, _ = factorization.item_feature_matrix(interactions.item_ids, None)
    theirs = LightFM(no_components=4, loss="warp", learning_rate=ours.params["learning_rate"], item_alpha=1e-6,
                     user_alpha=1e-6, max_sampled=10, random_state=np.random.RandomState(42))
    theirs.fit((interactions.user_item_matrix() > 0).astype(np.float32).tocoo(), item_features=features,
               epochs=3, num_threads=1)
    assert np.array_equal(ours.raw["user_embeddings"], theirs.user_embeddings)
    assert np.array_equal(ours.raw["item_embeddings"], theirs.item_embeddings)


def test_an_evaluated_fit_of_code_before_warm_starts_is_refitted_cold(store, monkeypatch):
    frame = planted(300, seed=1)
    monkeypatch.setitem(training.CODE_VERSIONS, "lightfm", "lightfm-v1")   # fitted by the earlier code
    evaluated, _ = fit_and_evaluate("lightfm", LIGHTFM, training_split(frame), store)
    monkeypatch.undo()
    refit, reused = refit_on_everything(evaluated, frame, store)
    assert not reused and "warm_start_from" not in refit



def test_lightfm_with_categories_scores_the_same_after_a_round_trip_through_its_state():
    """LightFM's own per-feature-column item biases travel beside the items' biases, not over them."""
    frame = planted(40, seed=5)
    categories = {item: [f"group{(item - 100) // 15}", "all"] for item in frame["product_id"].unique()}
    model = LightFMRecommender(factors=4, epochs=2, num_threads=1, item_features=categories)
    model.fit(Interactions.from_frame(frame))
    state = model.state_dict()
    assert state["item_biases"].shape == (60,) and state["lightfm_item_biases"].shape == (60 + 5,)
    again = LightFMRecommender.from_state_dict(state)
    users = np.arange(10)
    assert np.array_equal(again.score_users(users), model.score_users(users))


def test_the_served_fit_is_kept_while_the_data_grew_little_and_it_is_young(store):
    """models/champion's rule (``keep_deployed``) on real artifacts: the fit on every interaction that is
    served goes on serving after 1 % more interactions, not after 6 %, not once a day old, not for another
    champion or other parameters, not when interactions were removed, and never with max_growth 0."""
    from datetime import UTC, datetime, timedelta

    from rec_orchestration.ml.training import keep_deployed

    frame = planted(300, seed=1)
    evaluated, _ = fit_and_evaluate("lightfm", LIGHTFM, training_split(frame), store)
    served, _ = refit_on_everything(evaluated, frame, store)
    fitted = datetime.fromisoformat(served["fitted_at"])
    n = served["n_interactions"]
    assert n == len(frame)
    now = fitted + timedelta(hours=1)

    def kept(manifest=served, champion=evaluated, count=n, **rule):
        return keep_deployed(manifest, champion, count, now=rule.pop("now", now), **rule)[0]

    assert kept(count=int(n * 1.01)) and kept(count=n)
    assert not kept(count=int(n * 1.06))
    assert not kept(count=n - 1)  # data was removed: refit
    assert not kept(now=fitted + timedelta(hours=25))
    assert kept(count=int(n * 1.06), max_growth=0.1) and not kept(count=n, max_growth=0.0)
    assert not kept(manifest=None)
    # The next evaluation's champion: another fit of the same model and parameters keeps it; another model
    # or other parameters do not.
    grown = pd.concat([frame, planted(3, seed=2, start_user=301)], ignore_index=True)
    next_evaluated, _ = fit_and_evaluate("lightfm", LIGHTFM, training_split(grown), store)
    assert next_evaluated["version"] != evaluated["version"] and kept(champion=next_evaluated, count=len(grown))
    assert not kept(champion={**next_evaluated, "params": {**LIGHTFM, "factors": 4}})
    knn, _ = fit_and_evaluate("itemknn", {"neighbours": 5, "shrink_power": 1.0}, training_split(frame), store)
    assert not kept(champion=knn)
    why = keep_deployed(served, evaluated, int(n * 1.01), now=now.astimezone(UTC))[1]
    assert "grew 1.00%" in why and "1.0 h ago" in why


def test_a_training_round_keeps_every_models_fit_or_none(store):
    """ml/training_round's rule (``keep_round``) on real artifacts: the last evaluation's fits stand for this
    refresh's while the interactions grew by at most max_growth and the oldest fit is young, every model
    with the parameters it was evaluated with. One model with other parameters, code or no evaluated fit
    refits them all, so that every model is still evaluated on one split."""
    from datetime import timedelta

    from rec_orchestration.ml.training import keep_round

    frame = planted(300, seed=1)
    split = training_split(frame)
    knn_params = {"neighbours": 5, "shrink_power": 1.0}
    evaluated = {"lightfm": fit_and_evaluate("lightfm", LIGHTFM, split, store)[0],
                 "itemknn": fit_and_evaluate("itemknn", knn_params, split, store)[0]}
    wanted = {"lightfm": (LIGHTFM, False), "itemknn": (knn_params, False)}
    oldest = min(datetime.fromisoformat(m["fitted_at"]) for m in evaluated.values())
    now = oldest + timedelta(hours=1)
    n = len(frame)

    def kept(fits=evaluated, settings=wanted, count=n, **rule):
        return keep_round(fits, settings, count, now=rule.pop("now", now), **rule)[0]

    assert kept() and kept(count=int(n * 1.04))
    assert not kept(count=int(n * 1.06)) and kept(count=int(n * 1.06), max_growth=0.1)
    assert not kept(count=n - 1)  # interactions were removed
    assert not kept(now=oldest + timedelta(hours=25))
    assert not kept(count=n, max_growth=0.0)
    # One model otherwise: other parameters, other inputs, another code version, no evaluated fit, a fit of
    # other data, a fit from before fits recorded their time.
    assert not kept(settings={**wanted, "itemknn": ({**knn_params, "neighbours": 6}, False)})
    assert not kept(settings={**wanted, "lightfm": (LIGHTFM, True)})
    assert not kept(fits={**evaluated, "lightfm": {**evaluated["lightfm"], "code_version": "lightfm-v1"}})
    assert not kept(fits={**evaluated, "itemknn": None})
    assert not kept(settings={**wanted, "ease": ({"l2": 10.0}, False)})
    assert not kept(fits={**evaluated, "itemknn": {**evaluated["itemknn"], "data_version": "other"}})
    assert not kept(fits={name: {k: v for k, v in m.items() if k != "fitted_at"} for name, m in evaluated.items()})
    why = keep_round(evaluated, wanted, int(n * 1.01), now=now)[1]
    assert "grew 1.00%" in why and "1.0 h ago" in why
