"""Load landing files into the ``raw`` schema: once per content, in one transaction, with quarantine.

For each file: if the ledger has it under the same path, size and mtime, skip it unread. Otherwise
hash its content; if the ledger (``raw.ingested_files``) has that hash, do nothing.
Otherwise, in one transaction: take an advisory lock on the hash (two concurrent runs cannot both
load it), add the ledger row, stream the good records into the kind's table with binary COPY, spill
the rejected ones to a temporary file and COPY them into ``raw.rejected_records`` with their reasons,
move repeated lines of the file to the quarantine as duplicates, and record ``rows_read =
rows_loaded + rows_rejected`` (a CHECK constraint holds the ledger to it). The ledger row also
records the file's namespace (:mod:`rec_orchestration.sources.namespaces`): run config, the landing
directory's ``_namespaces.toml``, else the format's family. Memory is bounded by one
line (plus psycopg's COPY buffer) whatever the file size. A crash or kill at any point rolls the
whole file back; the next run loads it whole.
"""

from __future__ import annotations

import hashlib
import pickle
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

from rec_orchestration.db.tables import copy_rows, packaged_sql, qualified
from rec_orchestration.progress import Report, counted
from rec_orchestration.sources.formats import FORMATS, Format, LandingPlan, plan
from rec_orchestration.sources.namespaces import NamespaceMap, entry_namespace, read_namespace_map, validate_namespace
from rec_orchestration.sources.records import InvalidFileError, RecordKind, Rejected


class UnreadableFileError(RuntimeError):
    """A landing file could not be read (or is not what its format says); nothing of it was loaded."""


@dataclass(frozen=True)
class LoadResult:
    path: Path
    format: str
    record_kind: str
    content_sha256: str
    file_id: int | None
    already_loaded: bool
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    namespace: str | None = None  # as in the ledger (for a file loaded before: the namespace it got then)


