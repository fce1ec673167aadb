"""The /route app: a FastAPI app (run on uvicorn) around a :class:`~knnroute.service.slot.RouterSlot`.

Endpoints (see ``docs/service.md``; the OpenAPI schema is at ``/openapi.json``, docs at ``/docs``):

* ``POST /route`` -- ``{"prompt": str}`` or ``{"embedding": [d floats]}``, optional ``"lambda"`` or
  ``"max_cost"`` (USD per query; lambda from the budget table saved with the router) -> the chosen
  model, predicted score and cost per model, confidence, fallback flag.
* ``POST /route/batch`` -- ``{"items": [<route request>, ...]}`` -> ``{"results": [...]}``.
* ``GET /health`` -- liveness and what is loaded (process internals only with the admin token).
* ``GET /metrics`` -- Prometheus text: requests, latency histogram, routed model counts, fallbacks.
* ``POST /admin/reload`` -- re-read the router file and swap it in atomically (services started from a
  file; needs ``Authorization: Bearer <token>``: off when the service has no admin token).

Request and response models: :mod:`knnroute.service.schemas`; body limit, admin token and metrics:
:mod:`knnroute.service.middleware`; the reloadable router: :mod:`knnroute.service.slot`.

Errors: malformed JSON -> 400; unknown fields, wrong types, wrong embedding size, NaN, a prompt without
an embedder -> 422 with a message (at most ten errors); a body over ``max_body_bytes`` -> 413 (read no
further); more than ``max_batch`` items -> 422 before any item is validated. The routing endpoints read
the raw body and parse, validate and route it on the thread pool (:mod:`knnroute.service.guard`): the
event loop never does per-item work, and the core releases the GIL while it searches.

FastAPI, uvicorn and prometheus-client are imported here, not by ``import knnroute`` (the ``serve`` extra).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from knnroute.production.router import ProductionRouter, RouteDecision
from knnroute.service.guard import MAX_DETAIL_CHARS, RequestError, parse_batch, parse_route, resolve_images
from knnroute.service.middleware import (
    AdminTokenMiddleware,
    BodyLimitMiddleware,
    ClientConcurrencyMiddleware,
    Metrics,
    MetricsMiddleware,
    bearer_ok,
)
from knnroute.service.schemas import BatchRequest, BatchResponse, RouteRequest, RouteResponse
from knnroute.service.slot import RouterSlot
from knnroute.service.text import route_text
from knnroute.service.timeouts import DEFAULT_READ_TIMEOUT, uvicorn_limits

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY_BYTES", "create_app", "serve"]

log = logging.getLogger("knnroute.serve")

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_BATCH = 1024
ENDPOINTS = {"/route", "/route/batch", "/health", "/metrics", "/openapi.json", "/docs", "/admin/reload"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON"}, 413: {"description": "Body too large"},
    422: {"description": "Invalid request"},
}


def _response(router: ProductionRouter, d: RouteDecision, max_cost: float | None) -> dict[str, Any]:
    names = router.model_names
    s, c = d.s_hat.tolist(), d.c_hat.tolist()
    pred: dict[str, dict[str, Any]] = {names[j]: {"score": s[j], "cost": c[j]} for j in range(len(s))}
    b = d.bounds
    if b is not None:  # per-model intervals (production/bounds.py); null where a model has none
        for j, m in enumerate(names[: len(s)]):
            ok = math.isfinite(float(b.score_lower[j]))
            pred[m]["score_bounds"] = [float(b.score_lower[j]), float(b.score_upper[j])] if ok else None
            ok = math.isfinite(float(b.cost_lower[j]))
            pred[m]["cost_bounds"] = [float(b.cost_lower[j]), float(b.cost_upper[j])] if ok else None
    out: dict[str, Any] = {
        "model": d.model,
        "routed_model": d.routed_model,
        "fallback": d.fallback,
        "lambda": d.lam,
        "predicted": pred,
        "confidence": {"kth_similarity": d.kth_similarity, "agreement": d.agreement},
        "budget": None,
        "policy": None if d.policy is None else d.policy.to_dict(),
        "bounds": None if b is None else {"level": b.level, "status": b.status},
    }
    if d.budget is not None and max_cost is not None:
        out["budget"] = {
            "max_cost": max_cost,
            "expected_cost": d.budget.mean_cost,
            "expected_score": d.budget.mean_score,
            "feasible": d.budget.feasible,
        }
    return out



class _Routing:
    """Route request items with the slot's current router; count them in the metrics."""

    def __init__(self, slot: RouterSlot, metrics: Metrics, image_root: str | None) -> None:
        self.slot, self.metrics, self.image_root = slot, metrics, image_root
        self._counter_lock = threading.Lock()

    def _vectors(self, router: ProductionRouter, prompt_ok: bool,
                 items: list[RouteRequest]) -> list[np.ndarray]:
        """One query vector per item: the given embedding, or the prompt (with images) embedded."""
        d = router.dim
        vecs: list[Any] = [None] * len(items)
        prompt_pos = []
        for i, it in enumerate(items):
            if it.embedding is not None:
                if len(it.embedding) != d:
                    raise RequestError(
                        422, f"item {i}: embedding has {len(it.embedding)} values, the router expects {d}"
                    )
                vecs[i] = np.asarray(it.embedding, dtype=np.float32)
            else:
                prompt_pos.append(i)
        if prompt_pos:
            if not prompt_ok:
                raise RequestError(
                    422, "this service routes embeddings only (the router has no embedder, or it was started "
                    "without one): send 'embedding'"
                )
            imgs = [resolve_images(_images_of(items[i]), self.image_root) for i in prompt_pos]
            try:
                X = router.embed([route_text(str(items[i].prompt)) for i in prompt_pos], imgs if any(imgs) else None)
            except (ValueError, FileNotFoundError) as e:
                raise RequestError(422, str(e)[:MAX_DETAIL_CHARS]) from None
            for j, i in enumerate(prompt_pos):
                vecs[i] = X[j]
        return vecs

    def decide_many(self, items: list[RouteRequest]) -> list[dict[str, Any]]:
        st = self.slot.state  # one router for the whole request, even if a reload swaps it meanwhile
        router = st.router
        vecs = self._vectors(router, st.prompt_ok, items)
        out = []
        for i, it in enumerate(items):
            try:
                dec = router.decide(vecs[i], it.lambda_, it.max_cost, quality_floor=it.quality_floor,
                                    max_mean_cost=it.max_mean_cost, strong_share=it.strong_share)
            except ValueError as e:
                raise RequestError(422, f"item {i}: {e}" if len(items) > 1 else str(e)) from None
            out.append(_response(router, dec, it.max_cost))
        m = self.metrics
        with self._counter_lock:
            for it, r in zip(items, out, strict=True):
                m.routed.labels(r["model"]).inc()
                m.queries.labels("prompt" if it.prompt is not None else "embedding").inc()
                if r["fallback"]:
                    m.fallbacks.labels(r["fallback"]).inc()
        return out


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for malformed JSON, 415 for a body that is not JSON, else 422 with pydantic's errors."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        msg = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
        return JSONResponse({"detail": f"malformed JSON body: {msg}".rstrip(": ")}, status_code=400)
    ctype = request.headers.get("content-type", "")
    if "json" not in ctype.lower() and any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return JSONResponse(
            {"detail": f"send a JSON body with Content-Type: application/json (got {ctype or 'none'!r})"},
            status_code=415,
        )
    clean = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in errors]
    return JSONResponse({"detail": jsonable_encoder(clean)}, status_code=422)


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


