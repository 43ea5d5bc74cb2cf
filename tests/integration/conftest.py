"""Fixtures of every integration test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_gx_cache_across_databases() -> Iterator[None]:
    """Each test drops its database: keep no pooled Great Expectations connection to it."""
    yield
    from rec_orchestration.quality.validation import reset_gx_session

    reset_gx_session()
