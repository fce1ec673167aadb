"""Shared fixtures: real-data location and the skip/require policy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def _data_dir() -> Path | None:
    from knnroute.data import data_dir

    return data_dir(required=False)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real-data folder (../shared/data or $KNNROUTE_DATA).

    Skips when absent (a user's fresh machine); fails when KNNROUTE_REQUIRE_DATA=1 (CI), so CI never
    passes by skipping the real-data tests.
    """
    path = _data_dir()
    if path is None:
        msg = (
            "real routing data not found: set KNNROUTE_DATA to the folder holding "
            "routerbench-0shot-subset/ etc. (default: ../shared/data)"
        )
        if os.environ.get("KNNROUTE_REQUIRE_DATA") == "1":
            pytest.fail(msg + " [KNNROUTE_REQUIRE_DATA=1]")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for this test session (tests/pg.py), torn down after.

    Skips when it cannot be started (a user's machine without PostgreSQL); fails when
    KNNROUTE_REQUIRE_POSTGRES=1 (CI), so CI never passes by skipping the PostgreSQL tests."""
    from tests.pg import PostgresUnavailable, postgres_server

    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip_or_fail("psycopg is not installed (pip install 'knnroute[postgres]')")
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as e:
        _skip_or_fail(f"PostgreSQL cannot be started here: {e}")


def _skip_or_fail(msg: str) -> None:
    if os.environ.get("KNNROUTE_REQUIRE_POSTGRES") == "1":
        pytest.fail(msg + " [KNNROUTE_REQUIRE_POSTGRES=1]")
    pytest.skip(msg)