def _body_schema(name: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request models (the routing endpoints read raw bodies, see guard.py)."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in (RouteRequest, BatchRequest):
            js = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
            schemas.update(js.pop("$defs", {}))
            schemas[model.__name__] = js
        app.openapi_schema = spec
    return app.openapi_schema


def _images_of(it: RouteRequest) -> list[str]:
    return ([it.image] if it.image is not None else []) + list(it.images or [])


def _health(slot: RouterSlot, source: str | None, started: float, internals: bool) -> dict[str, Any]:
    """What is loaded; process internals (file, pid, last reload error...) only for an authenticated caller."""
    from knnroute import __version__

    st = slot.state
    router = st.router
    public = {
        "status": "ok",
        "version": __version__,
        "size": router.size,
        "dim": router.dim,
        "models": router.model_names,
        "k": int(router.core.k),
        "weighting": str(router.core.weighting),
        "embedder": router.encoder.identity,
        "prompts": st.prompt_ok,
        "budget_points": 0 if router.budget is None else len(router.budget.lams),
        "fallback": None if router.fallback is None else router.fallback.to_dict(),
        "default_lambda": router.default_lambda,
        "router_generation": st.generation,
        "router_sha256": st.digest,
    }
    if not internals:
        return public
    return {
        **public,
        "source": source if source is not None else slot.path,
        "uptime_seconds": round(time.time() - started, 3),
        "router_loaded_at": st.loaded_at,
        "watch_interval": slot.watch_interval,
        "last_reload_error": slot.last_error,
        "pid": os.getpid(),
    }


def _reload(slot: RouterSlot) -> JSONResponse:
    if slot.path is None:
        detail = "this service was started from an in-memory router: no file to reload"
        return JSONResponse({"detail": detail}, status_code=409)
    try:
        st = slot.reload()
    except (OSError, ValueError, ImportError, RuntimeError) as e:
        return JSONResponse({"detail": f"reload failed, still serving generation {slot.state.generation}: "
                                       f"{type(e).__name__}: {e}"}, status_code=500)
    return JSONResponse({"status": "reloaded", "router_generation": st.generation, "router_sha256": st.digest,
                         "size": st.router.size, "models": st.router.model_names, "pid": os.getpid()})


def create_app(
    router: ProductionRouter | RouterSlot,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    load_embedder: bool = True,
    source: str | None = None,
    admin_token: str | None = None,
    image_dir: str | os.PathLike | None = None,
    read_timeout: float | None = DEFAULT_READ_TIMEOUT,
    max_client_concurrency: int | None = None,
) -> FastAPI:
    """The ASGI app serving ``router``.

    Parameters
    ----------
    router : ProductionRouter, or a RouterSlot (reloadable: ``POST /admin/reload``, file watching)
    max_body_bytes : int
        Larger request bodies get 413.
    max_batch : int
        Most items in one ``/route/batch`` request.
    load_embedder : bool
        Load the router's recorded embedder now (so the first prompt request is not slow) when it has
        one; with False, prompt requests get 422 and only embeddings are routed.
    source : str, optional
        Where the router came from (shown by ``/health``; default: the slot's file).
    admin_token : str, optional
        Require ``Authorization: Bearer <admin_token>`` on ``/admin/`` endpoints (``POST /admin/reload``);
        without a token they are off (403). With it, ``/health`` shows process internals (file, pid, last
        reload error) to callers that send the token.
    image_dir : path, optional
        Let requests name images by a file path inside this folder (paths resolving outside it are
        refused). Without it, ``image`` / ``images`` are base64 only: clients never make the service
        read its own files.
    read_timeout : float, optional
        Seconds a request body may take to arrive (408 after; None: no limit). The request head has the
        same deadline in :func:`serve` (:mod:`knnroute.service.timeouts`).
    max_client_concurrency : int, optional
        Most requests in flight per client address (429 beyond; default no cap).
    """
    from knnroute import __version__

    image_root = None if image_dir is None else os.path.realpath(os.fspath(image_dir))
    slot = router if isinstance(router, RouterSlot) else RouterSlot(router, load_embedder=load_embedder)
    metrics = Metrics(slot)  # size / model_names of the current router
    routing = _Routing(slot, metrics, image_root)
    started = time.time()

    app = FastAPI(
        title="knnroute",
        version=__version__,
        description="Route each prompt to the best LLM for its cost weight: exact kNN over labelled prompts.",
    )
    app.state.slot = slot
    app.state.metrics = metrics
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestError, _request_error)  # type: ignore[arg-type]
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    def _json_body(request: Request) -> None:
        ctype = request.headers.get("content-type", "")
        if "json" not in ctype.lower():
            raise RequestError(415, f"send a JSON body with Content-Type: application/json (got {ctype[:100]!r})")

    # The routing endpoints read the raw body (already bounded by BodyLimitMiddleware) and parse,
    # validate and route it on a worker thread: the event loop never runs per-item work (guard.py).
    @app.post("/route", response_model=RouteResponse, response_model_by_alias=True, responses=_ERRORS,
              openapi_extra=_body_schema("RouteRequest"))
    async def route(request: Request) -> JSONResponse:
        """Route one prompt (or embedding) to a model."""
        _json_body(request)
        body = await request.body()

        def work() -> dict[str, Any]:
            return routing.decide_many([parse_route(body, slot.state.router.dim)])[0]

        return JSONResponse(await run_in_threadpool(work))

    @app.post("/route/batch", response_model=BatchResponse, response_model_by_alias=True, responses=_ERRORS,
              openapi_extra=_body_schema("BatchRequest"))
    async def route_batch(request: Request) -> JSONResponse:
        """Route up to ``max_batch`` queries in one request (prompts are embedded together)."""
        _json_body(request)
        body = await request.body()

        def work() -> dict[str, Any]:
            return {"results": routing.decide_many(parse_batch(body, slot.state.router.dim, max_batch))}

        return JSONResponse(await run_in_threadpool(work))

    @app.get("/health")
    def health(request: Request) -> dict[str, Any]:
        """Liveness and what this service routes with (process internals need the admin token)."""
        return _health(slot, source, started, bearer_ok(request.scope, admin_token))

    @app.post("/admin/reload", responses={403: {"description": "Missing or wrong admin token"},
                                          409: {"description": "No router file to reload"},
                                          500: {"description": "The file failed to load (old router kept)"}})
    def admin_reload() -> JSONResponse:
        """Re-read the router file and swap it in atomically (the old router serves until then)."""
        return _reload(slot)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        """Prometheus exposition format."""
        body, ctype = metrics.render()
        return PlainTextResponse(body, media_type=ctype)

    app.add_middleware(AdminTokenMiddleware, token=admin_token)  # admin endpoints are off without a token
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, read_timeout=read_timeout)
    if max_client_concurrency is not None:
        app.add_middleware(ClientConcurrencyMiddleware, limit=max_client_concurrency)
    app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints=ENDPOINTS)
    return app


