"""Text normalisation in the embedder path (issue 30, item 3): meaning-preserving edits give the same text,
the state round-trips through a router file, and routers without it embed exactly as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knnroute.embed.encoders import CallableEmbedder
from knnroute.embed.prompt import PromptEncoder
from knnroute.embed.textnorm import MAX_CORRECTIONS, MAX_CORRECTIONS2, TextNormaliser

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


def test_version_1_prefers_the_most_frequent_word_and_is_bounded() -> None:
    norm = TextNormaliser({"cat": 5, "car": 9, "cart": 1}, version=1)  # a router file saved before version 2
    assert norm("cax") == "car"  # cat and car are one edit away; car is more frequent
    old = TextNormaliser({"ice": 50, "dice": 2, "had": 90, "hand": 3}, version=1)
    assert [old(w) for w in ("dce", "hnad", "ymbaal")] == ["ice", "had", "ymbaal"]  # as version 1 always did
    long = " ".join(["zzqx"] * 10 + ["carx"] * (MAX_CORRECTIONS + 50))
    out = norm(long).split()
    assert out[: 10] == ["zzqx"] * 10  # no vocabulary word one edit away: kept
    assert out[10 : MAX_CORRECTIONS].count("car") == MAX_CORRECTIONS - 10
    assert out[MAX_CORRECTIONS:] == ["carx"] * (len(out) - MAX_CORRECTIONS)  # past the cap: left as is


def test_version_2_weighs_the_typo_against_the_frequency() -> None:
    norm = TextNormaliser({"ice": 50, "dice": 2, "had": 90, "hand": 3, "cymbal": 2, "cymbals": 40,
                           "african": 4, "six": 30, "ski": 2, "make": 9, "are": 60})
    assert norm.version == 2
    # a dropped letter (dce <- dice) is likelier than a far key (d for i: ice), a transposition (hnad <- hand)
    # than an extra far key (n: had), unless the other word is much more frequent
    assert [norm(w) for w in ("dce", "hnad", "sik", "ake")] == ["dice", "hand", "ski", "make"]
    assert norm("icd") == "ice"  # d is beside e on the keyboard: one likely typo, no other candidate
    # two typos in one word of 5+ letters: a dropped and a doubled letter, two dropped letters
    assert [norm(w) for w in ("ymbaal", "aficn", "cymbal")] == ["cymbal", "african", "cymbal"]
    assert norm("xqzvwk") == "xqzvwk"  # nothing within two typos: kept
    assert norm("ab") == "ab" and norm("abx") == "abx"  # short words: one typo only (no vocabulary word)


def test_version_2_two_typo_search_is_bounded() -> None:
    norm = TextNormaliser({"african": 4})
    text = " ".join(["aficn"] * 3 + [f"aficn{'q' * (i % 5 + 1)}" for i in range(MAX_CORRECTIONS2 + 10)])
    out = norm(text).split()
    assert out[:3] == ["african"] * 3  # repeated words are cached, yet each counts toward the cap
    assert out[3:] == [f"aficn{'q' * (i % 5 + 1)}" for i in range(MAX_CORRECTIONS2 + 10)]  # too far anyway
    past = " ".join([f"zz{c}zz" for c in "abcdefghijklmnopqrstuvwxyz"[:MAX_CORRECTIONS2]] + ["aficn"])
    assert norm(past).split()[-1] == "aficn"  # past the two-typo cap: one typo only, and aficn is two away
    assert norm("aficn") == "african"


def test_state_round_trip_and_validation() -> None:
    for version in (1, 2):
        norm = TextNormaliser.fit(TRAIN, version)
        again = TextNormaliser.from_dict(norm.to_dict())
        assert again.vocab == norm.vocab and again.sha256() == norm.sha256() and again.version == version
    assert TextNormaliser.fit(TRAIN, 1).sha256() != TextNormaliser.fit(TRAIN).sha256()
    # a training prompt with a 300-letter word (LLMRouter has DNA sequences): the state still loads
    long = TextNormaliser.fit([*TRAIN, "Translate " + "atgc" * 75])
    assert "atgc" * 75 not in long.vocab and TextNormaliser.from_dict(long.to_dict()).vocab == long.vocab
    for bad, msg in (({"version": 3, "words": [], "counts": []}, "version 3 is not supported"),
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
