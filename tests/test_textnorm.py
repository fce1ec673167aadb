"""Text normalisation in the embedder path (issue 30, item 3): meaning-preserving edits give the same text,
the state round-trips through a router file, and routers without it embed exactly as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knnroute.embed.encoders import CallableEmbedder
from knnroute.embed.prompt import PromptEncoder
from knnroute.embed.textnorm import MAX_CORRECTIONS, TextNormaliser

TRAIN = [
    "What is the capital city of France?",
    "Write a function to reverse a linked list in Python.",
    "Explain photosynthesis to a ten year old.",
    "Which number should be written in place of the question mark?",
    "Translate the following sentence into German: the weather is nice today.",
]


def test_meaning_preserving_edits_give_the_same_text() -> None:
    norm = TextNormaliser.fit(TRAIN)
    base = norm(TRAIN[1])
    assert base == "write a function to reverse a linked list in python"
    for edited in ("write a function to reverse a linked list in python",          # case
                   "  Write a  function to reverse a linked list in Python.\n",  # whitespace
                   "Write a function, to reverse a linked list in Python",       # punctuation
                   "Write a funtcion to reverse a linked list in Python.",       # typo: transposition
                   "Write a function to revrse a linked lisst in Python.",       # two typos
                   "Please help me with this: Write a function to reverse a linked list in Python.",
                   "Hi! Could you write a function to reverse a linked list in Python?"):
        assert norm(edited) == base, edited
    # words in the vocabulary stay, unknown words with no near neighbour stay, an empty text is "?"
    assert norm("Explain quantum chromodynamics") == "explain quantum chromodynamics"
    assert norm("?!...") == "?"
    assert TextNormaliser()("Hello,   Goodbye  World") == "goodbye world"  # no vocabulary: no spelling


def test_correction_prefers_the_most_frequent_word_and_is_bounded() -> None:
    norm = TextNormaliser({"cat": 5, "car": 9, "cart": 1})
    assert norm("cax") == "car"  # cat and car are one edit away; car is more frequent
    long = " ".join(["zzqx"] * 10 + ["carx"] * (MAX_CORRECTIONS + 50))
    out = norm(long).split()
    assert out[: 10] == ["zzqx"] * 10  # no vocabulary word one edit away: kept
    assert out[10 : MAX_CORRECTIONS].count("car") == MAX_CORRECTIONS - 10
    assert out[MAX_CORRECTIONS:] == ["carx"] * (len(out) - MAX_CORRECTIONS)  # past the cap: left as is


def test_state_round_trip_and_validation() -> None:
    norm = TextNormaliser.fit(TRAIN)
    again = TextNormaliser.from_dict(norm.to_dict())
    assert again.vocab == norm.vocab and again.sha256() == norm.sha256()
    for bad, msg in (({"version": 2, "words": [], "counts": []}, "version 2 is not supported"),
                     ({"version": 1, "words": ["a"], "counts": []}, "same length"),
                     ({"version": 1, "words": ["a"], "counts": [0]}, "positive integers"),
                     ({"version": 1, "words": [""], "counts": [1]}, "non-empty strings"),
                     ({"version": 1, "words": [], "counts": [], "x": 1}, "must be an object"),
                     ({"version": "1", "words": [], "counts": []}, "must be an integer")):
        with pytest.raises(ValueError, match=msg):
            TextNormaliser.from_dict(bad)


def _recording_embedder(seen: list[str]) -> CallableEmbedder:
    def fn(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        out = np.zeros((len(texts), 8), np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % 8] = 1.0
            out[i, (len(t) // 8) % 8] += 0.5
        return out

    return CallableEmbedder(fn, identity="recording-test", dim=8)


def test_encoder_normalises_only_when_recorded() -> None:
    seen: list[str] = []
    emb = _recording_embedder(seen)
    PromptEncoder(emb).encode(["Hello, World!"])
    PromptEncoder(emb).encode_one("Hello, World!")
    assert seen == ["Hello, World!", "Hello, World!"]  # a router without text_norm: the text as sent
    seen.clear()
    enc = PromptEncoder(emb, text_norm=TextNormaliser.fit(["goodbye world"]))
    a, b = enc.encode(["Goodbye, Wrold!"]), enc.encode_one("  goodbye world")
    assert seen == ["goodbye world", "goodbye world"] and np.array_equal(a[0], b)
    assert enc.to_dict()["text_norm"]["words"] == ["goodbye", "world"]


def test_router_file_keeps_the_normaliser_and_old_files_route_as_before(tmp_path: Path) -> None:
    from knnroute import production
    from knnroute.embed import get_embedder
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    wl = get_embedder("wordllama")
    norm = TextNormaliser.fit(TRAIN)
    rng = np.random.default_rng(0)
    S = rng.random((len(TRAIN), 2)).astype(np.float32)
    C = np.tile(np.float32([0.001, 0.01]), (len(TRAIN), 1))
    for with_norm in (True, False):
        texts = norm.transform(TRAIN) if with_norm else TRAIN
        knn = KNNRouter(k=2).fit(wl.encode(texts, progress=False), S, C, model_names=["a", "b"])
        enc = PromptEncoder(wl, text_norm=norm if with_norm else None)
        f = ProductionRouter(knn, embedder=enc).save(tmp_path / f"r{with_norm}.knnr")
        r = production.load(f)
        prompt = "Please, whta is the capital city of France"
        if with_norm:
            assert r.encoder.text_norm is not None and r.encoder.text_norm.sha256() == norm.sha256()
            assert np.array_equal(r.embed_one(prompt), wl.encode_one(norm(prompt)))
            _same_answer_over_http(r, [TRAIN[0], "what is the capital city of france", prompt])
        else:  # a file without text_norm (as every file saved before it) embeds the raw text
            assert r.encoder.text_norm is None and "text_norm" not in r.embedder_info
            assert np.array_equal(r.embed_one(prompt), wl.encode_one(prompt))


def _same_answer_over_http(router: object, prompts: list[str]) -> None:
    """``POST /route`` (and the gateway, which embeds through the same router after ``route_text``) answers
    every variant of a prompt the same way."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from knnroute.service.app import create_app
    from knnroute.service.text import route_text

    with TestClient(create_app(router)) as c:  # type: ignore[arg-type]
        answers = [c.post("/route", json={"prompt": p, "lambda": 10.0}).json() for p in prompts]
    assert all(a == answers[0] for a in answers[1:]), answers
    vecs = [router.embed([route_text(p)])[0] for p in prompts]  # type: ignore[attr-defined]
    assert all(np.array_equal(v, vecs[0]) for v in vecs[1:])
