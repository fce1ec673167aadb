"""The gateway's online learning (issue 29): exploration, time decay, a per-key cap, and revert.

* :func:`explore_policy` -- the exploration policy of routed requests: ``[feedback] explore`` (a table, see
  :class:`~knnroute.gateway.config.ExploreConfig`), else the policy the router file stores (``knnroute fit
  --explore``: ``meta["explore"]``), else :data:`DEFAULT_POLICY`. A number ``e`` in the config keeps the
  old uniform coin (probability ``e``). :func:`explore_choice` applies it to one decision; the gateway
  calls it only for requests the router decides (never for a session's pinned model nor an explicit
  ``model``), and never over the fallback model when the fallback fired.
* :func:`apply_half_life` -- ``[feedback] half_life`` (in feedbacks: rows get their feedback's sequence
  number as time) over the router file's own.
* :class:`KeyCap` -- one inbound key may write at most ``key_share_max`` of the answering model's k
  nearest observing rows around a feedback's prompt (:class:`KeyCapExceeded`: a 429).
* :func:`revert_router` -- remove the rows of reverted feedback (``fb-<request id>``) from the live router.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from knnroute.routers.explore import ExplorePolicy

__all__ = ["DEFAULT_POLICY", "KeyCap", "KeyCapExceeded", "apply_half_life", "explore_choice", "explore_policy",
           "revert_router", "window"]

# the default exploration of routed requests (and of `knnroute fit`'s stored policy): see
# docs/online-learning.md for the replays it was chosen on
DEFAULT_POLICY = ExplorePolicy("greedy")


class KeyCapExceeded(RuntimeError):
    """A feedback refused because its key already wrote its share of the neighbourhood (one line)."""


def explore_policy(explore: Any, meta: dict[str, Any]) -> ExplorePolicy | None:
    """The policy for ``[feedback] explore`` (None: the config gave a number, the uniform coin)."""
    if isinstance(explore, (int, float)):
        return None
    if explore is not None:
        d = explore.model_dump() if hasattr(explore, "model_dump") else dict(explore)
        d["name"] = d.pop("policy", d.get("name", "thompson"))
        return ExplorePolicy.from_dict(d)
    stored = meta.get("explore")
    if isinstance(stored, dict):
        try:
            return ExplorePolicy.from_dict({k: stored[k] for k in ("name", "epsilon", "scale", "prior_count",
                                                                    "prior_sd") if k in stored})
        except (TypeError, ValueError):
            pass  # a file from elsewhere: the default
    return DEFAULT_POLICY


def explore_choice(policy: ExplorePolicy, d: Any, names: list[str], routable: Iterable[str],
                   rng: np.random.Generator) -> str | None:
    """The model the policy picks for decision ``d`` among ``routable`` models (None: keep the router's)."""
    if policy.name == "greedy" or d.fallback is not None or d.count is None or d.spread is None:
        return None
    ok = set(routable)
    allowed = [m in ok for m in names]
    if not any(allowed):
        return None
    j = policy.choose(d.s_hat, d.c_hat, d.count, d.spread, d.lam, rng, allowed=allowed)
    return names[j]


def apply_half_life(router: Any, half_life: float | None) -> None:
    """``[feedback] half_life`` over the router file's (None: keep the file's)."""
    if half_life is not None:
        router.half_life = float(half_life)


def window(key: str | None, since: float | None, until: float | None) -> tuple[str | None, float, float]:
    """Check a revert's selection: a key id and/or a time window (epoch seconds); one line errors."""
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 256):
        raise ValueError("key must be a key id of 1-256 characters")
    lo = -math.inf if since is None else float(since)
    hi = math.inf if until is None else float(until)
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError("since/until must be numbers (epoch seconds) with since <= until")
    if key is None and since is None and until is None:
        raise ValueError("give a key id, a time window (since/until), or both")
    return key, lo, hi


def revert_router(router: Any, request_ids: Iterable[str]) -> int:
    """Remove the rows of these feedbacks from the router; returns how many rows it held."""
    have = set(router.ids)
    rows = [f"fb-{r}" for r in request_ids if f"fb-{r}" in have]
    return router.remove_ids(rows) if rows else 0


class KeyCap:
    """At most ``share`` of the answering model's k nearest observing rows may come from one key.

    ``key_of(row_id)`` gives the key id of a feedback row (None for fitted rows)."""

    def __init__(self, share: float, key_of: Callable[[str], str | None]) -> None:
        self.share = float(share)
        self.key_of = key_of

    def check(self, router: Any, x: np.ndarray, model: str, key: str) -> None:
        if self.share >= 1.0 or key == "-":
            return
        names = router.model_names
        if model not in names:
            return
        core = router.core
        idx, _, cnt = core.search_per_model(np.ascontiguousarray(x, dtype=np.float32)[None, :])
        j = names.index(model)
        n = int(cnt[0, j])
        k = int(min(core.k, router.size))
        if k <= 0:
            return
        ids = router.ids
        mine = sum(1 for r in idx[0, j, :n] if r >= 0 and self.key_of(ids[int(r)]) == key)
        if mine + 1 > self.share * k:
            raise KeyCapExceeded(f"this key already wrote {mine} of the {k} nearest rows of model {model!r} "
                                 f"around this prompt (the cap is feedback.key_share_max = {self.share:g})")


