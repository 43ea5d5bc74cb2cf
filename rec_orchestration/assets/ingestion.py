"""Raw ingestion: landing entries -> ``raw.reviews`` / ``raw.products`` / ``raw.users`` / ``raw.events``.

One multi-asset, partitioned by landing entry (a file or folder in the landing directory; the
landing sensor adds the partitions). A run over several partitions loads them in one step
(single-run backfill policy). Each file is loaded once per content, in one transaction (see
:mod:`rec_orchestration.sources.loader`). Blocking checks on every raw table: the Great Expectations
suite and the ledger reconciliation; a failure stops everything downstream in the run.
"""

import zlib
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from rec_orchestration import settings
from rec_orchestration.confinement import OutsideError, no_parent_steps, plain_name, within
from rec_orchestration.db import reads
from rec_orchestration.db.roles import ensure_roles
from rec_orchestration.deployment import k8s_step_tags
from rec_orchestration.partitions import landing_partitions
from rec_orchestration.quality.suites import RAW_SUITES
from rec_orchestration.resources.great_expectations import GreatExpectationsResource, to_check_metadata
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.retry import retry_transient_db_errors
from rec_orchestration.sources.formats import FORMATS, UnknownFormatError
from rec_orchestration.sources.loader import EntryResult, LoadResult, ensure_raw_schema, load_entry
from rec_orchestration.sources.namespaces import NamespaceError
from rec_orchestration.sources.records import RECORD_KINDS

RAW_KINDS = tuple(RECORD_KINDS)  # reviews, products, users, events
RAW_ASSET_KEYS = [dg.AssetKey(["raw", kind]) for kind in RAW_KINDS]

_DESCRIPTIONS = {
    "reviews": "Ratings and reviews (Amazon 2023/2014 reviews, MovieLens ratings), one row per record.",
    "products": "Product metadata (Amazon meta_* files, MovieLens movies), one row per record.",
    "users": "User attributes (MovieLens u.user / users.dat), one row per record.",
    "events": "Generic interaction events (view/click/like/purchase/rating) from CSV or Parquet.",
}

class LandingConfig(dg.Config):
    landing_dir: str | None = Field(default=None, description=(
        "A folder inside the landing directory (REC_LANDING_DIR, default <project>/data/landing) to load "
        "instead of it; paths leaving it are refused."))
    format: str | None = Field(
        default=None,
        description="Name the format of a landing file instead of detecting it: " + ", ".join(sorted(FORMATS)),
    )
    namespace: str | None = Field(default=None, description=(
        "The namespace of the users and products of this run's landing entries (a lowercase identifier, "
        "[a-z][a-z0-9_]{0,39}); overrides the landing directory's _namespaces.toml and the default, the "
        "format's family (amazon2023, amazon2014, movielens_100k, movielens_dat, movielens_csv, events). "
        "Files loaded before keep theirs."))


def _landing_dir(configured: str | None) -> Path:
    """The landing directory of this run: ``REC_LANDING_DIR`` (the deployment's), or a directory inside
    it named in run config. Run config cannot point a run anywhere else on the machine."""
    root = settings.landing_dir()
    if not configured:
        return root
    try:
        no_parent_steps(configured, "run config landing_dir")
        return within(root, root / configured, "run config landing_dir")  # an absolute path replaces root
    except OutsideError as exc:
        raise dg.Failure(f"{exc}. landing_dir may only name a folder inside the landing directory "
                         "(REC_LANDING_DIR); set that variable to load from elsewhere") from None


