"""A team's first day with the gateway (issue 32): no silent failures, feedback straight from the SDK's
return value, one log line per request, a start-up warning for upstreams that do not resolve."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("wordllama")

from knnroute.gateway.config import load_config
from knnroute.gateway.serve import build
from tests.fake_upstream import free_port
from tests.test_gateway import KEY, QUESTIONS, router_file  # noqa: F401 - a fixture
from tests.test_gateway_security import in_thread, router_copy, upstreams, write_cfg  # noqa: F401 - a fixture


def test_fallback_is_logged_naming_the_upstream(router_file: Path, upstreams: dict[str, Any],  # noqa: F811
                                                tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    urls = {**upstreams["urls"], "coder": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    cfg = write_cfg(tmp_path, router_copy(router_file, tmp_path), urls)
    with caplog.at_level(logging.INFO, logger="knnroute.gateway"), in_thread(cfg) as (url, _):
        sdk = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=20)
        raw = sdk.chat.completions.with_raw_response.create(
            model="knnroute", messages=[{"role": "user", "content": QUESTIONS[1]}])  # coder's question
        sdk.close()
    rid, answered = raw.headers["x-knnroute-request-id"], raw.headers["x-knnroute-model"]
    assert answered != "coder"
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and rid in r.getMessage()]
    assert len(warn) == 1 and "'coder' failed (ConnectionRefusedError" in warn[0]
    assert f"answered by {answered}" in warn[0]
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.getMessage().startswith(
        f"request {rid} ")]
    assert len(info) == 1 and f"model={answered}" in info[0] and "lambda=0" in info[0] and "outcome=ok" in info[0]
    assert "fallback='coder: ConnectionRefusedError'" in info[0]


def test_feedback_from_the_sdk_return_value_alone(router_file: Path, upstreams: dict[str, Any],  # noqa: F811
                                                  tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, router_copy(router_file, tmp_path), upstreams["urls"])
    with in_thread(cfg) as (url, gw):
        sdk = openai.OpenAI(base_url=url + "/v1", api_key=KEY, timeout=20)  # default retries (2)
        done = sdk.chat.completions.create(model="knnroute", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                           extra_body={"lambda": 0.0})
        assert done.id.startswith("kr-")  # the gateway's request id, as the x-knnroute-request-id header
        out = sdk.post("/feedback", body={"request_id": done.id, "score": 1.0}, cast_to=httpx.Response)
        assert out.json()["status"] == "applied"
        dup = gw.metrics.feedback.labels("duplicate")
        before = dup._value.get()
        with pytest.raises(openai.ConflictError):
            sdk.post("/feedback", body={"request_id": done.id, "score": 0.0}, cast_to=httpx.Response)
        assert dup._value.get() == before + 1  # x-should-retry: false, so the SDK did not retry the 409
        sdk.close()


def test_start_warns_when_an_upstream_does_not_resolve(router_file: Path, tmp_path: Path,  # noqa: F811
                                                       caplog: pytest.LogCaptureFixture) -> None:
    cfg = write_cfg(tmp_path, router_copy(router_file, tmp_path),
                    {"small": "http://127.0.0.1:9", "coder": "http://no-such-host.invalid", "big": "http://127.0.0.1:9"})
    with caplog.at_level(logging.WARNING, logger="knnroute.gateway"):
        _, store = build(load_config(cfg))
        store.close()
    msgs = [r.getMessage() for r in caplog.records]
    assert any("upstream 'coder'" in m and "no-such-host.invalid" in m and "does not resolve" in m for m in msgs)
    assert not any("upstream 'small'" in m and "resolve" in m for m in msgs)


def test_certified_policies_in_config_body_and_route(router_file: Path, upstreams: dict[str, Any],  # noqa: F811
                                                     tmp_path: Path) -> None:
    import json

    from knnroute import load

    p = load(router_file)
    import numpy as np

    X, S, C = (np.asarray(a) for a in (p.core.embeddings(), p.core.scores(), p.core.costs()))
    p.calibrate_guarantee(X, S, C)  # its own rows: enough to wire the policy through (not a guarantee)
    path = tmp_path / "g.knnr"
    p.save(path)
    cfg = write_cfg(tmp_path, path, upstreams["urls"])
    cfg.write_text(cfg.read_text().replace("lambda = 0.0", "quality_floor = 0.95"))
    with in_thread(cfg) as (url, _), httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"},
                                                  timeout=20) as c:
        def chat(extra: dict[str, Any]) -> Any:
            return c.post("/v1/chat/completions", json={"model": "knnroute", **extra,
                                                        "messages": [{"role": "user", "content": QUESTIONS[0]}]})

        assert chat({}).status_code == 200
        assert chat({"strong_share": 0.3}).status_code == 200
        both = chat({"lambda": 1.0, "quality_floor": 0.9})
        assert both.status_code == 422 and "at most one" in both.json()["error"]["message"]
        assert chat({"quality_floor": 1.5}).status_code == 422
        r = c.post("/route", json={"prompt": QUESTIONS[0], "quality_floor": 0.9})
        assert r.status_code == 200 and r.json()["policy"]["policy"] == "quality_floor"
        assert r.json()["policy"]["bound"] == 0.9 and r.json()["policy"]["n"] == len(X)
    recs = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [r_["policy"]["policy"] for r_ in recs[:2]] == ["quality_floor", "strong_share"]
    assert recs[0]["policy"]["value"] == 0.95  # the config's policy for a request that names none


def test_a_policy_without_a_table_is_a_config_error(router_file: Path, upstreams: dict[str, Any],  # noqa: F811
                                                    tmp_path: Path) -> None:
    from knnroute.gateway.config import ConfigError

    cfg = write_cfg(tmp_path, router_copy(router_file, tmp_path), upstreams["urls"])
    cfg.write_text(cfg.read_text().replace("lambda = 0.0", "max_mean_cost = 0.001"))
    with pytest.raises(ConfigError, match="router.max_mean_cost: the router file has no guarantee table"):
        build(load_config(cfg))
