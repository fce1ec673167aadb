"""Image + text routing: the EfficientNet-Lite0 image embedder (offline), fusion, the MATH-V loader, the
evaluation views, and the Python API / HTTP service with an image.

Cold-cache cost: the image tests embed a handful of generated images (and 3 real MATH-V ones); the text
side uses a deterministic stand-in embedder except in the one MiniLM test. Nothing embeds all 3,040
MATH-V images (``knnroute eval --data math-v`` does that, outside the test suite).
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")
PIL_Image = pytest.importorskip("PIL.Image")

from knnroute.embed import CallableEmbedder, get_embedder
from knnroute.embed.image import (
    IMAGE_DIM,
    EfficientNetLite0Embedder,
    ImageRef,
    embed_images,
    image_bytes,
)
from knnroute.embed.multimodal import MultimodalEmbedder, MultimodalInput, embed_blocks, fuse


# ------------------------------------------------------------------------------------------ fixtures
def _png(seed: int, size: tuple[int, int] = (96, 64), mode: str = "RGB") -> bytes:
    """A small generated image (seeded noise with a shape drawn on it), PNG bytes."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    arr[size[1] // 4 : size[1] // 2, size[0] // 4 : size[0] // 2] = (seed * 37) % 256
    im = PIL_Image.fromarray(arr, "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("images")
    out = []
    for i in range(5):
        p = d / f"img{i}.png"
        p.write_bytes(_png(i, mode="RGBA" if i == 4 else "RGB"))
        out.append(p)
    return out


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0Embedder:
    return EfficientNetLite0Embedder()


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("KNNROUTE_CACHE", str(d))
    return d


def _fake_text_vectors(texts: list[str]) -> np.ndarray:
    """Deterministic 8-d text 'embedding' (character histogram by a hash): a stand-in for MiniLM."""
    out = np.zeros((len(texts), 8), dtype=np.float32)
    for i, t in enumerate(texts):
        for ch in t:
            out[i, (ord(ch) * 2654435761) % 8] += 1.0
        out[i, 0] += 0.5
    return out


FAKE_TEXT = CallableEmbedder(_fake_text_vectors, identity="test-fake-text-v1", dim=8)


# ------------------------------------------------------------------------------------ image embedder
def test_image_embedder_shape_norm_determinism(lite0: EfficientNetLite0Embedder, image_files: list[Path]) -> None:
    X = lite0.encode([str(p) for p in image_files], progress=False)
    assert X.shape == (len(image_files), IMAGE_DIM) and X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)
    # bit-identical on a second run and in another order (each image runs alone through the network)
    Y = lite0.encode([str(p) for p in image_files[::-1]], progress=False)[::-1]
    np.testing.assert_array_equal(X, Y)
    # distinct images give distinct vectors
    G = X @ X.T
    assert (G[~np.eye(len(X), dtype=bool)] < 0.999).all()
    assert lite0.identity.startswith("efficientnet-lite0:sha256=")


def test_image_features_are_the_classifier_input(lite0: EfficientNetLite0Embedder, image_files: list[Path]) -> None:
    """Independent check of the feature: the library's own forward (pool -> dropout(eval) -> fc) applied to
    the same input gives the logits we get by putting our un-normalised pooled feature through ``_fc``."""
    model = lite0._load()
    x = torch.from_numpy(lite0.preprocess(image_files[0].read_bytes()))[None]
    with torch.inference_mode():
        logits = model(x)[0]
        feat = model.extract_features(x).mean(dim=(2, 3))
        ours = model._fc(feat)[0]
    torch.testing.assert_close(ours, logits, rtol=1e-5, atol=1e-5)
    v = lite0.encode([str(image_files[0])], progress=False)[0]
    f = feat[0].numpy()
    np.testing.assert_allclose(v, f / np.linalg.norm(f), rtol=1e-5, atol=1e-6)


