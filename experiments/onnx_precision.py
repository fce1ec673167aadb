"""Issue 31, target 3: can a faster (reduced-precision) MiniLM on ONNX Runtime keep torch's AUCs within 0.1?

Three measurements, each a subcommand (run from the repository root with real data; see docs/first-run.md for
the committed runs' host and load):

    python -m experiments.onnx_precision tolerance [--data all]
        How much embedding error the AUC tolerates: ``knnroute eval --routers knn-10,knn-100,knn-tuned --seeds 3``
        with torch's cached vectors perturbed on purpose: ``mix-T`` = normalise(torch + T (int8 - torch)) (the
        shipped int8 model's error, scaled by T), ``noise-E`` = a random direction of norm E added to each vector
        (seeded by the text, so identical texts stay identical), ``fp16``/``bf16`` = the torch vectors rounded.
        Needs the torch and the int8 (``q=int8-pc``) vectors in the embedding cache (run the eval with
        ``--embedder minilm`` and ``minilm-onnx`` first). Nothing is written to the cache.
    python -m experiments.onnx_precision variants NAME ...
        Builds int8 variants of the fp32 export and prints each one's cosine to torch on the
        ``bench.embed_onnx`` batch prompts and its CPU time per prompt (one thread, one prompt per run).
        Names: ``base`` (the shipped recipe), ``rr`` (reduce_range), ``u8w`` (uint8 weights), ``only-L3`` /
        ``only-fo`` (quantise only layer 3 / only that projection: q k v ao fi fo), ``skip-L0,L5`` /
        ``skip-fo`` (keep those in fp32), ``static`` / ``static-u8`` (calibrated QDQ, int8 / uint8
        activations), ``sq75`` (SmoothQuant with alpha 0.75: x / s by an inserted Mul,
        diag(s) W, exact in real arithmetic; MiniLM is post-LN, so s cannot be folded into the LayerNorm, whose
        output is also the residual), ``sq75+skip-fo``.
    python -m experiments.onnx_precision auc NAME [--data all]
        The same eval with a built variant (vectors not cached), written to ``eval-exp-NAME-DATA.json``.

``compare`` prints, for eval JSON files against torch's, the largest AUC difference and the rows within 0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROUTERS = "knn-10,knn-100,knn-tuned"
TORCH_ID = "all-MiniLM-L6-v2:sha256=53aa51172d142c89:seq=256"
INT8_ID = TORCH_ID + ":rt=onnxruntime:q=int8-pc"  # the int8 vectors of the runs quoted in docs/first-run.md
KINDS = {"q": "attention/self/query", "k": "attention/self/key", "v": "attention/self/value",
         "ao": "attention/output/dense", "fi": "intermediate/dense", "fo": "output/dense"}


def _eval(data: str, spec: str, out: Path) -> None:
    from knnroute.cli import main

    main(["eval", "--data", data, "--embedder", spec, "--routers", ROUTERS, "--seeds", "3", "-q", "--json", str(out)])


def _perturbed(kind: str) -> Any:
    """An uncached embedder returning torch's cached vectors, perturbed as ``kind`` says."""
    from knnroute.embed import EmbeddingCache
    from knnroute.embed.cache import text_key
    from knnroute.embed.encoders import Embedder

    class Perturbed(Embedder):
        cacheable = False
        identity = f"perturbed-{kind}"

        def __init__(self) -> None:
            self.T, self.Q = EmbeddingCache(TORCH_ID), EmbeddingCache(INT8_ID)

        @property
        def dim(self) -> int:
            return 384

        def _encode(self, items: Any, batch_size: int) -> np.ndarray:
            keys = [text_key(x) for x in items]
            found, a = self.T.get(keys)
            if not found.all() or a is None:
                raise RuntimeError("torch vectors missing from the cache: run knnroute eval --embedder minilm first")
            if kind.startswith("mix-"):
                found, b = self.Q.get(keys)
                if not found.all() or b is None:
                    raise RuntimeError("int8 vectors missing: run knnroute eval --embedder minilm-onnx first")
                v = a + float(kind[4:]) * (b - a)
            elif kind == "fp16":
                v = a.astype(np.float16).astype(np.float32)
            elif kind == "bf16":  # round to nearest bfloat16
                v = ((a.view(np.uint32) + 0x8000) & 0xFFFF0000).view(np.float32)
            else:  # noise-E
                g = np.stack([np.random.default_rng(int.from_bytes(k[:8], "little")).standard_normal(a.shape[1])
                              for k in keys]).astype(np.float32)
                v = a + float(kind[6:]) * g / np.linalg.norm(g, axis=1, keepdims=True)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    return Perturbed()


