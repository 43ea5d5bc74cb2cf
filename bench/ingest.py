r"""Ingestion speed: the project's loader against ``psql \copy`` and ``DataFrame.to_sql``, in one run.

The file
    One generated Amazon-Reviews-2023 reviews file (``bench.common``'s generator) of 1,000,000 lines
    (``--rows``), deterministic (fixed ``--seed``): ~100k users and ~20k products with power-law
    activity and popularity, 60% of reviews on the parent ASIN itself and the rest on one of its
    variants, realistic star distribution, millisecond timestamps 2015-2023, titles of 20-60 and texts
    of 100-600 characters made of English words (with some non-ASCII, quotes and ``<br />`` to escape),
    8% of reviews with an image. It is written to a temporary directory, never into the repository. (The
    project's own ``sample_data`` generator builds records one by one in Python, ~18k/s, with
    one-sentence texts: too slow and too short for this.)

The contenders, all loading the same records into tables of the same DDL as ``raw.reviews`` (same
columns and types, primary key and foreign key to the ledger) on the same server
    ours         ``load_file(conn, path, FORMATS["amazon2023_reviews"])``, timed by wall clock:
                 SHA-256 of the file, ledger row, reading each line (decode, CRC-32), orjson parsing,
                 validation into canonical columns, binary COPY into ``raw.reviews``, the duplicate
                 detection pass and COMMIT. Every line must load (no rejects, no duplicates).
    psql \copy   ``psql -c "\copy bench_peer.reviews_copy (...) FROM 'reviews.csv' WITH (FORMAT csv,
                 HEADER)"``, timed by the wall clock of the psql process. The CSV holds the canonical
                 values our loader writes (line_crc included, file_id of a ledger row of its own);
                 writing it is not timed: it is the peer's input, already parsed and validated, so this
                 is the practical limit of a loader.
    to_sql       ``df.to_sql("reviews_to_sql", engine, schema="bench_peer", if_exists="append",
                 index=False)`` with pandas' defaults otherwise (``method=None``, ``chunksize=None``:
                 one executemany, which SQLAlchemy 2 with psycopg2 sends as batched multi-row INSERTs),
                 on a ``postgresql+psycopg2`` engine. Building the DataFrame is not timed. It runs once,
                 on the first ``--to-sql-rows`` rows (default: all of them).

Method: peers side by side in one run on one machine, so the ratios hold where absolute times on a
shared machine do not. ``--rounds`` rounds (default 5); in each, ours and ``\copy`` each load into
freshly made tables (no rows, no statistics) after a CHECKPOINT, alternating which goes first; the
median rows/s of each is reported. The first round also checks that the three tables hold the same
values (an md5 over every row). Ratios are rows/s of ours over rows/s of the peer: above 1 means ours is
faster. The goal is ``ingest_vs_psql_copy >= 0.5``.

Then, on the first ``--breakdown-rows`` lines (default 200,000), each stage of our loader is timed on
its own (hashing; reading lines; + JSON parsing; + validation; binary COPY of already validated rows;
the duplicate pass) beside the whole ``load_file``, to show where the time goes; ``--profile`` adds a
cProfile of ``load_file`` on that file. Last, the steady state of a warehouse: a second file loaded
into ``raw.reviews`` after ANALYZE has seen the first (so the new file_id is outside the statistics),
cancelled after ``--second-file-timeout`` seconds (at least 10x the first load) if it takes that long.

Database: a throw-away database on the server named by ``REC_DATABASE_URL`` / ``PG*``, or else on the
project's embedded PostgreSQL (started if needed, and stopped at the end if this started it), dropped
at the end.

Output: the report as text, ending with ``ingest_vs_to_sql=<ratio>`` and, last,
``ingest_vs_psql_copy=<ratio>``. With ``--json`` the figures go to stdout as one JSON object and the
text report to stderr. Progress goes to stderr.

    .venv/bin/python -m bench.ingest [--rows 1000000] [--rounds 5] [--to-sql-rows N] [--profile] [--json]
"""

from __future__ import annotations

import cProfile
import functools
import io
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy
from psycopg import sql

from bench.common import Reviews, argument_parser, emit, generate_reviews, machine, say, write_jsonl
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.scratch import ScratchDatabases
from rec_orchestration.db.tables import copy_rows
from rec_orchestration.sources import loader
from rec_orchestration.sources.formats import FORMATS
from rec_orchestration.sources.loader import content_sha256, ensure_raw_schema, load_file
from rec_orchestration.sources.text_lines import read_json_lines, read_lines

