"""Ray Serve: ``num_replicas`` replicas of the HTTP service, each on one router file (``knnroute serve
--replicas N``).

Needs the ``ray`` extra (``pip install '.[ray]' in the knnroute checkout``); ``ray`` is imported inside the function.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from knnroute._ray import require_ray

__all__ = ["serve_deployment"]


def serve_deployment(
    router_path: str | os.PathLike,
    *,
    num_replicas: int = 2,
    watch_interval: float | None = 2.0,
    load_embedder: bool = True,
    verify: bool = True,
    admin_token: str | None = None,
    max_batch: int | None = None,
    max_body_bytes: int | None = None,
    num_cpus_per_replica: float = 1.0,
    user_config: dict[str, Any] | None = None,
    name: str = "knnroute",
) -> Any:
    """A Ray Serve application: ``num_replicas`` replicas of the knnroute HTTP service on one router file.

    Each replica loads ``router_path`` (which every node must see at that path: a shared file system, or
    the same file copied to each node) into its own :class:`~knnroute.service.slot.RouterSlot` and serves the
    FastAPI app of :func:`knnroute.service.app.create_app`. A router update reaches every replica by either:

    * the file watcher (``watch_interval`` seconds; write the new router with ``ProductionRouter.save``,
      which replaces the file atomically), or
    * a new ``user_config`` (``serve.run(serve_deployment(..., user_config={"generation": 2}))`` or
      ``serve deploy`` with a changed ``user_config``): Ray Serve calls every replica's ``reconfigure``,
      which reloads the file (``{"router_path": ...}`` in the config switches to another file).

    Returns the bound application for ``ray.serve.run(app, route_prefix="/")``.
    """
    require_ray()
    from ray import serve

    path = str(Path(router_path).expanduser().resolve())
    opts = {"watch_interval": watch_interval, "load_embedder": load_embedder, "verify": verify,
            "admin_token": admin_token, "max_batch": max_batch, "max_body_bytes": max_body_bytes}

    @serve.ingress()
    class KnnrouteReplica:
        def __init__(self, router_path: str, options: dict[str, Any]) -> None:
            from knnroute.service.slot import RouterSlot

            self.options = options
            self.slot = RouterSlot.from_path(router_path, verify=options["verify"],
                                             load_embedder=options["load_embedder"])
            self._config: Any = None
            if options["watch_interval"]:
                self.slot.watch(float(options["watch_interval"]))

        def __serve_build_asgi_app__(self) -> Any:
            from knnroute.service.app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, create_app

            o = self.options
            return create_app(
                self.slot,
                max_batch=o["max_batch"] or DEFAULT_MAX_BATCH,
                max_body_bytes=o["max_body_bytes"] or DEFAULT_MAX_BODY_BYTES,
                admin_token=o["admin_token"],
            )

        def reconfigure(self, config: dict[str, Any]) -> None:
            config = dict(config or {})
            first = self._config is None
            self._config = config
            if first and not config.get("router_path"):
                return  # the constructor just loaded the file
            self.slot.reload(path=config.get("router_path"))

    dep = serve.deployment(
        KnnrouteReplica,
        name=name,
        num_replicas=int(num_replicas),
        ray_actor_options={"num_cpus": float(num_cpus_per_replica)},
        user_config=dict(user_config or {}),
    )
    return dep.bind(path, opts)  # type: ignore[attr-defined]  # ray types serve.deployment(...) as a plain Callable
