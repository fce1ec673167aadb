"""Deprecated alias: the HTTP service moved to the :mod:`knnroute.service` package (``create_app``,
``serve``: :mod:`knnroute.service.app`; ``RouterSlot``: :mod:`knnroute.service.slot`)."""

from __future__ import annotations

import warnings

from knnroute.service.app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, create_app, serve
from knnroute.service.slot import RouterSlot

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY_BYTES", "RouterSlot", "create_app", "serve"]

warnings.warn("knnroute.serve is deprecated: import from knnroute.service", DeprecationWarning, stacklevel=2)
