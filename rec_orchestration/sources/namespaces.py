"""Which namespace the users and products of a landing entry belong to.

Source keys are only unique within their source: user "1" of MovieLens 1M and user "1" of MovieLens
latest are two people. Every loaded file is stamped with a *namespace* (``raw.ingested_files.namespace``)
and the warehouse keys users and products by ``(namespace, key)``, so sources stay apart unless the
operator puts them together.

A file's namespace is, first match wins:

1. the run config's ``namespace`` (``LandingConfig``), for every entry of that run;
2. the landing directory's ``_namespaces.toml``: entry names (exact, or glob patterns such as
   ``"ml-*"``) mapped to a namespace, the first matching line in file order;
3. the *family* of the file's format (``Format.family``: ``amazon2023``, ``amazon2014``,
   ``movielens_100k``, ``movielens_dat``, ``movielens_csv``, ``events``), so that daily drops of one
   source share their users while different sources do not.

A namespace is a short lowercase identifier (``[a-z][a-z0-9_]{0,39}``). The namespace is fixed when a
file is loaded: the ledger skips content it has seen, so changing the mapping later applies to new
files only.

No Dagster here (``tests/unit/test_layering.py``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

NAMESPACES_FILE = "_namespaces.toml"  # starts with "_": never taken for a landing entry (formats.is_pending)
NAMESPACE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
_RULE = "a lowercase letter, then up to 39 lowercase letters, digits or '_'"


class NamespaceError(ValueError):
    """A namespace that is not a valid identifier, or a mapping file that cannot be used."""


def validate_namespace(value: object, where: str) -> str:
    """``value`` when it is a valid namespace; otherwise a :class:`NamespaceError` naming ``where``."""
    if not isinstance(value, str) or not NAMESPACE_PATTERN.fullmatch(value):
        raise NamespaceError(f"{where}: namespace {value!r} is not valid ({_RULE})")
    return value


@dataclass(frozen=True)
class NamespaceMap:
    """The rules of a ``_namespaces.toml``: ``(pattern, namespace)`` in file order; ``source`` names the file."""

    rules: tuple[tuple[str, str], ...] = ()
    source: Path | None = None

    def lookup(self, entry_name: str) -> str | None:
        """The namespace of the first rule whose pattern is ``entry_name`` or matches it (glob), or None."""
        for pattern, namespace in self.rules:
            if pattern == entry_name or fnmatchcase(entry_name, pattern):
                return namespace
        return None


def parse_namespace_map(text: str, source: Path | str = NAMESPACES_FILE) -> NamespaceMap:
    """Rules from the text of a mapping file: top-level ``"entry or pattern" = "namespace"`` lines.

    >>> parse_namespace_map('"ml-1m" = "movielens"\\n"ml-latest*" = "movielens"').lookup("ml-latest-small")
    'movielens'
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NamespaceError(f"{source}: not valid TOML ({exc})") from None
    rules = []
    for pattern, namespace in data.items():
        if not isinstance(namespace, str):
            raise NamespaceError(f"{source}: {pattern!r} must map to a namespace string, e.g. "
                                 f'"{pattern}" = "movielens" (got {type(namespace).__name__})')
        if not pattern.strip():
            raise NamespaceError(f"{source}: an empty entry name or pattern")
        rules.append((pattern, validate_namespace(namespace, f"{source}, entry {pattern!r}")))
    return NamespaceMap(tuple(rules), Path(source))


def read_namespace_map(landing_dir: Path) -> NamespaceMap:
    """The mapping file of a landing directory; no rules when it has none."""
    path = landing_dir / NAMESPACES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return NamespaceMap()
    except (OSError, UnicodeDecodeError) as exc:
        raise NamespaceError(f"{path}: cannot be read ({exc})") from None
    return parse_namespace_map(text, path)


def entry_namespace(entry_name: str, mapping: NamespaceMap, configured: str | None = None) -> str | None:
    """The namespace an entry's files get from run config or the mapping file; None: each file's format
    family (the default)."""
    if configured is not None:
        return validate_namespace(configured, "run config namespace")
    return mapping.lookup(entry_name)
