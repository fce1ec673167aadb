"""The gateway's TOML configuration, read with :mod:`tomllib` and validated with pydantic.

Every error names the key path and what is wrong (``upstreams."gpt-4".timeout_s: Input should be greater
than 0``), in one line: :class:`ConfigError`. Relative file paths are relative to the config file's folder.
Secrets never appear in the file: it names the environment variables that hold them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["ConfigError", "FeedbackConfig", "GatewayConfig", "RouterConfig", "ServerConfig", "UpstreamConfig",
           "load_config"]


class ConfigError(ValueError):
    """A config file that cannot be used; the message is one line naming the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RouterConfig(_Strict):
    file: Path
    lambda_: float | None = Field(default=None, alias="lambda", allow_inf_nan=False)
    max_cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    policy: Literal["last-user", "all-user", "system+last-user"] = "last-user"
    max_route_tokens: int = Field(default=256, gt=0)  # words of routed text kept (the last ones)

    @model_validator(mode="after")
    def _one_of(self) -> RouterConfig:
        if self.lambda_ is not None and self.max_cost is not None:
            raise ValueError("give either lambda or max_cost, not both")
        return self


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


class FeedbackConfig(_Strict):
    log: Path | None = None
    save_interval_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    pending_max: int = Field(default=100_000, gt=0)  # answered requests remembered for feedback
    explore: float = Field(default=0.0, ge=0, le=1)  # share of routed requests sent to a random model


class UpstreamConfig(_Strict):
    base_url: str
    api_key_env: str | None = None
    model: str | None = None
    timeout_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_s: float = Field(default=0.2, ge=0, allow_inf_nan=False)

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
    upstreams: dict[str, UpstreamConfig] = Field(min_length=1)

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
    cfg.router.file = base / cfg.router.file
    if cfg.feedback.log is not None:
        cfg.feedback.log = base / cfg.feedback.log
    if cfg.server.decision_log is not None:
        cfg.server.decision_log = base / cfg.server.decision_log
    return cfg
