"""Line-by-line reading of (optionally gzipped) text files, with memory bounded by one line.

Every reader of a line-based format goes through :func:`read_lines`, so they all share the same
rules: blank lines are skipped, a line over :data:`MAX_LINE_BYTES` is rejected without being held in
memory whole, undecodable bytes are rejected (or decoded as Latin-1 where the format says so), and
each line carries a CRC-32 of its bytes that the loader uses to find duplicate lines.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from rec_orchestration.sources.records import InvalidRecord, Rejected

MAX_LINE_BYTES = 1 << 20  # 1 MiB: far above any real review, far below what would strain memory
MAX_RAW_TEXT = 10_000  # keep quarantined lines readable; the reason says what was wrong
_CHUNK = 1 << 16
UTF8_OR_LATIN1 = "utf-8-or-latin-1"


class Line(NamedTuple):
    number: int  # 1-based, counting every line of the file (blank ones too)
    text: str
    crc: int  # signed 32-bit, as stored in the raw tables' line_crc column


def open_binary(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return path.open("rb")


def shown(raw: bytes | str) -> str:
    """A quarantine-friendly rendering of a raw line: valid text, no NUL, at most MAX_RAW_TEXT."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return text.replace("\x00", "")[:MAX_RAW_TEXT]


def signed_crc32(data: bytes) -> int:
    crc = zlib.crc32(data)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def read_lines(path: Path, encoding: str = "utf-8") -> Iterator[Line | Rejected]:
    """``Line`` per non-blank line, or :class:`Rejected` for a line that is too long or not decodable.

    ``encoding``: "utf-8" (invalid bytes reject the line), "latin-1" (every byte decodes; MovieLens
    100K/1M) or :data:`UTF8_OR_LATIN1` (UTF-8 where it decodes, else Latin-1: files that are one or
    the other, like MovieLens 1M vs 10M). A file that cannot be read at all (a truncated gzip, say)
    raises ``OSError``/``EOFError`` after yielding what was readable; the loader's transaction then
    loads nothing of it.
    """
    with open_binary(path) as fh:
        line_number = 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            line_number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                size = len(raw)
                while True:  # skip the rest of the line without holding it
                    more = fh.readline(_CHUNK)
                    size += len(more)
                    if not more or more.endswith(b"\n"):
                        break
                yield Rejected(line_number, shown(raw[:MAX_RAW_TEXT]),
                               f"line is {size:,} bytes, over the limit of {MAX_LINE_BYTES:,}")
                continue
            stripped = raw.strip()
            if line_number == 1 and stripped.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
                stripped = stripped[3:].strip()
            if not stripped:
                continue
            try:
                text = stripped.decode("utf-8" if encoding == UTF8_OR_LATIN1 else encoding)
            except UnicodeDecodeError as exc:
                if encoding != UTF8_OR_LATIN1:
                    yield Rejected(line_number, shown(stripped), f"invalid UTF-8 at byte {exc.start}")
                    continue
                text = stripped.decode("latin-1")
            yield Line(line_number, text, signed_crc32(stripped))


def read_json_lines(path: Path) -> Iterator[tuple[Line, dict[str, Any]] | Rejected]:
    """``(line, object)`` per JSON-object line; other lines come as :class:`Rejected`."""
    for line in read_lines(path):
        if isinstance(line, Rejected):
            yield line
            continue
        try:
            value = orjson.loads(line.text)
        except orjson.JSONDecodeError as exc:
            yield Rejected(line.number, shown(line.text), f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(value, dict):
            yield Rejected(line.number, shown(line.text), f"expected a JSON object, got {type(value).__name__}")
            continue
        yield line, value


def read_json_rows(path: Path, to_row: Callable[[dict[str, Any]], tuple]) -> Iterator[tuple | Rejected]:
    """``(line_number, line_crc, *to_row(object))`` per JSON-object line; :class:`Rejected` for lines that
    are not JSON objects or that ``to_row`` refuses (by raising :class:`InvalidRecord`)."""
    for item in read_json_lines(path):
        if isinstance(item, Rejected):
            yield item
            continue
        line, record = item
        try:
            yield (line.number, line.crc, *to_row(record))
        except InvalidRecord as exc:
            yield Rejected(line.number, shown(line.text), str(exc))
