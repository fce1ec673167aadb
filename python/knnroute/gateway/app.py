"""The gateway app: the ``/route`` service plus an OpenAI-compatible front, forwarding and feedback.

* ``POST /v1/chat/completions`` -- ``"model": "knnroute"`` routes the conversation's text (the config's
  policy); an upstream's name passes straight through. ``"lambda"`` / ``"max_cost"`` or a certified policy
  (``"quality_floor"``, ``"max_mean_cost"``, ``"strong_share"``: docs/guarantees.md) in the body override
  the config for that request (and are not forwarded). Everything else is forwarded untouched; the answer
  is the upstream's with ``model`` set to the model that answered, plus the headers ``x-knnroute-model`` and
  ``x-knnroute-request-id``. ``"stream": true`` passes the upstream's server-sent events through unchanged.
  A failing upstream (connect error, timeout, 429, 5xx, after bounded retries) hands over to the next model
  by predicted utility; 502 (504 when the last failure was a timeout) when every option fails. An upstream
  whose circuit is open (:mod:`knnroute.gateway.breaker`) is skipped without a try.
* ``POST /v1/feedback`` -- ``{"request_id", "score" in [0, 1]}``: logged durably, then one more support row.
* ``GET /v1/models``; and from :func:`knnroute.service.app.create_app`: ``/route``, ``/route/batch``,
  ``/health`` (``size`` = live rows), ``/metrics`` (with the gateway's counters).

No request can hurt another (``docs/security.md``): bodies are checked in one place
(:mod:`knnroute.gateway.errors`) before any work; the embedding micro-batcher isolates each item's errors;
admission answers 503 with ``Retry-After`` at once when ``max_inflight`` chat requests are in flight or
``max_route_queue`` routed requests wait for their decision; a client that leaves cancels its upstream call;
every request has an overall deadline (``request_timeout_s``); a stream whose client stops reading is closed
after ``stream_write_timeout_s``.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from knnroute.gateway.admission import Admission, LoopLag, Ticket
from knnroute.gateway.auth import GatewayAuthMiddleware
from knnroute.gateway.batching import Batcher, QueueWaitExceeded
from knnroute.gateway.config import GatewayConfig
from knnroute.gateway.decisions import DecisionLog, routed_text
from knnroute.gateway.errors import GatewayError, OpenAIErrorMiddleware, finite, parse_json, request_id
from knnroute.gateway.fastpath import CHAT, FastPath, early_refusal
from knnroute.gateway.feedback import FeedbackStore, Pending
from knnroute.gateway.learning import KeyCapExceeded, explore_choice, explore_policy, register_admin
from knnroute.gateway.limits import KeyCollector, KeyLimits, key_id
from knnroute.gateway.responses import RawResponse, StreamResponse
from knnroute.gateway.sessions import Sessions
from knnroute.gateway.shared import SharedFeedbackStore
from knnroute.gateway.store import StoreError
from knnroute.gateway.upstream import Attempt, UpstreamFailure, UpstreamResponse, Upstreams
from knnroute.production.router import ProductionRouter, RouteDecision
from knnroute.service.app import create_app
from knnroute.service.slot import RouterSlot
from knnroute.service.timeouts import ADMITTED

__all__ = ["ROUTED_MODEL", "create_gateway_app"]

log = logging.getLogger("knnroute.gateway")
ROUTED_MODEL = "knnroute"


CHAT_BODY = "the OpenAI chat-completions request (a JSON object with a non-empty 'messages' list)"
FEEDBACK_BODY = 'a JSON object {"request_id": str, "score": number in [0, 1]}'
INLINE_JSON_BYTES = 64 << 10  # larger bodies are parsed on a worker thread, not on the event loop


def _getter(obj: Any, attr: str) -> Callable[[], float]:
    return lambda: float(getattr(obj, attr))


class _GatewayMetrics:
    def __init__(self, registry: Any, names: list[str]) -> None:
        from prometheus_client import Counter, Gauge, Histogram

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
        self.circuit = Gauge("knnroute_gateway_circuit_state", "Circuit breaker per upstream: 0 closed, "
                             "1 open (skipped), 2 half-open (one probe)", ["model"], registry=registry)
        self.circuit_opened = Counter("knnroute_gateway_circuit_opened", "Times an upstream's circuit opened",
                                      ["model"], registry=registry)
        self.pool = Gauge("knnroute_gateway_upstream_connections", "Connections in use, per upstream pool",
                          ["model"], registry=registry)
        self.rejected = Counter("knnroute_gateway_rejected", "Chat requests refused at once with 503, by "
                                "reason", ["reason"], registry=registry)
        self.inflight = Gauge("knnroute_gateway_inflight", "Chat requests in flight", registry=registry)
        self.loop_lag = Gauge("knnroute_gateway_loop_lag_seconds", "How late the event loop runs a 5 ms timer "
                              "(smoothed): admission refuses chat requests above max_loop_lag_ms",
                              registry=registry)
        self.loop_cpu = Gauge("knnroute_gateway_loop_cpu", "Share of the time the event loop's thread is on the CPU "
                              "(smoothed): admission lowers admitted_share above max_loop_cpu", registry=registry)
        self.admitted_share = Gauge("knnroute_gateway_admitted_share", "Share of new chat requests admission "
                                    "lets through now (1 unless the loop is saturated)", registry=registry)
        self.route_queue = Gauge("knnroute_gateway_route_queue", "Admitted chat requests not yet routed (admission "
                                 "refuses new ones at max_route_queue)", registry=registry)
        for m in names:
            self.answered.labels(m)
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (prometheus_client's labels() takes a lock each call)."""
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c


