"""Line-by-line reading of (optionally gzipped) text files, so memory stays bounded by one line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rec_orchestration.sources.records import Rejected

MAX_RAW_TEXT = 10_000  # keep quarantined lines readable; the reason says what was wrong


def open_binary(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return path.open("rb")


def _shown(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\x00", "")[:MAX_RAW_TEXT]


def read_json_lines(path: Path) -> Iterator[tuple[int, str, dict[str, Any] | Rejected]]:
    """``(line_number, text, object)`` per non-blank line; undecodable lines come as :class:`Rejected`.

    A file that cannot be read at all (a truncated gzip, say) raises after yielding what was readable;
    the caller's transaction then loads nothing of it.
    """
    with open_binary(path) as fh:
        for line_number, raw in enumerate(fh, start=1):
            stripped = raw.strip()
            if not stripped:
                continue
            try:
                text = stripped.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_number, _shown(stripped), Rejected(line_number, _shown(stripped),
                                                              f"invalid UTF-8 at byte {exc.start}")
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line_number, text, Rejected(line_number, text[:MAX_RAW_TEXT], f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(value, dict):
                yield line_number, text, Rejected(line_number, text[:MAX_RAW_TEXT],
                                                  f"expected a JSON object, got {type(value).__name__}")
                continue
            yield line_number, text[:MAX_RAW_TEXT], value
