"""Deprecated alias: the router file format moved to :mod:`knnroute.production.persist` and ``save`` /
``load`` / ``loads`` to :mod:`knnroute.production.files`; import them from :mod:`knnroute.production`
(``knnroute.load`` is unchanged)."""

from __future__ import annotations

import warnings

from knnroute.production.files import load, loads, save
from knnroute.production.persist import (
    FORMAT_VERSION,
    MAGIC,
    PREAMBLE_SIZE,
    PRECISIONS,
    RouterFileError,
    read_metadata,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "PREAMBLE_SIZE",
    "PRECISIONS",
    "RouterFileError",
    "load",
    "loads",
    "read_metadata",
    "save",
]

warnings.warn("knnroute.persist is deprecated: import from knnroute.production (load, save, "
              "RouterFileError...)", DeprecationWarning, stacklevel=2)