class Gateway:
    """The state behind the app: config, router slot, upstreams, sessions, feedback, logs, metrics."""

    def __init__(self, cfg: GatewayConfig, slot: RouterSlot, store: FeedbackStore | SharedFeedbackStore,
                 metrics: Any) -> None:
        self.cfg, self.slot, self.store = cfg, slot, store
        router = slot.router
        self.routable = [m for m in router.model_names if m in cfg.upstreams]
        self.upstreams = Upstreams(cfg)
        self.sessions = Sessions(cfg.server.session_ttl_s, cfg.server.max_sessions)
        self.decisions = DecisionLog(cfg.server.decision_log, cfg.server.log_prompts)
        self.metrics = _GatewayMetrics(metrics.registry, list(cfg.upstreams))
        self.limits = KeyLimits(store.store, cfg.limits) if isinstance(store, SharedFeedbackStore) else None
        if self.limits is not None:
            metrics.registry.register(KeyCollector(self.limits))
        for name, br in self.upstreams.breakers.items():
            self.metrics.circuit.labels(name).set_function(_getter(br, "state"))
            self.metrics.pool.labels(name).set_function(functools.partial(self.upstreams.in_use, name))
        self.metrics.inflight.set_function(lambda: self.inflight)
        self.metrics.route_queue.set_function(lambda: self.waiting)
        self.rng = random.Random()
        self.np_rng = np.random.default_rng()
        self.explore_policy = explore_policy(cfg.feedback.explore, router.meta)
        srv = cfg.server
        self.batcher = (Batcher(self.decide_many, srv.embed_batch_max, srv.embed_batch_wait_ms / 1e3,
                                max_wait_s=srv.max_route_wait_ms / 1e3)
                        if srv.embed_batch_wait_ms > 0 else None)
        self.inline_chars = self._inline_chars(srv.route_inline_chars, srv.route_inline_max_ms / 1e3)
        self.inflight = 0  # chat requests being handled, counted by FastPath (on the loop: no lock)
        self.waiting = 0  # admitted chat requests not yet past routing (their admission tickets, FastPath)
        self.busy_since = 0.0  # when that queue last became non-empty

    def _inline_chars(self, chars: int, max_s: float) -> int:
        """How long a text may be and still be routed on the event loop: ``chars`` when routing a text that long
        takes under ``max_s`` (best of 5), else proportionally fewer characters; 0 when even 500 would take
        longer (a transformer: tens of ms per text) -- the loop must not stall."""
        if chars <= 0 or not self.router.has_embedder:
            return 0
        text = ("route this text " * (chars // 16 + 1))[:chars]
        best = math.inf
        try:
            for _ in range(5):
                t0 = time.perf_counter()
                self.decide(text, self.cfg.router.routing())
                best = min(best, time.perf_counter() - t0)
        except Exception:  # noqa: BLE001 - a router that cannot route the sample: never inline
            return 0
        n = chars if best < max_s else int(chars * max_s / best)
        n = n if n >= 500 else 0
        log.info("routing %d characters takes %.2f ms: texts up to %d characters are routed on the event loop, "
                 "longer ones in a worker thread", chars, best * 1e3, n)
        return n

    @property
    def router(self) -> ProductionRouter:
        return self.slot.router

    def decide(self, text: str, opts: dict[str, float | None]) -> tuple[RouteDecision, np.ndarray]:
        router = self.router
        x = router.embed_one(text)
        return router.decide(x, **opts), x

    def decide_many(self, items: Sequence[tuple[str, dict[str, float | None]]]) -> list[Any]:
        """One embedding pass for many (text, routing options: lam / max_cost / a policy); per item a
        (decision, x) or its own error.

        An error never crosses items: when the batch's embedding fails, each text is embedded alone so
        only the item that fails gets the error."""
        router = self.router
        try:
            X: Any = router.embed([t for t, _ in items])
        except Exception:
            X = []
            for t, _ in items:
                try:
                    X.append(router.embed_one(t))
                except Exception as e:  # noqa: BLE001 - handed to that item's caller
                    X.append(e)
        out: list[Any] = []
        for x, (_, opts) in zip(X, items, strict=True):
            if isinstance(x, BaseException):
                out.append(x)
                continue
            try:
                out.append((router.decide(x, **opts), x))
            except Exception as e:  # noqa: BLE001 - handed to that item's caller
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
        if sticky is None and isinstance(eps, float):  # a number: the uniform coin
            if eps > 0 and self.rng.random() < eps:
                first, explore = self.rng.choice(self.routable), True
        elif sticky is None and self.explore_policy is not None:  # exploration from the kNN posterior
            pick = explore_choice(self.explore_policy, d, names, self.routable, self.np_rng)
            if pick is not None and pick != first:
                first, explore = pick, True
        if first is not None:
            ranked = [first] + [m for m in ranked if m != first]
        return ranked, explore

    def cost(self, model: str, d: RouteDecision | None, usage: Any) -> float:
        """USD of one answer: usage x the router's prices when both are known, else the predicted cost."""
        price = self.router.prices.get(model)
        if price is not None and isinstance(usage, dict):
            try:
                c = (float(usage.get("prompt_tokens", 0)) * price[0]
                     + float(usage.get("completion_tokens", 0)) * price[1]) / 1e6
                if np.isfinite(c) and c >= 0:
                    return c
            except (TypeError, ValueError, OverflowError):
                pass
        if d is not None:
            return float(d.c_hat[self.router.model_names.index(model)])
        return 0.0

    def record(self, rid: str, t0: float, kind: str, d: RouteDecision | None, answered: str | None,
               attempts: list[Attempt], outcome: str, text: str | None, explore: bool) -> None:
        first = attempts[0] if attempts else None
        fallback = None
        if answered is not None and first is not None and first.model != answered:
            failed = [a for a in attempts if a.model == first.model]
            fallback = f"{first.model}: {failed[-1].error or failed[-1].status}"
        if self.decisions.path is not None:
            self.decisions.write(self._decision_record(rid, t0, kind, d, answered, attempts, outcome, explore,
                                                       fallback), text)
        # the server log: one line per request, and a warning naming each upstream that failed
        if len(attempts) > 1 or (first is not None and (first.error is not None or (first.status or 0) >= 500)):
            for m in dict.fromkeys(a.model for a in attempts
                                   if a.error not in (None, "circuit open") or (a.status or 0) >= 500):
                errs = [a for a in attempts if a.model == m]
                then = f"answered by {answered}" if answered is not None else "no model answered"
                log.warning("request %s: upstream %r failed (%s, %d tr%s); %s", rid, m,
                            errs[-1].error or errs[-1].status, len(errs), "y" if len(errs) == 1 else "ies", then)
        if log.isEnabledFor(logging.INFO):
            lam = "" if d is None else f" lambda={d.lam:g}"
            fb = f" fallback={fallback!r}" if fallback is not None else ""
            log.info("request %s %s model=%s%s outcome=%s %.1f ms%s", rid, kind, answered, lam, outcome,
                     (time.time() - t0) * 1e3, fb)
        mx = self.metrics
        for a in attempts:
            if a.error != "circuit open":
                mx.child(mx.upstream_latency, a.model).observe(a.latency_s)
        mx.child(mx.chat, kind, outcome).inc()
        if answered is not None:
            mx.child(mx.answered, answered).inc()
            if fallback is not None and first is not None:
                mx.child(mx.fallbacks, str(first.error or first.status)).inc()

    def _decision_record(self, rid: str, t0: float, kind: str, d: RouteDecision | None, answered: str | None,
                         attempts: list[Attempt], outcome: str, explore: bool, fallback: str | None) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "request_id": rid, "time": t0, "kind": kind, "model": answered, "outcome": outcome,
            "attempts": [{"model": a.model, "status": a.status, "latency_s": round(a.latency_s, 6),
                          "error": a.error} for a in attempts],
        }
        if d is not None:
            rec.update({
                "lambda": d.lam, "routed_model": d.routed_model, "fallback": d.fallback, "explore": explore,
                "predicted": {m: {"score": float(d.s_hat[j]), "cost": float(d.c_hat[j])}
                              for j, m in enumerate(self.router.model_names)},
            })
            if d.policy is not None:
                rec["policy"] = d.policy.to_dict()
        if fallback is not None:
            rec["fallback_reason"] = fallback
        return rec

    def busy(self, reason: str, message: str, retry_after: float = 1.0) -> GatewayError:
        self.metrics.child(self.metrics.rejected, reason).inc()
        return GatewayError(503, message, code=reason, headers={"retry-after": str(max(1, round(retry_after)))})

    async def _decision(self, text: str, opts: dict[str, float | None]) -> tuple[RouteDecision, np.ndarray]:
        # (admission bounds the requests before this point: their tickets, ``waiting``, at ``max_route_queue``)
        if len(text) <= self.inline_chars:  # cheaper than any hand-over to a thread
            try:
                return self.decide(text, opts)
            except ValueError as e:
                raise GatewayError(422, str(e)[:500]) from None
        try:
            if self.batcher is not None:
                return await self.batcher.submit((text, opts))
            return await anyio.to_thread.run_sync(self.decide, text, opts)
        except QueueWaitExceeded:
            raise self.busy("route_queue_slow", "the gateway is at capacity (requests wait too long for routing): "
                            "retry after the Retry-After seconds") from None
        except ValueError as e:
            raise GatewayError(422, str(e)[:500]) from None

    async def chat(self, raw: bytes, session_header: str | None = None, authorization: str | None = None,
                   ticket: Ticket | None = None) -> Response:
        t0 = time.time()
        key = key_id(authorization)
        if self.limits is not None and self.limits.active:
            why = self.limits.check(key)
            if why is not None:
                self.metrics.child(self.metrics.rejected, "key_limit").inc()
                raise GatewayError(429, why, code="rate_limit_exceeded", headers={"retry-after": "60"})
        deadline = time.monotonic() + self.cfg.server.request_timeout_s
        if len(raw) > INLINE_JSON_BYTES:
            body = await anyio.to_thread.run_sync(parse_json, raw, CHAT_BODY)
        else:
            body = parse_json(raw, CHAT_BODY)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            raise GatewayError(400, f"send {CHAT_BODY}")
        model = body.get("model")
        opts = {"lam": finite(body.pop("lambda", None), "lambda"),
                "max_cost": finite(body.pop("max_cost", None), "max_cost"),
                "quality_floor": finite(body.pop("quality_floor", None), "quality_floor", 1e-9, 1.0),
                "max_mean_cost": finite(body.pop("max_mean_cost", None), "max_mean_cost"),
                "strong_share": finite(body.pop("strong_share", None), "strong_share", 0.0, 1.0)}
        given = [k for k, v in opts.items() if v is not None]
        if len(given) > 1:
            first = "lambda" if given[0] == "lam" else given[0]
            raise GatewayError(422, "give at most one of 'lambda', 'max_cost', 'quality_floor', 'max_mean_cost', "
                               "'strong_share'", param=first)
        rid = "kr-" + uuid.uuid4().hex
        user = body.get("user")
        session = session_header[:256] if session_header else (user[:256] if isinstance(user, str) else None)
        d: RouteDecision | None = None
        x: np.ndarray | None = None
        text: str | None = None
        explore = False
        if model == ROUTED_MODEL:
            kind = "routed"
            rc = self.cfg.router
            text = routed_text(body["messages"], rc.policy, rc.max_route_chars)
            if not text:
                raise GatewayError(400, f"no text to route under policy {rc.policy!r}: send a user message")
            if not given:
                opts = rc.routing()
            d, x = await self._decision(text, opts)
            order, explore = self.order(d, self.sessions.get(session))
        elif isinstance(model, str) and model in self.cfg.upstreams:
            kind, order = "direct", [model]
        else:
            shown = repr(model)[:100] if isinstance(model, str) else f"a {type(model).__name__}"
            raise GatewayError(400, f"model {shown} is not served here: use {ROUTED_MODEL!r} or one of "
                               f"{sorted(self.cfg.upstreams)}", code="model_not_found", param="model")
        if ticket is not None:  # parsed (and routed): the gateway's own work is done until the upstream answers
            ticket.done()
        stream = bool(body.get("stream"))
        attempts: list[Attempt] = []
        last: UpstreamFailure | None = None
        for name in order:
            try:
                resp = await self.upstreams.open(name, body, stream, attempts, deadline)
            except UpstreamFailure as e:
                last = e
                if time.monotonic() >= deadline:
                    break
                continue
            headers = {"x-knnroute-model": name, "x-knnroute-request-id": rid}
            if d is not None:
                self.sessions.set(session, name)
            if stream and resp.status_code == 200:
                return self._stream(resp, headers, rid, t0, kind, d, x, name, attempts, text, explore, key)
            outcome, content = ("ok" if resp.status_code == 200 else f"upstream {resp.status_code}"), resp.content
            data: Any = None
            try:
                data = resp.json()
            except ValueError:
                pass
            if resp.status_code == 200 and isinstance(data, dict):
                data["model"] = name
                if isinstance(data.get("id"), str):  # the SDK's `completion.id` is what feedback takes
                    headers["x-knnroute-upstream-id"] = data["id"][:200]
                data["id"] = rid
                if d is not None and x is not None:
                    cost = self.cost(name, d, data.get("usage"))
                    self.store.remember(rid, Pending(x, name, cost, key))
                    if self.limits is not None:
                        self.limits.count(key, cost)
                elif self.limits is not None:  # a pass-through answer counts in its key's usage too
                    cost = self.cost(name, None, data.get("usage"))
                    self.store.account(key, cost)
                    self.limits.count(key, cost)
                self.record(rid, t0, kind, d, name, attempts, outcome, text, explore)
                return JSONResponse(data, headers=headers)
            self.record(rid, t0, kind, d, name, attempts, outcome, text, explore)
            ctype = resp.headers.get("content-type", "application/json")
            return RawResponse(content, resp.status_code, ctype, headers)
        assert last is not None  # order is never empty
        self.record(rid, t0, kind, d, None, attempts, "failed", text, explore)
        tried = ", ".join(dict.fromkeys(a.model for a in attempts))
        hdr = {"x-knnroute-request-id": rid}
        if all(a.error == "circuit open" for a in attempts):
            wait = min(self.upstreams.breakers[m].retry_after() for m in dict.fromkeys(a.model for a in attempts))
            self.metrics.child(self.metrics.rejected, "circuit_open").inc()
            raise GatewayError(503, f"every candidate's circuit is open (tried {tried}): their upstreams failed "
                               "repeatedly; retry later", code="circuit_open",
                               headers={**hdr, "retry-after": str(max(1, round(wait)))})
        if time.monotonic() >= deadline and last.timeout:
            raise GatewayError(504, f"the request's deadline of {self.cfg.server.request_timeout_s:g} s ran out "
                               f"(tried {tried}); last: {last.reason}", "upstream_error", headers=hdr)
        raise GatewayError(504 if last.timeout else 502, f"every upstream failed (tried {tried}); last: "
                           f"{last.reason}", "upstream_error", headers=hdr)

    def _stream(self, resp: UpstreamResponse, headers: dict[str, str], rid: str, t0: float, kind: str,
                d: RouteDecision | None, x: np.ndarray | None, name: str, attempts: list[Attempt],
                text: str | None, explore: bool, key: str = "-") -> Response:
        if d is not None and x is not None:  # feedback may arrive before the stream ends
            cost = self.cost(name, d, None)
            self.store.remember(rid, Pending(x, name, cost, key))
            if self.limits is not None:
                self.limits.count(key, cost)

        def done(outcome: str) -> None:
            self.record(rid, t0, kind, d, name, attempts, outcome, text, explore)
            if outcome == "stalled":
                log.warning("request %s: closed the %s stream: the client read nothing for %g s", rid, name,
                            self.cfg.server.stream_write_timeout_s)

        return StreamResponse(resp, {**headers, "cache-control": "no-cache"},
                               self.cfg.server.stream_write_timeout_s, done)

    async def feedback(self, raw: bytes) -> JSONResponse:
        try:
            body = parse_json(raw, FEEDBACK_BODY)
            if not isinstance(body, dict):
                raise GatewayError(422, f"send {FEEDBACK_BODY}")
            rid = request_id(body.get("request_id"))
            score = finite(body.get("score"), "score", 0.0, 1.0)
            if score is None:
                raise GatewayError(422, "'score' must be a number in [0, 1]", param="score")
        except GatewayError:
            self.metrics.child(self.metrics.feedback, "invalid").inc()
            raise
        try:
            out = await anyio.to_thread.run_sync(self.store.submit, rid, score)
        except KeyError:
            self.metrics.child(self.metrics.feedback, "unknown").inc()
            raise GatewayError(404, f"unknown request_id {rid!r} (not a routed answer of this gateway, or "
                               "forgotten)", code="not_found") from None
        except KeyCapExceeded as e:
            self.metrics.child(self.metrics.feedback, "key_cap").inc()
            raise GatewayError(429, str(e), code="rate_limit_exceeded", headers={"x-should-retry": "false"}) from None
        except StoreError as e:
            self.metrics.child(self.metrics.feedback, "store_error").inc()
            raise GatewayError(503, f"feedback not stored: {e}", code="store_unavailable",
                               headers={"retry-after": "1"}) from None
        except ValueError as e:
            # x-should-retry: the SDKs retry a 409 otherwise
            self.metrics.child(self.metrics.feedback, "duplicate").inc()
            raise GatewayError(409, str(e), code="conflict", headers={"x-should-retry": "false"}) from None
        self.metrics.child(self.metrics.feedback, "applied").inc()
        return JSONResponse({"status": "applied", **out})


def create_gateway_app(cfg: GatewayConfig, slot: RouterSlot, store: FeedbackStore | SharedFeedbackStore) -> FastAPI:
    """The ASGI app of ``knnroute gateway`` (see the module docstring)."""
    api_keys = cfg.keys(cfg.server.api_keys_env)
    admins = cfg.keys(cfg.server.admin_key_env)
    admin = admins[0] if admins else None
    srv = cfg.server
    app = create_app(slot, max_body_bytes=srv.max_body_bytes, source=str(cfg.router.file), admin_token=admin,
                     read_timeout=srv.read_timeout_s, max_client_concurrency=srv.max_client_concurrency)
    # a reload would swap the router under the feedback store: the gateway saves instead (/admin/save)
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", "") != "/admin/reload"]
    gw = Gateway(cfg, slot, store, app.state.metrics)
    app.state.gateway = gw
    app.router.on_shutdown.append(gw.upstreams.aclose)  # close pooled upstream connections
    if gw.batcher is not None:
        app.router.on_shutdown.append(gw.batcher.aclose)

    def header(scope: Any, name: bytes) -> str | None:
        v = next((v for k, v in scope.get("headers", ()) if k == name), None)
        return None if v is None else v.decode("latin-1")

    async def chat(raw: bytes, scope: Any) -> Response:
        """OpenAI chat completions, routed (``"model": "knnroute"``) or passed through."""
        ticket = scope.get(ADMITTED)
        return await gw.chat(raw, header(scope, b"x-session-id"), header(scope, b"authorization"),
                             ticket if isinstance(ticket, Ticket) else None)

    async def feedback(raw: bytes, scope: Any) -> Response:
        """Outcome feedback for a routed answer: ``{"request_id": str, "score": float in [0, 1]}``."""
        return await gw.feedback(raw)

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

    register_admin(app, store)  # /admin/feedback/revert
    app.add_middleware(GatewayAuthMiddleware, api_keys=api_keys, admin_key=admin)
    app.add_middleware(OpenAIErrorMiddleware)
    lag = LoopLag()
    app.router.on_shutdown.append(lag.aclose)
    admission = Admission(max_inflight=srv.max_inflight, state=gw, lag=lag,
                          max_lag_s=srv.max_loop_lag_ms / 1e3 if srv.max_loop_lag_ms > 0 else None,
                          on_reject=lambda reason: gw.metrics.child(gw.metrics.rejected, reason).inc(),
                          max_route_queue=srv.max_route_queue, max_cpu=srv.max_loop_cpu)
    app.state.loop_lag = lag
    gw.metrics.loop_lag.set_function(lambda: lag.lag)
    gw.metrics.loop_cpu.set_function(lambda: lag.cpu)
    gw.metrics.admitted_share.set_function(lambda: admission.admit)
    build_stack = app.build_middleware_stack

    def fast_stack() -> Any:  # the hot paths skip the general stack (gateway/fastpath.py)
        return FastPath(build_stack(), {CHAT: chat, "/v1/feedback": feedback}, admission=admission,
                        api_keys=[f"Bearer {k}".encode() for k in api_keys],
                        admin_keys=[] if admin is None else [f"Bearer {admin}".encode()],
                        metrics=app.state.metrics, max_body_bytes=srv.max_body_bytes, read_timeout=srv.read_timeout_s,
                        deadline_s=srv.request_timeout_s, client_limit=srv.max_client_concurrency)

    app.build_middleware_stack = fast_stack  # type: ignore[method-assign]
    app.state.early = early_refusal(admission)  # for the HTTP protocol (serve.py)
    return app
