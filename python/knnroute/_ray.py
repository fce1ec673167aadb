"""Ray, imported on demand: every Ray feature (batch routing, evaluation, Ray Serve) starts here.

A leaf module: it imports nothing from knnroute, so every layer may use it. ``ray`` itself is imported
inside the functions (the ``ray`` extra).
"""

from __future__ import annotations

from typing import Any

__all__ = ["init_ray", "require_ray"]


def require_ray() -> Any:
    """Import and return :mod:`ray`, or raise an ``ImportError`` naming the extra to install."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - CI installs the extra
        raise ImportError(
            "this needs Ray, which is not installed: pip install '.[ray]' in the knnroute checkout (ray[data,serve])"
        ) from e
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None, **kw: Any) -> Any:
    """Connect to (``address``, e.g. ``"auto"`` or ``"ray://head:10001"``) or start a local Ray; no-op when
    Ray is already initialised in this process. Returns the ``ray`` module."""
    ray = require_ray()
    if not ray.is_initialized():
        opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        opts.update(kw)
        if address is not None:
            opts["address"] = address
        elif num_cpus is not None:
            opts["num_cpus"] = int(num_cpus)
        ray.init(**opts)
    return ray
