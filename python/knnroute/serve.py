"""HTTP routing service: a FastAPI app on uvicorn around a saved :class:`ProductionRouter`.

Endpoints (see ``docs/service.md``; the OpenAPI schema is at ``/openapi.json``, docs at ``/docs``):

* ``POST /route`` -- ``{"prompt": str}`` or ``{"embedding": [d floats]}``, optional ``"lambda"`` or
  ``"max_cost"`` (USD per query; lambda from the budget table saved with the router) -> the chosen
  model, predicted score and cost per model, confidence, fallback flag.
* ``POST /route/batch`` -- ``{"items": [<route request>, ...]}`` -> ``{"results": [...]}``.
* ``GET /health`` -- liveness and what is loaded.
* ``GET /metrics`` -- Prometheus text: requests, latency histogram, routed model counts, fallbacks.
* ``POST /admin/reload`` -- re-read the router file and swap it in atomically (services started from a
  file; ``Authorization: Bearer <token>`` when an admin token is set).

Reloading: the live router sits in a :class:`RouterSlot`. A reload (admin endpoint, the file watcher of
``watch_interval``, or a Ray Serve ``reconfigure``) loads and checks the new file completely, then replaces
the slot's state in one assignment; each request reads the state once, so it is answered wholly by the
old router or wholly by the new one, and a file that fails to load leaves the old router serving.

Errors: malformed JSON -> 400; unknown fields, wrong types, wrong embedding size, NaN, a prompt without
an embedder -> 422 with a message; a body over ``max_body_bytes`` -> 413 (read no further). Routing
endpoints are synchronous functions, so FastAPI runs them in its thread pool: the core releases the
GIL while it searches, and the event loop keeps accepting connections.

FastAPI, uvicorn and prometheus-client are imported here, not by ``import knnroute`` (the ``serve`` extra).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from knnroute.production import ProductionRouter, RouteDecision

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY_BYTES", "RouterSlot", "create_app", "serve"]

log = logging.getLogger("knnroute.serve")

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_BATCH = 1024
MAX_PROMPT_CHARS = 200_000
MAX_IMAGES = 16

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --------------------------------------------------------------------------------------- schemas
class RouteRequest(BaseModel):
    """One query: a prompt or its embedding, and how to trade cost for quality."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="Prompt text (needs the router's embedder).")
    embedding: list[float] | None = Field(None, description="Prompt embedding (d floats, the router's embedder).")
    lambda_: float | None = Field(
        None, alias="lambda", description="Cost weight: score ([0, 1]) per USD. Default: the router's default."
    )
    max_cost: float | None = Field(
        None, ge=0, description="Budget: mean USD per query; lambda from the held-out budget table."
    )
    image: str | None = Field(
        None,
        description="An image sent with the prompt: base64 or a data:image/...;base64, URL (a file path "
        "under the service's image_dir when it has one). Needs a router with a multimodal embedder.",
    )
    images: list[str] | None = Field(
        None, max_length=MAX_IMAGES, description="Several images with the prompt (as 'image'); averaged."
    )

    @model_validator(mode="after")
    def _one_input(self) -> RouteRequest:
        if (self.prompt is None) == (self.embedding is None):
            raise ValueError("give exactly one of 'prompt' or 'embedding'")
        if self.prompt is None and (self.image is not None or self.images):
            raise ValueError("'image'/'images' go with a 'prompt' (an embedding already includes them)")
        if self.lambda_ is not None and self.max_cost is not None:
            raise ValueError("give at most one of 'lambda' or 'max_cost'")
        return self


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[RouteRequest] = Field(..., min_length=1, description="Up to max_batch route requests.")


class ModelPrediction(BaseModel):
    score: float = Field(description="Predicted score on [0, 1].")
    cost: float = Field(description="Predicted cost, USD per query.")


class Confidence(BaseModel):
    kth_similarity: float = Field(description="Cosine similarity of the k-th neighbour (low: far from support).")
    agreement: float = Field(description="Share of neighbours whose own best model is the routed one.")


class BudgetInfo(BaseModel):
    max_cost: float
    expected_cost: float = Field(description="Held-out mean cost per query at this lambda.")
    expected_score: float = Field(description="Held-out mean score ([0, 1]) at this lambda.")
    feasible: bool = Field(description="False when no lambda meets the budget (the cheapest point is used).")


class RouteResponse(BaseModel):
    model: str = Field(description="The chosen model's name (the fallback model when fallback is set).")
    routed_model: str = Field(description="The router's own choice before the fallback policy.")
    fallback: str | None = Field(description="Why the fallback model was used ('distance'/'agreement'), or null.")
    lambda_: float = Field(alias="lambda", serialization_alias="lambda")
    predicted: dict[str, ModelPrediction]
    confidence: Confidence
    budget: BudgetInfo | None = None


class BatchResponse(BaseModel):
    results: list[RouteResponse]


# ------------------------------------------------------------------------------------- middleware
class BodyLimitMiddleware:
    """Answer 413 for bodies over ``max_bytes`` (declared or streamed) without passing them on.

    The body is buffered (at most ``max_bytes``) and replayed to the app, so the app never sees a
    partial body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    await _send_json(send, 400, {"detail": "invalid Content-Length header"})
                    return
                if declared > self.max_bytes:
                    await _send_too_large(send, self.max_bytes)
                    return
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await _send_too_large(send, self.max_bytes)
                return
            chunks.append(body)
            more = msg.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_json(send: Send, status: int, payload: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_too_large(send: Send, limit: int) -> None:
    await _send_json(send, 413, {"detail": f"request body larger than {limit} bytes"}, [(b"connection", b"close")])


class MetricsMiddleware:
    """Count requests by endpoint and status and time them (Prometheus)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, endpoints: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in self.endpoints else "other"
        status = [500]
        t0 = time.perf_counter()

        async def send_wrapper(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m = self.metrics
            m.requests.labels(endpoint, scope.get("method", ""), str(status[0])).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - t0)


class Metrics:
    """The service's Prometheus metrics, in their own registry (one per app)."""

    def __init__(self, router: ProductionRouter) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "knnroute_requests", "HTTP requests by endpoint, method and status", ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "knnroute_request_duration_seconds", "Request latency (server side, seconds)", ["endpoint"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            registry=self.registry,
        )
        self.routed = Counter("knnroute_routed", "Queries routed, by chosen model", ["model"], registry=self.registry)
        self.fallbacks = Counter(
            "knnroute_fallbacks", "Queries sent to the fallback model, by reason", ["reason"], registry=self.registry
        )
        self.queries = Counter("knnroute_queries", "Queries routed, by input kind", ["input"], registry=self.registry)
        size = Gauge("knnroute_support_size", "Labelled prompts in the support set", registry=self.registry)
        size.set_function(lambda: router.size)
        for m in router.model_names:  # expose zeros for every model from the start
            self.routed.labels(m)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# ------------------------------------------------------------------------------------------ reload
def _file_signature(path: str) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime_ns): changes when the file is replaced (atomic save) or rewritten."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class SlotState:
    """One loaded router and what the service reports about it (replaced as a whole on reload)."""

    router: ProductionRouter
    prompt_ok: bool  # prompts are accepted (the embedder is loaded and warm)
    generation: int  # 1 for the first router, +1 per reload
    digest: str | None  # the file's payload SHA-256 (None for an in-memory router)
    signature: tuple[int, int, int, int] | None
    loaded_at: float  # UNIX time


