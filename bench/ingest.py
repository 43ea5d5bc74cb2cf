r"""Ingestion speed: the project's loader against ``psql \copy`` and ``DataFrame.to_sql``, in one run.

The file
    One generated Amazon-Reviews-2023 reviews file of 1,000,000 lines (``--rows``), deterministic
    (fixed ``--seed``): ~100k users and ~20k products with power-law activity and popularity, 60% of
    reviews on the parent ASIN itself and the rest on one of its variants, realistic star
    distribution, millisecond timestamps 2015-2023, titles of 20-60 and texts of 100-600 characters
    made of English words (with some non-ASCII, quotes and ``<br />`` to escape), 8% of reviews with an
    image. It is written to a temporary directory, never into the repository. (The project's own
    ``sample_data`` generator builds records one by one in Python, ~18k/s, with one-sentence texts: too
    slow and too short for this.)

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

Method (house rules: ``shared/BENCHMARKS.md``): peers side by side in one run on one machine, so the
ratios hold where absolute times on a shared machine do not. ``--rounds`` rounds (default 5); in each,
ours and ``\copy`` each load into freshly made tables (no rows, no statistics) after a CHECKPOINT,
alternating which goes first; the median rows/s of each is reported. The first round also checks that
the three tables hold the same values (an md5 over every row). Ratios are rows/s of ours over rows/s
of the peer: above 1 means ours is faster. The goal is ``ingest_vs_psql_copy >= 0.5``.

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

    .venv/bin/python bench/ingest.py [--rows 1000000] [--rounds 5] [--to-sql-rows N] [--profile] [--json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import psycopg
import sqlalchemy
from psycopg import sql

from rec_orchestration import settings
from rec_orchestration.resources.postgres import copy_rows
from rec_orchestration.settings import DatabaseSettings
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


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the generated file ------------------------------------------------------------------------------

_WORDS = (
    "the a and to it i this for is was of my with but not very great good product love works well quality "
    "price use used would one really like just so easy size fit time can have them on little bought "
    "recommend nice perfect back did after only will no made does buy better than also too much do get all "
    "your what as are be they if or when these out up more even been other because first color ordered "
    "received item happy cheap broke month week year returned comfortable small large soft sturdy expected "
    "described disappointed excellent awesome fine okay battery charger cable phone case screen sound light "
    "water bottle bag shoes shirt daughter son husband wife gift kids dog cat kitchen coffee tea book story "
    "author read characters recipe"
).split()
_ODD_WORDS = ["café", "naïve", "—", "👍", '"great"', "<br />", "5/5", "100%", "$20", "didn't", "it's", "I'm"]
_BASE32 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_START_MS = int(datetime(2015, 1, 1, tzinfo=UTC).timestamp() * 1000)
_END_MS = int(datetime(2023, 9, 1, tzinfo=UTC).timestamp() * 1000)


@dataclass
class Reviews:
    """The generated records, column by column, in file order."""

    rating: np.ndarray
    title: list[str]
    text: list[str]
    image: list[str | None]  # image id, for 8% of reviews
    asin: list[str]
    parent_asin: list[str]
    user_id: list[str]
    timestamp: np.ndarray  # epoch milliseconds
    helpful_vote: np.ndarray
    verified_purchase: np.ndarray

    def __len__(self) -> int:
        return len(self.title)


def _ids(rng: np.random.Generator, n: int, prefix: str, alphabet: bytes, width: int) -> list[str]:
    codes = np.frombuffer(alphabet, dtype=np.uint8)[rng.integers(0, len(alphabet), (n, width))]
    return [prefix + b.decode() for b in codes.view(f"S{width}").ravel().tolist()]


def _power_law(rng: np.random.Generator, n_values: int, exponent: float, size: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_values + 1) ** exponent
    return rng.permutation(n_values)[rng.choice(n_values, size=size, p=weights / weights.sum())]


def _phrases(rng: np.random.Generator, pool: str, starts: np.ndarray, size: int, low: int, high: int,
             median: float) -> list[str]:
    """``size`` word-aligned slices of ``pool``, log-normal lengths clipped to [low, high], capitalised."""
    lengths = np.clip(np.exp(rng.normal(np.log(median), 0.45, size)), low, high).astype(np.int64)
    first = starts[rng.integers(0, len(starts) - high, size)]
    end = starts[np.searchsorted(starts, first + lengths, side="right")] - 1  # the space before a word
    return [pool[a].upper() + pool[a + 1:b] for a, b in zip(first.tolist(), end.tolist(), strict=True)]


def generate_reviews(n: int, seed: int, n_users: int = 100_000, n_items: int = 20_000) -> Reviews:
    rng = np.random.default_rng(seed)
    vocabulary = np.array(_WORDS + _ODD_WORDS, dtype=object)
    weights = 1.0 / np.arange(1, len(vocabulary) + 1) ** 0.9
    tokens = rng.choice(vocabulary, size=max(200_000, n * 4), p=weights / weights.sum())
    marks = rng.random(len(tokens))
    tokens = np.where(marks < 1 / 11, tokens + ".", np.where(marks < 1 / 11 + 1 / 15, tokens + ",", tokens))
    pool = " ".join(tokens.tolist())
    starts = np.concatenate(([0], np.cumsum(np.char.str_len(tokens.astype(str)) + 1)[:-1]))

    users = _ids(rng, n_users, "AE", _BASE32, 26)
    parents = _ids(rng, n_items, "B0", _ALNUM, 8)
    variants = _ids(rng, n_items * 3, "B0", _ALNUM, 8)
    user = _power_law(rng, n_users, 0.5, n)
    item = _power_law(rng, n_items, 0.7, n)
    variant = np.where(rng.random(n) < 0.6, -1, item * 3 + rng.integers(0, 3, n))
    with_image = rng.random(n) < 0.08
    image_ids = _ids(rng, int(with_image.sum()), "", _ALNUM + b"abcdefghijklmnopqrstuvwxyz", 11)
    image: list[str | None] = [None] * n
    for position, image_id in zip(np.flatnonzero(with_image).tolist(), image_ids, strict=True):
        image[position] = image_id
    return Reviews(
        rating=rng.choice(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), size=n, p=[0.10, 0.06, 0.08, 0.14, 0.62]),
        title=_phrases(rng, pool, starts, n, 20, 60, 35),
        text=_phrases(rng, pool, starts, n, 100, 600, 250),
        image=image,
        asin=[parents[i] if v < 0 else variants[v] for i, v in zip(item.tolist(), variant.tolist(), strict=True)],
        parent_asin=[parents[i] for i in item.tolist()],
        user_id=[users[u] for u in user.tolist()],
        timestamp=_START_MS + (rng.beta(2.0, 1.2, n) * (_END_MS - _START_MS)).astype(np.int64),
        helpful_vote=np.minimum(rng.pareto(1.5, n) * 0.8, 10_000).astype(np.int64),
        verified_purchase=rng.random(n) < 0.9,
    )


def _image(image_id: str) -> dict[str, str]:
    url = f"https://m.media-amazon.com/images/I/{image_id}"
    return {"small_image_url": f"{url}._SL256_.jpg", "medium_image_url": f"{url}._SL800_.jpg",
            "large_image_url": f"{url}.jpg", "attachment_type": "IMAGE"}


def write_jsonl(reviews: Reviews, path: Path) -> np.ndarray:
    """Write the file as Amazon publishes it (same key order); returns each line's signed CRC-32."""
    crcs = np.empty(len(reviews), dtype=np.int64)
    columns = zip(reviews.rating.tolist(), reviews.title, reviews.text, reviews.image, reviews.asin,
                  reviews.parent_asin, reviews.user_id, reviews.timestamp.tolist(), reviews.helpful_vote.tolist(),
                  reviews.verified_purchase.tolist(), strict=True)
    with path.open("wb") as fh:
        batch: list[bytes] = []
        for i, (rating, title, text, image, asin, parent, user, ts, votes, verified) in enumerate(columns):
            line = orjson.dumps({
                "rating": rating, "title": title, "text": text, "images": [_image(image)] if image else [],
                "asin": asin, "parent_asin": parent, "user_id": user, "timestamp": ts, "helpful_vote": votes,
                "verified_purchase": verified,
            })
            crcs[i] = zlib.crc32(line)
            batch.append(line)
            if len(batch) == 100_000:
                fh.write(b"\n".join(batch) + b"\n")
                batch = []
        if batch:
            fh.write(b"\n".join(batch) + b"\n")
    return np.where(crcs >= 1 << 31, crcs - (1 << 32), crcs).astype(np.int32)


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

