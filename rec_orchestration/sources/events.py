"""Generic interaction events: CSV or Parquet with ``user_id,item_id,event_type,value,timestamp``.

``event_type`` is one of view, click, like, purchase, rating. ``value`` is the star rating for
rating events (0.5-5, required) and an optional non-negative number otherwise (dwell seconds, say).
Purchases may carry ``quantity`` (a positive integer, default 1) and ``price`` (non-negative).
``timestamp`` is epoch seconds, epoch milliseconds or ISO 8601 text (naive means UTC).

The header (CSV) or schema (Parquet) must have every required column and nothing unknown: a file
whose columns do not match fails as a whole with a message naming them. A CSV row with the wrong
number of fields is rejected on its own.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from rec_orchestration.sources.records import (
    EVENT_KINDS,
    LOWEST_RATING,
    InvalidFileError,
    InvalidRecord,
    Rejected,
    clean_key,
    parse_rating,
    parse_timestamp,
)
from rec_orchestration.sources.text_lines import read_lines, shown, signed_crc32

REQUIRED_COLUMNS = ("user_id", "item_id", "event_type", "value", "timestamp")
OPTIONAL_COLUMNS = ("quantity", "price")
PARQUET_BATCH_ROWS = 65_536


def check_columns(path: Path, columns: list[str]) -> dict[str, int]:
    """Column name -> position; a clear error when required ones are missing or unknown ones present."""
    names = [c.strip().lower() for c in columns]
    names = [n for n in names if not n.startswith("__index_level_")]  # pandas' index, not data
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    unknown = [c for c in names if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown or len(set(names)) != len(names):
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        if len(set(names)) != len(names):
            problems.append("repeated column names")
        raise InvalidFileError(
            f"{path.name}: {'; '.join(problems)} (expected {','.join(REQUIRED_COLUMNS)}[,quantity,price])")
    return {c.strip().lower(): i for i, c in enumerate(columns) if not c.strip().lower().startswith("__index_level_")}


def _number(value: object, field: str) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InvalidRecord(f"{field} is not a number: {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InvalidRecord(f"{field} is not a number: {value!r}") from exc
    if not number.is_finite():
        raise InvalidRecord(f"{field} is not a number: {value!r}")
    if number < 0:
        raise InvalidRecord(f"{field} {value!r} is negative")
    return number


def event_row(user: object, item: object, event_type: object, value: object, ts: object,
              quantity: object, price: object, now: datetime) -> tuple:
    kind = str(event_type).strip().lower() if event_type is not None else ""
    if not kind:
        raise InvalidRecord("missing event_type")
    if kind not in EVENT_KINDS:
        raise InvalidRecord(f"unknown event_type {event_type!r} (expected one of {', '.join(EVENT_KINDS)})")
    amount = parse_rating(value, LOWEST_RATING) if kind == "rating" else _number(value, "value")
    count = _number(quantity, "quantity")
    if count is not None and (count != count.to_integral_value() or count < 1 or count >= 2**31):
        raise InvalidRecord(f"quantity {quantity!r} is not a positive whole number")
    if count is None and kind == "purchase":
        count = Decimal(1)
    cost = _number(price, "price")
    if cost is not None:
        if cost >= Decimal("1e10"):
            raise InvalidRecord(f"price {price!r} is out of range")
        cost = cost.quantize(Decimal("0.01"))
    return (clean_key(user, "user_id"), clean_key(item, "item_id"), kind, amount, parse_timestamp(ts, now),
            int(count) if count is not None else None, cost)


def _pick(fields: list, positions: dict[str, int]) -> tuple:
    return tuple(fields[positions[c]] if c in positions else None for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS)


def read_csv(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    positions: dict[str, int] | None = None
    for line in read_lines(path):
        if isinstance(line, Rejected):
            yield line
            continue
        fields = next(csv.reader([line.text])) if '"' in line.text else line.text.split(",")
        if positions is None:
            positions, header_fields = check_columns(path, fields), fields
            continue
        try:
            if len(fields) != len(header_fields):
                raise InvalidRecord(f"expected {len(header_fields)} fields, got {len(fields)}")
            yield (line.number, line.crc, *event_row(*_pick(fields, positions), now))
        except InvalidRecord as exc:
            yield Rejected(line.number, shown(line.text), str(exc))


def read_parquet(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    """Row by row in batches of PARQUET_BATCH_ROWS; "line_number" is the 1-based row number."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid & co. for a damaged footer
        raise OSError(f"not a readable Parquet file: {exc}") from exc
    positions = check_columns(path, parquet.schema_arrow.names)
    row_number = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for row in zip(*(column.to_pylist() for column in batch.columns), strict=True):
            row_number += 1
            text = repr(row)
            try:
                yield (row_number, signed_crc32(text.encode()), *event_row(*_pick(list(row), positions), now))
            except InvalidRecord as exc:
                yield Rejected(row_number, shown(text), str(exc))

