"""Paths that must stay inside a directory: landing entries and files, model-store artifacts.

Partition keys, run config and the model store's ``LATEST`` pointers are names that reach the file
system. A name with ``..`` or a ``/``, an absolute path, or a symlink pointing elsewhere would make a step
read (and quarantine, line by line, into ``raw.rejected_records``) or write files outside the directory
it was given. These checks refuse them with a message saying what and where.

No Dagster here: the loader and the model store use it.
"""

from __future__ import annotations

from pathlib import Path, PurePath


class OutsideError(ValueError):
    """A name or path that would leave the directory it must stay in."""


def plain_name(name: str, what: str) -> str:
    """``name`` when it is one ordinary path component (not empty, ``.`` or ``..``, no ``/``, ``\\`` or NUL)."""
    if not name or name in (".", "..") or any(ch in name for ch in "/\\\0"):
        raise OutsideError(f"{what} {name!r} is not a plain file or folder name (no '/', '\\', '..' or '.')")
    return name


def no_parent_steps(path: str | PurePath, what: str) -> None:
    """Refuse a path written with a ``..`` component (it can only mean "somewhere else")."""
    if ".." in PurePath(path).parts:
        raise OutsideError(f"{what} {str(path)!r} contains '..'; give the directory itself")


def within(root: Path, path: Path, what: str) -> Path:
    """``path`` resolved (symlinks followed) when it lies in ``root`` (resolved too); raise otherwise."""
    resolved_root, resolved = root.resolve(), path.resolve()
    if resolved != resolved_root and not resolved.is_relative_to(resolved_root):
        link = " (a symlink)" if path.is_symlink() else ""
        raise OutsideError(f"{what} {path} resolves to {resolved}{link}, outside {resolved_root}")
    return resolved