def serve(
    router_path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    load_embedder: bool = True,
    verify: bool = True,
    log_level: str = "info",
    access_log: bool = False,
    watch_interval: float | None = None,
    admin_token: str | None = None,
    image_dir: str | os.PathLike | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    limit_concurrency: int | None = None,
    max_client_concurrency: int | None = None,
) -> None:
    """Load a router file and serve it with uvicorn until interrupted (SIGINT/SIGTERM).

    ``watch_interval``: reload the file when it changes (polled every that many seconds);
    ``admin_token``: required by ``POST /admin/reload`` (off without one) and for ``/health`` internals;
    ``read_timeout``: seconds a connection may take to send a request head, and a request its body
    (slowloris); ``limit_concurrency``: most concurrent connections (503 beyond; default no cap);
    ``max_client_concurrency``: most requests in flight per client address (429 beyond);
    ``image_dir``: requests may name image files inside this folder (multimodal routers; base64 images
    are accepted without it).
    """
    from knnroute.production.budgets import describe_default
    from knnroute.service import accept

    t0 = time.perf_counter()
    if not math.isfinite(port) or not 0 <= port < 65536:
        raise ValueError(f"port must be in [0, 65535], got {port}")
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(levelname)s: %(message)s")
    slot = RouterSlot.from_path(router_path, verify=verify, load_embedder=load_embedder)
    app = create_app(slot, max_body_bytes=max_body_bytes, max_batch=max_batch, source=str(router_path),
                     admin_token=admin_token, image_dir=image_dir, read_timeout=read_timeout,
                     max_client_concurrency=max_client_concurrency)
    if watch_interval:
        slot.watch(float(watch_interval))
    log.info("ready in %.1f s (router file + embedder warm-up): %r from %s; serving on http://%s:%d",
             time.perf_counter() - t0, slot.router, router_path, host, int(port))
    log.info("%s", describe_default(slot.router.default_lambda, slot.router.budget))
    try:
        accept.run(app, host=host, port=int(port), log_level=log_level, access_log=access_log,
                   **uvicorn_limits(read_timeout, limit_concurrency))
    finally:
        slot.stop()
