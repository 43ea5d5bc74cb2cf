"""Every class of bad landing input, through the real loader into PostgreSQL: what is loaded, what is
quarantined (exact lines and reasons), and that the ledger reconciles."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rec_orchestration.sources.loader import UnreadableFileError, load_entry
from rec_orchestration.sources.text_lines import MAX_LINE_BYTES
from tests.support import query

GOOD = {"rating": 5.0, "title": "t", "text": "x", "asin": "A", "parent_asin": "P1", "user_id": "U1",
        "timestamp": 1_600_000_000_000, "helpful_vote": 0, "verified_purchase": True}


def review(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def rejected(db) -> list[tuple[int, str]]:
    return query(db, "SELECT line_number, reason FROM raw.rejected_records ORDER BY line_number")


def ledger(db) -> list[tuple]:
    return query(db, "SELECT path, rows_read, rows_loaded, rows_rejected FROM raw.ingested_files ORDER BY file_id")


def test_every_bad_json_record_class_is_quarantined_with_its_reason(conn, warehouse_env, tmp_path: Path):
    huge = review(text="x" * (10 * 1024 * 1024))  # a 10 MB line
    lines = [
        review(user_id="U1"),                          # 1 good (epoch ms)
        b'{"rating": 5, "user_id": "U2", "parent',     # 2 truncated JSON line
        b'{"rating": 5, "title": "\xff\xfe"}',         # 3 invalid UTF-8
        review(user_id=None),                          # 4 missing user id
        review(parent_asin="", asin=None),             # 5 missing item id
        review(rating=0),                              # 6
        review(rating=6),                              # 7
        review(rating="five"),                         # 8
        review(rating="NaN"),                          # 9
        review(user_id="U10", timestamp=1_600_000_000),            # 10 epoch seconds: loaded
        review(user_id="U11", timestamp="2020-09-13T12:26:40Z"),   # 11 ISO text: loaded
        review(timestamp=4_102_444_800_000),           # 12 year 2100
        review(timestamp=631_152_000_000),             # 13 1990
        review(user_id="U1"),                          # 14 duplicate of line 1
        b"",                                           # 15 blank: skipped, not a record
        huge,                                          # 16
        review(user_id="U17"),                         # 17 good after the huge line
    ]
    path = tmp_path / "reviews.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = load_entry(conn, path, now=datetime(2026, 1, 1, tzinfo=UTC))
    (loaded,) = result.loaded
    assert (loaded.rows_read, loaded.rows_loaded, loaded.rows_rejected, loaded.duplicates) == (16, 4, 12, 1)
    assert query(warehouse_env, "SELECT line_number, user_key, event_ts FROM raw.reviews ORDER BY 1") == [
        (1, "U1", datetime.fromtimestamp(1_600_000_000, UTC)),
        (10, "U10", datetime.fromtimestamp(1_600_000_000, UTC)),
        (11, "U11", datetime.fromtimestamp(1_600_000_000, UTC)),
        (17, "U17", datetime.fromtimestamp(1_600_000_000, UTC)),
    ]
    assert rejected(warehouse_env) == [
        (2, "invalid JSON: unexpected end of data at column 39"),
        (3, "invalid UTF-8 at byte 24"),
        (4, "missing user_id"),
        (5, "missing parent_asin"),
        (6, "rating 0 outside 1-5"),
        (7, "rating 6 outside 1-5"),
        (8, "rating is not a number: 'five'"),
        (9, "rating is not a number: 'NaN'"),
        (12, "timestamp 4102444800000 is in the future"),
        (13, "timestamp 631152000000 is before 1995"),
        (14, "duplicate of line 1"),
        (16, f"line is {len(huge) + 1:,} bytes, over the limit of {MAX_LINE_BYTES:,}"),
    ]
    # The quarantine keeps the offending text (bounded), valid UTF-8 for readers.
    texts = dict(query(warehouse_env, "SELECT line_number, raw_text FROM raw.rejected_records"))
    assert texts[2] == '{"rating": 5, "user_id": "U2", "parent'
    assert texts[3] == '{"rating": 5, "title": "\ufffd\ufffd"}'
    assert len(texts[16]) == 10_000
    assert json.loads(texts[14])["user_key"] == "U1"  # a duplicate is shown as the record it repeats
    assert ledger(warehouse_env) == [(str(path), 16, 4, 12)]


def test_empty_and_header_only_files_load_nothing_and_are_recorded(conn, warehouse_env, tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    header_only = tmp_path / "events.csv"
    header_only.write_text("user_id,item_id,event_type,value,timestamp\n")
    for path in (empty, header_only):
        (loaded,) = load_entry(conn, path).loaded
        assert (loaded.rows_read, loaded.rows_loaded, loaded.rows_rejected) == (0, 0, 0)
    assert [row[1:] for row in ledger(warehouse_env)] == [(0, 0, 0), (0, 0, 0)]


def test_csv_rows_with_missing_or_extra_fields_are_rejected_alone(conn, warehouse_env, tmp_path: Path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,event_type,value,timestamp\n"
                    "u1,i1,view,,1700000000\n"
                    "u1,i2,view,1700000000\n"
                    "u1,i3,view,,1700000000,extra\n"
                    ",i4,click,,1700000000\n"
                    "u1,i5,rating,,1700000000\n"
                    "u1,i6,click,,1700000000\n")
    (loaded,) = load_entry(conn, path).loaded
    assert (loaded.rows_loaded, loaded.rows_rejected) == (2, 4)
    assert query(warehouse_env, "SELECT item_key FROM raw.events ORDER BY line_number") == [("i1",), ("i6",)]
    assert rejected(warehouse_env) == [
        (3, "expected 5 fields, got 4"), (4, "expected 5 fields, got 6"), (5, "missing user_id"),
        (6, "rating is not a number: ''"),
    ]


def test_a_file_with_wrong_columns_fails_clearly_and_loses_nothing_else(conn, warehouse_env, tmp_path: Path):
    folder = tmp_path / "delivery"
    folder.mkdir()
    (folder / "good.csv").write_text("user_id,item_id,event_type,value,timestamp\nu1,i1,view,,1700000000\n")
    (folder / "bad.csv").write_text("user_id,item_id,event_type,value,timestamp,colour\nu1,i1,view,,1700000000,red\n")
    result = load_entry(conn, folder)
    assert [r.path.name for r in result.loaded] == ["good.csv"]
    (failure,) = result.failures
    assert "bad.csv: unknown column(s) colour" in failure and "nothing of it was loaded" in failure
    assert query(warehouse_env, "SELECT item_key FROM raw.events") == [("i1",)]
    assert [Path(p).name for p, *_ in ledger(warehouse_env)] == ["good.csv"]


def test_reloading_the_same_content_adds_nothing(conn, warehouse_env, tmp_path: Path):
    path = tmp_path / "reviews.jsonl"
    path.write_bytes(review(user_id="A") + b"\n" + review(user_id="B") + b"\n")
    assert load_entry(conn, path).loaded[0].rows_loaded == 2
    again = load_entry(conn, path).loaded[0]
    assert again.already_loaded and again.rows_loaded == 0
    os.utime(path, ns=(0, 1_000_000_000_000_000_000))  # touched: read and hashed again, same content
    touched = load_entry(conn, path).loaded[0]
    assert touched.already_loaded and touched.content_sha256 == again.content_sha256
    assert query(warehouse_env, "SELECT count(*) FROM raw.reviews") == [(2,)]


def test_an_unreadable_gzip_inside_a_folder_fails_only_that_file(conn, warehouse_env, tmp_path: Path):
    import gzip

    folder = tmp_path / "drop"
    folder.mkdir()
    whole = gzip.compress(b"\n".join(review(user_id=f"U{i}") for i in range(3000)) + b"\n")
    (folder / "a.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (folder / "b.jsonl").write_bytes(review(user_id="B") + b"\n")
    result = load_entry(conn, folder)
    assert [r.path.name for r in result.loaded] == ["b.jsonl"]
    assert "a.jsonl.gz: cannot be read" in result.failures[0]
    assert query(warehouse_env, "SELECT user_key FROM raw.reviews") == [("B",)]
    with pytest.raises(UnreadableFileError):
        from rec_orchestration.sources.formats import FORMATS
        from rec_orchestration.sources.loader import load_file

        load_file(conn, folder / "a.jsonl.gz", FORMATS["amazon2023_reviews"])


def test_one_delivery_describing_a_product_twice_keeps_the_first_and_quarantines_the_rest(conn, warehouse_env,
                                                                                           tmp_path: Path):
    path = tmp_path / "meta_Things.jsonl"
    lines = [{"parent_asin": "P1", "title": "first"}, {"parent_asin": "P2", "title": "other"},
             {"parent_asin": "P1", "title": "second", "details": {"Brand": "A\u0000cme"}}]
    path.write_bytes(b"\n".join(json.dumps(line).encode() for line in lines) + b"\n")
    (loaded,) = load_entry(conn, path).loaded
    assert (loaded.rows_loaded, loaded.rows_rejected) == (2, 1)
    assert query(warehouse_env, "SELECT item_key, title FROM raw.products ORDER BY line_number") == [
        ("P1", "first"), ("P2", "other")]
    assert rejected(warehouse_env) == [(3, "duplicate item_key of line 1")]
    # NUL inside JSON details (PostgreSQL jsonb cannot hold it) is removed, not a reason to fail the file.
    assert '"Acme"' in query(warehouse_env, "SELECT raw_text FROM raw.rejected_records")[0][0]


def test_a_byte_order_mark_and_a_format_named_once_are_handled(conn, warehouse_env, tmp_path: Path):
    bom = tmp_path / "events.csv"
    bom.write_bytes(b"\xef\xbb\xbfuser_id,item_id,event_type,value,timestamp\r\nu1,i1,view,,1700000000\r\n")
    assert load_entry(conn, bom).loaded[0].rows_loaded == 1

    odd = tmp_path / "clicks.txt"  # no detectable format: the run config named it
    odd.write_text("user_id,item_id,event_type,value,timestamp\nu2,i2,click,,1700000000\n")
    assert load_entry(conn, odd, "events_csv").loaded[0].rows_loaded == 1
    again = load_entry(conn, odd)  # the hourly refresh has no config: the ledger remembers the format
    assert again.loaded[0].already_loaded and again.loaded[0].format == "events_csv"
