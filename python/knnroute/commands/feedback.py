"""``knnroute feedback revert``: remove the gateway feedback of one inbound key and/or a time window.

The records go from the durable store (``[feedback] store``, or the JSON-lines ``[feedback] log``) and their
rows from the router file, so a poisoned batch is rolled back. With a shared store the running gateways
remove the rows from their live routers too (they follow the store's revert list); a JSON-lines log is held
by its running gateway: revert through its ``POST /admin/feedback/revert`` instead. The key id is what the
gateway records (a hash of the inbound key: the decision log's and ``/metrics``' ``key``).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["configure", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = sub.add_parser("revert", help="remove one key's and/or a time window's feedback (store and router file)")
    r.add_argument("--config", required=True, metavar="FILE", help="the gateway config (TOML)")
    r.add_argument("--key", default=None, metavar="KEY_ID", help="the inbound key id whose feedback goes")
    r.add_argument("--since", type=float, default=None, metavar="EPOCH_S", help="from this time (seconds)")
    r.add_argument("--until", type=float, default=None, metavar="EPOCH_S", help="up to this time (seconds)")


def run(args: argparse.Namespace) -> int:
    from knnroute.gateway.config import load_config
    from knnroute.gateway.learning import window
    from knnroute.gateway.serve import open_feedback
    from knnroute.service.slot import RouterSlot

    try:
        window(args.key, args.since, args.until)
        cfg = load_config(args.config)
        if cfg.feedback.log is None and cfg.feedback.store is None:
            raise ValueError("the config has neither feedback.log nor feedback.store: nothing durable to revert")
        router = RouterSlot.from_path(cfg.router.file, load_embedder=False).router
        store = open_feedback(cfg, router)
    except ValueError as e:
        print(f"knnroute feedback: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    try:
        out = store.revert(args.key, args.since, args.until)
    finally:
        store.close()
    print(json.dumps(out))
    return 0
