"""Raw ingestion: landing files -> ``raw.products`` and ``raw.reviews`` (binary COPY, one transaction per file)."""


import dagster as dg
import pandas as pd
from pydantic import Field

from rec_orchestration import settings
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.sources.loader import LoadResult, ensure_raw_schema, landing_files, load_file


class LandingConfig(dg.Config):
    landing_dir: str | None = Field(default=None, description="Defaults to REC_LANDING_DIR or <project>/data/landing.")


def _ingest(context: dg.AssetExecutionContext, warehouse: PostgresResource, config: LandingConfig,
            record_kind: str) -> dg.MaterializeResult:
    from pathlib import Path

    landing = Path(config.landing_dir) if config.landing_dir else settings.landing_dir()
    if not landing.is_dir():
        raise dg.Failure(f"landing directory {landing} does not exist (run `rec sample` or set REC_LANDING_DIR)")
    files = landing_files(landing, record_kind)
    results: list[LoadResult] = []
    with warehouse.connection() as conn:
        with conn.transaction():
            ensure_raw_schema(conn)
        conn.commit()
        conn.autocommit = True  # load_file opens its own transaction per file
        try:
            for path in files:
                result = load_file(conn, path, record_kind)
                results.append(result)
                context.log.info(
                    f"{path.name}: {'already loaded, skipped' if result.already_loaded else 'loaded'} "
                    f"(read {result.rows_read}, loaded {result.rows_loaded}, rejected {result.rows_rejected})"
                )
        finally:
            conn.autocommit = False
    table = f"raw.{record_kind}"
    new = [r for r in results if not r.already_loaded]
    preview = pd.DataFrame(
        [{"file": r.path.name, "status": "skipped (already loaded)" if r.already_loaded else "loaded",
          "rows_read": r.rows_read, "rows_loaded": r.rows_loaded, "rows_rejected": r.rows_rejected,
          "seconds": round(r.seconds, 3)} for r in results]
    )
    return dg.MaterializeResult(
        metadata={
            "landing_dir": dg.MetadataValue.path(str(landing)),
            "files_seen": len(results),
            "files_loaded": len(new),
            "rows_loaded": sum(r.rows_loaded for r in new),
            "rows_rejected": sum(r.rows_rejected for r in new),
            "table_row_count": warehouse.row_count(table),
            "files": dg.MetadataValue.md(preview.to_markdown(index=False) if len(preview) else "no files"),
        }
    )


@dg.asset(key=["raw", "products"], group_name="raw", kinds={"python", "postgres"})
def raw_products(context: dg.AssetExecutionContext, warehouse: PostgresResource,
                 config: LandingConfig) -> dg.MaterializeResult:
    """Product metadata records (``meta*.jsonl[.gz]`` in the landing directory) in ``raw.products``.

    Each file is loaded once (content-hash ledger ``raw.ingested_files``), in one transaction; bad
    records go to ``raw.rejected_records`` with line number and reason.
    """
    return _ingest(context, warehouse, config, "products")


@dg.asset(key=["raw", "reviews"], group_name="raw", kinds={"python", "postgres"})
def raw_reviews(context: dg.AssetExecutionContext, warehouse: PostgresResource,
                config: LandingConfig) -> dg.MaterializeResult:
    """Review records (``*.jsonl[.gz]`` other than ``meta*``) in ``raw.reviews``.

    Each file is loaded once (content-hash ledger ``raw.ingested_files``), in one transaction; bad
    records go to ``raw.rejected_records`` with line number and reason.
    """
    return _ingest(context, warehouse, config, "reviews")
