"""The gateway's TOML configuration, read with :mod:`tomllib` and validated with pydantic.

Every error names the key path and what is wrong (``upstreams."gpt-4".timeout_s: Input should be greater
than 0``), in one line: :class:`ConfigError`. Relative file paths are relative to the config file's folder.
Secrets never appear in the file: it names the environment variables that hold them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from knnroute.service.schemas import MAX_PROMPT_CHARS

__all__ = ["ConfigError", "ExploreConfig", "FeedbackConfig", "GatewayConfig", "LimitsConfig", "RouterConfig",
           "ServerConfig", "UpstreamConfig", "load_config"]


class ConfigError(ValueError):
    """A config file that cannot be used; the message is one line naming the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RouterConfig(_Strict):
    file: Path
    lambda_: float | None = Field(default=None, alias="lambda", allow_inf_nan=False)
    max_cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # certified policies (docs/guarantees.md): at most one of lambda, max_cost and these
    quality_floor: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    max_mean_cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    strong_share: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    policy: Literal["last-user", "all-user", "system+last-user"] = "last-user"
    # characters of routed text kept (the last ones; newlines kept): /route accepts up to the same number
    max_route_chars: int = Field(default=MAX_PROMPT_CHARS, gt=0, le=MAX_PROMPT_CHARS)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_route_tokens" in data:
            raise ValueError("max_route_tokens is gone: use max_route_chars (the routed text is cut by "
                             "characters, newlines kept, exactly as POST /route sees it)")
        return data

    @model_validator(mode="after")
    def _one_of(self) -> RouterConfig:
        chosen = [k for k in ("lambda_", "max_cost", "quality_floor", "max_mean_cost", "strong_share")
                  if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError("give one of lambda, max_cost, quality_floor, max_mean_cost, strong_share, not "
                             + " and ".join(k.rstrip("_") for k in chosen))
        return self

    def routing(self) -> dict[str, float | None]:
        """The configured lambda / max_cost / policy, as keyword arguments of ``ProductionRouter.decide``."""
        return {"lam": self.lambda_, "max_cost": self.max_cost, "quality_floor": self.quality_floor,
                "max_mean_cost": self.max_mean_cost, "strong_share": self.strong_share}


class ServerConfig(_Strict):
    api_keys_env: str = "KNNROUTE_API_KEYS"
    admin_key_env: str = "KNNROUTE_ADMIN_KEY"
    session_ttl_s: float = Field(default=1800.0, ge=0, allow_inf_nan=False)
    max_sessions: int = Field(default=100_000, gt=0)
    decision_log: Path | None = None
    log_prompts: bool = False
    max_body_bytes: int = Field(default=8 << 20, gt=0)
    embed_batch_max: int = Field(default=64, gt=0)  # micro-batching of concurrent requests' embeddings
    embed_batch_wait_ms: float = Field(default=2.0, ge=0, le=1000, allow_inf_nan=False)  # 0: no batching
    # texts up to this many characters are routed on the event loop, with no thread hop, when the router
    # routes one that long in under route_inline_max_ms (measured at start: the static embedders take about
    # 0.45 ms for 8,000 characters; where it takes longer, proportionally fewer characters); 0: never
    route_inline_chars: int = Field(default=8000, ge=0, le=200_000)
    route_inline_max_ms: float = Field(default=1.0, gt=0, le=100, allow_inf_nan=False)
    # the limits `knnroute serve` has (docs/security.md): a request head and body must arrive within
    # read_timeout_s; connections beyond limit_concurrency get 503; max_client_concurrency per peer address
    read_timeout_s: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)
    limit_concurrency: int | None = Field(default=4096, gt=0)
    max_client_concurrency: int | None = Field(default=None, gt=0)
    # admission: chat requests in flight (waiting on upstreams included), and admitted chat requests not yet
    # routed (body, parsing, embedding and decision: the gateway's own CPU work, inline or on a thread);
    # beyond either, an immediate 503 with Retry-After
    max_inflight: int = Field(default=2048, gt=0)
    max_route_queue: int = Field(default=64, gt=0)
    # a routed request that waited longer than this for its embedding batch is refused (503) unworked
    max_route_wait_ms: float = Field(default=250.0, gt=0, allow_inf_nan=False)
    # and a share of new chat requests, set by a controller that holds the event loop's thread under
    # max_loop_cpu of its core and its lag under max_loop_lag_ms (all refused above twice that; 0: off):
    # the load that no counter sees yet (gateway/admission.py)
    max_loop_lag_ms: float = Field(default=50.0, ge=0, allow_inf_nan=False)
    max_loop_cpu: float = Field(default=0.98, gt=0, le=1, allow_inf_nan=False)
    request_timeout_s: float = Field(default=120.0, gt=0, allow_inf_nan=False)  # whole request, all attempts
    stream_write_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)  # a client not reading
    shutdown_timeout_s: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)  # SIGTERM to exit


class ExploreConfig(_Strict):
    """``[feedback.explore]``: :class:`knnroute.routers.explore.ExplorePolicy`'s parameters."""

    policy: Literal["greedy", "uniform", "thompson", "ucb"] = "thompson"
    epsilon: float = Field(default=0.1, ge=0, le=1, allow_inf_nan=False)
    scale: float = Field(default=0.5, ge=0, le=100, allow_inf_nan=False)
    prior_count: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False)
    prior_sd: float = Field(default=0.5, ge=0, le=100, allow_inf_nan=False)


