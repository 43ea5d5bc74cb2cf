r"""Warehouse build speed: ``dbt build`` from raw, a full rebuild against an incremental run after 1% more.

The data
    One generated Amazon-Reviews-2023 reviews file (``bench.common``'s generator: ~100k users, ~20k
    products, power-law activity and popularity, realistic texts) of ``--rows`` + 1% lines, split into
    file A (the first ``--rows`` lines) and file B (the last 1%, the same users and products: what an
    hourly delivery looks like), plus a ``meta_*`` file for every product (two-level category paths,
    brand, color, date first available). Written to a temporary directory, loaded into a throw-away
    database with the project's loader (not timed).

What is timed (wall clock of the ``dbt build`` process, models and tests, as the Dagster asset runs it)
    full         ``dbt build --full-refresh`` with A and the meta file loaded: every model from all of raw.
    incremental  after B is loaded, ``dbt build``: the incremental models read only B.
Each round removes B from raw first (rows and ledger), so the full build sees A again. A warm-up
``dbt parse`` into a private target directory comes first, so every timed build pays the same dbt
start-up (partial parsing), as in a Dagster run with the manifest built beforehand.

Also timed: ``dbt build`` with no new file (``--rounds`` times), the floor every build pays (dbt
start-up, metadata queries, tests), to show how much of the incremental run is work on the new rows.

Checked, once, after the last round: a ``--full-refresh`` build on A + B gives exactly the core tables
the incremental run gave (an md5 over every row of each, ``refreshed_at`` left out).

Method: both in one run on one machine, ``--rounds`` rounds (default 3), median of each; the ratio is
incremental seconds over full seconds (below 1: the incremental run is faster). Goal:
``incremental_vs_full <= 0.1``. Per-model seconds of the last round (dbt's run_results.json) show where
the time goes.

Database: a throw-away database on the server named by ``REC_DATABASE_URL`` / ``PG*``, or else on the
project's embedded PostgreSQL (started if needed, stopped at the end if this started it), dropped at
the end.

Output: the report, ending with ``incremental_vs_full=<ratio>``. Progress goes to stderr.

    .venv/bin/python -m bench.warehouse [--rows 1000000] [--rounds 3]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import argument_parser, generate_reviews, machine, say, write_jsonl, write_meta
from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.db.scratch import ScratchDatabases
from rec_orchestration.dbt_child import dbt_executable
from rec_orchestration.settings import DBT_PROJECT_DIR
from rec_orchestration.sources.formats import FORMATS
from rec_orchestration.sources.loader import ensure_raw_schema, load_file

CORE_TABLES = ("users", "products", "categories", "product_categories", "reviews", "events", "interactions",
               "transactions", "transaction_items")


def split_lines(source: Path, first: Path, rest: Path, n_first: int) -> None:
    with source.open("rb") as src, first.open("wb") as a, rest.open("wb") as b:
        for i, line in enumerate(src):
            (a if i < n_first else b).write(line)


class Dbt:
    """``dbt`` on the project, against one database, writing into a private target directory."""

    def __init__(self, db: DatabaseSettings, work: Path) -> None:
        self.env = {**os.environ, **db.dbt_environment(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        self.target = work / "dbt_target"
        self.base = [dbt_executable(), "--no-use-colors", "--log-path", str(work / "dbt_logs")]
        self.project = ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
                        "--target-path", str(self.target)]

    def __call__(self, command: str, *args: str) -> float:
        argv = [*self.base, command, *self.project, *args]
        started = time.perf_counter()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
        return seconds

    def model_seconds(self) -> list[tuple[str, float]]:
        results = json.loads((self.target / "run_results.json").read_text())["results"]
        return sorted(((r["unique_id"].split(".", 2)[-1], r["execution_time"]) for r in results),
                      key=lambda pair: -pair[1])


def remove_file(conn: psycopg.Connection, file_id: int) -> None:
    with conn.transaction():
        for table in ("raw.reviews", "raw.rejected_records"):
            conn.execute(f"DELETE FROM {table} WHERE file_id = %s", (file_id,))  # noqa: S608 (constant names)
        conn.execute("DELETE FROM raw.ingested_files WHERE file_id = %s", (file_id,))


def table_digests(conn: psycopg.Connection) -> dict[str, tuple[int, str]]:
    digests = {}
    for table in CORE_TABLES:
        digests[table] = conn.execute(f"""
            SELECT count(*), coalesce(md5(string_agg(row_text, '|' ORDER BY row_text)), '')
            FROM (SELECT (to_jsonb(t) - 'refreshed_at')::text AS row_text FROM core.{table} AS t) AS rows
        """).fetchone()  # noqa: S608 (constant names)
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench.warehouse", __doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-database", action="store_true",
                        help="leave the database (state after the last incremental build) for inspection")
    args = parser.parse_args(argv)
    extra = max(1, args.rows // 100)

    server = ScratchDatabases()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_warehouse_") as tmp:
            work = Path(tmp)
            say(f"generating {args.rows:,} + {extra:,} reviews")
            reviews = generate_reviews(args.rows + extra, args.seed)
            whole, file_a, file_b = work / "all.jsonl", work / "reviews_a.jsonl", work / "reviews_b.jsonl"
            write_jsonl(reviews, whole)
            split_lines(whole, file_a, file_b, args.rows)
            whole.unlink()
            meta = work / "meta_Bench.jsonl"
            write_meta(reviews.parent_asin, meta, args.seed)
            db = server.create("bench_warehouse")
            dbt = Dbt(db, work)
            with psycopg.connect(db.conninfo(), autocommit=True) as conn:
                ensure_raw_schema(conn)
                say("loading A and the meta file")
                load_file(conn, file_a, FORMATS["amazon2023_reviews"])
                load_file(conn, meta, FORMATS["amazon2023_products"])
                conn.execute("ANALYZE")
                dbt("parse")
                full, incremental = [], []
                for round_no in range(1, args.rounds + 1):
                    row = conn.execute("SELECT file_id FROM raw.ingested_files WHERE path = %s", (str(file_b),)
                                       ).fetchone()
                    if row:
                        remove_file(conn, row[0])
                    full.append(dbt("build", "--full-refresh"))
                    full_models = dbt.model_seconds()
                    load_file(conn, file_b, FORMATS["amazon2023_reviews"])
                    incremental.append(dbt("build"))
                    say(f"round {round_no}: full {full[-1]:.2f} s, incremental {incremental[-1]:.2f} s")
                incremental_models = dbt.model_seconds()
                after_incremental = table_digests(conn)
                noop = [dbt("build") for _ in range(args.rounds)]  # no new file: start-up, metadata, tests
                if args.keep_database:
                    say(f"kept database {db.dbname}: {db.url()}")
                    server.created.remove(db.dbname)  # drop_all() leaves it
                    after_full = after_incremental
                else:
                    dbt("build", "--full-refresh")
                    after_full = table_digests(conn)
                counts = {table: after_full[table][0] for table in CORE_TABLES}
            same = after_incremental == after_full
    finally:
        server.drop_all()

    full_s, incremental_s = statistics.median(full), statistics.median(incremental)
    print(f"# Warehouse build: dbt build from raw, full vs incremental after +1% ({machine()})")
    print(f"rows: {args.rows:,} reviews in A, {extra:,} in B; core row counts after A+B: "
          + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    print(f"full rebuild (A):         median {full_s:.2f} s  runs {', '.join(f'{s:.2f}' for s in full)}")
    print(f"incremental (+B):         median {incremental_s:.2f} s  runs {', '.join(f'{s:.2f}' for s in incremental)}")
    noop_s = statistics.median(noop)
    print(f"no-op build (no new file): median {noop_s:.2f} s  runs {', '.join(f'{s:.2f}' for s in noop)}"
          f"  -> incremental work above it: {incremental_s - noop_s:.2f} s "
          f"({(incremental_s - noop_s) / full_s:.3f} of the full build)")
    print(f"incremental == full rebuild on A+B (md5 of every core table): {same}")
    print("slowest nodes, full build:        " + ", ".join(f"{n} {s:.2f}" for n, s in full_models[:6]))
    print("slowest nodes, incremental build: " + ", ".join(f"{n} {s:.2f}" for n, s in incremental_models[:6]))
    if not same:
        diff = [t for t in CORE_TABLES if after_incremental[t] != after_full[t]]
        print(f"DIFFERENT: {diff}")
    print(f"incremental_vs_full={incremental_s / full_s:.3f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
