"""``knnroute gateway``: an OpenAI-compatible gateway that routes chat completions and learns from feedback.

See ``docs/gateway.md``.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["configure", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="gateway config (TOML; docs/gateway.md)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes sharing the port, each its own router, converging through [feedback] store "
                        "(default 1)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    from knnroute.gateway.serve import serve_gateway
    from knnroute.production.persist import RouterFileError

    try:
        serve_gateway(args.config, args.host, args.port, args.log_level, args.workers)
    except (RouterFileError, FileNotFoundError, ValueError, ImportError, OSError) as e:
        print(f"knnroute gateway: error: {e}", file=sys.stderr)
        return 2
    return 0
