"""Partitions: one dynamic partition per landing entry (a file or folder in the landing directory)."""

from pathlib import Path

import dagster as dg

from rec_orchestration.sources.formats import landing_entries

LANDING_PARTITIONS_NAME = "landing_files"
landing_partitions = dg.DynamicPartitionsDefinition(name=LANDING_PARTITIONS_NAME)

# Run tags that make one run cover a range of partitions (Dagster's documented `dagster/asset_partition_range_*`
# tags; Dagster exports no public name for them, tests/unit/test_layering.py checks they still match).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


def entry_fingerprint(entry: Path) -> str:
    """Changes when a landing entry's content may have changed (size and mtime of every file in it)."""
    files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
    return ";".join(f"{p.relative_to(entry.parent)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def new_landing_partitions(instance: dg.DagsterInstance, landing_dir: Path) -> list[str]:
    """Landing entries that are not partitions yet, in name order."""
    known = set(instance.get_dynamic_partitions(LANDING_PARTITIONS_NAME))
    return [p.name for p in landing_entries(landing_dir) if p.name not in known]


def sync_landing_partitions(instance: dg.DagsterInstance, landing_dir: Path) -> list[str]:
    """Adds a partition for every new landing entry; returns the added keys."""
    new = new_landing_partitions(instance, landing_dir)
    if new:
        instance.add_dynamic_partitions(LANDING_PARTITIONS_NAME, new)
    return new
