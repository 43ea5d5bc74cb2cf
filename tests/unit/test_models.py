"""The one test suite every model passes (as benfred/implicit runs one suite over all its models).

The data: two communities of users, each interacting only with its own block of items, so a model that
learns anything recommends a user the unseen items of their own block first.

Models that can train on a GPU (LightGCN, through its ``accelerator``) run the suite again on CUDA
under the ``gpu`` marker; those runs are skipped where ``torch.cuda.is_available()`` is False.
"""

import inspect

import numpy as np
import pandas as pd
import pytest
import torch

from rec_orchestration.ml import registry
from rec_orchestration.ml.base import Recommender
from rec_orchestration.ml.interactions import Interactions

N_USERS, N_ITEMS = 40, 20           # users 0..19 like items 0..9, users 20..39 like items 10..19
ITEM_OFFSET = 1000                  # external ids differ from the models' dense indices, as in the warehouse
USER_IDS = 500 + 3 * np.arange(N_USERS)
SMALL = {                           # small settings so the whole suite stays quick on a CPU
    "popularity": {},
    "itemknn": {"neighbours": 10},
    "ease": {"l2": 10.0},
    "lightfm": {"factors": 8, "epochs": 40, "num_threads": 1},
    "lightgcn": {"factors": 16, "layers": 2, "epochs": 60, "lr": 0.05, "batch_size": 256,
                 "patience": 60, "accelerator": "cpu"},
}
PERSONALISED = [name for name in registry.MODEL_NAMES if name != "popularity"]
# The suite's runs: (model name, settings), one per model on the CPU, plus a CUDA run of each model
# with a device setting; the CUDA runs carry the gpu marker and skip without a CUDA device.
ON_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available())")
RUNS = [pytest.param((name, SMALL[name]), id=name) for name in registry.MODEL_NAMES] + [
    pytest.param(("lightgcn", {**SMALL["lightgcn"], "accelerator": "cuda"}), id="lightgcn-cuda",
                 marks=[pytest.mark.gpu, ON_CUDA]),
]


def block(user: int) -> range:
    start = 0 if user < N_USERS // 2 else N_ITEMS // 2
    return range(start, start + N_ITEMS // 2)


def two_communities(seed: int = 0) -> tuple[Interactions, dict[int, np.ndarray]]:
    """Each user interacts with 7 of the 10 items of their block; the other 3 are held out."""
    rng = np.random.default_rng(seed)
    rows, held_out = [], {}
    for user in range(N_USERS):
        items = rng.permutation(list(block(user)))
        user_id = int(USER_IDS[user])
        rows += [(user_id, ITEM_OFFSET + int(item), 1.0, 1_600_000_000 + 60 * i) for i, item in enumerate(items[:7])]
        held_out[user_id] = ITEM_OFFSET + items[7:]
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "weight", "ts"])
    return Interactions.from_frame(frame), held_out


@pytest.fixture(scope="module", params=RUNS)
def fitted(request) -> tuple[str, Recommender, Interactions, dict]:
    name, settings = request.param
    data, held_out = two_communities()
    model = registry.build(name, **settings).fit(data)
    return name, model, data, held_out


def test_trains_on_the_device_it_was_asked_for(fitted, request):
    name, model, _, _ = fitted
    _, settings = request.node.callspec.params["fitted"]     # this run's (name, settings)
    assert getattr(model, "device_used", "cpu") == settings.get("accelerator", "cpu"), name


def test_recommends_k_unseen_items_best_first(fitted):
    name, model, data, _ = fitted
    seen = data.items_by_user()
    users = USER_IDS
    recs = model.recommend(users, k=3, exclude=seen)
    for user, items, scores in zip(users, recs.items, recs.scores, strict=True):
        assert len(items) == 3, name
        assert not set(items.tolist()) & set(seen[user].tolist()), f"{name} recommended a seen item"
        assert np.all(np.diff(scores) <= 0), f"{name} scores not in descending order"


