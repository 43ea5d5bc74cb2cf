"""What a step knows of the run it belongs to: its key, and the champion it may publish."""

from __future__ import annotations

from typing import Any

import dagster as dg

from rec_orchestration.db import reads
from rec_orchestration.db.warehouse import Queries
from rec_orchestration.ml.champion import ChampionRefused, approved


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