def tolerance(data: str, kinds: list[str], out_dir: Path) -> None:
    from knnroute.embed.encoders import register_embedder

    _eval(data, "minilm", out_dir / f"eval-torch-{data}.json")
    for k in kinds:
        register_embedder(f"perturbed-{k}", lambda k=k, **kw: _perturbed(k), overwrite=True)
        _eval(data, f"perturbed-{k}", out_dir / f"eval-perturbed-{k}-{data}.json")


# ------------------------------------------------------------------------------------------------ int8 variants
def _weight_matmuls(model: Any) -> list[Any]:
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def _kind_layer(name: str) -> tuple[str | None, int]:
    m = re.search(r"layer\.(\d+)/(.*)/MatMul", name)
    assert m, name
    return next((k for k, v in KINDS.items() if m.group(2) == v), None), int(m.group(1))


def _quantize(src: Path, out: Path, exclude: list[str], **kw: Any) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(out), weight_type=kw.pop("weight_type", QuantType.QInt8), per_channel=True,
                     nodes_to_exclude=exclude, op_types_to_quantize=["MatMul"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **kw)
    return out


def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    from knnroute.embed.encoders import minilm_path

    tok = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    tok.no_padding()
    return tok


def _session(file: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(file), so, providers=["CPUExecutionProvider"])


def _run(sess: Any, tok: Any, text: str, outputs: list[str] | None = None) -> list[np.ndarray]:
    ids = np.asarray(tok.encode(text).ids, dtype=np.int64)[None, :]
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return sess.run(outputs, feed)


def smooth(src: Path, out: Path, texts: list[str], alpha: float) -> Path:
    """SmoothQuant: per input channel j, s_j = max|x_j|^alpha / max|W_j.|^(1 - alpha) over the calibration texts;
    x / s through an inserted Mul (shared by the matmuls reading the same x), W rows times s."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    xs = sorted({n.input[0] for n in _weight_matmuls(model)})
    for x in xs:
        model.graph.output.append(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None))
    probe = out.with_suffix(".probe.onnx")
    onnx.save(model, str(probe))
    sess, tok = _session(probe), _tokenizer()
    amax: dict[str, Any] = {x: 0.0 for x in xs}
    for t in texts:
        for x, a in zip(xs, _run(sess, tok, t, xs), strict=True):
            amax[x] = np.maximum(amax[x], np.abs(a.reshape(-1, a.shape[-1])).max(0))
    probe.unlink()
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[Any]] = {}
    for n in _weight_matmuls(model):
        groups.setdefault(n.input[0], []).append(n)
    for x, nodes in groups.items():
        ws = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        wmax = np.max([np.abs(w).max(1) for w in ws], axis=0)
        s = (np.maximum(amax[x], 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha)).astype(np.float32)
        inv = numpy_helper.from_array(1 / s, re.sub(r"\W", "_", x) + "_smooth_inv")
        model.graph.initializer.append(inv)
        for n, w in zip(nodes, ws, strict=True):
            inits[n.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), n.input[1]))
            n.input[0] = x + "_smoothed"
        at = min(i for i, g in enumerate(model.graph.node) if g in nodes)
        model.graph.node.insert(at, helper.make_node("Mul", [x, inv.name], [x + "_smoothed"], name=x + "_smooth"))
    onnx.save(model, str(out))
    return out


def static(src: Path, out: Path, texts: list[str], u8: bool = False) -> Path:
    """Static (calibrated, MinMax over ``texts``) QDQ quantisation of the MatMuls: per-channel int8 weights,
    int8 activations (``u8``: uint8) with fixed per-tensor ranges."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    tok = _tokenizer()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(texts)

        def get_next(self) -> dict[str, np.ndarray] | None:
            t = next(self.it, None)
            if t is None:
                return None
            ids = np.asarray(tok.encode(t).ids, dtype=np.int64)[None, :]
            return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}

    act = QuantType.QUInt8 if u8 else QuantType.QInt8
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=act, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return out


def build(name: str, fp32: Path, out_dir: Path, calib: list[str]) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType

    out = out_dir / f"{name}.onnx"
    if name.startswith("static"):
        return static(fp32, out, calib, u8=name == "static-u8")
    src, rest = fp32, name
    if name.startswith("sq"):  # sq75 or sq75+skip-fo
        alpha, _, rest = name[2:].partition("+")
        src = smooth(fp32, out_dir / f".{name}-fp32.onnx", calib, int(alpha) / 100)
    nodes = [(n.name, *_kind_layer(n.name)) for n in _weight_matmuls(onnx.load(str(src)))]
    kw: dict[str, Any] = {}
    if rest.startswith("only-L"):
        exclude = [n for n, _, layer in nodes if layer != int(rest[6:])]
    elif rest.startswith("only-"):
        exclude = [n for n, k, _ in nodes if k != rest[5:]]
    elif rest.startswith("skip-"):
        parts = rest[5:].split(",")
        exclude = [n for n, k, layer in nodes if k in parts or f"L{layer}" in parts]
    else:
        exclude = []
        kw = {"rr": {"reduce_range": True}, "u8w": {"weight_type": QuantType.QUInt8}}.get(rest, {})
    return _quantize(src, out, exclude, **kw)


