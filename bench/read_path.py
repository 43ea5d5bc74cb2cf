r"""Read path: one user's top 10 through ``rec_reader``, and what readers see while a publication is swapped in.

The data
    The users and products of the generated 1M-review sample (``bench.common``'s generator with
    ``bench.warehouse``'s seed, its meta file for the products), without the warehouse: reviews become
    interactions as ``core.interactions`` weighs them (stars x 0.6), users and products get dense ids
    1..n. ``PopularityRecommender`` (half-life 90 days) gives each user the top ``--k`` (20) products
    they did not review: the published table holds users x 20 rows. Every table of ``publishing.TABLES``
    is published, real-shaped: the products of the sample, the popularity ranking overall and per leaf
    category, and 20 similar products per product (the most popular of its category: a stand-in, only
    its size matters here). Before it, ``--keep`` - 1 small publications, so that the measured publish
    also retires one, as every publish does in the steady state. The peer's table
    ``bench_naive.user_recommendations`` (a plain table, primary key ``(user_id, rank)``) holds the same
    rows, written by ``replace_table``, the old swap by RENAME.

(a) Read latency: ``pgbench -n -M prepared -c 4 -j 2 -T 20`` with a custom script (``\set uid random(1,
    :n)``, then ``SELECT product_id, rank, score, reason FROM recs.user_recommendations WHERE user_id =
    :uid ORDER BY rank LIMIT 10``) as a login role made for the run ``IN ROLE rec_reader`` (password
    through ``PGPASSWORD``, dropped at the end); p50/p99 from the per-transaction log (``-l``), TPS
    from pgbench. Peer: the same script on the plain table. Each run follows an unlogged warm-up.

(b) The swap: ``--readers`` (8) reader processes loop the same query (random user, prepared, no pause)
    through the login role and time every read. After ``--idle-s`` of reading, a new publication
    (rows built beforehand: a popularity model of half-life 30 days) is published with
    ``publishing.publish``. Just before its swap (the ATTACHes and the pointer update), another session
    of the login role starts a long analytic query on the live publication (``pg_sleep(--long-query-s)``
    then an aggregation over ``recs.user_recommendations_detailed``), and the swap starts
    ``--lead-s`` (1 s) after that query holds its locks. The same for the peer: ``replace_table`` of the
    plain table with the same new rows, the long query on that table, its RENAMEs started ``--lead-s``
    after it (lock timeout long enough for the RENAME to wait the query out, as it must to succeed).
    Both swap moments are found by wrapping the publishing connection: the swap starts at ``publish``'s
    first ATTACH PARTITION (``replace_table``: the lock timeout set before its RENAMEs) and ends at the
    COMMIT of the transaction that made the new set live (``publish``: the pointer's, after it settled).

    Reported per contender: the swap's own duration (its first swap statement to that COMMIT) and its
    slowest statement; readers' p99 and max latency in the swap window [swap start, COMMIT + 1 s] vs
    an idle window of the same length just before the publish call, and over the whole publish call
    (build, swap, retirement) + 1 s; errors and empty reads (a read of 0 rows); for ours also the
    publish call's duration and what it retired (or postponed). A read counts in a window when it
    overlaps it.

Method: ours and the peer in one run on one machine, ratios ours/peer. Goals: read p99 <= 1 ms, readers'
max during the swap <= 50 ms with the long query running, 0 errors, 0 empty reads.

Database: a throw-away database on the server named by ``REC_DATABASE_URL`` / ``PG*``, or else on the
project's embedded PostgreSQL (started if needed, stopped at the end if this started it), dropped at
the end with the login role.

Output: the report, ending with ``read_p99_ms=<x> swap_max_ms=<y> reader_errors=<n>`` (errors plus
empty reads over all of our readers' reads). Progress goes to stderr.

    .venv/bin/python -m bench.read_path [--users 100000] [--duration 20] [--long-query-s 10] [--json]
    .venv/bin/python -m bench.read_path --users 20000 --duration 5 --long-query-s 3   # quick
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import multiprocessing as mp
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psycopg
from psycopg import sql

from bench.common import argument_parser, emit, generate_reviews, machine, say, write_meta
from rec_orchestration import publishing
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.embedded import bin_dir
from rec_orchestration.db.roles import READER_ROLE, ensure_roles
from rec_orchestration.db.scratch import ScratchDatabases
from rec_orchestration.db.tables import replace_table
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.popularity import PopularityRecommender
from rec_orchestration.ml.serving import POPULAR

OURS = "recs.user_recommendations"
NAIVE = "bench_naive.user_recommendations"
OURS_LONG = "recs.user_recommendations_detailed"
# The relation whose lock proves the long query holds the live table (the view reads the parent).
OURS_LOCKED = "recs_store.user_recommendations"
TOP10 = "SELECT product_id, rank, score, reason FROM {} WHERE user_id = {} ORDER BY rank LIMIT 10"
# Sleeps first, holding its locks from the start (taken when the statement is planned), then
# aggregates: the swap meets a query holding the table, not one competing for the CPU.
LONG_QUERY = ("SELECT count(*), avg(score), count(DISTINCT product_id) FROM {} "
              "WHERE (SELECT pg_sleep({})::text) IS NOT NULL")
NAIVE_COLUMNS = [("user_id", "bigint"), ("product_id", "bigint"), ("rank", "integer"),
                 ("score", "double precision"), ("reason", "text"), ("model_name", "text"),
                 ("model_version", "text"), ("run_id", "text"), ("generated_at", "timestamptz")]
WEIGHT_PER_STAR = 0.6  # dbt var interaction_weights.review_per_star
SIMILAR = 20


def now_ns() -> int:
    """CLOCK_MONOTONIC: one clock for every process of the machine."""
    return time.monotonic_ns()


def ms(ns: float) -> float:
    return ns / 1e6


# -- the data ---------------------------------------------------------------------------------------

@dataclass
class Sample:
    interactions: Interactions
    seen: dict
    products: list[tuple]                       # rows of publishing.TABLES["products"]
    item_categories: dict[int, list[int]]       # product -> its leaf category id
    category_names: dict[int, str]
    reviews: int


def load_sample(n_reviews: int, seed: int, n_users: int, n_products: int, work: Path) -> Sample:
    reviews = generate_reviews(n_reviews, seed, n_users=n_users, n_items=n_products)
    meta = work / "meta.jsonl"
    write_meta(reviews.parent_asin, meta, seed)
    user_keys, user_index = np.unique(np.array(reviews.user_id), return_inverse=True)
    item_keys, item_index = np.unique(np.array(reviews.parent_asin), return_inverse=True)
    frame = pd.DataFrame({"user_id": user_index.astype(np.int64) + 1, "product_id": item_index.astype(np.int64) + 1,
                          "weight": reviews.rating * WEIGHT_PER_STAR, "ts": reviews.timestamp / 1000.0})
    interactions = Interactions.from_frame(frame)
    product_ids = {key: i + 1 for i, key in enumerate(item_keys.tolist())}
    leaves: dict[tuple[str, str], int] = {}
    products, item_categories = [], {}
    with meta.open("rb") as fh:
        for line in fh:
            record = orjson.loads(line)
            main, sub = record["categories"]
            leaf = leaves.setdefault((main, sub), len(leaves) + 1)
            product = product_ids[record["parent_asin"]]
            item_categories[product] = [leaf]
            products.append((product, record["title"], main, f"{main} > {sub}", Decimal(str(record["price"])),
                             Decimal(str(record["average_rating"])), record["rating_number"]))
    products.sort()
    return Sample(interactions, interactions.items_by_user(), products, item_categories,
                  {leaf: f"{main} > {sub}" for (main, sub), leaf in leaves.items()}, n_reviews)


@dataclass
class PublicationRows:
    rows: dict[str, list[tuple]]
    naive: list[tuple]  # the same recommendations in the plain table's columns
    version: str
    run_id: str
    users: int


def publication_rows(sample: Sample, half_life_days: float, k: int) -> PublicationRows:
    """Every published table of one popularity model, and the peer's rows."""
    model = PopularityRecommender(half_life_days).fit(sample.interactions)
    version = f"bench-half-life-{half_life_days:g}d"
    run_id = str(uuid.uuid4())
    generated_at = datetime.now(UTC)
    recommended = model.recommend(sample.interactions.user_ids, k, exclude=sample.seen)
    recommendations = [(user, item, rank, score, POPULAR, None, model.name, version, run_id, generated_at)
                       for user, item, rank, score in recommended.to_rows()]
    items, scores = model.ranking()
    by_category = model.ranking_by_category(sample.item_categories)
    ranked: dict[int, list[int]] = {}
    for category, item, _, _ in by_category:
        ranked.setdefault(category, []).append(int(item))
    popularity = dict(zip(items.tolist(), scores.tolist(), strict=True))
    similar = []
    for members in ranked.values():
        for product in members:
            neighbours = [other for other in members[:SIMILAR + 1] if other != product][:SIMILAR]
            similar.extend((product, other, rank, popularity[other], "same_category")
                           for rank, other in enumerate(neighbours, start=1))
    rows = {
        "user_recommendations": recommendations,
        "similar_products": similar,
        "popular_products": [(int(item), rank, float(score), version)
                             for rank, (item, score) in enumerate(zip(items.tolist(), scores.tolist(), strict=True),
                                                                  start=1)],
        "popular_products_by_category": [(int(c), sample.category_names[int(c)], int(item), int(rank), float(score))
                                         for c, item, rank, score in by_category],
        "products": sample.products,
    }
    naive = [row[:5] + row[6:] for row in recommendations]
    return PublicationRows(rows, naive, version, run_id, len(recommended.user_ids))