class RouterSlot:
    """The live router of a service, swapped atomically on reload.

    Parameters
    ----------
    router : ProductionRouter
    path : router file it came from (needed for :meth:`reload` and :meth:`watch`)
    verify : check the payload checksum on reload
    load_embedder : load (and warm) the router's recorded embedder so prompts are accepted; a reload keeps
        the loaded embedder when the new file records the same embedder identity
    """

    def __init__(self, router: ProductionRouter, *, path: str | os.PathLike | None = None, verify: bool = True,
                 load_embedder: bool = True, digest: str | None = None,
                 signature: tuple[int, int, int, int] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.verify = bool(verify)
        self.load_embedder = bool(load_embedder)
        self.last_error: str | None = None
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.watch_interval: float | None = None
        self._failed_signature: tuple[int, int, int, int] | None = None
        self._state = self._prepare(router, None, 1, digest, signature)

    @classmethod
    def from_path(cls, path: str | os.PathLike, *, verify: bool = True, load_embedder: bool = True) -> RouterSlot:
        """Load ``path`` (see :func:`knnroute.persist.load`) into a new slot."""
        router, digest, sig = cls._load(str(path), verify)
        return cls(router, path=path, verify=verify, load_embedder=load_embedder, digest=digest, signature=sig)

    @staticmethod
    def _load(path: str, verify: bool) -> tuple[ProductionRouter, str | None, tuple[int, int, int, int]]:
        """Load the file; its digest and signature are those of the file that was loaded (retried when the
        file is replaced during the load)."""
        from knnroute.persist import load, read_metadata

        for _ in range(5):
            before = _file_signature(path)
            digest = read_metadata(path).get("payload_sha256")
            router = load(path, verify=verify)
            if _file_signature(path) == before:
                return router, digest, before
        return router, None, _file_signature(path)  # pragma: no cover - replaced on every attempt

    def _prepare(self, router: ProductionRouter, old: SlotState | None, generation: int, digest: str | None,
                 signature: tuple[int, int, int, int] | None) -> SlotState:
        prompt_ok = False
        if self.load_embedder and router.has_embedder:
            prev = None if old is None else old.router._embedder_obj
            if prev is not None and getattr(prev, "identity", None) == router.embedder_info.get("identity"):
                router.set_embedder(prev)  # same model: keep the loaded weights
            emb = router.embedder()
            t0 = time.perf_counter()
            router.embed(["warm-up"])  # loads the weights (torch) once, before the first request
            prompt_ok = True
            log.info("embedder %s ready in %.1f s", emb.identity, time.perf_counter() - t0)
        return SlotState(router, prompt_ok, generation, digest, signature, time.time())

    @property
    def state(self) -> SlotState:
        """The current state; read it once per request."""
        return self._state

    @property
    def router(self) -> ProductionRouter:
        return self._state.router

    @property
    def size(self) -> int:
        return self._state.router.size

    @property
    def model_names(self) -> list[str]:
        return self._state.router.model_names

    def reload(self, path: str | os.PathLike | None = None) -> SlotState:
        """Load the router file (``path`` switches to another file) and swap it in; returns the new state.

        Raises what :func:`knnroute.persist.load` raises; the old router keeps serving then.
        """
        with self._reload_lock:
            target = str(path) if path is not None else self.path
            if target is None:
                raise ValueError("this service was started from an in-memory router: there is no file to reload")
            t0 = time.perf_counter()
            try:
                router, digest, sig = self._load(target, self.verify)
                state = self._prepare(router, self._state, self._state.generation + 1, digest, sig)
            except Exception as e:
                self.last_error = f"{type(e).__name__}: {e}"
                raise
            self._state = state  # the swap: one reference assignment
            self.path = target
            self.last_error = None
            self._failed_signature = None
            log.info("reloaded %r from %s (generation %d) in %.2f s", router, target, state.generation,
                     time.perf_counter() - t0)
            return state

    def changed(self) -> bool:
        """Whether the file differs (by device, inode, size, mtime) from the one loaded."""
        if self.path is None:
            return False
        try:
            sig = _file_signature(self.path)
        except OSError:
            return False  # replaced right now, or gone: keep serving the loaded router
        return sig != self._state.signature and sig != self._failed_signature

    def check(self) -> bool:
        """Reload when the file changed; True when a new router was swapped in. Load errors are logged
        (the old router keeps serving) and not retried until the file changes again."""
        if not self.changed():
            return False
        try:
            self.reload()
            return True
        except Exception:
            try:
                self._failed_signature = _file_signature(self.path)  # type: ignore[arg-type]
            except OSError:
                pass
            log.exception("reload of %s failed; still serving generation %d", self.path, self._state.generation)
            return False

    def watch(self, interval: float = 2.0) -> None:
        """Poll the file every ``interval`` seconds in a daemon thread and reload it when it changes."""
        if self.path is None:
            raise ValueError("cannot watch an in-memory router: start the service from a file")
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"watch interval must be a positive number of seconds, got {interval!r}")
        if self._watcher is not None:
            return
        self.watch_interval = float(interval)

        def loop() -> None:
            while not self._stop.wait(self.watch_interval):
                self.check()

        self._watcher = threading.Thread(target=loop, name="knnroute-router-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop the watcher thread (if any)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
            self._watcher = None


# ---------------------------------------------------------------------------------------------- app
def _response(router: ProductionRouter, d: RouteDecision, max_cost: float | None) -> dict[str, Any]:
    names = router.model_names
    s, c = d.s_hat.tolist(), d.c_hat.tolist()
    out: dict[str, Any] = {
        "model": d.model,
        "routed_model": d.routed_model,
        "fallback": d.fallback,
        "lambda": d.lam,
        "predicted": {names[j]: {"score": s[j], "cost": c[j]} for j in range(len(s))},
        "confidence": {"kth_similarity": d.kth_similarity, "agreement": d.agreement},
        "budget": None,
    }
    if d.budget is not None and max_cost is not None:
        out["budget"] = {
            "max_cost": max_cost,
            "expected_cost": d.budget.mean_cost,
            "expected_score": d.budget.mean_score,
            "feasible": d.budget.feasible,
        }
    return out


def _request_images(it: RouteRequest, image_root: str | None) -> list[Any]:
    """The images of one request as ImageRef (bytes): base64, or a file under ``image_root``."""
    from knnroute.embed.image import ImageRef, decode_base64_image

    raw = ([it.image] if it.image is not None else []) + list(it.images or [])
    out: list[Any] = []
    for j, s in enumerate(raw):
        if image_root is not None and len(s) < 4096 and not s.startswith("data:"):
            p = os.path.realpath(os.path.join(image_root, s))
            if os.path.isfile(p):
                if os.path.commonpath([p, image_root]) != image_root:
                    raise _Unprocessable(f"image {j}: path is outside the service's image folder")
                with open(p, "rb") as fh:
                    out.append(ImageRef(fh.read(), os.path.basename(p)))
                continue
        try:
            out.append(ImageRef(decode_base64_image(s), f"image {j}"))
        except ValueError as e:
            raise _Unprocessable(f"image {j}: {e}") from None
    return out


class _Unprocessable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def create_app(
    router: ProductionRouter | RouterSlot,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    load_embedder: bool = True,
    source: str | None = None,
    admin_token: str | None = None,
    image_dir: str | os.PathLike | None = None,
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
        Require ``Authorization: Bearer <admin_token>`` on ``POST /admin/reload``.
    image_dir : path, optional
        Let requests name images by a file path inside this folder (paths resolving outside it are
        refused). Without it, ``image`` / ``images`` are base64 only: clients never make the service
        read its own files.
    """
    from knnroute import __version__

    image_root = None if image_dir is None else os.path.realpath(os.fspath(image_dir))
    slot = router if isinstance(router, RouterSlot) else RouterSlot(router, load_embedder=load_embedder)
    metrics = Metrics(slot)  # type: ignore[arg-type]  # size / model_names of the current router
    started = time.time()
    counter_lock = threading.Lock()

    app = FastAPI(
        title="knnroute",
        version=__version__,
        description="Route each prompt to the best LLM for its cost weight: exact kNN over labelled prompts.",
    )
    app.state.slot = slot
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
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

    @app.exception_handler(_Unprocessable)
    async def _unprocessable(request: Request, exc: _Unprocessable) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=422)

    def _decide_many(items: list[RouteRequest]) -> list[dict[str, Any]]:
        st = slot.state  # one router for the whole request, even if a reload swaps it meanwhile
        router, prompt_ok = st.router, st.prompt_ok
        d = router.dim
        vecs: list[np.ndarray | None] = [None] * len(items)
        prompt_pos = []
        for i, it in enumerate(items):
            if it.embedding is not None:
                if len(it.embedding) != d:
                    raise _Unprocessable(f"item {i}: embedding has {len(it.embedding)} values, the router expects {d}")
                vecs[i] = np.asarray(it.embedding, dtype=np.float32)
            else:
                prompt_pos.append(i)
        if prompt_pos:
            if not prompt_ok:
                raise _Unprocessable(
                    "this service routes embeddings only (the router has no embedder, or it was started "
                    "without one): send 'embedding'"
                )
            imgs = [_request_images(items[i], image_root) for i in prompt_pos]
            try:
                X = router.embed(
                    [items[i].prompt for i in prompt_pos],  # type: ignore[misc]
                    imgs if any(imgs) else None,
                )
            except (ValueError, FileNotFoundError) as e:
                raise _Unprocessable(str(e)) from None
            for j, i in enumerate(prompt_pos):
                vecs[i] = X[j]
        out = []
        for i, it in enumerate(items):
            try:
                dec = router.decide(vecs[i], it.lambda_, it.max_cost)  # type: ignore[arg-type]
            except ValueError as e:
                raise _Unprocessable(f"item {i}: {e}" if len(items) > 1 else str(e)) from None
            out.append(_response(router, dec, it.max_cost))
        with counter_lock:
            for it, r in zip(items, out):
                metrics.routed.labels(r["model"]).inc()
                metrics.queries.labels("prompt" if it.prompt is not None else "embedding").inc()
                if r["fallback"]:
                    metrics.fallbacks.labels(r["fallback"]).inc()
        return out

    @app.post("/route", response_model=RouteResponse, response_model_by_alias=True,
              responses={400: {"description": "Malformed JSON"}, 413: {"description": "Body too large"},
                         422: {"description": "Invalid request"}})
    def route(req: RouteRequest) -> JSONResponse:
        """Route one prompt (or embedding) to a model."""
        return JSONResponse(_decide_many([req])[0])

    @app.post("/route/batch", response_model=BatchResponse, response_model_by_alias=True,
              responses={400: {"description": "Malformed JSON"}, 413: {"description": "Body too large"},
                         422: {"description": "Invalid request"}})
    def route_batch(req: BatchRequest) -> JSONResponse:
        """Route up to ``max_batch`` queries in one request (prompts are embedded together)."""
        if len(req.items) > max_batch:
            raise _Unprocessable(f"batch has {len(req.items)} items; the limit is {max_batch}")
        return JSONResponse({"results": _decide_many(req.items)})

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and what this service routes with."""
        st = slot.state
        router = st.router
        return {
            "status": "ok",
            "version": __version__,
            "source": source if source is not None else slot.path,
            "size": router.size,
            "dim": router.dim,
            "models": router.model_names,
            "k": int(router.core.k),
            "weighting": str(router.core.weighting),
            "embedder": router.embedder_info.get("identity"),
            "prompts": st.prompt_ok,
            "budget_points": 0 if router.budget is None else len(router.budget.lams),
            "fallback": None if router.fallback is None else router.fallback.to_dict(),
            "default_lambda": router.default_lambda,
            "uptime_seconds": round(time.time() - started, 3),
            "router_generation": st.generation,
            "router_sha256": st.digest,
            "router_loaded_at": st.loaded_at,
            "watch_interval": slot.watch_interval,
            "last_reload_error": slot.last_error,
            "pid": os.getpid(),
        }

    @app.post("/admin/reload", responses={403: {"description": "Missing or wrong admin token"},
                                          409: {"description": "No router file to reload"},
                                          500: {"description": "The file failed to load (old router kept)"}})
    def admin_reload(request: Request) -> JSONResponse:
        """Re-read the router file and swap it in atomically (the old router serves until then)."""
        if admin_token is not None:
            import hmac

            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {admin_token}".encode()):
                return JSONResponse({"detail": "admin token required: Authorization: Bearer <token>"}, status_code=403)
        if slot.path is None:
            return JSONResponse({"detail": "this service was started from an in-memory router: no file to reload"},
                                status_code=409)
        try:
            st = slot.reload()
        except (OSError, ValueError, ImportError, RuntimeError) as e:
            return JSONResponse({"detail": f"reload failed, still serving generation {slot.state.generation}: "
                                           f"{type(e).__name__}: {e}"}, status_code=500)
        return JSONResponse({"status": "reloaded", "router_generation": st.generation, "router_sha256": st.digest,
                             "size": st.router.size, "models": st.router.model_names, "pid": os.getpid()})

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        """Prometheus exposition format."""
        body, ctype = metrics.render()
        return PlainTextResponse(body, media_type=ctype)

    endpoints = {"/route", "/route/batch", "/health", "/metrics", "/openapi.json", "/docs", "/admin/reload"}
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints=endpoints)
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
) -> None:
    """Load a router file and serve it with uvicorn until interrupted (SIGINT/SIGTERM).

    ``watch_interval``: reload the file when it changes (polled every that many seconds);
    ``admin_token``: required by ``POST /admin/reload`` (which is open on the bound address without it);
    ``image_dir``: requests may name image files inside this folder (multimodal routers; base64 images
    are accepted without it).
    """
    import uvicorn

    t0 = time.perf_counter()
    if not math.isfinite(port) or not 0 <= port < 65536:
        raise ValueError(f"port must be in [0, 65535], got {port}")
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(levelname)s: %(message)s")
    slot = RouterSlot.from_path(router_path, verify=verify, load_embedder=load_embedder)
    t_load = time.perf_counter() - t0
    app = create_app(slot, max_body_bytes=max_body_bytes, max_batch=max_batch, source=str(router_path),
                     admin_token=admin_token, image_dir=image_dir)
    if watch_interval:
        slot.watch(float(watch_interval))
    log.info("loaded %r from %s in %.2f s (ready in %.2f s)", slot.router, router_path, t_load,
             time.perf_counter() - t0)
    try:
        uvicorn.run(app, host=host, port=int(port), log_level=log_level, access_log=access_log)
    finally:
        slot.stop()