@dataclass
class EntryResult:
    """Everything one landing entry (a partition) loaded, skipped, ignored or failed on."""

    plan: LandingPlan
    loaded: list[LoadResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def ensure_raw_schema(conn: psycopg.Connection) -> None:
    ddl = packaged_sql("raw_schema.sql")
    # Serialise concurrent first runs: CREATE ... IF NOT EXISTS races on the catalog otherwise.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('rec_orchestration.raw_schema'))")
    conn.execute(ddl)


def _unchanged_in_ledger(conn: psycopg.Connection, path: Path) -> tuple[int, str, str, str] | None:
    """``(file_id, content_sha256, source_format, namespace)`` of this path if loaded with its current size
    and mtime."""
    stat = path.stat()
    return conn.execute(
        """SELECT file_id, content_sha256, source_format, namespace FROM raw.ingested_files
           WHERE path = %s AND size_bytes = %s AND mtime_ns = %s AND finished_at IS NOT NULL""",
        (str(path), stat.st_size, stat.st_mtime_ns),
    ).fetchone()


def content_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class _Quarantine:
    """Rejected records spilled to a temporary file while the COPY of the good ones streams."""

    def __init__(self) -> None:
        self.count = 0
        self._file: IO[bytes] = tempfile.TemporaryFile()

    def split(self, stream: Iterable[tuple | Rejected]) -> Iterator[tuple]:
        for item in stream:
            if isinstance(item, Rejected):
                pickle.dump(tuple(item), self._file)
                self.count += 1
            else:
                yield item

    def replay(self) -> Iterator[Rejected]:
        self._file.seek(0)
        for _ in range(self.count):
            yield Rejected(*pickle.load(self._file))

    def close(self) -> None:
        self._file.close()


def _quarantine_duplicates(conn: psycopg.Connection, kind: RecordKind, file_id: int) -> int:
    """Move the 2nd, 3rd... copy of a repeated record of this file to the quarantine; returns how many.

    Kinds with a ``unique_key`` (products, users) also keep only the first record per key: a delivery
    that describes one product twice is ambiguous, and which one to trust is a person's call.

    Candidates share the raw line's CRC-32 (one pass over the file's rows); they are duplicates only if
    every column is equal too, so a CRC collision cannot quarantine a distinct record. The quarantined
    text is the record as JSON (its raw line is the same as the first copy's, which is loaded).

    The file's rows are not in the table statistics yet (they are uncommitted), so the planner thinks
    there are almost none: every lookup below is ``line_number = ANY(ARRAY(...))`` on the primary key,
    a plan that stays right whatever the estimates (a join here once took 40 s for 200 duplicates).
    """
    table = qualified(kind.table)
    params = {"file_id": file_id}
    conn.execute(sql.SQL("""
        CREATE TEMPORARY TABLE duplicate_candidates ON COMMIT DROP AS
        SELECT line_number FROM (
            SELECT line_number, count(*) OVER (PARTITION BY line_crc) AS copies
            FROM {table} WHERE file_id = %(file_id)s
        ) AS counted
        WHERE copies > 1
    """).format(table=table), params)
    columns = sql.SQL(", ").join(sql.Identifier("r", c) for c in kind.columns)
    conn.execute(sql.SQL("""
        CREATE TEMPORARY TABLE duplicate_lines ON COMMIT DROP AS
        SELECT line_number, first_line FROM (
            SELECT r.line_number,
                   first_value(r.line_number) OVER (PARTITION BY r.line_crc, {columns}
                                                    ORDER BY r.line_number) AS first_line
            FROM {table} AS r
            WHERE r.file_id = %(file_id)s
              AND r.line_number = ANY(ARRAY(SELECT line_number FROM duplicate_candidates))
        ) AS ranked
        WHERE line_number <> first_line
    """).format(table=table, columns=columns), params)
    moved = _move_to_quarantine(conn, kind, file_id, "duplicate_lines", "duplicate of line ")
    if kind.unique_key:  # distinct records with the same key: the first one stays, later ones are quarantined
        keys = sql.SQL(", ").join(sql.Identifier(c) for c in kind.unique_key)
        conn.execute(sql.SQL("""
            CREATE TEMPORARY TABLE duplicate_keys ON COMMIT DROP AS
            SELECT line_number, first_line FROM (
                SELECT line_number, first_value(line_number) OVER (PARTITION BY {keys} ORDER BY line_number)
                       AS first_line
                FROM {table} WHERE file_id = %(file_id)s
            ) AS ranked
            WHERE line_number <> first_line
        """).format(keys=keys, table=table), params)
        moved += _move_to_quarantine(conn, kind, file_id, "duplicate_keys",
                                     f"duplicate {', '.join(kind.unique_key)} of line ")
        conn.execute("DROP TABLE duplicate_keys")
    conn.execute("DROP TABLE duplicate_candidates, duplicate_lines")
    return moved


def _move_to_quarantine(conn: psycopg.Connection, kind: RecordKind, file_id: int, lines_table: str,
                        reason: str) -> int:
    """Moves the rows listed in ``lines_table (line_number, first_line)`` to the quarantine."""
    return conn.execute(sql.SQL("""
        WITH moved AS (
            DELETE FROM {table} AS r
            WHERE r.file_id = %(file_id)s
              AND r.line_number = ANY(ARRAY(SELECT line_number FROM {lines}))
            RETURNING r.*
        )
        INSERT INTO raw.rejected_records (file_id, line_number, raw_text, reason)
        SELECT m.file_id, m.line_number,
               (to_jsonb(m) - 'file_id' - 'line_number' - 'line_crc')::text,
               %(reason)s || d.first_line
        FROM moved AS m JOIN {lines} AS d USING (line_number)
    """).format(table=qualified(kind.table), lines=sql.Identifier(lines_table)),
        {"file_id": file_id, "reason": reason}).rowcount


def load_file(conn: psycopg.Connection, path: Path, fmt: Format, *, entry: str | None = None,
              now: datetime | None = None, namespace: str | None = None, progress: Report | None = None
              ) -> LoadResult:
    """Load one landing file in one transaction on ``conn`` (which must not be in a transaction).

    Its users and products belong to ``namespace`` (default: the format's family, ``fmt.family``).
    Content loaded before keeps the namespace it was loaded with. ``progress`` gets a line every
    :data:`~rec_orchestration.progress.ROWS_PER_REPORT` rows read."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    kind = fmt.record_kind
    namespace = validate_namespace(fmt.family if namespace is None else namespace, str(path))
    stat = path.stat()
    # The hourly refresh revisits every landing file: one already loaded from this path, unchanged
    # (same size and mtime), is skipped without reading it.
    known = _unchanged_in_ledger(conn, path)
    if known:
        return LoadResult(path, fmt.name, kind.name, known[1], known[0], already_loaded=True, namespace=known[3])
    sha = content_sha256(path)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (sha,))
        existing = conn.execute(
            "SELECT file_id, namespace FROM raw.ingested_files WHERE content_sha256 = %s", (sha,)
        ).fetchone()
        if existing:
            return LoadResult(path, fmt.name, kind.name, sha, existing[0], already_loaded=True, namespace=existing[1])
        file_id = conn.execute(
            """INSERT INTO raw.ingested_files (path, landing_entry, content_sha256, source_format, record_kind,
                                               namespace, size_bytes, mtime_ns, started_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING file_id""",
            (str(path), entry, sha, fmt.name, kind.name, namespace, stat.st_size, stat.st_mtime_ns,
             datetime.now(UTC)),
        ).fetchone()[0]

        quarantine = _Quarantine()
        try:
            try:
                copied = copy_rows(
                    conn, kind.table, ("file_id", "line_number", "line_crc", *kind.columns),
                    ("int8", "int8", "int4", *kind.types),
                    ((file_id, *row) for row in quarantine.split(counted(fmt.read(path, now), progress, path.name))),
                )
            except InvalidFileError as exc:
                raise UnreadableFileError(f"{exc} ({path}); nothing of it was loaded") from exc
            except (OSError, EOFError, zlib.error, ValueError) as exc:  # truncated or corrupt gzip, bad Parquet
                raise UnreadableFileError(f"{path}: cannot be read ({exc!r}); nothing of it was loaded") from exc
            except psycopg.errors.DataError as exc:  # a value the reader let through and PostgreSQL refused
                raise UnreadableFileError(f"{path}: PostgreSQL refused a value ({exc}); nothing of it was loaded"
                                          ) from exc
            copy_rows(
                conn, "raw.rejected_records", ("file_id", "line_number", "raw_text", "reason"),
                ("int8", "int8", "text", "text"),
                ((file_id, r.line_number, r.raw_text, r.reason) for r in quarantine.replay()),
            )
        finally:
            quarantine.close()
        duplicates = _quarantine_duplicates(conn, kind, file_id)
        loaded, rejected = copied - duplicates, quarantine.count + duplicates
        # Held until commit, so load_seq numbers become visible in order (see raw_schema.sql).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('rec_orchestration.load_seq'))")
        conn.execute(
            """UPDATE raw.ingested_files
               SET rows_read = %s, rows_loaded = %s, rows_rejected = %s, finished_at = %s,
                   load_seq = nextval('raw.load_seq')
               WHERE file_id = %s""",
            (loaded + rejected, loaded, rejected, datetime.now(UTC), file_id),
        )
    return LoadResult(path, fmt.name, kind.name, sha, file_id, already_loaded=False, rows_read=loaded + rejected,
                      rows_loaded=loaded, rows_rejected=rejected, duplicates=duplicates,
                      seconds=time.perf_counter() - started, namespace=namespace)


def load_entry(conn: psycopg.Connection, entry: Path, format_name: str | None = None,
               now: datetime | None = None, *, namespace: str | None = None,
               namespaces: NamespaceMap | None = None, progress: Report | None = None) -> EntryResult:
    """Load every data file of a landing entry, each in its own transaction.

    A file that cannot be read, or a symlink resolving outside the entry, is reported in ``failures``
    and the others still load; the caller
    decides how to fail. Unknown formats raise :class:`~rec_orchestration.sources.formats.UnknownFormatError`
    before anything is loaded.

    Namespace of the entry's files: ``namespace`` (run config) if given, else the entry's rule in
    ``namespaces`` (default: the ``_namespaces.toml`` of the entry's directory), else each file's format
    family. An invalid namespace or mapping file raises
    :class:`~rec_orchestration.sources.namespaces.NamespaceError` before anything is loaded.
    """
    if namespaces is None:
        namespaces = read_namespace_map(entry.parent)
    chosen = entry_namespace(entry.name, namespaces, namespace)
    if entry.is_file() and format_name is None:
        known = _unchanged_in_ledger(conn, entry)
        if known is not None and known[2] in FORMATS:  # loaded before, unchanged: no detection (its
            format_name = known[2]                      # format may have been named in run config)
    landing_plan = plan(entry, format_name)
    result = EntryResult(landing_plan, failures=[reason for _, reason in landing_plan.refused])
    for source in landing_plan.files:
        try:
            result.loaded.append(load_file(conn, source.path, source.format, entry=entry.name, now=now,
                                           namespace=chosen, progress=progress))
        except UnreadableFileError as exc:
            result.failures.append(str(exc))
    return result
