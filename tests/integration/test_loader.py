"""Landing-file loads against the real PostgreSQL: once per content, all or nothing, bad records quarantined."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rec_orchestration.sources.formats import FORMATS
from rec_orchestration.sources.loader import UnreadableFileError, load_file
from tests.support import query, scalar

REVIEWS = FORMATS["amazon2023_reviews"]
GOOD = {"rating": 5.0, "title": "t", "text": "x", "asin": "A", "parent_asin": "P1", "user_id": "U1",
        "timestamp": 1_600_000_000_000, "helpful_vote": 0, "verified_purchase": True}


def review_lines(n: int) -> list[bytes]:
    return [json.dumps({**GOOD, "user_id": f"U{i}"}).encode() for i in range(n)]


def test_bad_records_are_quarantined_and_the_ledger_reconciles(conn, warehouse_env, tmp_path: Path):
    path = tmp_path / "reviews.jsonl"
    lines = review_lines(3) + [b'{"rating": 9, "user_id": "U9", "parent_asin": "P", "timestamp": 1600000000000}',
                               b"not json"]
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = load_file(conn, path, REVIEWS)
    assert (result.rows_read, result.rows_loaded, result.rows_rejected) == (5, 3, 2)
    assert query(warehouse_env, "SELECT line_number, reason FROM raw.rejected_records ORDER BY line_number") == [
        (4, "rating 9 outside 1-5"), (5, "invalid JSON: invalid literal, expected 'null' at column 1")]
    assert query(warehouse_env, "SELECT rows_read, rows_loaded, rows_rejected FROM raw.ingested_files") == [(5, 3, 2)]

    # The same content under another name is recognised and skipped.
    copy = tmp_path / "reviews_copy.jsonl"
    copy.write_bytes(path.read_bytes())
    assert load_file(conn, copy, REVIEWS).already_loaded
    assert scalar(warehouse_env, "SELECT count(*) FROM raw.reviews") == 3


def test_an_unreadable_file_loads_nothing_and_fails_clearly(conn, warehouse_env, tmp_path: Path):
    whole = gzip.compress(b"\n".join(review_lines(5000)) + b"\n")
    path = tmp_path / "reviews.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])  # truncated download
    with pytest.raises(UnreadableFileError, match="reviews.jsonl.gz"):
        load_file(conn, path, REVIEWS)
    assert scalar(warehouse_env, "SELECT count(*) FROM raw.reviews") == 0
    assert scalar(warehouse_env, "SELECT count(*) FROM raw.ingested_files") == 0
    path.write_bytes(whole)  # the complete file arrives
    assert load_file(conn, path, REVIEWS).rows_loaded == 5000


KILL_SCRIPT = """
import sys, psycopg
from pathlib import Path
from rec_orchestration.sources.formats import FORMATS
from rec_orchestration.sources.loader import load_file
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    load_file(conn, Path(sys.argv[2]), FORMATS["amazon2023_reviews"])
"""


def test_kill_9_in_the_middle_of_a_load_leaves_nothing_and_the_next_run_loads_it_whole(conn, warehouse_env,
                                                                                       tmp_path: Path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(review_lines(400_000)) + b"\n")
    loader = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, warehouse_env.conninfo(), str(path)],
                              env=dict(os.environ))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until its COPY is streaming rows into the server
        copying = scalar(warehouse_env, "SELECT count(*) FROM pg_stat_progress_copy WHERE tuples_processed > 1000")
        if copying:
            break
        time.sleep(0.02)
    assert copying, "the load never reached COPY"
    loader.send_signal(signal.SIGKILL)
    loader.wait(30)
    time.sleep(0.5)  # the server notices the dead client and rolls back
    assert scalar(warehouse_env, "SELECT count(*) FROM raw.reviews") == 0
    assert scalar(warehouse_env, "SELECT count(*) FROM raw.ingested_files") == 0
    result = load_file(conn, path, REVIEWS)
    assert (result.already_loaded, result.rows_loaded) == (False, 400_000)


MEMORY_SCRIPT = """
import resource, sys, psycopg
from pathlib import Path
from rec_orchestration.sources.formats import FORMATS
from rec_orchestration.sources.loader import load_file
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = load_file(conn, Path(sys.argv[2]), FORMATS["amazon2023_reviews"])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(result.rows_loaded, result.rows_rejected, (after - before) // 1024)
"""


def test_memory_stays_bounded_by_a_line_not_the_file(conn, warehouse_env, tmp_path: Path):
    # ~190 MB of reviews, one in ten of them rejected: the loader's peak memory must not grow with it.
    path = tmp_path / "big.jsonl"
    text = "a long honest review " * 20
    with path.open("wb") as fh:
        for i in range(400_000):
            rating = 0 if i % 10 == 0 else 4
            fh.write(json.dumps({**GOOD, "user_id": f"U{i}", "rating": rating, "text": text}).encode() + b"\n")
    size_mb = path.stat().st_size // 2**20
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, warehouse_env.conninfo(), str(path)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    loaded, rejected, growth_mb = map(int, done.stdout.split())
    print(f"loaded {size_mb} MB file, peak memory grew {growth_mb} MB")
    assert (loaded, rejected) == (360_000, 40_000)
    assert size_mb > 150 and growth_mb < 40, f"peak memory grew {growth_mb} MB loading a {size_mb} MB file"