def _file_row(entry: str, result: LoadResult) -> dict:
    return {"entry": entry, "file": result.path.name, "format": result.format, "namespace": result.namespace,
            "kind": result.record_kind,
            "status": "skipped (content already loaded)" if result.already_loaded else "loaded",
            "rows_read": result.rows_read, "rows_loaded": result.rows_loaded, "rows_rejected": result.rows_rejected,
            "duplicates": result.duplicates, "seconds": round(result.seconds, 3)}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(key, description=_DESCRIPTIONS[kind], group_name="raw", kinds={"python", "postgres"},
                     metadata={"table": f"raw.{kind}"})
        for kind, key in zip(RAW_KINDS, RAW_ASSET_KEYS, strict=True)
    ],
    check_specs=[
        spec
        for key in RAW_ASSET_KEYS
        for spec in (
            dg.AssetCheckSpec("great_expectations", asset=key, blocking=True,
                              description="The table's Great Expectations suite (quality/suites.py) passes."),
            dg.AssetCheckSpec("ledger_reconciles", asset=key, blocking=True,
                              description="Per file: rows_read = rows_loaded + rows_rejected, and the table and "
                              "the quarantine hold exactly those rows."),
        )
    ],
    partitions_def=landing_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
    name="raw_landing",
    op_tags=k8s_step_tags("ingestion"),
)
@retry_transient_db_errors()
def raw_landing(context: dg.AssetExecutionContext, warehouse: PostgresResource,
                great_expectations: GreatExpectationsResource, config: LandingConfig):
    """Loads the landing entries of this run's partitions, then validates the raw tables."""
    import pandas as pd
    landing = _landing_dir(config.landing_dir)
    if not landing.is_dir():
        raise dg.Failure(f"landing directory {landing} does not exist (run `rec sample` or set REC_LANDING_DIR)")
    results: list[EntryResult] = []
    missing: list[str] = []
    failures: list[str] = []
    now = datetime.now(UTC)
    with warehouse.connection() as conn:
        with conn.transaction():
            ensure_raw_schema(conn)
            ensure_roles(conn)  # raw and core readable by rec_analyst, now and for tables made later
        conn.commit()
        conn.autocommit = True  # load_file opens its own transaction per file
        try:
            for key in context.partition_keys:
                try:  # a partition key is a name in the landing directory: no path, no link out of it
                    entry = landing / plain_name(key, "landing partition")
                    if entry.exists():
                        within(landing, entry, "landing entry")
                except OutsideError as exc:
                    failures.append(f"{exc}: refused")
                    continue
                if not entry.exists():
                    missing.append(key)
                    context.log.warning(f"{key}: no longer in {landing}; what was loaded from it stays")
                    continue
                try:
                    result = load_entry(conn, entry, config.format, now=now, namespace=config.namespace,
                                        progress=context.log.info)
                except (UnknownFormatError, NamespaceError, FileNotFoundError) as exc:
                    failures.append(str(exc))
                    continue
                except (OSError, EOFError, zlib.error) as exc:  # detection could not even read it
                    failures.append(f"{entry}: cannot be read ({exc!r})")
                    continue
                results.append(result)
                failures.extend(result.failures)
                for loaded in result.loaded:
                    context.log.info(f"{key}/{loaded.path.name} ({loaded.format}): "
                                     f"{_file_row(key, loaded)['status']}, read {loaded.rows_read}, "
                                     f"loaded {loaded.rows_loaded}, rejected {loaded.rows_rejected}")
                if result.plan.ignored:
                    context.log.info(f"{key}: ignored (not data) {', '.join(p.name for p in result.plan.ignored)}")
        finally:
            conn.autocommit = False
    if failures:
        # Every other file of the run is loaded and committed; only these are not.
        raise dg.Failure("landing entries could not be loaded:\n" + "\n".join(failures),
                         metadata={"failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures))})

    selected = context.selected_asset_keys
    for kind, key in zip(RAW_KINDS, RAW_ASSET_KEYS, strict=True):
        if key not in selected:
            continue
        rows = [_file_row(r.plan.entry.name, f) for r in results for f in r.loaded if f.record_kind == kind]
        new = [row for row in rows if row["status"] == "loaded"]
        ignored = sorted({p.name for r in results for p in r.plan.ignored})
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "landing_dir": dg.MetadataValue.path(str(landing)),
                "entries": len(context.partition_keys),
                "files_seen": len(rows),
                "files_loaded": len(new),
                "rows_loaded": sum(row["rows_loaded"] for row in new),
                "rows_rejected": sum(row["rows_rejected"] for row in new),
                "table_row_count": warehouse.row_count(f"raw.{kind}"),
                "files": dg.MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False) if rows else "none"),
                **({"ignored_files": ", ".join(ignored)} if ignored else {}),
                **({"entries_missing": ", ".join(missing)} if missing else {}),
            },
        )
        yield _reconciliation_check(warehouse, kind, key)
        yield _great_expectations_check(warehouse, great_expectations, kind, key, now)


def _reconciliation_check(warehouse: PostgresResource, kind: str, key: dg.AssetKey) -> dg.AssetCheckResult:
    bad = reads.ledger_disagreements(warehouse, kind)
    files, rows_read = reads.ledger_totals(warehouse, kind)
    return dg.AssetCheckResult(
        asset_key=key, check_name="ledger_reconciles", passed=bad.empty,
        metadata={
            "files": files, "rows_read": rows_read, "files_disagreeing": len(bad),
            **({"disagreements": dg.MetadataValue.md(bad.head(20).to_markdown(index=False))} if len(bad) else {}),
        },
    )


def _great_expectations_check(warehouse: PostgresResource, great_expectations: GreatExpectationsResource,
                              kind: str, key: dg.AssetKey, now: datetime) -> dg.AssetCheckResult:
    suite_name, build = RAW_SUITES[f"raw.{kind}"]
    validation = great_expectations.validate(
        warehouse.database_settings().url("psycopg2"), "raw", kind, build(now), suite_name)
    return dg.AssetCheckResult(asset_key=key, check_name="great_expectations", passed=validation.success,
                               metadata=to_check_metadata(validation))