def start_notes(cfg: Any, router: Any) -> list[str]:
    """Apply ``[feedback] half_life``; the start-up warnings about online learning, each naming its fix."""
    fb = cfg.feedback
    apply_half_life(router, fb.half_life)
    notes = []
    if isinstance(fb.explore, (int, float)) and fb.explore > 0:
        notes.append(f"feedback.explore = {fb.explore:g} sends routed requests to a uniformly random model; "
                     "[feedback.explore] policy = \"thompson\" explores only where the router is unsure "
                     "(docs/online-learning.md)")
    elif fb.explore is None and not isinstance(router.meta.get("explore"), dict):
        notes.append(f"the router file stores no exploration policy: routed requests use the default "
                     f"({DEFAULT_POLICY.name}); set [feedback.explore] or fit with 'knnroute fit --explore POLICY'")
    if fb.log is None and fb.store is None:
        return notes
    if router.half_life == 0:
        notes.append("feedback never ages (half-life 0): a model that degrades keeps its old evidence; set "
                     "[feedback] half_life = N (feedbacks) or fit with 'knnroute fit --half-life N' "
                     "(docs/online-learning.md, drift)")
    return notes


def register_admin(app: Any, store: Any) -> None:
    """``POST /admin/feedback/revert`` ``{"key": key id, "since": epoch s, "until": epoch s}`` (at least one):
    removes that feedback from the durable store and the live router, then re-saves the router file."""
    import json

    import anyio
    from fastapi.responses import JSONResponse

    async def admin_revert(request: Any) -> JSONResponse:  # a plain Starlette route (no parameter parsing)
        raw = await request.body()
        try:
            if len(raw) > 4096:
                raise ValueError("the body must be a JSON object under 4 KiB")
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict) or set(body) - {"key", "since", "until"}:
                raise ValueError('send {"key": key id, "since": epoch seconds, "until": epoch seconds}')
            for f in ("since", "until"):
                v = body.get(f)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise ValueError(f"{f} must be a number (epoch seconds)")
            key, since, until = body.get("key"), body.get("since"), body.get("until")
            window(key, since, until)
        except (ValueError, RecursionError) as e:
            msg = str(e).splitlines()[0][:300] if isinstance(e, ValueError) else "the body is nested too deeply"
            return JSONResponse({"error": {"message": msg, "type": "invalid_request_error"}}, status_code=422)
        try:
            out = await anyio.to_thread.run_sync(lambda: store.revert(key, since, until))
        except ValueError as e:
            return JSONResponse({"error": {"message": str(e)[:300], "type": "invalid_request_error"}},
                                status_code=409)
        return JSONResponse(out)

    app.router.add_route("/admin/feedback/revert", admin_revert, methods=["POST"])


FOLD_EVERY = 256  # feedbacks between folds (a fold is one pass over the router's ids)
NEGLIGIBLE_HALF_LIVES = 10.0  # a row this many half-lives old weighs 2^-10 < 0.001 of a new one


def fold(router: Any, prev_seq: int, seq: int, max_rows: int) -> int:
    """Keep the router's feedback rows bounded: when the sequence number crosses a multiple of FOLD_EVERY
    (``b``), remove the feedback rows (ids ``fb-...``, time = their sequence number) with time <= ``b -
    window``; ``window`` = ``max_rows`` (0: no cap), and at most NEGLIGIBLE_HALF_LIVES half-lives when
    decay is on (older rows weigh < 0.1% of a new one). The cut depends only on ``b``, so every replica,
    and a restarted gateway replaying its log, removes the same rows. Returns how many were removed."""
    b = (seq // FOLD_EVERY) * FOLD_EVERY
    if b <= (prev_seq // FOLD_EVERY) * FOLD_EVERY or b == 0:
        return 0
    windows = [float(max_rows)] if max_rows > 0 else []
    if router.half_life > 0:
        windows.append(NEGLIGIBLE_HALF_LIVES * float(router.half_life))
    if not windows:
        return 0
    cut = b - min(windows)
    if cut <= 0:
        return 0
    times = router.core.times()
    ids = router.ids
    old = [i for i, t in zip(ids, times.tolist(), strict=True) if t <= cut and i.startswith("fb-")]
    return router.remove_ids(old) if old else 0
