"""Shared fixtures: real-data location and the skip/require policy."""

from __future__ import annotations

import os
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
