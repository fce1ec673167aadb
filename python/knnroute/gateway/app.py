"""The gateway app: the ``/route`` service plus an OpenAI-compatible front, forwarding and feedback.

* ``POST /v1/chat/completions`` -- ``"model": "knnroute"`` routes the conversation's text (the config's
  policy); an upstream's name passes straight through. ``"lambda"`` / ``"max_cost"`` in the body override
  the config for that request (and are not forwarded). Everything else is forwarded untouched; the answer
  is the upstream's with ``model`` set to the model that answered, plus the headers ``x-knnroute-model`` and
  ``x-knnroute-request-id``. ``"stream": true`` passes the upstream's server-sent events through unchanged.
  A failing upstream (connect error, timeout, 429, 5xx, after bounded retries) hands over to the next model
  by predicted utility; 502 (504 when the last failure was a timeout) when every option fails.
* ``POST /v1/feedback`` -- ``{"request_id", "score" in [0, 1]}``: logged durably, then one more support row.
* ``GET /v1/models``; and from :func:`knnroute.service.app.create_app`: ``/route``, ``/route/batch``,
  ``/health`` (``size`` = live rows), ``/metrics`` (with the gateway's counters).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from knnroute.gateway.auth import GatewayAuthMiddleware
from knnroute.gateway.batching import Batcher
from knnroute.gateway.config import GatewayConfig
from knnroute.gateway.decisions import DecisionLog, routed_text
from knnroute.gateway.feedback import FeedbackStore, Pending
from knnroute.gateway.sessions import Sessions
from knnroute.gateway.upstream import Attempt, UpstreamFailure, UpstreamResponse, Upstreams
from knnroute.production.router import ProductionRouter, RouteDecision
from knnroute.service.app import create_app
from knnroute.service.slot import RouterSlot

__all__ = ["ROUTED_MODEL", "create_gateway_app"]

log = logging.getLogger("knnroute.gateway")
ROUTED_MODEL = "knnroute"


def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status,
                        headers=headers)


class _GatewayMetrics:
    def __init__(self, registry: Any, names: list[str]) -> None:
        from prometheus_client import Counter, Histogram

        self.chat = Counter("knnroute_gateway_requests", "Chat requests by kind and outcome", ["kind", "outcome"],
                            registry=registry)
        self.upstream_latency = Histogram(
            "knnroute_gateway_upstream_seconds", "Upstream latency to response headers, by model", ["model"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=registry)
        self.answered = Counter("knnroute_gateway_answered", "Chat requests answered, by model", ["model"],
                                registry=registry)
        self.fallbacks = Counter("knnroute_gateway_fallbacks", "Requests answered by another model than the "
                                 "first choice, by the first choice's failure", ["reason"], registry=registry)
        self.feedback = Counter("knnroute_gateway_feedback", "Feedback requests by outcome", ["outcome"],
                                registry=registry)
        for m in names:
            self.answered.labels(m)


class Gateway:
    """The state behind the app: config, router slot, upstreams, sessions, feedback, logs, metrics."""

    def __init__(self, cfg: GatewayConfig, slot: RouterSlot, store: FeedbackStore, metrics: Any) -> None:
        self.cfg, self.slot, self.store = cfg, slot, store
        router = slot.router
        self.routable = [m for m in router.model_names if m in cfg.upstreams]
        self.upstreams = Upstreams(cfg)
        self.sessions = Sessions(cfg.server.session_ttl_s, cfg.server.max_sessions)
        self.decisions = DecisionLog(cfg.server.decision_log, cfg.server.log_prompts)
        self.metrics = _GatewayMetrics(metrics.registry, list(cfg.upstreams))
        self.rng = random.Random()
        srv = cfg.server
        self.batcher = (Batcher(self.decide_many, srv.embed_batch_max, srv.embed_batch_wait_ms / 1e3)
                        if srv.embed_batch_wait_ms > 0 else None)

    @property
    def router(self) -> ProductionRouter:
        return self.slot.router

    def decide(self, text: str, lam: float | None, max_cost: float | None) -> tuple[RouteDecision, np.ndarray]:
        router = self.router
        x = router.embed_one(text)
        return router.decide(x, lam, max_cost), x

    def decide_many(self, items: Sequence[tuple[str, float | None, float | None]]) -> list[Any]:
        """One embedding pass for many (text, lambda, max_cost); per item a (decision, x) or the error."""
        router = self.router
        X = router.embed([t for t, _, _ in items])
        out: list[Any] = []
        for x, (_, lam, max_cost) in zip(X, items, strict=True):
            try:
                out.append((router.decide(x, lam, max_cost), x))
            except ValueError as e:
                out.append(e)
        return out

    def order(self, d: RouteDecision, sticky: str | None) -> tuple[list[str], bool]:
        """Models to try, best first: the session's model, else the router's choice, then the rest by
        predicted utility s - lambda c; only models with an upstream. True when this one explores."""
        names = self.router.model_names
        util = d.s_hat.astype(np.float64) - d.lam * d.c_hat.astype(np.float64)
        ranked = sorted(self.routable, key=lambda m: (-util[names.index(m)], names.index(m)))
        first = sticky if sticky in self.routable else d.model if d.model in self.routable else None
        explore = False
        eps = self.cfg.feedback.explore
        if sticky is None and eps > 0 and self.rng.random() < eps:
            first, explore = self.rng.choice(self.routable), True
        if first is not None:
            ranked = [first] + [m for m in ranked if m != first]
        return ranked, explore

    def cost(self, model: str, d: RouteDecision | None, usage: Any) -> float:
        """USD of one answer: usage x the router's prices when both are known, else the predicted cost."""
        price = self.router.prices.get(model)
        if price is not None and isinstance(usage, dict):
            try:
                return (float(usage.get("prompt_tokens", 0)) * price[0]
                        + float(usage.get("completion_tokens", 0)) * price[1]) / 1e6
            except (TypeError, ValueError):
                pass
        if d is not None:
            return float(d.c_hat[self.router.model_names.index(model)])
        return 0.0

    def record(self, rid: str, t0: float, kind: str, d: RouteDecision | None, answered: str | None,
               attempts: list[Attempt], outcome: str, text: str | None, explore: bool) -> None:
        names = self.router.model_names
        rec: dict[str, Any] = {
            "request_id": rid, "time": t0, "kind": kind, "model": answered, "outcome": outcome,
            "attempts": [{"model": a.model, "status": a.status, "latency_s": round(a.latency_s, 6),
                          "error": a.error} for a in attempts],
        }
        if d is not None:
            rec.update({
                "lambda": d.lam, "routed_model": d.routed_model, "fallback": d.fallback, "explore": explore,
                "predicted": {m: {"score": float(d.s_hat[j]), "cost": float(d.c_hat[j])}
                              for j, m in enumerate(names)},
            })
        first = next(iter(attempts), None)
        if answered is not None and first is not None and first.model != answered:
            failed = [a for a in attempts if a.model == first.model]
            rec["fallback_reason"] = f"{first.model}: {failed[-1].error or failed[-1].status}"
        self.decisions.write(rec, text)
        for a in attempts:
            self.metrics.upstream_latency.labels(a.model).observe(a.latency_s)
        self.metrics.chat.labels(kind, outcome).inc()
        if answered is not None:
            self.metrics.answered.labels(answered).inc()
            if "fallback_reason" in rec:
                self.metrics.fallbacks.labels(str(first.error or first.status) if first else "").inc()

    async def chat(self, request: Request) -> Any:
        t0 = time.time()
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body must be a JSON object (the OpenAI chat-completions request)")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return _error(400, "the body must be a JSON object with a non-empty 'messages' list")
        model = body.get("model")
        lam, max_cost = body.pop("lambda", None), body.pop("max_cost", None)
        rid = "kr-" + uuid.uuid4().hex
        session = request.headers.get("x-session-id") or (body.get("user") if isinstance(body.get("user"), str)
                                                          else None)
        d: RouteDecision | None = None
        x: np.ndarray | None = None
        text: str | None = None
        explore = False
        if model == ROUTED_MODEL:
            kind = "routed"
            rc = self.cfg.router
            text = routed_text(body["messages"], rc.policy, rc.max_route_tokens)
            if not text:
                return _error(400, f"no text to route under policy {rc.policy!r}: send a user message")
            for v, nm in ((lam, "lambda"), (max_cost, "max_cost")):
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    return _error(422, f"'{nm}' must be a number")
            if lam is None and max_cost is None:
                lam, max_cost = rc.lambda_, rc.max_cost
            try:
                if self.batcher is not None:
                    dec, x = await self.batcher.submit((text, lam, max_cost))
                else:
                    dec, x = await anyio.to_thread.run_sync(self.decide, text, lam, max_cost)
            except ValueError as e:
                return _error(422, str(e))
            d = dec
            order, explore = self.order(dec, self.sessions.get(session))
        elif isinstance(model, str) and model in self.cfg.upstreams:
            kind, order = "direct", [model]
        else:
            return _error(404, f"model {model!r} is not served here: use {ROUTED_MODEL!r} or one of "
                          f"{sorted(self.cfg.upstreams)}", code="model_not_found")
        stream = bool(body.get("stream"))
        attempts: list[Attempt] = []
        last: UpstreamFailure | None = None
        for name in order:
            try:
                resp = await self.upstreams.open(name, body, stream, attempts)
            except UpstreamFailure as e:
                last = e
                continue
            headers = {"x-knnroute-model": name, "x-knnroute-request-id": rid}
            if d is not None:
                self.sessions.set(session, name)
            if stream and resp.status_code == 200:
                return self._stream(resp, headers, rid, t0, kind, d, x, name, attempts, text, explore)
            outcome, content = ("ok" if resp.status_code == 200 else f"upstream {resp.status_code}"), resp.content
            data: Any = None
            try:
                data = resp.json()
            except ValueError:
                pass
            if resp.status_code == 200 and isinstance(data, dict):
                data["model"] = name
                if d is not None and x is not None:
                    self.store.remember(rid, Pending(x, name, self.cost(name, d, data.get("usage"))))
                self.record(rid, t0, kind, d, name, attempts, outcome, text, explore)
                return JSONResponse(data, headers=headers)
            self.record(rid, t0, kind, d, name, attempts, outcome, text, explore)
            ctype = resp.headers.get("content-type", "application/json")
            return _RawResponse(content, resp.status_code, ctype, headers)
        assert last is not None  # order is never empty
        self.record(rid, t0, kind, d, None, attempts, "failed", text, explore)
        tried = ", ".join(dict.fromkeys(a.model for a in attempts))
        status = 504 if last.timeout else 502
        return _error(status, f"every upstream failed (tried {tried}); last: {last.reason}", "upstream_error",
                      headers={"x-knnroute-request-id": rid})

    def _stream(self, resp: UpstreamResponse, headers: dict[str, str], rid: str, t0: float, kind: str,
                d: RouteDecision | None, x: np.ndarray | None, name: str, attempts: list[Attempt],
                text: str | None, explore: bool) -> StreamingResponse:
        if d is not None and x is not None:  # feedback may arrive before the stream ends
            self.store.remember(rid, Pending(x, name, self.cost(name, d, None)))

        async def body() -> Any:
            outcome = "ok"
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            except BaseException:  # client gone (cancelled) or upstream broke: close the upstream request
                outcome = "interrupted"
                raise
            finally:
                await resp.aclose(complete=outcome == "ok")
                self.record(rid, t0, kind, d, name, attempts, outcome, text, explore)

        return StreamingResponse(body(), status_code=resp.status_code,
                                 media_type=resp.headers.get("content-type", "text/event-stream"),
                                 headers={**headers, "cache-control": "no-cache"})

    async def feedback(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body must be JSON: {\"request_id\": str, \"score\": number in [0, 1]}")
        rid = body.get("request_id") if isinstance(body, dict) else None
        score = body.get("score") if isinstance(body, dict) else None
        if not isinstance(rid, str):
            self.metrics.feedback.labels("invalid").inc()
            return _error(422, "'request_id' must be a string (the x-knnroute-request-id of a routed answer)")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= float(score) <= 1.0:
            self.metrics.feedback.labels("invalid").inc()
            return _error(422, "'score' must be a number in [0, 1]")
        try:
            out = await anyio.to_thread.run_sync(self.store.submit, rid, float(score))
        except KeyError:
            self.metrics.feedback.labels("unknown").inc()
            return _error(404, f"unknown request_id {rid!r} (not a routed answer of this gateway, or forgotten)",
                          code="not_found")
        except ValueError as e:
            self.metrics.feedback.labels("duplicate").inc()
            return _error(409, str(e), code="conflict")
        self.metrics.feedback.labels("applied").inc()
        return JSONResponse({"status": "applied", **out})


class _RawResponse(JSONResponse):
    """An upstream's non-200 body passed on as it came."""

    def __init__(self, content: bytes, status: int, media_type: str, headers: dict[str, str]) -> None:
        super().__init__(None, status_code=status, headers=headers)
        self.body = content
        self.headers["content-length"] = str(len(content))
        self.headers["content-type"] = media_type


def create_gateway_app(cfg: GatewayConfig, slot: RouterSlot, store: FeedbackStore) -> FastAPI:
    """The ASGI app of ``knnroute gateway`` (see the module docstring)."""
    api_keys = cfg.keys(cfg.server.api_keys_env)
    admins = cfg.keys(cfg.server.admin_key_env)
    admin = admins[0] if admins else None
    app = create_app(slot, max_body_bytes=cfg.server.max_body_bytes, source=str(cfg.router.file), admin_token=admin)
    # a reload would swap the router under the feedback store: the gateway saves instead (/admin/save)
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", "") != "/admin/reload"]
    gw = Gateway(cfg, slot, store, app.state.metrics)
    app.state.gateway = gw
    app.router.on_shutdown.append(gw.upstreams.aclose)  # close pooled upstream connections
    if gw.batcher is not None:
        app.router.on_shutdown.append(gw.batcher.aclose)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        """OpenAI chat completions, routed (``"model": "knnroute"``) or passed through."""
        try:
            return await gw.chat(request)
        except Exception as e:  # a bug of ours: one line to the client, the trace to the log only
            log.exception("chat request failed")
            return _error(500, f"gateway error: {type(e).__name__} (see the gateway log)", "server_error")

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> JSONResponse:
        """Outcome feedback for a routed answer: ``{"request_id": str, "score": float in [0, 1]}``."""
        return await gw.feedback(request)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        """The routable models and ``knnroute``."""
        now = int(time.time())
        ids = [ROUTED_MODEL] + [m for m in cfg.upstreams]
        return {"object": "list",
                "data": [{"id": m, "object": "model", "created": now, "owned_by": "knnroute"} for m in ids]}

    @app.post("/admin/save")
    def admin_save() -> dict[str, Any]:
        """Save the router file now (it is also saved on a timer and at shutdown)."""
        saved = store.save()
        return {"saved": saved, "feedback_seq": store.seq, "size": slot.router.size}

    app.add_middleware(GatewayAuthMiddleware, api_keys=api_keys, admin_key=admin)
    return app
