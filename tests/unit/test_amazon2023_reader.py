"""Amazon Reviews 2023 reader: good records become canonical rows, bad ones rejects with a reason."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal

from rec_orchestration.sources.amazon2023 import read_products, read_reviews
from rec_orchestration.sources.records import Rejected

NOW = datetime(2024, 1, 1, tzinfo=UTC)
GOOD = {"rating": 4.0, "title": "Nice", "text": "Works", "asin": "B1", "parent_asin": "B0", "user_id": "U1",
        "timestamp": 1_600_000_000_000, "helpful_vote": 2, "verified_purchase": True}


def write_lines(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_good_review_becomes_a_canonical_row(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [json.dumps(GOOD).encode()])
    (row,) = list(read_reviews(path, now=NOW))
    assert row[0] == 1 and isinstance(row[1], int)  # line number, CRC-32 of the line
    assert row[2:] == ("U1", "B0", "B1", Decimal("4.0"), "review", datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC),
                   "Nice", "Works", 2, True)


def test_bad_lines_are_rejected_with_their_line_number_and_reason(tmp_path):
    def variant(**changes):
        return json.dumps({**GOOD, **changes}).encode()

    lines = [
        variant(),                                   # 1 good
        b'{"rating": 5, "user_id": "U2", "parent',   # 2 truncated JSON
        b'{"rating": 5, "title": "\xff\xfe"}',       # 3 invalid UTF-8
        variant(user_id=None),                       # 4 missing user
        variant(parent_asin=None, asin=None),        # 5 missing item
        variant(rating=0),                           # 6
        variant(rating=6),                           # 7
        variant(rating="five"),                      # 8
        variant(rating="NaN"),                       # 9
        variant(timestamp=1_600_000_000),            # 10 seconds: accepted
        variant(timestamp=4_102_444_800_000),        # 11 year 2100
        variant(timestamp=631_152_000_000),          # 12 1990
        b"[1, 2, 3]",                                # 13 not an object
    ]
    out = list(read_reviews(write_lines(tmp_path / "r.jsonl", lines), now=NOW))
    loaded = [item[0] for item in out if not isinstance(item, Rejected)]
    rejected = {r.line_number: r.reason for r in out if isinstance(r, Rejected)}
    assert loaded == [1, 10]
    assert rejected == {
        2: rejected[2], 3: "invalid UTF-8 at byte 24", 4: "missing user_id", 5: "missing parent_asin",
        6: "rating 0 outside 1-5", 7: "rating 6 outside 1-5", 8: "rating is not a number: 'five'",
        9: "rating is not a number: 'NaN'", 11: "timestamp 4102444800000 is in the future",
        12: "timestamp 631152000000 is before 1995", 13: "expected a JSON object, got list",
    }
    assert rejected[2].startswith("invalid JSON")


def test_gzipped_products_are_read_and_keyed_by_parent_asin(tmp_path):
    meta = {"parent_asin": "B0", "title": "Guitar", "main_category": "Musical Instruments",
            "categories": ["Musical Instruments", "Guitars"], "store": "Acme", "price": "$1,299.50",
            "average_rating": 4.5, "rating_number": 10, "description": ["Great", "guitar"],
            "details": {"Color": "Red"}}
    path = tmp_path / "meta_x.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(json.dumps(meta).encode() + b"\n" + json.dumps({"title": "no key"}).encode() + b"\n")
    first, second = list(read_products(path, NOW))
    assert first[:1] + first[2:10] == (1, "B0", "Guitar", "Great\nguitar", "Musical Instruments",
                         ["Musical Instruments", "Guitars"], "Acme", Decimal("1299.50"), Decimal("4.50"))
    assert second == Rejected(2, json.dumps({"title": "no key"}), "missing parent_asin")