def test_image_inputs_path_bytes_base64_agree(lite0: EfficientNetLite0Embedder, image_files: list[Path]) -> None:
    raw = image_files[1].read_bytes()
    b64 = base64.b64encode(raw).decode()
    items = [str(image_files[1]), image_files[1], raw, b64, "data:image/png;base64," + b64, ImageRef(raw)]
    X = lite0.encode(items, progress=False)
    for row in X[1:]:
        np.testing.assert_array_equal(row, X[0])
    assert image_bytes(b64) == raw


def test_image_errors(lite0: EfficientNetLite0Embedder, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        image_bytes(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="base64"):
        image_bytes("not an image at all!")
    with pytest.raises(ValueError, match="not a readable image"):
        lite0.encode([b"definitely not a PNG"], progress=False)
    with pytest.raises(TypeError):
        image_bytes(12345)


def test_embed_images_cache_by_bytes(
    lite0: EfficientNetLite0Embedder, image_files: list[Path], private_cache: Path, tmp_path: Path
) -> None:
    paths = [str(p) for p in image_files[:3]]
    st1: dict = {}
    A = embed_images(paths + [paths[0]], lite0, stats=st1, progress=False)
    assert st1["n_encoded"] == 3 and st1["n_unique"] == 3
    np.testing.assert_array_equal(A[0], A[3])
    # a renamed copy of the same bytes hits the cache (the key is the bytes' hash, not the path)
    copy = tmp_path / "renamed.png"
    copy.write_bytes(image_files[0].read_bytes())
    st2: dict = {}
    B = embed_images([str(copy), paths[1], paths[2]], lite0, stats=st2, progress=False)
    assert st2["n_cached"] == 3 and st2["n_encoded"] == 0
    np.testing.assert_array_equal(B, A[:3])
    assert any(private_cache.iterdir())


# ------------------------------------------------------------------------------------------- fusion
def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("w", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_fuse_cosine_is_weighted_mean(w: float) -> None:
    rng = np.random.default_rng(1)
    T, Im = _unit(rng, 20, 7), _unit(rng, 20, 5)
    has = np.ones(20, dtype=bool)
    F = fuse(T, Im, has, w)
    assert F.shape == (20, 12) and F.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(F, axis=1), 1.0, atol=1e-6)
    want = (1 - w) * (T @ T.T) + w * (Im @ Im.T)  # the definition, from the blocks
    np.testing.assert_allclose(F @ F.T, want, atol=1e-5)


def test_fuse_items_without_image() -> None:
    rng = np.random.default_rng(2)
    T, Im = _unit(rng, 6, 4), _unit(rng, 6, 3)
    has = np.array([True, False, True, False, True, True])
    Im[~has] = 0.0
    for w in (0.0, 0.3, 1.0):
        F = fuse(T, Im, has, w)
        np.testing.assert_allclose(F[~has, :4], T[~has], atol=1e-6)  # text alone, unit norm
        np.testing.assert_array_equal(F[~has, 4:], 0.0)
        # against an item with an image: sqrt(1 - w) * text cosine
        np.testing.assert_allclose(F[1] @ F[0], math.sqrt(1 - w) * (T[1] @ T[0]), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fuse(T, Im, has, 1.5)
    with pytest.raises(ValueError, match="line up"):
        fuse(T, Im[:3], has, 0.5)


def test_multimodal_embedder_blocks_and_spec(image_files: list[Path], private_cache: Path) -> None:
    emb = MultimodalEmbedder(0.3, text=FAKE_TEXT, image="efficientnet-lite0")
    items = [
        MultimodalInput("a triangle", (str(image_files[0]),)),
        {"text": "two pictures", "images": [str(image_files[1]), str(image_files[2])]},
        "text only",
    ]
    X = emb.encode(items, progress=False)
    assert X.shape == (3, 8 + IMAGE_DIM)
    T, Im, has = embed_blocks(items, FAKE_TEXT, "efficientnet-lite0", progress=False)
    assert has.tolist() == [True, True, False]
    # two images: the normalised mean of their vectors
    V = get_embedder("efficientnet-lite0").encode([str(image_files[1]), str(image_files[2])], progress=False)
    m = V.sum(axis=0)
    np.testing.assert_allclose(Im[1], m / np.linalg.norm(m), atol=1e-6)
    np.testing.assert_allclose(X, fuse(T, Im, has, 0.3), atol=1e-7)
    # the spec of a registered pair rebuilds the same embedder
    e2 = get_embedder("multimodal:w=0.3:text=minilm:image=efficientnet-lite0")
    assert e2.image_weight == 0.3 and e2.spec == "multimodal:w=0.3:text=minilm:image=efficientnet-lite0"
    with pytest.raises(ValueError, match="not an image model"):
        MultimodalEmbedder(0.3, text=FAKE_TEXT, image=FAKE_TEXT)


# ------------------------------------------------------------------------------------ MATH-V loader
@pytest.mark.realdata
def test_mathv_loader_counts(real_data: Path) -> None:
    from knnroute.data import list_real_datasets, load_dataset

    assert "math-v" in list_real_datasets()
    (ds,) = load_dataset("math-v")
    assert ds.n == 3040 and len(set(ds.ids.tolist())) == 3040
    # 15 per-item result files besides Random-Chance (SOURCE.md says 14 but lists 15 names)
    assert ds.n_models == 15 and "Random-Chance" not in ds.model_names
    assert {"GPT4-CoT (Text Only)", "Gemini-Pro", "SPHINX-MoE", "LLaVA-v1.5-7B"} <= set(ds.model_names)
    assert not np.isnan(ds.scores).any() and set(np.unique(ds.scores)) <= {0.0, 1.0}
    assert (ds.costs > 0).all()
    imgs = ds.meta["images"]
    assert len(imgs) == 3040 and all(Path(p).is_file() for p in imgs[:50])
    assert ds.meta["modality"] == "text+image"
    # per-setup accuracy equals the official summaries shipped beside each file (independent numbers)
    out = real_data / "math-v" / "outputs"
    for j, name in enumerate(ds.model_names):
        (summary,) = list(out.rglob(f"{name}_result.json"))
        ok, total = json.loads(summary.read_text())["-all"].split("=")[0].split("/")
        assert int(total) == 3040 and int(ds.scores[:, j].sum()) == int(ok), name
    # the oracle / best-single figures SOURCE.md quotes (about 64% and 18%), and the 1,094 unsolved
    best = ds.scores.max(axis=1)
    assert abs(best.mean() - 0.64) < 0.01 and int((best == 0).sum()) == 1094
    assert abs(ds.scores.mean(axis=0).max() - 0.18) < 0.01
    # one cost cell by the documented formula
    rec = json.loads((out / "closed-source/GPT/GPT4-CoT (Text Only).jsonl").read_text().splitlines()[0])
    j = ds.model_names.index("GPT4-CoT (Text Only)")
    want = (len(ds.prompts[0]) / 4 * 10.0 + max(1.0, len(rec["response"]) / 4) * 30.0) / 1e6
    assert ds.costs[0, j] == pytest.approx(want, rel=1e-12)
    (with_random,) = load_dataset("math-v", include_random=True)
    assert with_random.n_models == 16
    sub = ds.subset([0, 5])
    assert list(sub.meta["images"]) == [imgs[0], imgs[5]]


@pytest.mark.realdata
def test_mathv_folder_path_and_real_images(real_data: Path, private_cache: Path) -> None:
    from knnroute.data import load_dataset

    (ds,) = load_dataset(real_data / "math-v", setups=["Gemini-Pro", "SPHINX-MoE"])
    assert ds.model_names == ["Gemini-Pro", "SPHINX-MoE"]
    X = embed_images(list(ds.meta["images"][:3]), progress=False)
    assert X.shape == (3, IMAGE_DIM)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="no per-item file"):
        load_dataset(real_data / "math-v", setups=["GPT-9"])


# -------------------------------------------------------------------------------- evaluation views
def _mm_evaldata(n: int = 240, seed: int = 0):  # type: ignore[no-untyped-def]
    """Synthetic multimodal problem where the image block carries the signal and the text is noise."""
    from knnroute.evaluate.runner import EvalData

    rng = np.random.default_rng(seed)
    T, Im = _unit(rng, n, 6), _unit(rng, n, 5)
    good = Im[:, 0] > 0  # model 1 is right exactly when the image's first coordinate is positive
    scores = np.stack([np.full(n, 0.5), good.astype(float)], axis=1)
    costs = np.tile([1e-4, 1e-3], (n, 1))
    return EvalData(
        "mm-toy", T, scores, costs, ["cheap", "vision"], meta={"image_X": Im, "has_image": np.ones(n, bool)}
    )


def test_eval_views() -> None:
    from knnroute.evaluate.runner import resolve_routers, run_one

    data = _mm_evaldata()
    plain = run_one(data, "knn-10", 0).records[0]
    text = run_one(data, "knn-10@text", 0).records[0]
    assert text["router"] == "knn-10@text" and text["auc"] == plain["auc"]
    img = run_one(data, "knn-10@image", 0).records[0]
    fused = run_one(data, "knn-10@fused", 0)
    rec = fused.records[0]
    assert rec["image_weight"] in {0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0}
    assert [r["image_weight"] for r in fused.extra["fusion"]][:2] == [0.0, 0.05]
    # the validation choice is the best row of its own table; the image carries the signal here
    assert rec["fusion_val_auc"] == max(r["val_auc"] for r in fused.extra["fusion"])
    assert rec["image_weight"] >= 0.5 and img["auc"] > text["auc"]
    # text-only data: no image rows
    from dataclasses import replace

    assert run_one(replace(data, meta={}), "knn-10@image", 0).records == []
    assert "knn-100@fused" in resolve_routers("knn-100@fused,linear@image")
    with pytest.raises(ValueError, match="unknown router"):
        resolve_routers("knn-100@audio")


# ------------------------------------------------------------------------------- API and the service
@pytest.fixture
def mm_router(image_files: list[Path], private_cache: Path):  # type: ignore[no-untyped-def]
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    emb = MultimodalEmbedder(0.5, text=FAKE_TEXT, image="efficientnet-lite0")
    items = [MultimodalInput(f"question {i % 3}", (str(image_files[i % 4]),)) for i in range(12)]
    X = emb.encode(items, progress=False)
    rng = np.random.default_rng(0)
    S = rng.random((12, 3))
    C = np.tile([1e-4, 1e-3, 1e-2], (12, 1))
    knn = KNNRouter(k=3).fit(X, S, C, model_names=["a", "b", "c"])
    return ProductionRouter(knn, embedder=emb), emb


def test_production_routes_prompt_with_image(mm_router, image_files: list[Path]) -> None:  # type: ignore[no-untyped-def]
    prod, emb = mm_router
    path = str(image_files[2])
    b64 = base64.b64encode(image_files[2].read_bytes()).decode()
    x = emb.encode([MultimodalInput("question 1", (path,))], progress=False)[0]
    want = prod.decide(x, lam=0.0)
    got = prod.route_prompt("question 1", lam=0.0, image=path)
    assert got.model == want.model and np.allclose(got.s_hat, want.s_hat)
    assert prod.route_prompts(["question 1", "question 2"], lam=0.0, images=[b64, None])[0] == want.model
    # no image: the text alone (the fused vector of a text-only item)
    xt = emb.encode(["question 2"], progress=False)[0]
    assert prod.route_prompt("question 2", lam=0.0).model == prod.decide(xt, lam=0.0).model
    with pytest.raises(ValueError, match="one entry"):
        prod.route_prompts(["q"], images=[path, path])


def test_text_router_rejects_images(image_files: list[Path]) -> None:
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    X = FAKE_TEXT.encode(["a", "b", "c", "d"], progress=False)
    knn = KNNRouter(k=2).fit(X, np.eye(4)[:, :2], np.ones((4, 2)) * 1e-3, model_names=["m0", "m1"])
    prod = ProductionRouter(knn, embedder=FAKE_TEXT)
    with pytest.raises(ValueError, match="takes text only"):
        prod.route_prompts(["a"], images=[str(image_files[0])])


def test_service_route_with_image(mm_router, image_files: list[Path]) -> None:  # type: ignore[no-untyped-def]
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from knnroute.service.app import create_app
    from tests.test_serve import thread_server

    prod, _ = mm_router
    raw = image_files[3].read_bytes()
    b64 = base64.b64encode(raw).decode()
    want = prod.route_prompt("question 0", lam=0.0, image=str(image_files[3]))
    app = create_app(prod, image_dir=image_files[0].parent)
    with thread_server(app) as url:
        r = httpx.post(url + "/route", json={"prompt": "question 0", "image": b64, "lambda": 0.0}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == want.model
        for m, p in body["predicted"].items():
            assert p["score"] == pytest.approx(float(want.s_hat[prod.model_names.index(m)]), abs=1e-6)
        # a file name under the service's image folder, a data URL, and the batch endpoint agree
        r2 = httpx.post(url + "/route", json={"prompt": "question 0", "image": image_files[3].name, "lambda": 0.0})
        r3 = httpx.post(
            url + "/route/batch",
            json={"items": [{"prompt": "question 0", "images": ["data:image/png;base64," + b64], "lambda": 0.0}]},
        )
        assert r2.json()["model"] == want.model and r3.json()["results"][0]["model"] == want.model
        bad = httpx.post(url + "/route", json={"prompt": "q", "image": "%%% not base64 %%%"})
        assert bad.status_code == 422 and "base64" in bad.text
        outside = httpx.post(url + "/route", json={"prompt": "q", "image": "../../../../etc/hostname"})
        assert outside.status_code == 422
        emb_img = httpx.post(url + "/route", json={"embedding": [0.1] * prod.dim, "image": b64})
        assert emb_img.status_code == 422 and "prompt" in emb_img.text


def test_multimodal_router_file_round_trip(image_files: list[Path], private_cache: Path, tmp_path: Path) -> None:
    """A router fitted on fused embeddings saves its embedder spec; the loaded router rebuilds the text +
    EfficientNet-Lite0 pair from it (through the registry) and routes a prompt + image exactly as before."""
    import knnroute
    from knnroute.embed import register_embedder
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    register_embedder("test-fake-text", lambda: FAKE_TEXT, overwrite=True)
    emb = MultimodalEmbedder(0.3, text="test-fake-text")
    items = [MultimodalInput(f"problem {i}", (str(image_files[i % 5]),)) for i in range(10)]
    X = emb.encode(items, progress=False)
    rng = np.random.default_rng(3)
    knn = KNNRouter(k=5).fit(X, rng.random((10, 2)), np.tile([1e-4, 1e-3], (10, 1)), model_names=["m0", "m1"])
    prod = ProductionRouter(knn, embedder=emb)
    assert prod.embedder_info["spec"] == "multimodal:w=0.3:text=test-fake-text:image=efficientnet-lite0"
    prod.save(tmp_path / "mm.knnr")
    loaded = knnroute.load(tmp_path / "mm.knnr")
    a = prod.route_prompt("problem 3", lam=0.0, image=str(image_files[3]))
    b = loaded.route_prompt("problem 3", lam=0.0, image=str(image_files[3]))
    assert a.model == b.model
    np.testing.assert_array_equal(np.asarray(a.s_hat), np.asarray(b.s_hat))
    # the query is support row 3 itself: its nearest neighbour at similarity 1
    x = loaded.embed(["problem 3"], [str(image_files[3])])[0]
    np.testing.assert_allclose(x @ X[3], 1.0, atol=1e-5)


def test_serve_cli_passes_image_dir(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``knnroute serve --image-dir DIR`` hands DIR to the service (file-path images allowed inside it)."""
    import knnroute.service.app as serve_mod
    from knnroute.cli import main

    seen: dict = {}

    def fake_serve(router_path, host, port, **kw):  # type: ignore[no-untyped-def]
        seen.update(kw, router_path=router_path)

    monkeypatch.setattr(serve_mod, "serve", fake_serve)
    assert main(["serve", "--router", str(tmp_path / "r.knnr"), "--image-dir", str(tmp_path)]) == 0
    assert seen["image_dir"] == str(tmp_path) and seen["router_path"] == str(tmp_path / "r.knnr")
    seen.clear()
    assert main(["serve", "--router", str(tmp_path / "r.knnr")]) == 0
    assert seen["image_dir"] is None
