"""atheris fuzz target: the HTTP service's request edge (issue 17: where the hostile traffic went).

Modes, chosen by the first input byte:

* parse: raw bytes -> :func:`knnroute.service.guard.parse_route` / ``parse_batch`` (JSON, limits, strict
  models). Contract: a RouteRequest list, or ``RequestError`` with 400/422 and a detail that serialises
  to at most a few KB (error bodies are truncated).
* structured: a JSON body built from fuzzer choices (types swapped, huge/empty lists, nesting, NaN)
  -> the real app's ``/route`` and ``/route/batch`` through an in-process ASGI client. Contract: status
  in {200, 400, 413, 415, 422}, never 500.
* images: fuzzer strings as image paths -> :func:`knnroute.service.guard.resolve_images` under a temporary
  image folder, with a secret file beside it. Contract: ImageRefs or ``RequestError`` 422; the secret
  file's bytes are never returned; the answer for a path outside the folder does not depend on whether
  the file exists.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["knnroute"]):
    import numpy as np
    from fastapi.testclient import TestClient

    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter
    from knnroute.service.app import create_app
    from knnroute.service.guard import RequestError, _batch_over_limit, parse_batch, parse_route, resolve_images

D = 4
MAX_BATCH = 8
MAX_DETAIL = 4096


def _router() -> ProductionRouter:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, D)).astype(np.float32)
    S = rng.random((20, 2))
    C = rng.random((20, 2)) * 1e-3
    return ProductionRouter(KNNRouter(k=3).fit(X, S, C, model_names=["a", "b"]), default_lambda=1.0)


CLIENT = TestClient(create_app(_router(), max_body_bytes=64 * 1024, max_batch=MAX_BATCH))
TMP = tempfile.mkdtemp(prefix="knnroute-fuzz-images.")
ROOT = os.path.realpath(os.path.join(TMP, "images"))
os.makedirs(ROOT)
SECRET = b"SECRET-" + os.urandom(8)
with open(os.path.join(TMP, "secret.png"), "wb") as fh:
    fh.write(SECRET)
with open(os.path.join(ROOT, "ok.png"), "wb") as fh:
    fh.write(b"\x89PNG\r\n\x1a\n" + b"0" * 16)


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0):  # type: ignore[no-untyped-def]
    kind = fdp.ConsumeIntInRange(0, 9)
    if kind == 0:
        return fdp.ConsumeInt(8)
    if kind == 1:
        return fdp.ConsumeFloat()  # includes NaN and inf
    if kind == 2:
        return fdp.ConsumeUnicodeNoSurrogates(16)
    if kind == 3:
        return None
    if kind == 4:
        return fdp.ConsumeBool()
    if kind == 5:
        return [fdp.ConsumeRegularFloat() for _ in range(fdp.ConsumeIntInRange(0, 3 * D))]
    if kind == 6 and depth < 4:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 7 and depth < 4:
        return {k: _value(fdp, depth + 1) for k in _keys(fdp)}
    if kind == 8:
        return [0.5] * D
    return fdp.ConsumeRegularFloat()


def _keys(fdp: atheris.FuzzedDataProvider) -> list[str]:
    pool = ["prompt", "embedding", "lambda", "max_cost", "image", "images", "items", "x"]
    return [pool[fdp.ConsumeIntInRange(0, len(pool) - 1)] for _ in range(fdp.ConsumeIntInRange(0, 4))]


def _check_detail(e: RequestError) -> None:
    if e.status not in (400, 415, 422):
        raise AssertionError(f"status {e.status}")
    if len(json.dumps(e.detail)) > MAX_DETAIL:
        raise AssertionError(f"error detail of {len(json.dumps(e.detail))} characters")


def _parse(fdp: atheris.FuzzedDataProvider) -> None:
    batch = fdp.ConsumeBool()
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    if batch and _batch_over_limit(body, MAX_BATCH):  # the early scan agrees with a full parse
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("items"), list) and len(obj["items"]) <= MAX_BATCH:
            raise AssertionError(f"scan said > {MAX_BATCH} items, the parse found {len(obj['items'])}")
    try:
        if batch:
            items = parse_batch(body, D, MAX_BATCH)
            if not 1 <= len(items) <= MAX_BATCH:
                raise AssertionError(f"{len(items)} items passed the batch limit")
        else:
            parse_route(body, D)
    except RequestError as e:
        _check_detail(e)


def _structured(fdp: atheris.FuzzedDataProvider) -> None:
    batch = fdp.ConsumeBool()
    if batch:
        obj = {"items": [{k: _value(fdp) for k in _keys(fdp)} for _ in range(fdp.ConsumeIntInRange(0, 12))]}
    else:
        obj = {k: _value(fdp) for k in _keys(fdp)}
    try:
        body = json.dumps(obj).encode()  # NaN/Infinity written as JSON extensions, as a client could
    except (ValueError, TypeError):
        return
    r = CLIENT.post("/route/batch" if batch else "/route", content=body,
                    headers={"content-type": "application/json"})
    if r.status_code not in (200, 400, 413, 415, 422):
        raise AssertionError(f"status {r.status_code}: {r.text[:500]}")
    if len(r.content) > 64 * 1024 and r.status_code != 200:
        raise AssertionError(f"error body of {len(r.content)} bytes")


def _images(fdp: atheris.FuzzedDataProvider) -> None:
    raw = [fdp.ConsumeUnicodeNoSurrogates(64) for _ in range(fdp.ConsumeIntInRange(1, 3))]
    if fdp.ConsumeBool():
        name = ["secret.png", "ok.png", "missing.png"][fdp.ConsumeIntInRange(0, 2)]
        raw[0] = "../" * fdp.ConsumeIntInRange(0, 3) + name
    try:
        refs = resolve_images(raw, ROOT)
    except RequestError as e:
        _check_detail(e)
        if "secret" in str(e.detail) or "missing" in str(e.detail):
            raise AssertionError(f"error names the path: {e.detail}") from None
        return
    for ref in refs:
        if SECRET in bytes(getattr(ref, "data", b"")):
            raise AssertionError("read a file outside the image folder")


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        _parse(fdp)
    elif mode == 1:
        _structured(fdp)
    else:
        _images(fdp)


def main() -> None:
    # Coverage from knnroute's modules only (instrument_imports above): instrument_all() would spend
    # about 100 s instrumenting FastAPI, pydantic and starlette on every CI run.
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