FORMAT = FORMATS["amazon2023_reviews"]
KIND = FORMAT.record_kind
# The columns our loader writes into raw.reviews, in its order; every peer writes the same.
COLUMNS = ("file_id", "line_number", "line_crc", *KIND.columns)
COMPARED = COLUMNS[1:]  # file_id differs by design: each load has its own ledger row
PEER_FILE_ID = 0  # the peers' ledger row (ours get 1, 2, ... from the identity)
PEER_SCHEMA = "bench_peer"
COPY_TABLE = "reviews_copy"
TO_SQL_TABLE = "reviews_to_sql"
SCRATCH_TABLE = "reviews_scratch"  # the breakdown's COPY-only stage


# -- the peers' input -------------------------------------------------------------------------------

def canonical_frame(reviews: Reviews, crcs: np.ndarray) -> pd.DataFrame:
    """The rows our loader writes for this file, as the peers' input (file_id: the peers' ledger row)."""
    n = len(reviews)
    return pd.DataFrame({
        "file_id": np.full(n, PEER_FILE_ID, dtype=np.int64),
        "line_number": np.arange(1, n + 1, dtype=np.int64),
        "line_crc": crcs,
        "user_key": reviews.user_id,
        "item_key": reviews.parent_asin,
        "variant_key": reviews.asin,
        "rating": reviews.rating,
        "event_type": "review",
        "event_ts": pd.to_datetime(reviews.timestamp, unit="ms", utc=True),
        "title": reviews.title,
        "body": reviews.text,
        "helpful_votes": reviews.helpful_vote,
        "verified_purchase": reviews.verified_purchase,
    }, columns=list(COLUMNS))


# -- the database ------------------------------------------------------------------------------------