def test_personalised_models_recommend_the_users_own_block(fitted):
    name, model, data, held_out = fitted
    if name == "popularity":
        # The baseline ranks the same items for everyone: the suite proves that is all it does.
        recs = model.recommend(USER_IDS, k=3)
        assert all(np.array_equal(recs.items[0], items) for items in recs.items)
        return
    # Unknown users mixed in: they get nothing, and the others' lists stay theirs.
    users = np.insert(USER_IDS, [0, 10, N_USERS], [1, 501, 99_999])
    recs = model.recommend(users, k=3, exclude=data.items_by_user())
    assert [len(recs.items[i]) for i in (0, 11, len(users) - 1)] == [0, 0, 0]
    hits = sum(len(set(items.tolist()) & set(held_out[user].tolist()))
               for user, items in zip(users.tolist(), recs.items, strict=True) if user in held_out)
    # Each user's 3 unseen in-block items are the only right answers among 13 unseen: chance finds
    # 3 * 3/13 = 23 % of them; a model that learned the blocks finds most.
    assert hits >= 0.8 * 3 * N_USERS, f"{name} found {hits} of {3 * N_USERS} held-out items"


def test_unknown_users_get_no_personal_items(fitted):
    name, model, _, _ = fitted
    recs = model.recommend(np.array([10_000]), k=3)
    if name == "popularity":
        assert len(recs.items[0]) == 3   # the cold-start fallback answers everyone
    else:
        assert len(recs.items[0]) == 0   # the caller falls back to popularity


def test_save_and_load_give_identical_recommendations(fitted, tmp_path):
    name, model, data, _ = fitted
    path = tmp_path / f"{name}.pt"
    model.save(path)                      # loaded back with torch.load(weights_only=True)
    restored = type(model).load(path)
    users = USER_IDS
    before = model.recommend(users, k=5, exclude=data.items_by_user())
    after = restored.recommend(users, k=5, exclude=data.items_by_user())
    for a, b, sa, sb in zip(before.items, after.items, before.scores, after.scores, strict=True):
        assert np.array_equal(a, b)
        np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-6)


def test_similar_items_come_from_the_same_block(fitted):
    name, model, _, _ = fitted
    items = ITEM_OFFSET + np.arange(N_ITEMS)
    if name == "popularity":
        with pytest.raises(NotImplementedError):
            model.similar_items(items, 3)
        return
    neighbours, scores = model.similar_items(items, 3)
    assert neighbours.shape == (N_ITEMS, 3)
    assert not np.any(neighbours == items[:, None]), f"{name}: an item is its own neighbour"
    same_block = (neighbours[:, 0] - ITEM_OFFSET) // (N_ITEMS // 2) == np.arange(N_ITEMS) // (N_ITEMS // 2)
    assert same_block.mean() >= 0.9, f"{name}: top neighbour outside the item's block for {same_block.tolist()}"


def test_ease_over_the_most_interacted_items_only_recommends_those():
    data, _ = two_communities()
    model = registry.build("ease", l2=10.0, max_items=5).fit(data)
    modelled = set(model.item_ids[model.modelled].tolist())
    recs = model.recommend(USER_IDS, k=3, exclude=data.items_by_user())
    assert all(set(items.tolist()) <= modelled for items in recs.items)
    with pytest.raises(ValueError, match="max_items"):
        registry.build("ease", max_items=1_000_000)


@pytest.mark.parametrize("name", registry.MODEL_NAMES)
def test_defaults_have_one_home(name):
    """``registry.build(name)``, the class built with no arguments and ``registry.DEFAULTS`` agree."""
    cls = registry.model_class(name)
    built, bare = registry.build(name), cls()
    assert built.params == bare.params
    assert {key: bare.params[key] for key in registry.DEFAULTS[name]} == registry.DEFAULTS[name]
    signature = inspect.signature(cls)
    assert {key: signature.parameters[key].default for key in registry.DEFAULTS[name]} == registry.DEFAULTS[name]