def small(rows: PublicationRows, users: int) -> PublicationRows:
    """A publication of users 1..``users`` only: history for the retirement to act on."""
    return replace(rows, rows={**rows.rows, "user_recommendations": [
        row for row in rows.rows["user_recommendations"] if row[0] <= users]}, run_id=str(uuid.uuid4()),
        users=min(users, rows.users))


def publish(conn: Any, rows: PublicationRows, k: int, keep: int) -> publishing.Publication:
    users = rows.users
    return publishing.publish(
        conn, rows.rows, run_id=rows.run_id, model_name="popularity", model_version=rows.version,
        evaluation={}, k=k, user_counts={"users": users, "personalized": 0, "popular": users},
        started_at=datetime.now(UTC), keep=keep)


# -- the database -----------------------------------------------------------------------------------

def create_reader(server: ScratchDatabases, db: DatabaseSettings) -> DatabaseSettings:
    """A LOGIN role in ``rec_reader`` with a random password, made by the app role when it may (else by the
    admin role); dropped by :func:`clean_up`."""
    role = f"rec_bench_{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(24)
    statement = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
        sql.Identifier(role), sql.Literal(password), sql.Identifier(READER_ROLE))
    for maker in (db, server.admin.with_database(db.dbname)):
        try:
            with psycopg.connect(maker.conninfo(), autocommit=True) as conn:
                conn.execute(statement)
            break
        except psycopg.errors.InsufficientPrivilege:
            continue
    else:
        raise SystemExit(f"neither {db.user} nor {server.admin.user} may create a login role in {READER_ROLE}")
    return replace(db, user=role, password=password)


