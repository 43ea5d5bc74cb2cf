"""Load landing files into the ``raw`` schema: once per content, in one transaction, with quarantine.

For each file: hash its content; if the ledger (``raw.ingested_files``) has that hash, do nothing.
Otherwise, in one transaction: take an advisory lock on the hash (two concurrent runs cannot both
load it), add the ledger row, COPY the good records, insert the rejected ones with their reasons,
and record ``rows_read = rows_loaded + rows_rejected`` (a CHECK constraint holds the ledger to it).
A crash or kill at any point rolls the whole file back; the next run loads it whole.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import psycopg

from rec_orchestration.resources.postgres import copy_rows
from rec_orchestration.sources import amazon2023
from rec_orchestration.sources.records import PRODUCT_COLUMNS, PRODUCT_TYPES, REVIEW_COLUMNS, REVIEW_TYPES, Rejected

LANDING_PATTERNS = ("*.jsonl", "*.jsonl.gz")


class UnreadableFileError(RuntimeError):
    """A landing file could not be read at all; nothing of it was loaded."""


@dataclass(frozen=True)
class LoadResult:
    path: Path
    record_kind: str
    content_sha256: str
    file_id: int | None
    already_loaded: bool
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0


def ensure_raw_schema(conn: psycopg.Connection) -> None:
    ddl = resources.files("rec_orchestration").joinpath("sql/raw_schema.sql").read_text()
    # Serialise concurrent first runs: CREATE ... IF NOT EXISTS races on the catalog otherwise.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('rec_orchestration.raw_schema'))")
    conn.execute(ddl)


def content_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def landing_files(landing_dir: Path, record_kind: str) -> list[Path]:
    """Landing files holding ``record_kind`` ('reviews' or 'products'), oldest name first."""
    found: set[Path] = set()
    for pattern in LANDING_PATTERNS:
        found.update(p for p in landing_dir.glob(pattern) if p.is_file() and not p.name.startswith("."))
    wanted_products = record_kind == "products"
    return sorted(p for p in found if amazon2023.is_products_file(p) == wanted_products)


def _split(stream: Iterable[tuple | Rejected], rejected: list[Rejected]) -> Iterator[tuple]:
    for item in stream:
        if isinstance(item, Rejected):
            rejected.append(item)
        else:
            yield item


def load_file(conn: psycopg.Connection, path: Path, record_kind: str) -> LoadResult:
    """Load one landing file in one transaction on ``conn`` (which must not be in a transaction)."""
    started = time.perf_counter()
    sha = content_sha256(path)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (sha,))
        existing = conn.execute(
            "SELECT file_id FROM raw.ingested_files WHERE content_sha256 = %s", (sha,)
        ).fetchone()
        if existing:
            return LoadResult(path, record_kind, sha, existing[0], already_loaded=True)
        file_id = conn.execute(
            """INSERT INTO raw.ingested_files (path, content_sha256, source_format, record_kind, size_bytes,
                                               started_at)
               VALUES (%s, %s, %s, %s, %s, %s) RETURNING file_id""",
            (str(path), sha, amazon2023.FORMAT, record_kind, path.stat().st_size, datetime.now(UTC)),
        ).fetchone()[0]

        rejected: list[Rejected] = []
        if record_kind == "reviews":
            stream, table, columns, types = amazon2023.read_reviews(path), "raw.reviews", REVIEW_COLUMNS, REVIEW_TYPES
        else:
            stream, table, columns, types = amazon2023.read_products(path), "raw.products", PRODUCT_COLUMNS, PRODUCT_TYPES
        try:
            loaded = copy_rows(
                conn, table, ("file_id", "line_number", *columns), ("int8", "int8", *types),
                ((file_id, *row) for row in _split(stream, rejected)),
            )
        except (OSError, EOFError) as exc:  # truncated gzip, unreadable file: lose nothing else
            raise UnreadableFileError(f"{path}: cannot be read ({exc}); nothing of it was loaded") from exc
        copy_rows(
            conn, "raw.rejected_records", ("file_id", "line_number", "raw_text", "reason"),
            ("int8", "int8", "text", "text"),
            ((file_id, r.line_number, r.raw_text, r.reason) for r in rejected),
        )
        conn.execute(
            """UPDATE raw.ingested_files
               SET rows_read = %s, rows_loaded = %s, rows_rejected = %s, finished_at = %s
               WHERE file_id = %s""",
            (loaded + len(rejected), loaded, len(rejected), datetime.now(UTC), file_id),
        )
    return LoadResult(path, record_kind, sha, file_id, already_loaded=False, rows_read=loaded + len(rejected),
                      rows_loaded=loaded, rows_rejected=len(rejected), seconds=time.perf_counter() - started)
