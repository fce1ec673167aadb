"""``knnroute serve``: serve a saved router over HTTP (FastAPI on uvicorn).

POST /route, POST /route/batch, GET /health, GET /metrics (Prometheus), /openapi.json, /docs. See
``docs/service.md``.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["configure", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--router", required=True, metavar="ROUTER_FILE", help="router file from 'knnroute fit'")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20,
                   help="larger bodies get 413 (default 1 MiB)")
    p.add_argument("--max-batch", type=int, default=1024, help="most items per /route/batch request")
    p.add_argument("--no-embedder", action="store_true",
                   help="do not load the router's embedder: route embeddings only (fast start, no torch)")
    p.add_argument("--no-verify", action="store_true", help="skip the payload checksum at load")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="info (default) logs start-up, readiness with the time it took and what a request "
                   "without lambda gets")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (--log-level warning)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="reload the router file when it changes (polled every SECONDS; atomic swap)")
    p.add_argument("--admin-token", default=os.environ.get("KNNROUTE_ADMIN_TOKEN"),
                   help="bearer token required by POST /admin/reload and to see process internals in /health "
                   "(default: $KNNROUTE_ADMIN_TOKEN; without one the admin endpoints are off)")
    p.add_argument("--read-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="close connections that take longer to send a request head, and answer 408 to bodies "
                   "slower than this (default 10)")
    p.add_argument("--limit-concurrency", type=int, metavar="N",
                   help="most concurrent connections; more get 503 (default: no cap)")
    p.add_argument("--max-client-concurrency", type=int, metavar="N",
                   help="most requests in flight per client address; more get 429 (default: no cap; behind a "
                   "proxy, limit per client in the proxy)")
    p.add_argument("--replicas", type=int, metavar="N",
                   help="serve N replicas with Ray Serve (the 'ray' extra) on --host/--port instead of one "
                   "process")
    p.add_argument("--image-dir", metavar="DIR",
                   help="multimodal routers: requests may name image files inside DIR (base64 images need no "
                   "flag)")
    p.add_argument("--ray-address",
                   help="with --replicas: the Ray cluster to use (default: start a local one)")


def _run_replicas(args: argparse.Namespace) -> int:
    from knnroute._ray import init_ray
    from knnroute.service.app import DEFAULT_MAX_BATCH
    from knnroute.service.ray_serve import serve_deployment

    init_ray(args.ray_address)
    from ray import serve as ray_serve

    ray_serve.start(http_options={"host": args.host, "port": args.port})
    app = serve_deployment(
        args.router, num_replicas=args.replicas, watch_interval=args.watch,
        load_embedder=not args.no_embedder, verify=not args.no_verify, admin_token=args.admin_token,
        max_batch=args.max_batch or DEFAULT_MAX_BATCH,
        max_body_bytes=args.max_body_bytes,
    )
    print(f"knnroute serve: {args.replicas} Ray Serve replica(s) of {args.router} on http://{args.host}:{args.port}",
          file=sys.stderr)
    try:
        ray_serve.run(app, name="knnroute", route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        ray_serve.shutdown()
    return 0


def run(args: argparse.Namespace) -> int:
    from knnroute.production.persist import RouterFileError
    from knnroute.service.app import serve

    if args.replicas is not None:
        if args.replicas < 1:
            print("knnroute serve: error: --replicas must be >= 1", file=sys.stderr)
            return 2
        try:
            return _run_replicas(args)
        except (RouterFileError, FileNotFoundError, ValueError, ImportError) as e:
            print(f"knnroute serve: error: {e}", file=sys.stderr)
            return 2
    try:
        serve(
            args.router,
            args.host,
            args.port,
            max_body_bytes=args.max_body_bytes,
            max_batch=args.max_batch,
            load_embedder=not args.no_embedder,
            verify=not args.no_verify,
            log_level="warning" if args.quiet else args.log_level,
            access_log=args.access_log,
            watch_interval=args.watch,
            admin_token=args.admin_token,
            image_dir=args.image_dir,
            read_timeout=args.read_timeout,
            limit_concurrency=args.limit_concurrency,
            max_client_concurrency=args.max_client_concurrency,
        )
    except (RouterFileError, FileNotFoundError, ValueError) as e:
        print(f"knnroute serve: error: {e}", file=sys.stderr)
        return 2
    return 0
