"""Sensors: new or changed landing entries are ingested as they arrive, one run per entry."""

import json

import dagster as dg

from rec_orchestration import settings
from rec_orchestration.jobs import ingest_landing_job
from rec_orchestration.partitions import LANDING_PARTITIONS_NAME, entry_fingerprint, landing_partitions
from rec_orchestration.runs import reserve_refresh_pool
from rec_orchestration.sources.formats import landing_entries


@dg.sensor(
    job=ingest_landing_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing directory (REC_LANDING_DIR); adds a partition per new file or folder "
    "and requests its ingestion; a changed entry (size or mtime) is ingested again (the ledger skips content "
    "it has loaded).",
)
def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    reserve_refresh_pool(context.instance)  # the daemon is up: make sure the run queue knows the pool's limit
    landing = settings.landing_dir()
    if not landing.is_dir():
        return dg.SkipReason(f"landing directory {landing} does not exist")
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(LANDING_PARTITIONS_NAME))
    current = {entry.name: entry_fingerprint(entry) for entry in landing_entries(landing)}
    changed = [name for name, fingerprint in current.items() if seen.get(name) != fingerprint]
    if not changed:
        return dg.SkipReason(f"no new or changed entries in {landing}")
    new = [name for name in changed if name not in known]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"{name}:{current[name]}", partition_key=name) for name in changed],
        dynamic_partitions_requests=[landing_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps(current, sort_keys=True),
    )
