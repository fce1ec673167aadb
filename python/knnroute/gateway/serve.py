"""Start the gateway: config, router, feedback replay, periodic saves, uvicorn; save again at shutdown."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.gateway.config import ConfigError, GatewayConfig, load_config
from knnroute.gateway.feedback import FeedbackLog, FeedbackStore, LogInUse
from knnroute.gateway.shared import SharedFeedbackStore, open_store
from knnroute.gateway.store import Record, Store, StoreError
from knnroute.gateway.upstream import unresolved

__all__ = ["build", "serve_gateway"]

log = logging.getLogger("knnroute.gateway")


class _StalledStreamFilter(logging.Filter):
    """uvicorn reports a response that ended unfinished as an error; the gateway ends one on purpose when a
    stream's client stops reading (and logs its own warning naming the request), so drop uvicorn's line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def import_log(store: Store, path: Path) -> int:
    """Move an old JSON-lines feedback log into an empty store (keeping its sequence numbers) and rename it
    ``<log>.imported``; returns how many records it held."""
    recs = []
    for r in FeedbackLog.read(path):
        emb = np.asarray(r.get("embedding", []), dtype=np.float32)
        if emb.shape != (store.dim,):
            raise ConfigError(f"feedback.log {path}: record {r.get('seq')} has an embedding of {emb.shape}, "
                              f"the store holds {store.dim}-dimensional ones")
        recs.append(Record(int(r["seq"]), str(r["request_id"]), str(r["model"]), float(r["score"]),
                           float(r["cost"]), emb, str(r.get("key", "-"))[:256], float(r.get("time", 0.0))))
    n = store.import_records(recs)
    path.rename(path.with_name(path.name + ".imported"))
    log.info("imported %d feedback record(s) from %s into %s (the log is now %s.imported)", n, path, store.url,
             path.name)
    return n


def open_feedback(cfg: GatewayConfig, router: Any) -> FeedbackStore | SharedFeedbackStore:
    """The JSON-lines store (one process) or the shared store (``feedback.store``; the old log imported)."""
    fb = cfg.feedback
    if fb.store is None:
        try:
            return FeedbackStore(router, cfg.router.file, fb.log, fb.pending_max, fb.key_share_max, fb.max_rows)
        except LogInUse as e:
            raise ConfigError(str(e)) from None
    try:
        st = open_store(fb.store, router.dim, fb.password_env, cfg.base)
        if fb.log is not None and fb.log.is_file():
            import_log(st, fb.log)
        return SharedFeedbackStore(router, cfg.router.file, st, group_commit=fb.group_commit,
                                   retention_s=fb.retention_s, poll_s=fb.poll_s, unknown_wait_s=fb.unknown_wait_s,
                                   key_share_max=fb.key_share_max, max_rows=fb.max_rows)
    except (StoreError, ValueError, LogInUse) as e:
        raise ConfigError(str(e)) from None


def online_start(cfg: GatewayConfig, router: Any) -> None:
    from knnroute.gateway.learning import start_notes

    for w in start_notes(cfg, router):
        log.warning("%s", w)


def check_router(cfg: GatewayConfig, router: Any) -> None:
    """The config errors that need the router file: each one line (ConfigError), before anything listens."""
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


def build(cfg: GatewayConfig, *, load_embedder: bool = True) -> tuple[Any, FeedbackStore | SharedFeedbackStore]:
    """Load the router, replay the feedback log, and build the app; returns (app, store)."""
    from knnroute.gateway.app import create_gateway_app
    from knnroute.service.slot import RouterSlot

    if not cfg.router.file.is_file():
        raise ConfigError(f"router.file: {cfg.router.file} does not exist (make one with 'knnroute fit')")
    slot = RouterSlot.from_path(cfg.router.file, load_embedder=load_embedder)
    router = slot.router
    check_router(cfg, router)
    names = router.model_names
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
    online_start(cfg, router)  # [feedback] half_life over the file's; warnings name the fixing option
    store = open_feedback(cfg, router)
    n = store.replay()
    if n:
        log.info("replayed %d feedback record(s) past the router file's seq %d", n, store.seq - n)
    n = store.load_pending()
    if n:
        log.info("%d answered request(s) from before the restart can still get feedback", n)
    if cfg.feedback.log is None and cfg.feedback.store is None:
        log.warning("feedback.log and feedback.store are unset: feedback is applied in memory only and lost "
                    "at exit")
    app = create_gateway_app(cfg, slot, store)
    return app, store


WORKER_CONFIG_ENV = "KNNROUTE_GATEWAY_CONFIG"
WORKER_READ_TIMEOUT_ENV = "KNNROUTE_GATEWAY_READ_TIMEOUT"


_WORKER_EARLY: list[Any] = []  # the app's early refusal in a --workers process (set by worker_app)


def _worker_early(method: bytes, target: bytes) -> Any:
    return _WORKER_EARLY[0](method, target) if _WORKER_EARLY else None