def checkpoint(server: ScratchDatabases, db: DatabaseSettings) -> bool:
    """Flush the previous load's dirty pages so that the next load does not pay for them (as the admin
    role: False when even it may not)."""
    try:
        with psycopg.connect(server.admin.with_database(db.dbname).conninfo(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def fresh_tables(conn: psycopg.Connection) -> None:
    """Drop and remake raw.* (as the pipeline makes it) and the peers' tables: raw.reviews' DDL, foreign
    key included, and a ledger row for the peers. Every timed load starts from this: empty tables that
    no ANALYZE has seen, as in a new warehouse (``second_file`` measures the steady state)."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {}, raw CASCADE").format(sql.Identifier(PEER_SCHEMA)))
        ensure_raw_schema(conn)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(PEER_SCHEMA)))
        for table in (COPY_TABLE, TO_SQL_TABLE, SCRATCH_TABLE):
            name = sql.Identifier(PEER_SCHEMA, table)
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE raw.reviews INCLUDING ALL)").format(name))
            conn.execute(sql.SQL("ALTER TABLE {} ADD FOREIGN KEY (file_id) REFERENCES raw.ingested_files (file_id)")
                         .format(name))
        conn.execute("""INSERT INTO raw.ingested_files (file_id, path, content_sha256, source_format,
                                                        record_kind, namespace, size_bytes, started_at)
                        OVERRIDING SYSTEM VALUE
                        VALUES (%s, 'bench peers', 'bench peers', 'csv', 'reviews', 'bench', 0, now())""",
                     (PEER_FILE_ID,))


def fingerprint(conn: psycopg.Connection, table: sql.Composable, up_to_line: int) -> tuple[int, str]:
    """Row count and an md5 over every compared column of every row, in line order."""
    row = sql.SQL(", ").join(sql.Identifier(c) for c in COMPARED)
    return conn.execute(sql.SQL(
        "SELECT count(*), md5(string_agg(md5(ROW({row})::text), '' ORDER BY line_number)) "
        "FROM {table} WHERE line_number <= %s").format(row=row, table=table), (up_to_line,)).fetchone()


# -- the contenders ----------------------------------------------------------------------------------

def time_ours(conn: psycopg.Connection, path: Path, n: int) -> float:
    started = time.perf_counter()
    result = load_file(conn, path, FORMAT)
    seconds = time.perf_counter() - started
    if (result.already_loaded or result.rows_loaded != n or result.rows_rejected or result.duplicates):
        raise SystemExit(f"our loader did not load every line: {result}")
    return seconds


def time_psql_copy(argv: list[str], env: dict[str, str], csv_path: Path) -> float:
    columns = ", ".join(COLUMNS)
    quoted = str(csv_path).replace("'", "''")
    command = f"\\copy {PEER_SCHEMA}.{COPY_TABLE} ({columns}) FROM '{quoted}' WITH (FORMAT csv, HEADER)"
    started = time.perf_counter()
    done = subprocess.run([*argv, "-c", command], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"psql \\copy failed ({done.returncode}): {done.stderr.strip()}")
    return seconds


def time_to_sql(engine: sqlalchemy.Engine, frame: pd.DataFrame) -> float:
    with engine.connect():  # dialect initialised and a pooled connection open before the clock starts
        pass
    started = time.perf_counter()
    frame.to_sql(TO_SQL_TABLE, engine, schema=PEER_SCHEMA, if_exists="append", index=False)
    return time.perf_counter() - started


# -- where our time goes -----------------------------------------------------------------------------

def _drain(iterator: Iterator) -> None:
    for _ in iterator:
        pass


def breakdown(conn: psycopg.Connection, flush: Callable[[], bool], path: Path, n: int) -> list[tuple[str, float]]:
    """Seconds of each stage of load_file, each run on its own over the same file (``flush``: the
    CHECKPOINT before each load)."""
    now = datetime.now(UTC)
    stages: list[tuple[str, float]] = []

    def stage(name: str, work: Callable[[], object]) -> object:
        started = time.perf_counter()
        value = work()
        stages.append((name, time.perf_counter() - started))
        return value

    stage("sha256 of the file", lambda: content_sha256(path))
    stage("read lines (readline, strip, UTF-8 decode, CRC-32)", lambda: _drain(read_lines(path)))
    stage("  + orjson parse", lambda: _drain(read_json_lines(path)))
    rows = stage("  + validate into canonical rows", lambda: list(FORMAT.read(path, now)))
    fresh_tables(conn)
    flush()

    def copy_only(validated: list) -> None:
        with conn.transaction():
            copy_rows(conn, f"{PEER_SCHEMA}.{SCRATCH_TABLE}", COLUMNS, ("int8", "int8", "int4", *KIND.types),
                      ((PEER_FILE_ID, *row) for row in validated))

    stage("binary COPY of validated rows, + COMMIT", functools.partial(copy_only, rows))
    del rows
    fresh_tables(conn)
    flush()
    stage("whole load_file", lambda: time_ours(conn, path, n))
    file_id = conn.execute("SELECT max(file_id) FROM raw.ingested_files").fetchone()[0]

    def dedupe() -> None:
        with conn.transaction():
            loader._quarantine_duplicates(conn, KIND, file_id)

    stage("duplicate pass alone (after the load)", dedupe)
    return stages


def second_file(conn: psycopg.Connection, first: Path, n: int, work: Path, limit_s: float) -> float | None:
    """Seconds to load a second file into raw.reviews once ANALYZE has seen the first: the steady state
    of a warehouse, where each new file_id lies outside the column statistics. The second file is the
    first one with every 1000th line repeated at its end (real files hold duplicate lines). None when
    it did not finish within ``limit_s`` (cancelled by statement_timeout)."""
    lines = first.read_bytes().splitlines(keepends=True)
    second = work / "second_file.jsonl"
    second.write_bytes(b"".join(lines + lines[::1000]))
    fresh_tables(conn)
    time_ours(conn, first, n)
    conn.execute("ANALYZE raw.reviews")
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{int(limit_s * 1000)}ms")))
    started = time.perf_counter()
    try:
        result = load_file(conn, second, FORMAT)
    except psycopg.errors.QueryCanceled:
        return None
    finally:
        conn.execute("RESET statement_timeout")
    if result.rows_read != len(lines) + len(lines[::1000]) or result.rows_loaded != n:
        raise SystemExit(f"second file: unexpected load {result}")
    return time.perf_counter() - started


def profile(conn: psycopg.Connection, path: Path, n: int, top: int = 25) -> str:
    fresh_tables(conn)
    profiler = cProfile.Profile()
    profiler.runcall(time_ours, conn, path, n)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


# -- the run -----------------------------------------------------------------------------------------

def rate(n: int, seconds: float) -> float:
    return n / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench.ingest", __doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="review lines in the file (1,000,000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed loads of ours and of \\copy each (5)")
    parser.add_argument("--to-sql-rows", type=int, default=None, help="rows for to_sql (default: all)")
    parser.add_argument("--breakdown-rows", type=int, default=200_000,
                        help="lines for the per-stage breakdown and the second-file load (200,000; 0 skips them)")
    parser.add_argument("--second-file-timeout", type=float, default=30.0,
                        help="seconds before the second-file load is cancelled (30; at least 10x the first)")
    parser.add_argument("--profile", action="store_true", help="cProfile load_file on the breakdown file")
    parser.add_argument("--seed", type=int, default=20230901)
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, the report on stderr")
    args = parser.parse_args(argv)
    n = args.rows
    n_to_sql = min(args.to_sql_rows or n, n)
    n_breakdown = min(args.breakdown_rows, n)

    report: list[str] = []
    figures: dict[str, object] = {"rows": n, "rounds": args.rounds, "machine": machine()}
    ours: list[float] = []
    copies: list[float] = []
    stages: list[tuple[str, float]] = []
    second_seconds = second_limit = profiled = None
    checkpoints = True
    server = ScratchDatabases()
    try:
        with tempfile.TemporaryDirectory(prefix="rec-bench-ingest-") as tmp:
            work = Path(tmp)
            say(f"generating {n:,} reviews (seed {args.seed}) ...")
            started = time.perf_counter()
            reviews = generate_reviews(n, args.seed)
            jsonl = work / "reviews.jsonl"
            crcs = write_jsonl(reviews, jsonl)
            frame = canonical_frame(reviews, crcs)
            del reviews, crcs
            csv_path = work / "reviews.csv"
            frame.to_csv(csv_path, index=False)
            say(f"  files written in {time.perf_counter() - started:.1f} s")
            head = work / "reviews_head.jsonl"
            with jsonl.open("rb") as src, head.open("wb") as dst:
                dst.writelines(line for _, line in zip(range(n_breakdown), src, strict=False))

            db = server.create("bench_ingest")
            psql_argv, psql_env = server.psql_command(db)
            figures["server"] = server.describe()
            sizes = f"{jsonl.stat().st_size / 1e6:,.1f} MB JSONL, {csv_path.stat().st_size / 1e6:,.1f} MB CSV"
            report.append(f"ingestion benchmark: {n:,} Amazon-2023 review lines ({sizes}), {args.rounds} rounds")
            report.append(f"machine: {figures['machine']}; {figures['server']}")

            engine = sqlalchemy.create_engine(db.url("psycopg2"))
            with psycopg.connect(db.conninfo(), autocommit=True) as conn:

                def timed(label: str, load: Callable[[], float]) -> float:
                    nonlocal checkpoints
                    fresh_tables(conn)
                    checkpoints &= checkpoint(server, db)
                    say(f"{label} ...")
                    seconds = load()
                    say(f"  {seconds:.2f} s")
                    return seconds

                prints: dict[str, tuple[int, str]] = {}
                for round_number in range(1, args.rounds + 1):
                    first_round = round_number == 1
                    for who in ("ours", "copy") if round_number % 2 else ("copy", "ours"):
                        if who == "ours":
                            ours.append(timed(f"round {round_number}: ours", lambda: time_ours(conn, jsonl, n)))
                            if first_round:
                                prints["ours"] = fingerprint(conn, sql.Identifier("raw", "reviews"), n)
                                prints["ours head"] = fingerprint(conn, sql.Identifier("raw", "reviews"), n_to_sql)
                        else:
                            copies.append(timed(f"round {round_number}: psql \\copy",
                                                lambda: time_psql_copy(psql_argv, psql_env, csv_path)))
                            if first_round:
                                prints["copy"] = fingerprint(conn, sql.Identifier(PEER_SCHEMA, COPY_TABLE), n)
                    if first_round:
                        to_sql_seconds = timed(f"to_sql of {n_to_sql:,} rows",
                                               lambda: time_to_sql(engine, frame.iloc[:n_to_sql]))
                        prints["to_sql"] = fingerprint(conn, sql.Identifier(PEER_SCHEMA, TO_SQL_TABLE), n)
                        engine.dispose()
                        del frame
                        if not (prints["ours"] == prints["copy"] and prints["ours"][0] == n
                                and prints["ours head"] == prints["to_sql"]):
                            raise SystemExit(f"the contenders loaded different rows: {prints}")

                if n_breakdown:
                    say(f"breakdown of load_file on {n_breakdown:,} lines ...")
                    stages = breakdown(conn, lambda: checkpoint(server, db), head, n_breakdown)
                    second_limit = max(args.second_file_timeout, 10 * dict(stages)["whole load_file"])
                    say(f"second file into an analysed table (at most {second_limit:.0f} s) ...")
                    second_seconds = second_file(conn, head, n_breakdown, work, second_limit)
                    if args.profile:
                        say("cProfile of load_file ...")
                        profiled = profile(conn, head, n_breakdown)
    finally:
        server.drop_all()

    ours_rate = statistics.median(rate(n, s) for s in ours)
    copy_rate = statistics.median(rate(n, s) for s in copies)
    to_sql_rate = rate(n_to_sql, to_sql_seconds)
    vs_copy, vs_to_sql = ours_rate / copy_rate, ours_rate / to_sql_rate

    def runs(times: list[float]) -> str:
        return ", ".join(f"{s:.2f} s" for s in times)

    report.append("same values in all three tables: checked (md5 over every row)")
    if not checkpoints:
        report.append("note: no CHECKPOINT between loads (the role may not run it): expect more noise")
    report.append(f"ours, load_file (hash, parse, validate, binary COPY, duplicate pass): "
                  f"{ours_rate:,.0f} rows/s (median; runs {runs(ours)})")
    report.append(f"psql \\copy of the equivalent CSV: {copy_rate:,.0f} rows/s (median; runs {runs(copies)})")
    subset_note = "" if n_to_sql == n else f", on the first {n_to_sql:,} rows only"
    report.append(f"DataFrame.to_sql (pandas defaults: method=None, chunksize=None; SQLAlchemy + psycopg2"
                  f"{subset_note}): {to_sql_rate:,.0f} rows/s (one run, {to_sql_seconds:.2f} s)")
    report.append(f"ratio vs psql copy: {vs_copy:.3f} (goal >= 0.5: {'met' if vs_copy >= 0.5 else 'NOT met'})")
    report.append(f"ratio vs to_sql: {vs_to_sql:.3f}")
    if stages:
        whole = dict(stages)["whole load_file"]
        report.append(f"where ours spends its time, first {n_breakdown:,} lines into fresh tables, each stage "
                      f"run on its own (each read stage includes the ones above it):")
        for name, seconds in stages:
            report.append(f"  {name:<52} {seconds:7.2f} s  {rate(n_breakdown, seconds):>12,.0f} rows/s"
                          f"  {seconds / whole:6.1%} of load_file")
        extra = n_breakdown // 1000 + (1 if n_breakdown % 1000 else 0)
        label = (f"second file ({n_breakdown:,} lines + {extra:,} repeated) into raw.reviews after ANALYZE "
                 f"saw the first")
        if second_seconds is None:
            report.append(f"{label}: did not finish in {second_limit:.0f} s (cancelled), "
                          f"< {rate(n_breakdown, second_limit):,.0f} rows/s vs {rate(n_breakdown, whole):,.0f} "
                          f"into fresh tables")
        else:
            report.append(f"{label}: {rate(n_breakdown, second_seconds):,.0f} rows/s ({second_seconds:.2f} s) vs "
                          f"{rate(n_breakdown, whole):,.0f} into fresh tables")
    if profiled:
        report.append(f"cProfile of load_file on the first {n_breakdown:,} lines (by own time):")
        report.extend("  " + line for line in profiled.strip().splitlines())
    report.append(f"ingest_vs_to_sql={vs_to_sql:.3f}")
    report.append(f"ingest_vs_psql_copy={vs_copy:.3f}")

    figures.update({
        "ours_rows_per_s": ours_rate, "ours_seconds": ours,
        "psql_copy_rows_per_s": copy_rate, "psql_copy_seconds": copies,
        "to_sql_rows": n_to_sql, "to_sql_rows_per_s": to_sql_rate, "to_sql_seconds": to_sql_seconds,
        "ingest_vs_psql_copy": vs_copy, "ingest_vs_to_sql": vs_to_sql,
        "breakdown_rows": n_breakdown, "breakdown_seconds": dict(stages),
        "second_file_seconds": second_seconds, "second_file_timeout_s": second_limit,
    })
    emit(report, figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