def variants(names: list[str], out_dir: Path) -> list[dict[str, Any]]:
    from bench.embed_onnx import prompts
    from knnroute.data import load_dataset
    from knnroute.data.hygiene import PrefixStripper
    from knnroute.embed import get_embedder
    from knnroute.embed.onnxrt import export_minilm_onnx

    batch, _, _ = prompts(False, 96, 40)
    calib, rng = [], np.random.default_rng(1)  # 64 calibration prompts from three other datasets
    for name in ("llmrouter", "routellm-gsm8k", "routerarena"):
        for ds in load_dataset(name):
            groups = None if ds.groups is None else list(ds.groups)
            texts = PrefixStripper().fit_transform(list(ds.prompts or []), groups)
            calib += [texts[i] for i in rng.choice(len(texts), 22, replace=False) if texts[i] not in batch]
    ref = get_embedder("minilm").encode(batch, progress=False)
    fp32 = export_minilm_onnx(quantize="fp32", root=out_dir)
    tok, rows = _tokenizer(), []
    for name in names:
        file = fp32 if name == "fp32" else build(name, fp32, out_dir, calib[:64])
        sess = _session(file)
        for t in batch[:4]:
            _run(sess, tok, t)
        c0 = time.process_time()
        X = np.stack([_run(sess, tok, t)[0][0] for t in batch])
        cpu_ms = 1e3 * (time.process_time() - c0) / len(batch)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        cos = (X * ref).sum(1)
        rows.append({"variant": name, "cos_min": round(float(cos.min()), 5), "cos_mean": round(float(cos.mean()), 5),
                     "err_norm_mean": round(float(np.linalg.norm(X - ref, axis=1).mean()), 4),
                     "cpu_ms_per_prompt": round(cpu_ms, 2), "load": round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def auc(name: str, data: str, out_dir: Path) -> None:
    from knnroute.embed.encoders import register_embedder
    from knnroute.embed.onnxrt import OnnxEmbedder

    def make(**kw: Any) -> Any:
        e = OnnxEmbedder(quantize="int8", onnx_path=out_dir / f"{name}.onnx", spec=f"exp-{name}")
        e.identity += f":exp={name}"
        e.cacheable = False  # experimental vectors never reach the cache
        return e

    register_embedder(f"exp-{name}", make, overwrite=True)
    _eval(data, f"exp-{name}", out_dir / f"eval-exp-{name}-{data}.json")


def compare(ref_file: Path, files: list[Path]) -> list[dict[str, Any]]:
    def table(p: Path) -> dict[tuple[str, str], float]:
        return {(r["dataset"], r["router"]): float(r["auc_mean"]) for r in json.loads(p.read_text())["summary"]
                if r["router"] in ROUTERS.split(",")}

    a, out = table(ref_file), []
    for f in files:
        b = table(f)
        d = {f"{ds}/{r}": round(b[ds, r] - a[ds, r], 3) for ds, r in a if (ds, r) in b}
        out.append({"file": f.name, "max_abs_diff": max(abs(v) for v in d.values()),
                    "rows_within_0.1": sum(abs(v) <= 0.1 for v in d.values()), "rows": len(d),
                    "over_0.1": {k: v for k, v in d.items() if abs(v) > 0.1}})
        print(json.dumps(out[-1]), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["tolerance", "variants", "auc", "compare"])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--data", default="all")
    ap.add_argument("--dir", default="onnx-precision", help="where models and eval JSON go (default ./onnx-precision)")
    args = ap.parse_args(argv)
    out_dir = Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.what == "tolerance":
        tolerance(args.data, args.names or ["mix-1.0", "mix-0.1", "mix-0.01", "mix-0.003", "noise-1e-4",
                                            "noise-1e-5", "fp16", "bf16"], out_dir)
    elif args.what == "variants":
        variants(args.names or ["fp32", "base"], out_dir)
    elif args.what == "auc":
        for n in args.names:
            auc(n, args.data, out_dir)
    else:
        compare(Path(args.names[0]), [Path(p) for p in args.names[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
