"""The HTTP service: request/response schemas, middleware (limits, auth, metrics), the router slot
(atomic reload, file watching), the /route app, and Ray Serve replicas.

Names are resolved lazily (PEP 562): ``import knnroute.service.slot`` does not import FastAPI.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "DEFAULT_MAX_BATCH": "knnroute.service.app",
    "DEFAULT_MAX_BODY_BYTES": "knnroute.service.app",
    "create_app": "knnroute.service.app",
    "serve": "knnroute.service.app",
    "RouterSlot": "knnroute.service.slot",
    "SlotState": "knnroute.service.slot",
    "serve_deployment": "knnroute.service.ray_serve",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module_name = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'knnroute.service' has no attribute {name!r}") from None
    return getattr(import_module(module_name), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
