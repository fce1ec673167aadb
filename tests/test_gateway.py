"""The OpenAI-compatible gateway over real loopback sockets: the official ``openai`` SDK drives it (plain
and streaming) against chat-completions upstreams that the tests start; routing matches ``/route``; auth,
pass-through, fallback on dead/429/5xx/slow upstreams, sessions, feedback and its survival of ``kill -9``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("wordllama")

from knnroute.gateway.config import ConfigError, load_config
from knnroute.gateway.decisions import routed_text
from knnroute.gateway.serve import build
from knnroute.production import ProductionRouter
from knnroute.routers.knn import KNNRouter
from tests.fake_upstream import free_port, make_upstream, thread_server

NAMES = ["small", "coder", "big"]
KEY, ADMIN = "sk-test-inbound", "sk-test-admin"
CHAT = ["tell me a joke about {}", "how are you feeling about {} today", "write a short poem on {}",
        "what is your favourite {}", "say something nice about {}"]
CODE = ["write a python function that sorts a list of {}", "fix this javascript bug in the {} parser",
        "implement a binary search over {} in rust", "explain this SQL query joining {} tables",
        "refactor the C++ class that stores {}"]
MATH = ["prove that the sum of two {} numbers is even", "integrate x squared times {} from zero to one",
        "solve the quadratic equation for {} roots", "compute the derivative of the {} function",
        "what is the probability of drawing two {} cards"]
WORDS = ["cats", "trees", "rivers", "trains", "clouds", "apples", "stars", "bridges"]


def _prompts() -> tuple[list[str], np.ndarray]:
    prompts, topic = [], []
    for t, group in enumerate((CHAT, CODE, MATH)):
        for tpl in group:
            for w in WORDS:
                prompts.append(tpl.format(w))
                topic.append(t)
    return prompts, np.asarray(topic)


@pytest.fixture(scope="module")
def router_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from knnroute.embed import get_embedder

    prompts, topic = _prompts()
    X = get_embedder("wordllama").encode(prompts)
    S = np.column_stack([topic == 0, np.where(topic == 1, 1.0, 0.2), np.full(len(topic), 0.9)]).astype(float)
    C = np.tile([1e-5, 1e-4, 1e-3], (len(topic), 1))
    p = ProductionRouter(KNNRouter(k=5).fit(X, S, C, model_names=NAMES), embedder="wordllama")
    path = tmp_path_factory.mktemp("gw") / "router.knnr"
    p.save(path)
    return path


def write_config(folder: Path, router: Path, urls: dict[str, str], extra: str = "",
                 upstream_extra: str = "max_retries = 1\nbackoff_s = 0.01") -> Path:
    ups = "\n".join(f'[upstreams."{m}"]\nbase_url = "{u}/v1"\napi_key_env = "FAKE_UPSTREAM_KEY"\n'
                    f"{upstream_extra}\n" for m, u in urls.items())
    text = (f'[router]\nfile = "{router}"\nlambda = 0.0\n[server]\ndecision_log = "decisions.jsonl"\n'
            f'max_loop_lag_ms = 0\n[feedback]\nlog = "feedback.jsonl"\nsave_interval_s = 3600\n{extra}\n{ups}')
    path = folder / "gateway.toml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def gateway(cfg_path: Path) -> Iterator[tuple[str, Any]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KNNROUTE_API_KEYS", f"other-key,{KEY}")
        mp.setenv("KNNROUTE_ADMIN_KEY", ADMIN)
        mp.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret")
        app, store = build(load_config(cfg_path))
        try:
            with thread_server(app) as url:
                yield url, app.state.gateway
        finally:
            store.close()
            app.state.gateway.decisions.close()


@pytest.fixture(scope="module")
def stack(router_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as es:
        urls, scripts = {}, {}
        for m in NAMES:
            app, sc = make_upstream(m)
            urls[m] = es.enter_context(thread_server(app))
            scripts[m] = sc
        folder = tmp_path_factory.mktemp("gwcfg")
        router = folder / "router.knnr"
        router.write_bytes(router_file.read_bytes())
        url, gw = es.enter_context(gateway(write_config(folder, router, urls)))
        yield {"url": url, "gw": gw, "scripts": scripts, "folder": folder, "upstreams": urls}


_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def client(url: str, key: str = KEY) -> Any:
    c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20)
    _CLIENTS.append(c)
    return c


def route_model(url: str, text: str, lam: float) -> str:
    r = httpx.post(url + "/route", json={"prompt": text, "lambda": lam},
                   headers={"authorization": f"Bearer {KEY}"}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["model"])


QUESTIONS = ["tell me a joke about dogs", "write a python function that sorts a list of numbers",
             "integrate x squared times sine from zero to one", "what is your favourite colour"]


@pytest.mark.parametrize("lam", [0.0, 1e5])
def test_sdk_gets_the_model_route_picks(stack: dict[str, Any], lam: float) -> None:
    c, url = client(stack["url"]), stack["url"]
    seen = set()
    for q in QUESTIONS:
        want = route_model(url, q, lam)
        raw = c.chat.completions.with_raw_response.create(
            model="knnroute", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": q}],
            extra_body={"lambda": lam})
        done = raw.parse()
        assert raw.headers["x-knnroute-model"] == want
        assert raw.headers["x-knnroute-request-id"].startswith("kr-")
        assert done.model == want and done.choices[0].message.content == f"answer from {want}"
        seen.add(want)
    if lam == 0.0:
        assert seen == set(NAMES)  # the prompts reach all three models
    else:
        assert seen == {"small"}  # a high cost weight sends everything to the cheapest
    assert "lambda" not in stack["scripts"][want].bodies[-1]  # gateway fields are not forwarded
    assert stack["scripts"][want].auth[-1] == "Bearer sk-upstream-secret"


def test_sdk_streaming(stack: dict[str, Any]) -> None:
    c, url = client(stack["url"]), stack["url"]
    for q in QUESTIONS[:3]:
        want = route_model(url, q, 0.0)
        chunks = list(c.chat.completions.create(model="knnroute", messages=[{"role": "user", "content": q}],
                                                stream=True))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == f"answer from {want}"
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_pass_through_untouched(stack: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    done = client(stack["url"]).chat.completions.create(
        model="coder", messages=[{"role": "user", "content": "tell me a joke"}], tools=tools, temperature=0.3,
        extra_body={"custom_field": {"a": [1, 2]}})
    assert done.model == "coder" and done.choices[0].message.content == "answer from coder"
    body = stack["scripts"]["coder"].bodies[-1]
    assert body["tools"] == tools and body["temperature"] == 0.3 and body["custom_field"] == {"a": [1, 2]}


def test_auth_models_health_metrics(stack: dict[str, Any]) -> None:
    url = stack["url"]
    with pytest.raises(openai.AuthenticationError):
        client(url, "sk-wrong").chat.completions.create(model="knnroute",
                                                        messages=[{"role": "user", "content": "hi"}])
    assert httpx.post(url + "/route", json={"prompt": "hi"}, timeout=10).status_code == 401
    ids = [m.id for m in client(url).models.list()]
    assert ids[0] == "knnroute" and set(ids[1:]) == set(NAMES)
    h = httpx.get(url + "/health", timeout=10)  # open
    assert h.status_code == 200 and h.json()["size"] == 120
    assert httpx.get(url + "/metrics", headers={"authorization": f"Bearer {KEY}"}, timeout=10).status_code == 401
    m = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert m.status_code == 200 and "knnroute_gateway_answered_total" in m.text
    assert "sk-upstream-secret" not in m.text and KEY not in m.text
    log_text = (stack["folder"] / "decisions.jsonl").read_text()
    assert "sk-" not in log_text and "tell me a joke" not in log_text  # no keys, no prompts by default


def test_unknown_model_and_bad_body(stack: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError, match="not served here"):  # 400, as OpenAI answers
        client(stack["url"]).chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "x"}])
    r = httpx.post(stack["url"] + "/v1/chat/completions", content=b"{not json",
                   headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    with pytest.raises(openai.UnprocessableEntityError, match="no budget table"):
        client(stack["url"]).chat.completions.create(model="knnroute", messages=[{"role": "user", "content": "x"}],
                                                     extra_body={"max_cost": 0.01})
    with pytest.raises(openai.UnprocessableEntityError, match="'lambda' must be a number"):
        client(stack["url"]).chat.completions.create(model="knnroute", messages=[{"role": "user", "content": "x"}],
                                                     extra_body={"lambda": "high"})


def test_retry_then_fallback(stack: dict[str, Any]) -> None:
    url, scripts = stack["url"], stack["scripts"]
    q = QUESTIONS[1]
    want = route_model(url, q, 0.0)
    assert want == "coder"
    scripts[want].busy = 1  # one 429: retried on the same model
    raw = client(url).chat.completions.with_raw_response.create(model="knnroute",
                                                                messages=[{"role": "user", "content": q}])
    assert raw.headers["x-knnroute-model"] == want
    scripts[want].fail = 2  # 500 on every try (1 + max_retries = 2): the next model by predicted utility
    raw = client(url).chat.completions.with_raw_response.create(model="knnroute",
                                                                messages=[{"role": "user", "content": q}])
    other = raw.headers["x-knnroute-model"]
    assert other != want and raw.parse().choices[0].message.content == f"answer from {other}"
    rid = raw.headers["x-knnroute-request-id"]
    recs = [json.loads(line) for line in (stack["folder"] / "decisions.jsonl").read_text().splitlines()]
    rec = next(r for r in recs if r["request_id"] == rid)
    assert rec["model"] == other and rec["fallback_reason"].startswith(want)
    assert [a["status"] for a in rec["attempts"]] == [500, 500, 200]
    assert set(rec["predicted"]) == set(NAMES) and rec["lambda"] == 0.0


def test_dead_slow_and_all_failing(router_file: Path, tmp_path: Path) -> None:
    app, sc = make_upstream("small")
    with thread_server(app) as live:
        dead = f"http://127.0.0.1:{free_port()}"
        router = tmp_path / "router.knnr"
        router.write_bytes(router_file.read_bytes())
        cfg = write_config(tmp_path, router, {"small": live, "coder": dead, "big": dead},
                           upstream_extra="max_retries = 0\ntimeout_s = 0.5")
        with gateway(cfg) as (url, _):
            c = client(url)
            raw = c.chat.completions.with_raw_response.create(
                model="knnroute", messages=[{"role": "user", "content": QUESTIONS[1]}])
            assert raw.headers["x-knnroute-model"] == "small"  # coder is dead: fell back
            with pytest.raises(openai.APIStatusError) as e:
                c.chat.completions.create(model="big", messages=[{"role": "user", "content": "x"}])
            assert e.value.status_code == 502 and "every upstream failed" in str(e.value)
            sc.delay = 2.0  # slower than timeout_s
            with pytest.raises(openai.APIStatusError) as e:
                c.chat.completions.create(model="small", messages=[{"role": "user", "content": "x"}])
            assert e.value.status_code == 504 and "timeout" in str(e.value)


def test_session_affinity(stack: dict[str, Any]) -> None:
    c = client(stack["url"])
    sid = {"x-session-id": "conv-1"}
    first = c.chat.completions.with_raw_response.create(
        model="knnroute", messages=[{"role": "user", "content": QUESTIONS[0]}], extra_headers=sid)
    m0 = first.headers["x-knnroute-model"]
    later = c.chat.completions.with_raw_response.create(
        model="knnroute", messages=[{"role": "user", "content": QUESTIONS[2]}], extra_headers=sid)
    alone = c.chat.completions.with_raw_response.create(
        model="knnroute", messages=[{"role": "user", "content": QUESTIONS[2]}])
    assert alone.headers["x-knnroute-model"] != m0  # routed alone it goes elsewhere...
    assert later.headers["x-knnroute-model"] == m0  # ...but the conversation stays on its model
    by_user = [c.chat.completions.with_raw_response.create(
        model="knnroute", messages=[{"role": "user", "content": q}], user="alice").headers["x-knnroute-model"]
        for q in QUESTIONS[1:3]]
    assert by_user[0] == by_user[1]


def test_feedback_grows_the_router(stack: dict[str, Any]) -> None:
    url, h = stack["url"], {"authorization": f"Bearer {KEY}"}
    size0 = httpx.get(url + "/health", timeout=10).json()["size"]
    raw = client(url).chat.completions.with_raw_response.create(
        model="knnroute", messages=[{"role": "user", "content": "tell me a joke about the moon"}])
    rid = raw.headers["x-knnroute-request-id"]
    assert httpx.post(url + "/v1/feedback", json={"request_id": rid, "score": 1.5}, headers=h,
                      timeout=10).status_code == 422
    assert httpx.post(url + "/v1/feedback", json={"request_id": "kr-nope", "score": 1.0}, headers=h,
                      timeout=10).status_code == 404
    r = httpx.post(url + "/v1/feedback", json={"request_id": rid, "score": 0.0}, headers=h, timeout=10)
    assert r.status_code == 200 and r.json()["model"] == raw.headers["x-knnroute-model"]
    assert httpx.get(url + "/health", timeout=10).json()["size"] == size0 + 1
    assert httpx.post(url + "/v1/feedback", json={"request_id": rid, "score": 1.0}, headers=h,
                      timeout=10).status_code == 409
    router = stack["gw"].router
    j = NAMES.index(raw.headers["x-knnroute-model"])
    S = np.asarray(router.core.scores())[-1]
    assert S[j] == 0.0 and np.isnan(np.delete(S, j)).all()  # only the answering model is observed


def test_client_disconnect_cancels_upstream_stream(stack: dict[str, Any]) -> None:
    url, scripts = stack["url"], stack["scripts"]
    for sc in scripts.values():
        sc.stream_delay = 0.5
    try:
        before = sum(sc.stream_closed for sc in scripts.values())
        body = {"model": "knnroute", "stream": True, "messages": [{"role": "user", "content": QUESTIONS[0]}]}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {KEY}"}, timeout=10) as r:
            assert r.status_code == 200
            next(r.iter_raw())  # first event, then hang up mid-stream
        t0 = time.monotonic()
        while sum(sc.stream_closed for sc in scripts.values()) == before and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert sum(sc.stream_closed for sc in scripts.values()) == before + 1
    finally:
        for sc in scripts.values():
            sc.stream_delay = 0.0


def test_routed_text_policies() -> None:
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "one two"},
            {"role": "assistant", "content": "ans"},
            {"role": "user", "content": [{"type": "text", "text": "three"}, {"type": "image_url", "image_url": {}}]}]
    assert routed_text(msgs, "last-user") == "three"
    assert routed_text(msgs, "all-user") == "one two\nthree"  # messages joined by newlines, text as sent
    assert routed_text(msgs, "system+last-user") == "sys\nthree"
    assert routed_text(msgs, "all-user", 7) == "o\nthree"  # the last characters
    msgs[1]["content"] = "  one\n\n  two  "
    assert routed_text(msgs, "all-user") == "  one\n\n  two  \nthree"  # spacing and newlines kept


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[router]\nfile = "r.knnr"\nlambda = 1\nmax_cost = 0.1\n[upstreams.a]\nbase_url = "x"\n')
    with pytest.raises(ConfigError, match="router: .*give one of lambda, max_cost, .* not lambda and max_cost"):
        load_config(bad)
    bad.write_text('[router]\nfile = "r.knnr"\npolicy = "first"\n[upstreams.a]\nbase_url = "http://h"\n')
    with pytest.raises(ConfigError, match=r"router\.policy: Input should be"):
        load_config(bad)
    bad.write_text('[router]\nfile = "r.knnr"\n[upstreams."m.x"]\nbase_url = "http://h"\ntimeout_s = 0\n')
    with pytest.raises(ConfigError, match=r'upstreams\."m\.x"\.timeout_s: Input should be greater than 0'):
        load_config(bad)
    r = subprocess.run([sys.executable, "-m", "knnroute", "gateway", "--config", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "timeout_s" in r.stderr


def test_feedback_survives_kill_9(router_file: Path, tmp_path: Path) -> None:
    app, _ = make_upstream("all")
    with thread_server(app) as up:
        router = tmp_path / "router.knnr"
        router.write_bytes(router_file.read_bytes())
        cfg = write_config(tmp_path, router, dict.fromkeys(NAMES, up))
        env = {**os.environ, "KNNROUTE_API_KEYS": KEY, "KNNROUTE_ADMIN_KEY": ADMIN, "FAKE_UPSTREAM_KEY": "k",
               "TQDM_DISABLE": "1"}
        logs: list[Any] = []

        def start() -> tuple[subprocess.Popen[bytes], str]:
            port = free_port()
            log = open(tmp_path / "gw.log", "ab")  # noqa: SIM115 - closed at the end of the test
            logs.append(log)
            proc = subprocess.Popen([sys.executable, "-m", "knnroute", "gateway", "--config", str(cfg),
                                     "--port", str(port), "--log-level", "warning"], stdout=log,
                                    stderr=subprocess.STDOUT, env=env)
            url = f"http://127.0.0.1:{port}"
            t0 = time.monotonic()
            while True:
                assert proc.poll() is None, (tmp_path / "gw.log").read_text()[-2000:]
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        return proc, url
                assert time.monotonic() - t0 < 120, "gateway did not start"
                time.sleep(0.2)

        proc, url = start()
        try:
            size0 = httpx.get(url + "/health", timeout=5).json()["size"]
            c = client(url)
            n = 7
            for i in range(n):
                if i == 4:  # a save in the middle: the restart replays only what came after it
                    r = httpx.post(url + "/admin/save", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
                    assert r.status_code == 200 and r.json()["saved"]
                raw = c.chat.completions.with_raw_response.create(
                    model="knnroute", messages=[{"role": "user", "content": f"{QUESTIONS[i % 4]} {i}"}])
                r = httpx.post(url + "/v1/feedback", json={"request_id": raw.headers["x-knnroute-request-id"],
                                                           "score": 0.5}, headers={"authorization": f"Bearer {KEY}"},
                               timeout=10)
                assert r.status_code == 200
            assert httpx.get(url + "/health", timeout=5).json()["size"] == size0 + n
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        proc, url = start()
        try:
            assert httpx.get(url + "/health", timeout=5).json()["size"] == size0 + n
        finally:
            proc.terminate()
            proc.wait(30)
        for fh in logs:
            fh.close()
        assert KEY not in (tmp_path / "gw.log").read_text() and ADMIN not in (tmp_path / "gw.log").read_text()
        from knnroute import load

        saved = load(router)  # SIGTERM saved the file with every feedback row
        assert saved.size == size0 + n and saved.meta["feedback_seq"] == n


def test_batcher_groups_concurrent_items() -> None:
    import asyncio

    from knnroute.gateway.batching import Batcher

    sizes: list[int] = []

    def fn(items: Any) -> list[Any]:
        sizes.append(len(items))
        return [ValueError(f"bad {i}") if i == 3 else i * i for i in items]

    async def main() -> list[Any]:
        b = Batcher(fn, max_batch=8, wait_s=0.01)
        try:
            return await asyncio.gather(*[b.submit(i) for i in range(20)], return_exceptions=True)
        finally:
            await b.aclose()

    out = asyncio.run(main())
    assert [o for i, o in enumerate(out) if i != 3] == [i * i for i in range(20) if i != 3]
    assert isinstance(out[3], ValueError) and str(out[3]) == "bad 3"  # only that caller gets its error
    assert sum(sizes) == 20 and max(sizes) == 8 and len(sizes) < 20


def test_exploration_and_streamed_feedback(stack: dict[str, Any]) -> None:
    url, gw = stack["url"], stack["gw"]
    c = client(url)
    gw.cfg.feedback.explore = 1.0  # every routed request (outside sessions) goes to a random model
    try:
        got = {c.chat.completions.with_raw_response.create(
            model="knnroute", messages=[{"role": "user", "content": QUESTIONS[1]}]).headers["x-knnroute-model"]
            for _ in range(30)}
    finally:
        gw.cfg.feedback.explore = 0.0
    assert len(got) >= 2  # routed alone, this prompt always goes to "coder"
    recs = [json.loads(line) for line in (stack["folder"] / "decisions.jsonl").read_text().splitlines()]
    assert sum(r.get("explore") is True for r in recs) >= 30
    with c.chat.completions.with_streaming_response.create(
            model="knnroute", messages=[{"role": "user", "content": QUESTIONS[0]}], stream=True) as resp:
        rid = resp.headers["x-knnroute-request-id"]
        text = "".join(line for line in resp.iter_lines())
    assert text.endswith("data: [DONE]") and "chat.completion.chunk" in text
    r = httpx.post(url + "/v1/feedback", json={"request_id": rid, "score": 1.0},
                   headers={"authorization": f"Bearer {KEY}"}, timeout=10)
    assert r.status_code == 200 and r.json()["model"] == resp.headers["x-knnroute-model"]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")  # litellm's own, at import
def test_litellm_reaches_the_gateway(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of LiteLLM's price map
    litellm = pytest.importorskip("litellm")
    url = stack["url"]
    for q in QUESTIONS[:3]:
        want = route_model(url, q, 0.0)
        r = litellm.completion(model="openai/knnroute", api_base=url + "/v1", api_key=KEY, num_retries=0,
                               messages=[{"role": "user", "content": q}], timeout=20)
        assert r.choices[0].message.content == f"answer from {want}"
    chunks = litellm.completion(model="openai/knnroute", api_base=url + "/v1", api_key=KEY, stream=True,
                                messages=[{"role": "user", "content": QUESTIONS[1]}], timeout=20)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert text == f"answer from {route_model(url, QUESTIONS[1], 0.0)}"


def test_start_warnings_name_the_online_learning_options(router_file: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A router file without an exploration policy or a half-life: the gateway's start-up warnings name the
    fit options that fix them; a file fitted with both (as `knnroute fit --explore --half-life` stores them)
    gets neither warning, and its policy and half-life are the ones the gateway uses."""
    from knnroute.embed import get_embedder

    def warnings(router: Path) -> list[str]:
        caplog.clear()
        cfg = write_config(tmp_path, router, {m: "http://127.0.0.1:9" for m in NAMES})
        with caplog.at_level("WARNING", logger="knnroute.gateway"), gateway(cfg):
            pass
        return [r.getMessage() for r in caplog.records]

    got = " ".join(warnings(router_file))
    assert "knnroute fit --explore" in got and "knnroute fit --half-life" in got
    prompts, topic = _prompts()
    X = get_embedder("wordllama").encode(prompts)
    S = np.column_stack([topic == 0, topic == 1, topic == 2]).astype(float)
    C = np.tile([1e-5, 1e-4, 1e-3], (len(topic), 1))
    online = tmp_path / "online.knnr"
    prod = ProductionRouter(KNNRouter(k=5, half_life=50.0).fit(X, S, C, model_names=NAMES), embedder="wordllama")
    prod.meta["explore"] = {"name": "ucb", "scale": 0.25}
    prod.save(online)
    got = " ".join(warnings(online))
    assert "--explore" not in got and "--half-life" not in got
    from knnroute.gateway.config import load_config
    from knnroute.gateway.learning import explore_policy
    from knnroute.gateway.serve import build

    cfg = load_config(write_config(tmp_path, online, {m: "http://127.0.0.1:9" for m in NAMES}))
    app, store = build(cfg, load_embedder=False)
    try:
        assert store.router.half_life == 50.0
        pol = app.state.gateway.explore_policy
        assert (pol.name, pol.scale) == ("ucb", 0.25) and pol == explore_policy(None, store.router.meta)
    finally:
        store.close()