class Server:
    """A throw-away database on the configured server, or on the embedded one (as tests/conftest.py does)."""

    database_prefix = "bench_ingest"

    def __init__(self) -> None:
        self.embedded = None
        self.started_embedded = False
        self.database: str | None = None
        if settings.external_database_configured():
            self.admin = settings.warehouse_settings()
        else:
            from rec_orchestration.resources.embedded_postgres import EmbeddedPostgres

            self.embedded = EmbeddedPostgres.default()
            self.started_embedded = not self.embedded.status().running
            self.embedded.ensure_running()
            self.admin = self.embedded.superuser_settings()

    def create(self) -> DatabaseSettings:
        name = f"{self.database_prefix}_{uuid.uuid4().hex[:10]}"
        owner = settings.EMBEDDED_APP_ROLE if self.embedded else self.admin.user
        with psycopg.connect(self.admin.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
        self.database = name
        return self.embedded.app_settings(name) if self.embedded else self.admin.with_database(name)

    def psql_command(self, db: DatabaseSettings) -> tuple[list[str], dict[str, str]]:
        argv, env = self.embedded.psql_command(db.dbname) if self.embedded else db.psql_command()
        return [*argv, "-X", "-q", "-v", "ON_ERROR_STOP=1"], {**env, "PGCLIENTENCODING": "UTF8"}

    def checkpoint(self) -> bool:
        """Flush the previous load's dirty pages so that the next load does not pay for them."""
        assert self.database
        try:
            with psycopg.connect(self.admin.with_database(self.database).conninfo(), autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            return True
        except psycopg.errors.InsufficientPrivilege:
            return False

    def describe(self) -> str:
        with psycopg.connect(self.admin.conninfo()) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        where = "embedded" if self.embedded else "external"
        return f"PostgreSQL {version} ({where}, {self.admin.host}:{self.admin.port})"

    def close(self) -> None:
        if self.database:
            with psycopg.connect(self.admin.conninfo(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database)))
            self.database = None
        if self.embedded and self.started_embedded:
            self.embedded.stop()


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
                                                        record_kind, size_bytes, started_at)
                        OVERRIDING SYSTEM VALUE
                        VALUES (%s, 'bench peers', 'bench peers', 'csv', 'reviews', 0, now())""", (PEER_FILE_ID,))


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


def breakdown(conn: psycopg.Connection, server: Server, path: Path, n: int) -> list[tuple[str, float]]:
    """Seconds of each stage of load_file, each run on its own over the same file."""
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
    server.checkpoint()

    def copy_only() -> None:
        with conn.transaction():
            copy_rows(conn, f"{PEER_SCHEMA}.{SCRATCH_TABLE}", COLUMNS, ("int8", "int8", "int4", *KIND.types),
                      ((PEER_FILE_ID, *row) for row in rows))  # type: ignore[union-attr]

    stage("binary COPY of validated rows, + COMMIT", copy_only)
    del rows
    fresh_tables(conn)
    server.checkpoint()
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

def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = "GPU present" if shutil.which("nvidia-smi") else "no GPU"
    return (f"{cores} CPU cores available ({os.cpu_count()} online), {gpu}, {platform.machine()} "
            f"{platform.system()}, Python {platform.python_version()}")


def emit(report: list[str], figures: dict, as_json: bool) -> None:
    """The report on stdout; with ``--json`` the figures as JSON on stdout and the report on stderr."""
    text = "\n".join(report)
    if as_json:
        print(text, file=sys.stderr)
        print(json.dumps(figures, indent=2))
    else:
        print(text)


def rate(n: int, seconds: float) -> float:
    return n / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    server = Server()
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
                dst.writelines(line for _, line in zip(range(n_breakdown), src))

            db = server.create()
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
                    checkpoints &= server.checkpoint()
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
                    stages = breakdown(conn, server, head, n_breakdown)
                    second_limit = max(args.second_file_timeout, 10 * dict(stages)["whole load_file"])
                    say(f"second file into an analysed table (at most {second_limit:.0f} s) ...")
                    second_seconds = second_file(conn, head, n_breakdown, work, second_limit)
                    if args.profile:
                        say("cProfile of load_file ...")
                        profiled = profile(conn, head, n_breakdown)
    finally:
        server.close()

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
