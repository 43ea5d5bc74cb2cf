"""What a step knows of the run it belongs to: its key, its concurrency pool, the model versions it
materialized, and the champion it may publish."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg

from rec_orchestration.db import reads
from rec_orchestration.db.warehouse import Queries
from rec_orchestration.ml import registry
from rec_orchestration.ml.champion import ChampionRefused, approved

# The Dagster concurrency pool of every asset that rebuilds shared state (dbt build, similarity, models,
# evaluation, publishing). dagster.yaml limits it to one run in progress (run granularity): two refreshes
# (the schedule's and one launched from the UI) are queued one after the other.
REFRESH_POOL = "rec_refresh"


def reserve_refresh_pool(instance: dg.DagsterInstance) -> None:
    """Give the refresh pool its limit (``dagster.yaml``'s ``default_limit``) now. Dagster's queue otherwise
    sets it the first time it meets a run of the pool, after the pass that decides which queued runs start:
    two refreshes queued in that very first pass would both start. A no-op once the pool has a limit.
    ``rec dev`` calls it before starting Dagster, and the landing sensor on each evaluation.

    Only when the pool has no limit yet: on PostgreSQL storage, Dagster's initializer fails when the row
    exists (its insert's unique violation aborts the transaction its fallback update then needs)."""
    storage = instance.event_log_storage

    def has_limit() -> bool:
        return any(pool.name == REFRESH_POOL for pool in storage.get_pool_limits())

    if has_limit():
        return
    try:
        storage.initialize_concurrency_limit_to_default(REFRESH_POOL)
    except Exception:
        if not has_limit():  # not another process setting it at the same moment: a real failure
            raise


def run_key(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    """The run a step's results belong to: a retry of a run (a new run from its failed steps) keeps the
    original run's id, so the champion it chose is still found."""
    run = context.run
    return run.root_run_id or run.run_id


def approved_champion(context: dg.AssetExecutionContext, warehouse: Queries) -> dict[str, Any]:
    """The champion this run chose (its blocking check passed, or the caller would not run); when this run
    chose none, the latest one, and only if it beat popularity. Fails the step otherwise."""
    row = reads.champion_row(warehouse, run_key(context)) or reads.champion_row(warehouse, None)
    try:
        return dict(approved(row))
    except ChampionRefused as refused:
        raise dg.Failure(str(refused)) from refused


def _model_version_keys() -> dict[str, tuple[dg.AssetKey, str]]:
    """Model name -> (the asset that fits it, the metadata key of its version there)."""
    keys = {name: (dg.AssetKey(["models", name]), "model_version") for name in registry.MODEL_NAMES}
    for asset, others in registry.FITTED_WITH.items():
        keys |= {other: (dg.AssetKey(["models", asset]), f"{other}_version") for other in others}
    return keys


def materialized_model_versions(context: dg.AssetExecutionContext, names: Iterable[str]) -> dict[str, str]:
    """The version of each model its asset materialized *in this run* (or in the run this one re-executes),
    else in its latest materialization, read from Dagster's event log.

    Not the model store's ``LATEST`` pointers: with two runs at once (or one re-executing an old run) a
    pointer may already name another run's fit, and evaluating or serving that would mix two runs' models.
    Fails the step, naming the asset to materialize, for a model no materialization ever recorded."""
    keys = _model_version_keys()
    wanted = {name: keys[name] for name in names}
    found: dict[str, str] = {}
    run = context.run
    for run_id in dict.fromkeys(r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r):
        in_run: dict[str, str] = {}
        records = context.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        for record in records:  # oldest first: a step retried in the run overwrites its earlier attempt
            materialization = record.event_log_entry.asset_materialization
            if materialization is None:
                continue
            for name, (asset_key, metadata_key) in wanted.items():
                if materialization.asset_key == asset_key and metadata_key in materialization.metadata:
                    in_run[name] = str(materialization.metadata[metadata_key].value)
        found = {**in_run, **found}
    for name, (asset_key, metadata_key) in wanted.items():
        if name not in found:
            event = context.instance.get_latest_materialization_event(asset_key)
            materialization = event.asset_materialization if event is not None else None
            if materialization is not None and metadata_key in materialization.metadata:
                found[name] = str(materialization.metadata[metadata_key].value)
    missing = [name for name in wanted if name not in found]
    if missing:
        assets = sorted({wanted[name][0].to_user_string() for name in missing})
        raise dg.Failure(f"no materialization of model {', '.join(missing)} is recorded: materialize "
                         f"{', '.join(assets)} first")
    return {name: found[name] for name in wanted}  # in the order asked for
