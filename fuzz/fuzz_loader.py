"""atheris fuzz target: the router-file loader (``knnroute.production.loads``).

Two modes, chosen by the first input byte:

* raw: the bytes are loaded as a file (magic, version, header, payload parsing);
* structured: a valid seed file's JSON header gets fuzzer-chosen values at fuzzer-chosen keys, and both
  digests are re-signed, so mutations reach the metadata checks, the array views and the core
  constructor instead of stopping at the checksum.

Contract checked: a file is either loaded (and then routes a query) or refused with ``ValueError``.
Any other exception or a crash is a finding.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys

import atheris

with atheris.instrument_imports(include=["knnroute"]):
    import numpy as np

    from knnroute.production import ProductionRouter, loads
    from knnroute.production.persist import MAGIC, PREAMBLE_SIZE
    from knnroute.routers.knn import KNNRouter


def _seed(lexical: bool = False) -> bytes:
    """A valid router file; with ``lexical`` one whose embedder is the lexical hybrid (a tiny hand-made
    LexicalModel beside a 5-d dense embedder), so the optional ``lexical_*`` arrays and facts are fuzzed."""
    import tempfile
    from pathlib import Path

    from knnroute.embed.encoders import CallableEmbedder
    from knnroute.embed.lexical import HybridLexicalEmbedder, LexicalModel

    rng = np.random.default_rng(0)
    d = 5 + (3 if lexical else 0)
    X = rng.normal(size=(12, d)).astype(np.float32)
    S = rng.random((12, 3))
    C = rng.random((12, 3)) * 1e-3
    S[0, 0] = np.nan
    emb = None
    if lexical:
        lex = LexicalModel(["alpha", "alpha beta", "beta", "gamma", "delta", "zeta"],
                           rng.random(6) + 1.0, rng.normal(size=(3, 6)))
        dense = CallableEmbedder(lambda t: np.ones((len(t), 5)), identity="fuzz-dense", dim=5)
        emb = HybridLexicalEmbedder(dense, lex, 0.75)
    p = ProductionRouter(KNNRouter(k=4).fit(X, S, C, model_names=["a", "b", "c"]), prices={"a": (1, 2)},
                         embedder=emb)
    p.budget_table(X[:6], S[:6], C[:6])
    with tempfile.TemporaryDirectory() as td:
        return p.save(Path(td) / "seed.knnr").read_bytes()


def _meta(blob: bytes) -> dict:  # type: ignore[type-arg]
    hlen = struct.unpack_from("<8sII32s", blob, 0)[2]
    return json.loads(blob[PREAMBLE_SIZE : PREAMBLE_SIZE + hlen])  # type: ignore[no-any-return]


SEEDS = [_seed(), _seed(lexical=True)]
SEED = SEEDS[0]
SEED_META = _meta(SEED)


def _paths(obj, prefix=()):  # type: ignore[no-untyped-def]
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list) and obj and len(obj) <= 16:
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


SEED_METAS = [_meta(b) for b in SEEDS]
SEED_PATHS = [[p for p in _paths(m) if p] for m in SEED_METAS]
PATHS = SEED_PATHS[0]


def _value(fdp: atheris.FuzzedDataProvider):  # type: ignore[no-untyped-def]
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        return fdp.ConsumeInt(8)
    if kind == 1:
        return fdp.ConsumeRegularFloat()
    if kind == 2:
        return fdp.ConsumeUnicodeNoSurrogates(12)
    if kind == 3:
        return None
    if kind == 4:
        return [fdp.ConsumeInt(4) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 5:
        return fdp.ConsumeBool()
    if kind == 6:
        return {}
    return fdp.ConsumeIntInRange(-3, 40)


def _structured(fdp: atheris.FuzzedDataProvider) -> bytes:
    which = fdp.ConsumeIntInRange(0, len(SEEDS) - 1)
    seed, seed_meta, paths = SEEDS[which], SEED_METAS[which], SEED_PATHS[which]
    meta = json.loads(json.dumps(seed_meta))
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        path = paths[fdp.ConsumeIntInRange(0, len(paths) - 1)]
        node = meta
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = _value(fdp)
        except (KeyError, IndexError, TypeError):
            pass
    payload = bytearray(seed[seed_meta["payload_offset"] :])
    if fdp.ConsumeBool() and payload:  # flip payload bytes and re-sign: reaches the core's own checks
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            payload[fdp.ConsumeIntInRange(0, len(payload) - 1)] = fdp.ConsumeIntInRange(0, 255)
    if isinstance(meta.get("payload_sha256"), str):
        meta["payload_sha256"] = hashlib.sha256(bytes(payload)).hexdigest()
    try:
        header = json.dumps(meta, separators=(",", ":")).encode()
    except (ValueError, TypeError):
        return seed
    p0 = seed_meta["payload_offset"]
    room = p0 - PREAMBLE_SIZE
    if len(header) > room:
        header = header[:room]  # truncated JSON: must be refused
    header = header + b" " * (room - len(header))
    pre = struct.pack("<8sII32s", MAGIC, 1, len(header), hashlib.sha256(header).digest())
    return pre + header + bytes(payload)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        blob = fdp.ConsumeBytes(fdp.remaining_bytes())
    elif mode == 1:
        blob = _structured(fdp)
    else:  # byte edits of the valid seed (truncation, flips), without re-signing
        src = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
        b = bytearray(src[: fdp.ConsumeIntInRange(0, len(src))])
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            if b:
                b[fdp.ConsumeIntInRange(0, len(b) - 1)] = fdp.ConsumeIntInRange(0, 255)
        blob = bytes(b)
    verify = True if mode != 1 else fdp.ConsumeBool()
    try:
        r = loads(blob, verify=verify)
    except ValueError:
        return
    q = np.ones(r.dim, dtype=np.float32)
    r.decide(q, 1.0)
    r.route(q[None, :], 10.0)


def main() -> None:
    atheris.instrument_all()  # coverage feedback from every loaded Python function (incl. this harness)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