class FeedbackConfig(_Strict):
    log: Path | None = None  # one process's JSON-lines log (imported once into `store` when both are set)
    # the shared store: "sqlite:///feedback.db" (relative to the config; WAL, one machine, many processes) or
    # "postgresql://user@host:5432/db" (many machines) with the password in $password_env
    store: str | None = None
    password_env: str | None = None
    group_commit: bool = True  # concurrent feedbacks share one durable commit
    retention_s: float = Field(default=7 * 86400.0, gt=0, allow_inf_nan=False)  # feedback window; pruning
    poll_s: float = Field(default=0.2, gt=0, le=60, allow_inf_nan=False)  # tailing the store (SQLite)
    unknown_wait_s: float = Field(default=1.0, ge=0, le=60, allow_inf_nan=False)  # for another replica's batch
    save_interval_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    pending_max: int = Field(default=100_000, gt=0)  # answered requests remembered for feedback
    # exploration of routed requests (never a session's pinned model nor an explicit model name): a table
    # {policy = "thompson" | "ucb" | "uniform" | "greedy", scale, epsilon, prior_count, prior_sd}, or a number
    # e = uniform exploration with probability e (0: greedy); unset: the router file's stored policy
    # (knnroute fit --explore), else knnroute.routers.explore's default
    explore: float | ExploreConfig | None = None
    # time decay of evidence, in feedbacks (a row weighs 2^-(age / half_life); fitted rows are time 0);
    # 0: off; unset: the router file's (knnroute fit --half-life)
    half_life: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # one inbound key may write at most this share of the answering model's k nearest observing rows
    # around a feedback's prompt; beyond it the feedback is refused (429). 1: off (the default: a gateway
    # with one client writes all its feedback with one key); e.g. 0.25 where many keys share a gateway
    key_share_max: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False)
    # bounded state: the router keeps the feedback rows of the last max_rows feedbacks (and none older than
    # 10 half-lives: they weigh < 0.1%); older ones are folded away every 256 feedbacks; 0: no cap
    max_rows: int = Field(default=5000, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _explore_number(self) -> FeedbackConfig:
        if isinstance(self.explore, float) and not 0 <= self.explore <= 1:
            raise ValueError("explore: a number must be in [0, 1] (the uniform exploration's probability)")
        return self


class LimitsConfig(_Strict):
    """Per inbound key, summed over every replica (needs ``feedback.store``); beyond either: 429."""

    requests_per_minute: int | None = Field(default=None, gt=0)
    spend_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # total spend of a key


class UpstreamConfig(_Strict):
    base_url: str
    api_key_env: str | None = None
    model: str | None = None
    timeout_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_s: float = Field(default=0.2, ge=0, allow_inf_nan=False)
    retry_timeouts: bool = False  # a timed-out upstream is not tried again for the same request
    max_connections: int = Field(default=256, gt=0)  # this upstream's own pool (others are not affected)
    breaker_failures: int = Field(default=5, gt=0)  # consecutive failures that open the circuit
    breaker_cooldown_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)  # open, then one probe

    @model_validator(mode="after")
    def _url(self) -> UpstreamConfig:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        return self

    def api_key(self) -> str | None:
        """The upstream's key from its environment variable (None when unset)."""
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None


class GatewayConfig(_Strict):
    router: RouterConfig
    server: ServerConfig = ServerConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    limits: LimitsConfig = LimitsConfig()
    upstreams: dict[str, UpstreamConfig] = Field(min_length=1)
    _base: Path | None = PrivateAttr(default=None)  # the config file's folder (set by load_config)

    @property
    def base(self) -> Path | None:
        """The config file's folder: relative store paths are relative to it."""
        return self._base

    @model_validator(mode="after")
    def _limits_need_store(self) -> GatewayConfig:
        lim = self.limits
        if (lim.requests_per_minute is not None or lim.spend_usd is not None) and self.feedback.store is None:
            raise ValueError("limits need a shared store to count in: set feedback.store")
        return self

    def upstream_model(self, name: str) -> str:
        up = self.upstreams[name]
        return up.model or name

    def keys(self, env: str) -> list[str]:
        raw = os.environ.get(env, "")
        return [k.strip() for k in raw.split(",") if k.strip()]


def _path(loc: tuple[int | str, ...]) -> str:
    out = []
    for part in loc:
        s = str(part)
        out.append(s if s.replace("_", "").replace("-", "").isalnum() and "." not in s else f'"{s}"')
    return ".".join(out).replace("lambda_", "lambda")


def load_config(path: str | os.PathLike) -> GatewayConfig:
    """Read and validate ``path``; raise :class:`ConfigError` (one line) when it cannot be used."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    try:
        cfg = GatewayConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        where = _path(tuple(err["loc"])) or "(top level)"
        raise ConfigError(f"{p}: {where}: {err['msg']}{more}") from None
    base = p.resolve().parent
    cfg._base = base
    cfg.router.file = base / cfg.router.file
    if cfg.feedback.log is not None:
        cfg.feedback.log = base / cfg.feedback.log
    if cfg.server.decision_log is not None:
        cfg.server.decision_log = base / cfg.server.decision_log
    return cfg