def clean_up(server: ScratchDatabases, reader: DatabaseSettings | None) -> None:
    """Drop the databases, then the login role (they held its grants); stop the embedded server if this
    run started it."""
    for name in list(server.created):
        server.drop(name)
    if reader is not None:
        with psycopg.connect(server.admin.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(reader.user)))
    server.drop_all()


def postgres_program(name: str) -> str:
    """A PostgreSQL client program: the embedded server's own, else the one on PATH."""
    found = bin_dir() / name
    program = str(found) if found.is_file() else shutil.which(name)
    if not program:
        raise SystemExit(f"{name} not found (embedded server's bin directory or PATH)")
    return program


def top10(table: str) -> sql.Composed:
    return sql.SQL(TOP10).format(sql.SQL(table), sql.Placeholder())


def plan_summary(plan: list[str]) -> str:
    """One line: how the view's pointer and its partitions are read."""
    def node(line: str) -> str:
        return line.strip().removeprefix("->  ").split(" (")[0]

    scans = [line for line in plan if "Scan using" in line]
    executed = [node(line) for line in scans if "never executed" not in line]
    pointer = ", ".join(node(line) for line in plan if " on live" in line)
    return (f"{node(plan[0])}; the live id read once ({pointer}); Append over {len(scans)} partitions: "
            f"{len(executed)} scanned ({'; '.join(executed)}), {len(scans) - len(executed)} never executed "
            "(run-time pruning)")


