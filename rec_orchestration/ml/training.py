"""How every model is fitted and evaluated for the pipeline: one time-based split, one artifact version
rule, models refitted only when their data, parameters or code changed.

Each model is fitted on the training part of one split (every user's latest interaction held out), evaluated
on the held-out part at :data:`EVAL_K`, and saved to the model store under a version derived from data,
parameters and code. An artifact whose version already exists is reused, not refitted. Both popularity
baselines (decayed ``popularity`` and plain ``popularity_plain``) are fitted and evaluated the same way, on
the same split. The champion is then refitted on every interaction (:func:`refit_on_everything`): its
evaluation never saw each user's latest one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from rec_orchestration import threads
from rec_orchestration.ml import registry
from rec_orchestration.ml.artifacts import ModelStore, artifact_version
from rec_orchestration.ml.base import Recommender, stable_hash
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.metrics import evaluate
from rec_orchestration.ml.plots import training_curve
from rec_orchestration.ml.splits import time_holdout
from rec_orchestration.progress import Report

if TYPE_CHECKING:
    import pandas as pd

# Bumped when a model's code changes what it learns; part of every artifact version.
CODE_VERSIONS = {"popularity": "popularity-v1", "popularity_plain": "popularity_plain-v1", "itemknn": "itemknn-v1",
                 "ease": "ease-v1",
                 "lightfm": "lightfm-v2",  # v2: LightFM's own arrays kept for warm starts
                 # v2: the batch sized from the graph, ego embeddings kept for warm starts; v3: at most 32
                 # steps an epoch, not 64
                 "lightgcn": "lightgcn-v3"}
# Models whose fit can start from the previous artifact (``Recommender.warm_start``) when the data grew a
# little. LightFM and LightGCN (CONTINUED) train a few epochs on from its weights instead of hundreds from
# random ones; item-kNN and EASE keep its item-item matrix (the costly part of their fit) and take only
# the users' histories from today's data, as long as the training data grew by at most
# REUSED_MAX_GROWTH since. A chain of warm fits is ended by a cold one every WARM_CHAIN_MAX fits (a day of
# hourly refreshes), and a warm start needs the previous artifact to know WARM_MIN_KNOWN of today's users
# and of today's items. The champion's refit on every interaction continues from its evaluated fit where
# the model is CONTINUED (item-kNN's and EASE's matrices would miss each user's latest interaction).
CONTINUED = ("lightfm", "lightgcn")
WARM_STARTED = ("itemknn", "ease", *CONTINUED)
WARM_CHAIN_MAX = 24
WARM_MIN_KNOWN = 0.9
REUSED_MAX_GROWTH = 0.05
# The champion's fit on every interaction (``refit_on_everything``) that is being served is kept, not refitted,
# while the interactions grew by at most SERVING_MAX_GROWTH since it was fitted and it is younger than
# SERVING_MAX_AGE_HOURS (``keep_deployed``): the hourly refresh after a few new reviews then rescores only the
# users whose histories changed (assets/scoring.py), with the fit every other user's rows were made with.
# ml/item_similarity keeps its table by the same rule (``within_staleness``).
SERVING_MAX_GROWTH = 0.05
SERVING_MAX_AGE_HOURS = 24.0
EVAL_K = 10                   # metrics at k, for every model
HOLDOUT_LATEST = 1            # each user's latest interaction is the test set
HOLDOUT_MIN_INTERACTIONS = 3  # users with fewer interactions are only trained on
# Held-out users every model is evaluated on, at most (evaluation_sample). Ranking a user costs the whole
# catalogue, so evaluating every held-out user cost users x items: with both growing with the data (users
# ~ reviews / 10, products ~ reviews / 50) that is 100x the work for 10x the reviews: at 10M reviews
# item-kNN's and EASE's steps were still ranking 959,322 users after 20 minutes each. 20,000 users put the standard
# error of a model's nDCG@10 near 0.002 (a user's nDCG@10 varies by about 0.25), and every model is scored
# on the same users, so their differences are measured more closely than that.
EVAL_MAX_USERS = 20_000
# Part of every evaluated artifact's version: a change to how models are evaluated re-evaluates them.
EVALUATION_VERSION = (f"time-holdout-{HOLDOUT_LATEST}-min{HOLDOUT_MIN_INTERACTIONS}-k{EVAL_K}"
                      f"-users{EVAL_MAX_USERS}-v2")
TRAINING_CURVE = "training_curve.png"
# Attributes a fitted model may have that go into its manifest (LightGCN's device and timing, the epochs
# LightFM trained within its time budget, the budget a fit had: a share of max_minutes for a warm start).
REPORTED_ATTRIBUTES = ("device_used", "seconds_per_epoch", "best_val_ndcg", "batch_size_used", "warm_started",
                       "epochs_trained", "budget_minutes")


def data_version(frame: pd.DataFrame) -> str:
    """Hash of exactly the rows a model is fitted on (any changed id, weight or time changes it)."""
    import pandas as pd
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return f"{len(frame)}:{digest.hexdigest()[:24]}"


@dataclass(frozen=True)
class TrainingSplit:
    """The one split every model is fitted and evaluated on, so their metrics compare."""

    train: Interactions
    test: pd.DataFrame       # user_id, product_id: each held-out user's latest interaction(s)
    data_version: str        # of the whole frame the split was made from

    @cached_property
    def evaluated(self) -> pd.DataFrame:
        """The test rows the models are scored on: those of at most :data:`EVAL_MAX_USERS` users."""
        return evaluation_sample(self.test, EVAL_MAX_USERS)

    def describe(self) -> dict[str, Any]:
        return {"kind": "time", "held_out_per_user": HOLDOUT_LATEST,
                "min_interactions": HOLDOUT_MIN_INTERACTIONS, "train_interactions": len(self.train),
                "test_interactions": len(self.test), "test_users": int(self.test["user_id"].nunique()),
                "evaluated_users": int(self.evaluated["user_id"].nunique())}


def evaluation_sample(test: pd.DataFrame, max_users: int) -> pd.DataFrame:
    """``test``'s rows of at most ``max_users`` of its users: those whose ids hash lowest
    (:func:`~rec_orchestration.ml.base.stable_hash`). The same users for every model and in every process;
    as users are added, a user leaves the sample only when enough new users hash below them."""
    users = np.unique(test["user_id"].to_numpy())
    if len(users) <= max_users:
        return test
    chosen = users[np.argsort(stable_hash(users), kind="stable")[:max_users]]
    return test[test["user_id"].isin(chosen)].reset_index(drop=True)


def training_split(frame: pd.DataFrame) -> TrainingSplit:
    """Each user's latest interaction (users with at least three) held out of ``frame`` (the warehouse's
    interactions, ``user_id, product_id, weight, ts``)."""
    train, test = time_holdout(frame, n_latest=HOLDOUT_LATEST, min_interactions=HOLDOUT_MIN_INTERACTIONS)
    return TrainingSplit(Interactions.from_frame(train), test[["user_id", "product_id"]].reset_index(drop=True),
                         data_version(frame))


@dataclass(frozen=True)
class ModelInputs:
    """Inputs besides interactions: ``constructor`` keyword arguments (item features) and what of them
    goes into the artifact version (their hash)."""

    constructor: dict[str, Any] = field(default_factory=dict)
    version: dict[str, str] = field(default_factory=dict)


def category_features(categories: Mapping[int, list[str]]) -> ModelInputs:
    """Category paths as item features (LightFM), with their hash for the artifact version."""
    digest = hashlib.sha256(json.dumps(sorted((k, sorted(v)) for k, v in categories.items())).encode())
    return ModelInputs(constructor={"item_features": dict(categories)},
                       version={"item_features": digest.hexdigest()})


def training_plot(model: Recommender) -> bytes | None:
    """PNG of the training curve (loss and validation nDCG per epoch) where the model records one."""
    history = getattr(model, "history", None)
    if not history:
        return None
    return training_curve(history, title=model.name)


def fit_and_evaluate(name: str, params: dict[str, Any], split: TrainingSplit, store: ModelStore,
                     inputs: ModelInputs = ModelInputs(), progress: Report | None = None
                     ) -> tuple[dict[str, Any], bool]:
    """Fit ``name`` on the split's training part, evaluate it at :data:`EVAL_K` on its test part and save the
    artifact (made the model's ``LATEST``). Returns its manifest and whether an existing artifact of the same
    data, parameters and code was reused instead of fitting."""
    code = f"{CODE_VERSIONS[name]}/{EVALUATION_VERSION}"
    version = artifact_version(split.data_version, {**params, **inputs.version}, code)
    if store.exists(name, version):
        store.set_latest(name, version)
        return store.manifest(name, version), True
    source = warm_start_source(name, params, inputs, split, store)
    if source is not None and source[1] is None:
        return source[0], True  # a warm fit of this very data: nothing changed since
    model = registry.build(name, **params, **inputs.constructor)
    warm: dict[str, Any] = {}
    if source is not None:
        previous, state = source
        model.warm_start(state)
        warm = {"warm_start_from": previous["version"], "warm_chain": int(previous.get("warm_chain", 0)) + 1,
                "cold_train_interactions": cold_size(previous)}
        version = artifact_version(split.data_version, {**params, **inputs.version, **warm}, code)
    model.progress, model.monitor = progress, (split.train, split.evaluated)  # reported per epoch, never chosen on
    fitted_at = datetime.now().astimezone()
    with threads.limited() as budget:  # the step's share of the cores (rec_orchestration.threads)
        started = time.perf_counter()
        model.fit(split.train)
        fit_seconds = time.perf_counter() - started
        metrics = evaluate(model, split.train, split.evaluated, k=EVAL_K)
    manifest: dict[str, Any] = {
        "params": params, "item_features": bool(inputs.version), "metrics": metrics, "split": split.describe(),
        "data_version": split.data_version, "code_version": CODE_VERSIONS[name],
        "evaluation_version": EVALUATION_VERSION, "fitted_at": fitted_at.isoformat(),
        "fit_seconds": round(fit_seconds, 3), "threads": budget,
        "n_users": split.train.n_users, "n_items": split.train.n_items}
    manifest |= {key: getattr(model, key) for key in REPORTED_ATTRIBUTES if getattr(model, key, None) is not None}
    manifest |= warm
    files = {}
    if (plot := training_plot(model)) is not None:
        files[TRAINING_CURVE] = plot
        manifest["history"] = model.history
    store.save(name, version, model.state_dict(), manifest, files=files)
    store.set_latest(name, version)
    return store.manifest(name, version), False


def warm_start_source(name: str, params: dict[str, Any], inputs: ModelInputs, split: TrainingSplit,
                      store: ModelStore) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The manifest of the artifact a fit of ``name`` may start from, or None for a cold fit: the model's
    LATEST, fitted with the same parameters, inputs and code, fewer than WARM_CHAIN_MAX warm fits from a
    cold one, knowing WARM_MIN_KNOWN of the split's training users and items; with its state dict (None
    when it was fitted on this very data: nothing to fit then)."""
    if name not in WARM_STARTED or (latest := store.latest(name)) is None or not store.exists(name, latest):
        return None
    manifest = store.manifest(name, latest)
    if (not fitted_with(manifest, params, bool(inputs.version)) or manifest.get("code_version") != CODE_VERSIONS[name]
            or manifest.get("evaluation_version") != EVALUATION_VERSION
            or int(manifest.get("warm_chain", 0)) + 1 > WARM_CHAIN_MAX):
        return None
    if manifest.get("data_version") == split.data_version:
        return manifest, None
    if len(split.train) < manifest["split"]["train_interactions"]:
        return None  # fewer interactions than it was fitted on: data was taken away, not added
    if name not in CONTINUED and len(split.train) > (1 + REUSED_MAX_GROWTH) * cold_size(manifest):
        return None  # grown too much since the chain's cold fit to keep its item-item matrix
    state, _ = store.load(name, latest)
    return (manifest, state) if knows_enough(state, split.train) else None


def fitted_with(manifest: Mapping[str, Any], params: Mapping[str, Any], item_features: bool) -> bool:
    """Whether the artifact of ``manifest`` was fitted with ``params`` (as its JSON manifest holds them) and with
    item features if and only if ``item_features``."""
    return (manifest.get("params") == json.loads(json.dumps(params))
            and bool(manifest.get("item_features")) == item_features)


def cold_size(manifest: Mapping[str, Any]) -> int:
    """The training interactions of the cold fit a chain of warm fits started from."""
    return int(manifest.get("cold_train_interactions", manifest["split"]["train_interactions"]))


def knows_enough(state: Mapping[str, Any], interactions: Interactions) -> bool:
    """Whether a fitted state knows WARM_MIN_KNOWN of ``interactions``' users and of its items."""
    known = [float(np.isin(ids, state[key].numpy()).mean()) if len(ids) else 0.0
             for ids, key in ((interactions.user_ids, "user_ids"), (interactions.item_ids, "item_ids"))]
    return min(known) >= WARM_MIN_KNOWN


def refit_on_everything(evaluated: Mapping[str, Any], frame: pd.DataFrame, store: ModelStore,
                        inputs: ModelInputs = ModelInputs(), progress: Report | None = None
                        ) -> tuple[dict[str, Any], bool]:
    """The evaluated model (its manifest) refitted with the same parameters on every interaction of ``frame``.
    Returns the refit's manifest and whether an existing artifact was reused.

    A model of CONTINUED continues from the evaluated artifact (which saw all but each user's latest
    interaction) instead of starting cold; the refit's version and manifest record it (``warm_start_from``)."""
    name = evaluated["model_name"]
    frame_version = data_version(frame)
    code = f"{CODE_VERSIONS[name]}/all-interactions"
    version = artifact_version(frame_version, {**evaluated["params"], **inputs.version}, code)
    if store.exists(name, version):
        return store.manifest(name, version), True
    interactions = Interactions.from_frame(frame)
    model = registry.build(name, **evaluated["params"], **inputs.constructor)
    warm: dict[str, Any] = {}
    if (name in CONTINUED and evaluated.get("code_version") == CODE_VERSIONS[name]
            and store.exists(name, evaluated["version"])):  # not an artifact of code before warm starts
        warm_version = artifact_version(frame_version, {**evaluated["params"], **inputs.version,
                                                        "warm_start_from": evaluated["version"]}, code)
        if store.exists(name, warm_version):  # saved only by a refit that did start from it
            return store.manifest(name, warm_version), True
        state, _ = store.load(name, evaluated["version"])
        if knows_enough(state, interactions):
            warm, version = {"warm_start_from": evaluated["version"]}, warm_version
            model.warm_start(state)
    started = time.perf_counter()
    fitted_at = datetime.now().astimezone()
    model.progress = progress
    with threads.limited() as budget:
        model.fit(interactions)
    store.save(name, version, model.state_dict(), {
        "params": evaluated["params"], "refit_of": evaluated["version"], "metrics": evaluated["metrics"],
        "code_version": CODE_VERSIONS[name], "item_features": bool(inputs.version), "fitted_at": fitted_at.isoformat(),
        "data_version": frame_version, "n_interactions": len(frame),
        "fit_seconds": round(time.perf_counter() - started, 3), "threads": budget, **warm,
        **({"warm_started": model.warm_started} if getattr(model, "warm_started", None) else {})})
    return store.manifest(name, version), False


def keep_deployed(deployed: Mapping[str, Any] | None, evaluated: Mapping[str, Any], n_interactions: int, *,
                  max_growth: float = SERVING_MAX_GROWTH, max_age_hours: float = SERVING_MAX_AGE_HOURS,
                  now: datetime) -> tuple[bool, str]:
    """Whether the fit being served, ``deployed`` (the manifest of a :func:`refit_on_everything` artifact, None
    when there is none), may go on serving in place of refitting ``evaluated`` (the manifest of this run's
    champion) on ``n_interactions`` interactions; and why, in words for the run log.

    It may when it is the same model with the same parameters, code and inputs, was fitted on at most
    ``n_interactions`` and at least ``n_interactions / (1 + max_growth)`` of them, and ``fitted_at`` at most
    ``max_age_hours`` before ``now`` (an aware datetime). ``max_growth`` 0 refits on every change of the data.
    Fewer interactions than it was fitted on means data was taken away: that refits, whatever the share."""
    if deployed is None:
        return False, "no fit of the champion on every interaction is served yet"
    name = evaluated["model_name"]
    if deployed.get("model_name") != name:
        return False, f"the champion is now {name}, the served fit is {deployed.get('model_name')}"
    if (deployed.get("params") != evaluated["params"] or deployed.get("code_version") != CODE_VERSIONS[name]
            or bool(deployed.get("item_features")) != bool(evaluated.get("item_features"))):
        return False, "the served fit has other parameters, inputs or code than the champion evaluated now"
    if not deployed.get("fitted_at"):
        return False, "the served fit does not record when it was fitted"
    return within_staleness(int(deployed["n_interactions"]), datetime.fromisoformat(deployed["fitted_at"]),
                            n_interactions, max_growth=max_growth, max_age_hours=max_age_hours, now=now)


def keep_round(evaluated: Mapping[str, Mapping[str, Any] | None], wanted: Mapping[str, tuple[dict[str, Any], bool]],
               n_interactions: int, *, max_growth: float = SERVING_MAX_GROWTH,
               max_age_hours: float = SERVING_MAX_AGE_HOURS, now: datetime) -> tuple[bool, str]:
    """Whether the models of the last evaluation may stand, unrefitted, for this refresh's models; and why.

    ``evaluated``: model name -> the manifest of the fit the last evaluation compared (None when its artifact
    is gone), for every model evaluated; ``wanted``: model name -> the parameters and item-feature flag this
    refresh fits it with; ``n_interactions``: the interactions now. They may stand when every wanted model has
    a fit there with those parameters and inputs, of today's code and evaluation, all made from one split of
    data at most ``1 + max_growth`` times smaller than today's and none older than ``max_age_hours`` at
    ``now`` (:func:`within_staleness`). Keeping them all, or refitting them all, keeps every model evaluated on
    one split (:func:`~rec_orchestration.ml.champion.require_same_data`)."""
    for name, (params, item_features) in wanted.items():
        manifest = evaluated.get(name)
        if manifest is None:
            return False, f"no fit of {name} was evaluated last time"
        if not fitted_with(manifest, params, item_features):
            return False, f"{name} is fitted with other parameters or inputs now than last time"
        if (manifest.get("code_version") != CODE_VERSIONS[name]
                or manifest.get("evaluation_version") != EVALUATION_VERSION):
            return False, f"{name}'s code or evaluation changed since its last fit"
        if not manifest.get("fitted_at"):
            return False, f"{name}'s last fit does not record when it was made"
    kept = [evaluated[name] for name in wanted]
    if not kept:
        return False, "no model to keep"
    if len({manifest["data_version"] for manifest in kept}) > 1:
        return False, "the last evaluation's fits were made from different data"
    split = kept[0]["split"]
    made_from = int(split["train_interactions"]) + int(split["test_interactions"])
    oldest = min(datetime.fromisoformat(manifest["fitted_at"]) for manifest in kept)
    return within_staleness(made_from, oldest, n_interactions, max_growth=max_growth, max_age_hours=max_age_hours,
                            now=now)


def within_staleness(made_from: int, made_at: datetime, n_interactions: int, *, max_growth: float,
                     max_age_hours: float, now: datetime) -> tuple[bool, str]:
    """Whether something made from ``made_from`` interactions at ``made_at`` may stand for one made from today's
    ``n_interactions``: at least as many as it saw (fewer: data was removed), at most ``1 + max_growth`` times
    them, and at most ``max_age_hours`` old at ``now``; and why, in figures. Never when ``max_growth`` is 0 (made
    again on every change of the data, and when nothing changed, found by the caller's own exact check)."""
    if max_growth <= 0:
        return False, "no staleness allowed (max_growth 0): made again on every change of the interactions"
    if n_interactions < made_from:
        return False, (f"{n_interactions:,} interactions, fewer than the {made_from:,} it was made from: data was "
                       "removed")
    growth = n_interactions / made_from - 1.0 if made_from else float("inf")
    age_hours = (now - made_at).total_seconds() / 3600
    said = (f"the interactions grew {growth:.2%} since it was made (at most {max_growth:.2%}), "
            f"{age_hours:.1f} h ago (at most {max_age_hours:g} h)")
    return growth <= max_growth and age_hours <= max_age_hours, said
