"""Start the gateway: config, router, feedback replay, periodic saves, uvicorn; save again at shutdown."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from knnroute.gateway.config import ConfigError, GatewayConfig, load_config
from knnroute.gateway.feedback import FeedbackStore
from knnroute.gateway.upstream import unresolved

__all__ = ["build", "serve_gateway"]

log = logging.getLogger("knnroute.gateway")


class _StalledStreamFilter(logging.Filter):
    """uvicorn reports a response that ended unfinished as an error; the gateway ends one on purpose when a
    stream's client stops reading (and logs its own warning naming the request), so drop uvicorn's line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def build(cfg: GatewayConfig, *, load_embedder: bool = True) -> tuple[Any, FeedbackStore]:
    """Load the router, replay the feedback log, and build the app; returns (app, store)."""
    from knnroute.gateway.app import create_gateway_app
    from knnroute.service.slot import RouterSlot

    if not cfg.router.file.is_file():
        raise ConfigError(f"router.file: {cfg.router.file} does not exist (make one with 'knnroute fit')")
    slot = RouterSlot.from_path(cfg.router.file, load_embedder=load_embedder)
    router = slot.router
    if not router.has_embedder:
        raise ConfigError(f"router.file: {cfg.router.file} records no embedder, so prompts cannot be routed: "
                          "fit it with one")
    if (cfg.router.max_cost is not None) and router.budget is None:
        raise ConfigError("router.max_cost: the router file has no budget table: use router.lambda")
    for key in ("quality_floor", "max_mean_cost", "strong_share"):
        if getattr(cfg.router, key) is not None and router.guarantee is None:
            raise ConfigError(f"router.{key}: the router file has no guarantee table (fit it again with "
                              "'knnroute fit', which calibrates one on the validation split)")
    names = router.model_names
    routable = [m for m in names if m in cfg.upstreams]
    if not routable:
        raise ConfigError(f"upstreams: none of the router's models {names} has an upstream table")
    for m in names:
        if m not in cfg.upstreams:
            log.warning("model %r has no [upstreams] table: it is never chosen", m)
    for m in cfg.upstreams:
        if m not in names:
            log.info("upstream %r is not in the router: reachable by name only (no routing)", m)
    for name, why in unresolved(cfg).items():
        log.warning("upstream %r: %s: requests routed to it will fail over to other models", name, why)
    if not cfg.keys(cfg.server.api_keys_env):
        log.warning("$%s is unset: the gateway accepts requests without an API key", cfg.server.api_keys_env)
    if not cfg.keys(cfg.server.admin_key_env):
        log.warning("$%s is unset: /metrics takes an API key and /admin/ is off", cfg.server.admin_key_env)
    if float(router.knn.shrinkage) == 0.0:
        # measured in docs/gateway.md: a feedback row observes one model, so without shrinkage the other
        # models' predictions near it rest on one or two rows, and bandit feedback cost 7-12 AUC points
        log.warning("the router file has shrinkage 0: feedback rows (one observed model each) will make "
                    "predictions noisy; fit routers that learn online with 'knnroute fit --shrinkage 10' "
                    "(docs/gateway.md)")
    store = FeedbackStore(router, cfg.router.file, cfg.feedback.log, cfg.feedback.pending_max)
    n = store.replay()
    if n:
        log.info("replayed %d feedback record(s) from %s past the saved seq", n, cfg.feedback.log)
    n = store.load_pending()
    if n:
        log.info("%d answered request(s) from before the restart can still get feedback", n)
    if cfg.feedback.log is None:
        log.warning("feedback.log is unset: feedback is applied in memory only and lost at exit")
    app = create_gateway_app(cfg, slot, store)
    return app, store


def serve_gateway(config: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080,
                  log_level: str = "info") -> None:
    """Serve until interrupted; the router file is saved on a timer and once more at shutdown.

    uvicorn runs with the limits of ``knnroute serve`` (:func:`knnroute.service.timeouts.uvicorn_limits`: a
    request head must arrive within ``read_timeout_s``, at most ``limit_concurrency`` connections) and
    ``shutdown_timeout_s``: at SIGTERM, requests still open after it are cancelled and the process exits."""
    import uvicorn

    from knnroute.service.timeouts import uvicorn_limits

    if not 0 <= int(port) < 65536:
        raise ConfigError(f"port must be in [0, 65535], got {port}")
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(levelname)s: %(message)s")
    cfg = load_config(config)
    app, store = build(cfg)
    store.start(cfg.feedback.save_interval_s)

    async def _shutdown() -> None:  # uvicorn re-raises SIGTERM after shutdown: save here, not after run()
        store.close()
        app.state.gateway.decisions.close()

    app.router.on_shutdown.append(_shutdown)
    logging.getLogger("uvicorn.error").addFilter(_StalledStreamFilter())
    log.info("gateway on http://%s:%d: %r, upstreams %s", host, port, store.router, sorted(cfg.upstreams))
    srv = cfg.server
    try:
        uvicorn.run(app, host=host, port=int(port), log_level=log_level, access_log=False,
                    timeout_graceful_shutdown=max(1, math.ceil(srv.shutdown_timeout_s)),
                    **uvicorn_limits(srv.read_timeout_s, srv.limit_concurrency))
    finally:
        store.close()
        app.state.gateway.decisions.close()