def read_plan(reader: DatabaseSettings) -> list[str]:
    """The generic plan of the read query, executed once: index use and run-time partition pruning."""
    with psycopg.connect(reader.conninfo(), autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(sql.SQL("PREPARE top10(bigint) AS {}").format(sql.SQL(TOP10).format(sql.SQL(OURS),
                                                                                           sql.SQL("$1"))))
        return [row[0] for row in conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, BUFFERS OFF) EXECUTE top10(1)")]


# -- (a) pgbench -----------------------------------------------------------------------------------

def pgbench(program: str, reader: DatabaseSettings, table: str, n_users: int, clients: int, threads: int,
            seconds: int, work: Path, tag: str) -> dict:
    script = work / f"{tag}_script.sql"
    script.write_text(f"\\set uid random(1, :n)\n{TOP10.format(table, ':uid')};\n")
    env = {**os.environ, "PGPASSWORD": reader.password or "", "PGAPPNAME": "bench_read_path_pgbench"}

    def run(duration: int, log: bool) -> str:
        argv = [program, "-n", "-h", reader.host, "-p", str(reader.port), "-U", reader.user, "-M", "prepared",
                "-c", str(clients), "-j", str(threads), "-T", str(duration), "-f", str(script), "-D", f"n={n_users}"]
        if log:
            argv += ["-l", f"--log-prefix={work / tag}_log"]
        done = subprocess.run([*argv, reader.dbname], env=env, cwd=work, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"pgbench failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done.stdout

    run(max(1, min(3, seconds // 4)), log=False)  # warm-up: the table's pages into the caches
    out = run(seconds, log=True)
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)[1])
    failed = re.search(r"number of failed transactions: (\d+)", out)
    latencies = np.concatenate([np.loadtxt(path, usecols=2, dtype=np.int64, ndmin=1)
                                for path in glob.glob(f"{work / tag}_log.*")]) / 1000.0  # µs -> ms
    return {"table": table, "transactions": int(len(latencies)), "failed": int(failed[1]) if failed else 0,
            "tps": tps, "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "max_ms": float(latencies.max())}


# -- (b) readers while a swap happens --------------------------------------------------------------

def read_continuously(conninfo: str, query: sql.Composed, n_users: int, seed: int, ready: Any, start: Any,
                      stop: Any, out: str) -> None:
    """One reader process: a random user's top 10, again and again, every read timed."""
    gc.disable()
    uids = np.random.default_rng(seed).integers(1, n_users + 1, size=1 << 16).tolist()
    begun, took, rows, failed = array("q"), array("q"), array("l"), array("b")
    messages: Counter = Counter()
    conn = psycopg.connect(conninfo, autocommit=True)
    for uid in uids[:200]:
        conn.execute(query, (uid,), prepare=True).fetchall()
    ready.put(os.getpid())
    start.wait()
    i = 0
    while not stop.is_set():
        uid = uids[i & 0xFFFF]
        i += 1
        started = now_ns()
        try:
            n, bad = len(conn.execute(query, (uid,), prepare=True).fetchall()), 0
        except psycopg.Error as error:
            n, bad = 0, 1
            messages[f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"] += 1
            if conn.broken or conn.closed:
                conn = psycopg.connect(conninfo, autocommit=True)
        begun.append(started)
        took.append(now_ns() - started)
        rows.append(n)
        failed.append(bad)
    conn.close()
    np.savez(out, begun=np.frombuffer(begun, np.int64), took=np.frombuffer(took, np.int64),
             rows=np.array(rows, np.int64), failed=np.frombuffer(failed, np.int8).astype(bool))
    Path(out + ".json").write_text(json.dumps(dict(messages)))


@dataclass
class Reads:
    begun: np.ndarray
    took: np.ndarray
    rows: np.ndarray
    failed: np.ndarray
    messages: Counter

    def window(self, low: int, high: int) -> dict:
        """Reads overlapping [low, high] (monotonic ns)."""
        inside = (self.begun < high) & (self.begun + self.took > low)
        took = self.took[inside] / 1e6
        failed = self.failed[inside]
        return {"seconds": (high - low) / 1e9, "reads": int(inside.sum()),
                "p50_ms": float(np.percentile(took, 50)) if len(took) else None,
                "p99_ms": float(np.percentile(took, 99)) if len(took) else None,
                "max_ms": float(took.max()) if len(took) else None,
                "errors": int(failed.sum()), "empty": int(((self.rows[inside] == 0) & ~failed).sum())}


class Readers:
    """``n`` reader processes, forked once the parent holds no connection (they would share its sockets)."""

    def __init__(self, n: int, reader: DatabaseSettings, table: str, n_users: int, work: Path) -> None:
        context = mp.get_context("fork")
        self.ready, self.start, self.stop = context.Queue(), context.Event(), context.Event()
        self.outputs = [str(work / f"reader_{table}_{i}.npz") for i in range(n)]
        conninfo = reader.conninfo(application_name="bench_read_path_reader")
        gc.collect()
        gc.freeze()  # the children never touch the parent's objects: keep their pages shared
        self.processes = [context.Process(target=read_continuously, daemon=True, args=(
            conninfo, top10(table), n_users, 1000 + i, self.ready, self.start, self.stop, out.removesuffix(".npz")))
            for i, out in enumerate(self.outputs)]
        for process in self.processes:
            process.start()
        for _ in self.processes:
            self.ready.get(timeout=120)

    def go(self) -> int:
        self.start.set()
        return now_ns()

    def finish(self) -> Reads:
        self.stop.set()
        for process in self.processes:
            process.join(timeout=120)
            if process.exitcode != 0:
                raise SystemExit(f"a reader process failed (exit code {process.exitcode})")
        gc.unfreeze()
        parts = [np.load(out) for out in self.outputs]
        messages: Counter = Counter()
        for out in self.outputs:
            messages.update(json.loads(Path(out.removesuffix(".npz") + ".json").read_text()))
        return Reads(*(np.concatenate([part[name] for part in parts]) for name in ("begun", "took", "rows", "failed")),
                     messages)


class LongQuery(threading.Thread):
    """The analytic session: one long statement on the live table, as the login role."""

    def __init__(self, reader: DatabaseSettings, statement: sql.Composed) -> None:
        super().__init__(daemon=True)
        self.conninfo = reader.conninfo(application_name="bench_read_path_long_query")
        self.statement = statement
        self.connected = threading.Event()
        self.pid: int | None = None
        self.began = self.ended = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                self.pid = conn.info.backend_pid
                self.connected.set()
                self.began = now_ns()
                conn.execute(self.statement).fetchall()
                self.ended = now_ns()
        except psycopg.Error as error:
            self.error = f"{type(error).__name__}: {error}"
            self.ended = now_ns()
        finally:
            self.connected.set()


class TracedConnection:
    """A psycopg connection whose statements are timed; ``before_swap`` runs once, just before the first
    statement that starts the swap (``publish``: its first ATTACH PARTITION; ``replace_table``: the
    ``SET LOCAL lock_timeout`` before its RENAMEs). The swap ends with the COMMIT of the transaction
    that made the new set live: the one that moved ``publish``'s pointer (its second transaction, after
    the attach committed and settled), or the one that renamed ``replace_table``'s table."""

    def __init__(self, conn: psycopg.Connection, before_swap: Callable[[], None], swap_marker: str) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_swap_marker", swap_marker)
        object.__setattr__(self, "_before_swap", before_swap)
        object.__setattr__(self, "swap_began", 0)
        object.__setattr__(self, "swap_ended", 0)
        object.__setattr__(self, "swap_statements", [])
        object.__setattr__(self, "build_statements", [])
        object.__setattr__(self, "before_swap_ns", 0)
        object.__setattr__(self, "went_live", False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> psycopg.Cursor:
        text = query.as_string(self._conn) if isinstance(query, sql.Composable) else str(query)
        if not self.swap_began and self._swap_marker in text:
            began = now_ns()
            self._before_swap()
            object.__setattr__(self, "before_swap_ns", now_ns() - began)
            object.__setattr__(self, "swap_began", now_ns())
        began = now_ns()
        cursor = self._conn.execute(query, params, **kwargs)
        statement = (" ".join(text.split())[:90], now_ns() - began)
        if self.swap_began and ("INTO recs_store.live" in text or " RENAME TO " in text):
            object.__setattr__(self, "went_live", True)
        if not self.swap_began:
            self.build_statements.append(statement)
        elif not self.swap_ended:
            self.swap_statements.append(statement)
        return cursor

    @contextmanager
    def transaction(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with self._conn.transaction(*args, **kwargs) as tx:
            yield tx
        if self.swap_began and self.went_live and not self.swap_ended:
            object.__setattr__(self, "swap_ended", now_ns())


@dataclass
class SwapRun:
    reads: Reads
    readers_began: int
    call_began: int
    call_ended: int
    swap_began: int
    swap_ended: int
    swap_statements: list[tuple[str, int]]
    build_statements: list[tuple[str, int]]
    before_swap_ns: int
    long_query: LongQuery
    result: Any = None
    extra: dict = field(default_factory=dict)


def swap_under_readers(app: DatabaseSettings, reader: DatabaseSettings, args: argparse.Namespace, work: Path,
                       table: str, long_table: str, locked: str, n_users: int,
                       swap: Callable[[TracedConnection], Any], swap_marker: str) -> SwapRun:
    """Readers on ``table``; after the idle period, ``swap`` runs with the long query started just before its
    swap moment and held through it."""
    readers = Readers(args.readers, reader, table, n_users, work)
    long_query = LongQuery(reader, sql.SQL(LONG_QUERY).format(sql.SQL(long_table), sql.Literal(args.long_query_s)))
    with psycopg.connect(app.conninfo(), autocommit=True) as monitor, \
            psycopg.connect(app.conninfo(), autocommit=True) as conn:

        def before_swap() -> None:
            long_query.start()
            long_query.connected.wait(30)
            deadline = time.monotonic() + 30
            while not long_query.error and not monitor.execute(
                    "SELECT 1 FROM pg_locks WHERE pid = %s AND relation = %s::regclass AND granted",
                    (long_query.pid, locked)).fetchone():
                if time.monotonic() > deadline:
                    raise SystemExit("the long query did not start within 30 s")
                time.sleep(0.005)
            time.sleep(args.lead_s)

        traced = TracedConnection(conn, before_swap, swap_marker)
        began = readers.go()
        time.sleep(args.idle_s)
        call_began = now_ns()
        result = swap(traced)
        call_ended = now_ns()
        if not traced.swap_began or not traced.swap_ended:
            raise SystemExit(f"the swap was not seen: no statement with {swap_marker!r} inside a transaction")
        time.sleep(max(0.0, (max(call_ended, traced.swap_ended) + 1e9 - now_ns()) / 1e9))
        reads = readers.finish()
        long_query.join(timeout=args.long_query_s + 120)
    return SwapRun(reads, began, call_began, call_ended, traced.swap_began, traced.swap_ended,
                   traced.swap_statements, traced.build_statements, traced.before_swap_ns, long_query, result)


def swap_figures(run: SwapRun) -> dict:
    swap_window = (run.swap_began, run.swap_ended + 10**9)
    length = swap_window[1] - swap_window[0]
    idle_window = (max(run.readers_began, run.call_began - length), run.call_began)
    slowest = max(run.swap_statements, key=lambda pair: pair[1])
    long_query = run.long_query
    bad = run.reads.failed | (run.reads.rows == 0)
    return {
        "swap_ms": ms(run.swap_ended - run.swap_began),
        "swap_slowest_statement": slowest[0], "swap_slowest_statement_ms": ms(slowest[1]),
        "swap_statements": len(run.swap_statements),
        "swap_statement_ms": [[text, ms(took)] for text, took in run.swap_statements],
        "call_s": (run.call_ended - run.call_began) / 1e9,
        "build_s": (run.swap_began - run.call_began - run.before_swap_ns) / 1e9,
        "long_query_start_and_lead_s": run.before_swap_ns / 1e9,
        "build_statements_s": sum(took for _, took in run.build_statements) / 1e9,
        "build_slowest": [[text, took / 1e9] for text, took in
                          sorted(run.build_statements, key=lambda pair: -pair[1])[:3]],
        "after_commit_s": (run.call_ended - run.swap_ended) / 1e9,
        "long_query_s": (long_query.ended - long_query.began) / 1e9 if long_query.ended else None,
        "long_query_error": long_query.error,
        "long_query_running_at_swap_start": bool(long_query.began and long_query.began < run.swap_began
                                                 and long_query.ended > run.swap_began and not long_query.error),
        "long_query_running_at_commit": bool(long_query.ended > run.swap_ended and not long_query.error),
        "idle": run.reads.window(*idle_window),
        "swap_window": run.reads.window(*swap_window),
        "whole_call": run.reads.window(run.call_began, max(run.call_ended, run.swap_ended) + 10**9),
        "all_reads": run.reads.window(run.readers_began, int(run.reads.begun.max() + run.reads.took.max()) + 1),
        "error_messages": dict(run.reads.messages.most_common(5)),
        # When the failed and empty reads began and how long they took, relative to the swap's COMMIT.
        "bad_reads_vs_commit_ms": [[ms(begun - run.swap_ended), ms(took)] for begun, took in zip(
            run.reads.begun[bad][:10].tolist(), run.reads.took[bad][:10].tolist(), strict=True)],
        **run.extra,
    }


# -- the run ---------------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def window_line(name: str, w: dict) -> str:
    return (f"{name:<34} {w['seconds']:6.2f} s  {w['reads']:>8,} reads  p50 {fmt(w['p50_ms'], 3)} ms  "
            f"p99 {fmt(w['p99_ms'], 3)} ms  max {fmt(w['max_ms'])} ms  errors {w['errors']}  empty {w['empty']}")


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench.read_path", __doc__)
    parser.add_argument("--users", type=int, default=100_000, help="user id pool of the generator (100,000)")
    parser.add_argument("--products", type=int, default=20_000, help="products of the generator (20,000)")
    parser.add_argument("--reviews", type=int, default=None, help="reviews generated (default: 10 per user)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (7, as bench.warehouse)")
    parser.add_argument("--k", type=int, default=20, help="recommendations published per user (20)")
    parser.add_argument("--keep", type=int, default=publishing.DEFAULT_KEEP,
                        help=f"publications kept ({publishing.DEFAULT_KEEP}); keep - 1 small ones come first")
    parser.add_argument("--clients", type=int, default=4, help="pgbench -c (4)")
    parser.add_argument("--threads", type=int, default=2, help="pgbench -j (2)")
    parser.add_argument("--duration", type=int, default=20, help="pgbench -T seconds, each table (20)")
    parser.add_argument("--readers", type=int, default=8, help="reader processes during the swaps (8)")
    parser.add_argument("--idle-s", type=float, default=3.0, help="seconds of reading before each publish (3)")
    parser.add_argument("--long-query-s", type=float, default=10.0, help="the long query's sleep, seconds (10)")
    parser.add_argument("--lead-s", type=float, default=1.0, help="long query start to swap start, seconds (1)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, the report on stderr")
    args = parser.parse_args(argv)
    n_reviews = args.reviews or args.users * 10
    load_at_start = os.getloadavg()

    server = ScratchDatabases()
    reader: DatabaseSettings | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench_read_path_") as tmp:
            work = Path(tmp)
            say(f"generating {n_reviews:,} reviews ({args.users:,} users, {args.products:,} products)")
            sample = load_sample(n_reviews, args.seed, args.users, args.products, work)
            n_users = sample.interactions.n_users
            if not np.array_equal(sample.interactions.user_ids, np.arange(1, n_users + 1)):
                raise SystemExit("user ids are not dense 1..n: the pgbench script would draw missing users")
            say(f"{n_users:,} users, {sample.interactions.n_items:,} products: building two publications' rows")
            live_rows = publication_rows(sample, 90.0, args.k)
            next_rows = publication_rows(sample, 30.0, args.k)
            db = server.create("bench_read_path")
            describe = server.describe()
            with psycopg.connect(db.conninfo(), autocommit=True) as conn:
                with conn.transaction():
                    ensure_roles(conn)
                reader = create_reader(server, db)
                say(f"publishing {args.keep - 1} small publication(s), then the live one")
                for _ in range(args.keep - 1):
                    publish(conn, small(live_rows, 1000), args.k, args.keep)
                live = publish(conn, live_rows, args.k, args.keep)
                say("writing the peer's plain table")
                conn.execute("CREATE SCHEMA bench_naive")
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA bench_naive TO {}").format(sql.Identifier(reader.user)))
                conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA bench_naive GRANT SELECT ON TABLES TO {}")
                             .format(sql.Identifier(reader.user)))
                with conn.transaction():
                    replace_table(conn, NAIVE, NAIVE_COLUMNS, live_rows.naive, ("user_id", "rank"))
                conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(NAIVE)))
                partition = sql.Identifier(publishing.STORE, publishing.TABLES["user_recommendations"].partition(
                    live.publication_id))
                table_rows, partition_bytes, naive_bytes = conn.execute(sql.SQL(
                    "SELECT (SELECT count(*) FROM recs.user_recommendations), pg_total_relation_size('{}'::regclass), "
                    "pg_total_relation_size('bench_naive.user_recommendations')").format(partition)).fetchone()
            plan = read_plan(reader)

            program = postgres_program("pgbench")
            say(f"(a) pgbench on {OURS}, then on {NAIVE}, {args.duration} s each")
            pg_ours = pgbench(program, reader, OURS, n_users, args.clients, args.threads, args.duration, work, "ours")
            pg_naive = pgbench(program, reader, NAIVE, n_users, args.clients, args.threads, args.duration, work,
                               "naive")

            say(f"(b) {args.readers} readers on {OURS} while a publication is swapped in beside a long query")
            ours = swap_under_readers(db, reader, args, work, OURS, OURS_LONG, OURS_LOCKED, n_users,
                                      lambda conn: publish(conn, next_rows, args.k, args.keep), "ATTACH PARTITION")
            publication = ours.result
            ours.extra = {"publication_id": publication.publication_id, "live": publication.live,
                          "retired": publication.retired,
                          "retire_expected": [live.publication_id - args.keep + 1]}
            say(f"(b) {args.readers} readers on {NAIVE} while replace_table swaps it beside a long query")
            lock_timeout_ms = int((args.long_query_s + 120) * 1000)

            def naive_swap(conn: TracedConnection) -> int:
                with conn.transaction():
                    return replace_table(conn, NAIVE, NAIVE_COLUMNS, next_rows.naive, ("user_id", "rank"),
                                         lock_timeout_ms=lock_timeout_ms)

            naive = swap_under_readers(db, reader, args, work, NAIVE, NAIVE, NAIVE, n_users, naive_swap,
                                       "SET LOCAL lock_timeout")
    finally:
        clean_up(server, reader)

    o, n = swap_figures(ours), swap_figures(naive)
    reader_errors = o["all_reads"]["errors"] + o["all_reads"]["empty"]
    figures = {
        "machine": machine(), "server": describe, "load_average_at_start": load_at_start,
        "reviews": n_reviews, "users": n_users, "products": sample.interactions.n_items, "k": args.k,
        "table_rows": table_rows, "partition_bytes": partition_bytes, "naive_table_bytes": naive_bytes,
        "rows_per_table": {name: len(rows) for name, rows in live_rows.rows.items()},
        "pgbench": {"ours": pg_ours, "naive": pg_naive, "clients": args.clients, "threads": args.threads,
                    "seconds": args.duration},
        "read_plan": plan,
        "swap": {"ours": o, "naive": n, "readers": args.readers, "long_query_sleep_s": args.long_query_s,
                 "lead_s": args.lead_s, "naive_lock_timeout_ms": lock_timeout_ms},
        "read_p99_ms": pg_ours["p99_ms"], "swap_max_ms": o["swap_window"]["max_ms"], "reader_errors": reader_errors,
    }
    expected = o["retire_expected"]
    retired = (f"retired {o['retired']}" if o["retired"] == expected else
               f"retired {o['retired']}, POSTPONED {sorted(set(expected) - set(o['retired']))}")
    report = [
        f"# Read path: a user's top 10 through {READER_ROLE}, and readers during a swap ({machine()})",
        f"server: {describe}; load average at start {', '.join(f'{x:.2f}' for x in load_at_start)} "
        "(a shared 2-core machine: absolute times are noisy, ratios less so)",
        f"data: {n_reviews:,} generated reviews (seed {args.seed}) -> {n_users:,} users, "
        f"{sample.interactions.n_items:,} products, {len(sample.interactions):,} interactions; "
        f"{OURS}: {table_rows:,} rows (users x {args.k}), partition {partition_bytes / 2**20:,.1f} MiB with its "
        f"index (plain table {naive_bytes / 2**20:,.1f} MiB); other tables: "
        + ", ".join(f"{name} {len(rows):,}" for name, rows in live_rows.rows.items() if name != "user_recommendations"),
        "read query, generic plan: " + plan_summary(plan),
        "",
        f"(a) pgbench -n -M prepared -c {args.clients} -j {args.threads} -T {args.duration}, login role IN ROLE "
        f"{READER_ROLE}, a random user's top 10",
    ]
    for name, pg in (("ours  " + OURS, pg_ours), ("peer  " + NAIVE, pg_naive)):
        report.append(f"    {name:<40} p50 {pg['p50_ms']:.3f} ms  p99 {pg['p99_ms']:.3f} ms  "
                      f"max {pg['max_ms']:.2f} ms  tps {pg['tps']:,.0f}  "
                      f"({pg['transactions']:,} transactions, {pg['failed']} failed)")
    report.append(f"    ratio ours/plain table: p50 {fmt(ratio(pg_ours['p50_ms'], pg_naive['p50_ms']))}  "
                  f"p99 {fmt(ratio(pg_ours['p99_ms'], pg_naive['p99_ms']))}  "
                  f"tps {fmt(ratio(pg_ours['tps'], pg_naive['tps']))}")
    report += [
        "",
        f"(b) {args.readers} reader processes (no pause, prepared), a long query (sleep {args.long_query_s:g} s, "
        f"then an aggregation) started {args.lead_s:g} s before each swap and held through it",
    ]
    for title, f in ((f"ours  publishing.publish ({OURS_LONG} held)", o),
                     (f"peer  replace_table, ALTER TABLE RENAME ({NAIVE} held)", n)):
        report.append(f"  {title}")
        report.append(f"    swap {f['swap_ms']:,.1f} ms ({f['swap_statements']} statements + COMMIT; slowest "
                      f"{f['swap_slowest_statement_ms']:,.1f} ms: {f['swap_slowest_statement']})")
        line = (f"    whole call {f['call_s']:.2f} s = build {f['build_s']:.2f} s + long query start and lead "
                f"{f['long_query_start_and_lead_s']:.2f} s + swap + {f['after_commit_s']:.2f} s after COMMIT")
        if "retired" in f:
            line += f" ({retired})"
        report.append(line)
        report.append(f"    build: statements {f['build_statements_s']:.2f} s (slowest: "
                      + "; ".join(f"{seconds:.2f} s {text[:60]}" for text, seconds in f["build_slowest"])
                      + f"), COPY of the rows and Python {f['build_s'] - f['build_statements_s']:.2f} s")
        report.append(f"    long query {fmt(f['long_query_s'])} s; running when the swap started: "
                      f"{f['long_query_running_at_swap_start']}, still running at its COMMIT: "
                      f"{f['long_query_running_at_commit']}"
                      + (f", error {f['long_query_error']}" if f["long_query_error"] else ""))
        for label, key in (("readers idle (same length, before)", "idle"), ("readers swap [start, COMMIT + 1 s]",
                                                                            "swap_window"),
                           ("readers whole call + 1 s", "whole_call"), ("readers, all reads", "all_reads")):
            report.append("    " + window_line(label, f[key]))
        if f["error_messages"]:
            report.append(f"    errors: {f['error_messages']}")
        if f["bad_reads_vs_commit_ms"]:
            report.append("    failed or empty reads (began at, took; ms from the swap's COMMIT): " + ", ".join(
                f"{began:+.2f} ({took:.2f})" for began, took in f["bad_reads_vs_commit_ms"]))
    report += [
        f"  ratio ours/peer, readers' max during the swap: "
        f"{fmt(ratio(o['swap_window']['max_ms'], n['swap_window']['max_ms']), 4)}; swap duration: "
        f"{fmt(ratio(o['swap_ms'], n['swap_ms']), 4)}",
        f"  ours swap window vs idle: p99 {fmt(ratio(o['swap_window']['p99_ms'], o['idle']['p99_ms']))}x, "
        f"max {fmt(ratio(o['swap_window']['max_ms'], o['idle']['max_ms']))}x",
        f"goals: read p99 <= 1 ms: {pg_ours['p99_ms'] <= 1}; swap max <= 50 ms: {o['swap_window']['max_ms'] <= 50}; "
        f"0 errors: {o['all_reads']['errors'] == 0}; 0 empty reads: {o['all_reads']['empty'] == 0}",
        f"read_p99_ms={pg_ours['p99_ms']:.3f} swap_max_ms={o['swap_window']['max_ms']:.2f} "
        f"reader_errors={reader_errors}",
    ]
    emit(report, figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