def __getattr__(name: str) -> Any:
    """``WorkerHttpProtocol``: the timed uvicorn protocol by import string (a worker process cannot be
    handed the class itself: it is made at run time, so it does not pickle)."""
    if name == "WorkerHttpProtocol":
        from knnroute.service.timeouts import timed_protocol

        return timed_protocol(float(os.environ.get(WORKER_READ_TIMEOUT_ENV, "10")), early=_worker_early)
    raise AttributeError(name)


def _started(cfg: GatewayConfig) -> tuple[Any, FeedbackStore | SharedFeedbackStore]:
    app, store = build(cfg)
    store.start(cfg.feedback.save_interval_s)

    async def _shutdown() -> None:  # uvicorn re-raises SIGTERM after shutdown: save here, not after run()
        store.close()
        app.state.gateway.decisions.close()

    app.router.on_shutdown.append(_shutdown)
    return app, store


def worker_app() -> Any:
    """The app of one ``--workers N`` process (a uvicorn factory; the config path in the environment)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    from knnroute.service import accept

    accept.install(asyncio.get_running_loop())  # uvicorn calls this factory in its loop, before listening
    cfg = load_config(os.environ[WORKER_CONFIG_ENV])
    app, store = _started(cfg)
    _WORKER_EARLY[:] = [app.state.early]
    accept.freeze_heap()
    log.info("gateway worker %d: %r", os.getpid(), store.router)
    return app


def _prepare_workers(cfg: GatewayConfig, workers: int) -> None:
    """Checks before ``workers`` processes start: they share nothing but the store, so one is needed; the
    store is opened once here (a bad URL or unreachable database is one line now, not N), and an old
    JSON-lines log is imported by this process only."""
    from knnroute.service.slot import RouterSlot

    if cfg.feedback.store is None:
        raise ConfigError(f"--workers {workers} needs a shared feedback store: set [feedback] store = "
                          '"sqlite:///feedback.db" (the workers share nothing else; a JSON-lines log has one writer)')
    if not cfg.router.file.is_file():
        raise ConfigError(f"router.file: {cfg.router.file} does not exist (make one with 'knnroute fit')")
    router = RouterSlot.from_path(cfg.router.file, load_embedder=False).router
    check_router(cfg, router)  # here, once: not a traceback from every worker process
    dim = router.dim
    try:
        st = open_store(cfg.feedback.store, dim, cfg.feedback.password_env, cfg.base)
    except StoreError as e:
        raise ConfigError(str(e)) from None
    try:
        if cfg.feedback.log is not None and cfg.feedback.log.is_file():
            import_log(st, cfg.feedback.log)
    finally:
        st.close()


def serve_gateway(config: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080,
                  log_level: str = "info", workers: int = 1) -> None:
    """Serve until interrupted; the router file is saved on a timer and once more at shutdown.

    uvicorn runs with the limits of ``knnroute serve`` (:func:`knnroute.service.timeouts.uvicorn_limits`: a
    request head must arrive within ``read_timeout_s``, at most ``limit_concurrency`` connections) and
    ``shutdown_timeout_s``: at SIGTERM, requests still open after it are cancelled and the process exits.
    ``workers`` > 1: that many processes share the port (each its own router), converging through the store."""
    from knnroute.service import accept
    from knnroute.service.timeouts import uvicorn_limits

    if not 0 <= int(port) < 65536:
        raise ConfigError(f"port must be in [0, 65535], got {port}")
    if int(workers) < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(levelname)s: %(message)s")
    cfg = load_config(config)
    srv = cfg.server
    opts: dict[str, Any] = dict(host=host, port=int(port), log_level=log_level, access_log=False,
                                timeout_graceful_shutdown=max(1, math.ceil(srv.shutdown_timeout_s)))
    logging.getLogger("uvicorn.error").addFilter(_StalledStreamFilter())
    if workers > 1:
        _prepare_workers(cfg, workers)
        os.environ[WORKER_CONFIG_ENV] = str(Path(config).resolve())
        os.environ[WORKER_READ_TIMEOUT_ENV] = repr(srv.read_timeout_s)
        opts.update(uvicorn_limits(srv.read_timeout_s, srv.limit_concurrency))
        opts["http"] = "knnroute.gateway.serve:WorkerHttpProtocol"
        log.info("gateway on http://%s:%d: %d workers sharing %s", host, port, workers, cfg.feedback.store)
        accept.run("knnroute.gateway.serve:worker_app", factory=True, workers=int(workers), **opts)
        return
    app, store = _started(cfg)
    opts.update(uvicorn_limits(srv.read_timeout_s, srv.limit_concurrency, early=app.state.early))
    log.info("gateway on http://%s:%d: %r, upstreams %s", host, port, store.router, sorted(cfg.upstreams))
    try:
        accept.run(app, **opts)
    finally:
        store.close()
        app.state.gateway.decisions.close()
