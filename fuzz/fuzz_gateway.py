"""atheris fuzz target: the gateway's request edge (issue 27), chat and feedback bodies through the real app.

The app (:func:`knnroute.gateway.serve.build`, a WordLlama router of three models) runs in-process under
Starlette's TestClient; its upstreams are one real loopback chat-completions server in a thread (the tests'
fake upstream), so forwarding, fallback and streaming run for real. Modes, by the first input byte:

* chat: a JSON body built from fuzzer choices -- ``model`` (routed, an upstream, unknown, not a string),
  ``messages`` (lists of odd messages, content strings with surrogates, lists of parts, nesting),
  ``lambda`` / ``max_cost`` (huge ints, NaN, inf, negatives, booleans, strings), ``stream``, ``user``;
* feedback: ``request_id`` (a real one, long, odd types) and ``score`` (the same hostile numbers);
* raw: fuzzer bytes as the body of either endpoint (bad JSON, bad UTF-8, deep nesting).

Contract: never a 500; every error body is the OpenAI shape ``{"error": {"message", "type", ...}}`` of at
most 4 KB; 200 chat answers carry ``x-knnroute-request-id``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["knnroute.gateway", "knnroute.service"]):
    import numpy as np
    from fastapi.testclient import TestClient

    from knnroute.gateway.config import load_config
    from knnroute.gateway.serve import build
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fake_upstream import make_upstream, thread_server  # noqa: E402

NAMES = ["small", "coder", "big"]
OK = {200, 400, 401, 404, 409, 413, 415, 422, 503}
MAX_ERROR = 4096


def _gateway() -> TestClient:
    from knnroute.embed import get_embedder

    prompts = [f"{w} {t}" for w in ("joke", "code", "math", "poem") for t in ("cats", "lists", "sums", "rain")]
    X = get_embedder("wordllama").encode(prompts)
    rng = np.random.default_rng(0)
    router = ProductionRouter(KNNRouter(k=3).fit(X, rng.random((len(prompts), 3)),
                                                 np.tile([1e-5, 1e-4, 1e-3], (len(prompts), 1)), model_names=NAMES),
                              embedder="wordllama")
    folder = Path(tempfile.mkdtemp(prefix="knnroute-fuzz-gateway."))
    router.save(folder / "router.knnr")
    app, _ = make_upstream("fuzz")
    url = STACK.enter_context(thread_server(app))
    ups = "\n".join(f'[upstreams."{m}"]\nbase_url = "{url}/v1"\nmax_retries = 0\n' for m in NAMES)
    (folder / "gw.toml").write_text(f'[router]\nfile = "router.knnr"\nlambda = 0.0\n[server]\nmax_body_bytes = '
                                    f'262144\n[feedback]\nsave_interval_s = 3600\n{ups}')
    os.environ.pop("KNNROUTE_API_KEYS", None)
    gw_app, _ = build(load_config(folder / "gw.toml"))
    return STACK.enter_context(TestClient(gw_app))


STACK = contextlib.ExitStack()
CLIENT = _gateway()
RIDS: list[str] = []


def _number(fdp: atheris.FuzzedDataProvider) -> object:
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        return 10 ** fdp.ConsumeIntInRange(300, 500)
    if kind == 1:
        return fdp.ConsumeFloat()  # NaN, inf, negatives
    if kind == 2:
        return fdp.ConsumeBool()
    if kind == 3:
        return fdp.ConsumeUnicode(8)
    if kind == 4:
        return -fdp.ConsumeIntInRange(0, 10**6)
    if kind == 5:
        return None
    if kind == 6:
        return [fdp.ConsumeRegularFloat()]
    return fdp.ConsumeRegularFloat()


def _content(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    kind = fdp.ConsumeIntInRange(0, 5)
    if kind == 0:
        return fdp.ConsumeUnicode(64)  # surrogates included
    if kind == 1 and depth < 3:
        return [{"type": ["text", "image_url", "x"][fdp.ConsumeIntInRange(0, 2)],
                 "text": _content(fdp, depth + 1)} for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if kind == 2:
        return None
    if kind == 3:
        return _number(fdp)
    if kind == 4 and depth < 3:
        return {"nested": _content(fdp, depth + 1)}
    return "write a python function that sorts " + fdp.ConsumeUnicodeNoSurrogates(16)


def _chat_body(fdp: atheris.FuzzedDataProvider) -> dict[str, object]:
    body: dict[str, object] = {}
    model = fdp.ConsumeIntInRange(0, 4)
    body["model"] = ["knnroute", "small", "gpt-x", 7, None][model]
    if fdp.ConsumeIntInRange(0, 5):
        body["messages"] = [{"role": ["user", "system", "assistant", 3][fdp.ConsumeIntInRange(0, 3)],
                             "content": _content(fdp)} if fdp.ConsumeIntInRange(0, 4) else _content(fdp)
                            for _ in range(fdp.ConsumeIntInRange(0, 4))]
    else:
        body["messages"] = _content(fdp)
    for key in ("lambda", "max_cost"):
        if fdp.ConsumeBool():
            body[key] = _number(fdp)
    if fdp.ConsumeBool():
        body["stream"] = fdp.ConsumeBool()
    if fdp.ConsumeBool():
        body["user"] = _content(fdp)
    return body


def _check(r: object, path: str) -> None:
    status = r.status_code  # type: ignore[attr-defined]
    if status not in OK:
        raise AssertionError(f"{path}: status {status}: {r.text[:500]}")  # type: ignore[attr-defined]
    if status >= 400:
        content = r.content  # type: ignore[attr-defined]
        if len(content) > MAX_ERROR:
            raise AssertionError(f"{path}: error body of {len(content)} bytes")
        err = json.loads(content).get("error")
        if not isinstance(err, dict) or not isinstance(err.get("message"), str) or "type" not in err:
            raise AssertionError(f"{path}: not an OpenAI error: {content[:300]!r}")
    elif path.endswith("completions") and "x-knnroute-request-id" not in r.headers:  # type: ignore[attr-defined]
        raise AssertionError("a 200 chat answer without its request id")


def _post(path: str, content: bytes) -> None:
    r = CLIENT.post(path, content=content, headers={"content-type": "application/json"})
    _check(r, path)
    rid = r.headers.get("x-knnroute-request-id")
    if r.status_code == 200 and rid and len(RIDS) < 64:
        RIDS.append(rid)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        body: object = _chat_body(fdp)
        path = "/v1/chat/completions"
    elif mode == 1:
        pick = fdp.ConsumeIntInRange(0, 3)
        rid: object = (RIDS[fdp.ConsumeIntInRange(0, len(RIDS) - 1)] if pick == 0 and RIDS
                       else "kr-" + "a" * fdp.ConsumeIntInRange(0, 4000) if pick == 1 else _content(fdp))
        body = {"request_id": rid, "score": _number(fdp)}
        path = "/v1/feedback"
    else:
        path = ["/v1/chat/completions", "/v1/feedback"][fdp.ConsumeIntInRange(0, 1)]
        _post(path, fdp.ConsumeBytes(fdp.remaining_bytes()))
        return
    try:
        raw = json.dumps(body).encode()  # NaN/Infinity as JSON extensions; lone surrogates escaped
    except (ValueError, TypeError):
        return
    _post(path, raw)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
