"""Markdown table from a results dict (bench/results/latest.json): ``python -m bench.table [file]``."""

from __future__ import annotations

import copy
import json
import sys

REFS = ("numpy", "faiss", "hnswlib-bf", "sklearn")


def _f(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def render(R: dict) -> str:
    b = R.get("bounds", {})
    out = []
    if b:
        out.append("### Bounds measured in this run\n")
        out.append("| threads | read bandwidth GB/s | SGEMM GFLOP/s |\n|---|---|---|")
        for t in (1, 2):
            out.append(f"| {t} | {_f(b.get(f'read_GBps_{t}t'), 1)} | {_f(b.get(f'sgemm_GFLOPs_{t}t'), 1)} |")
        out.append("")
    cases = R.get("cases", {})
    single = {k: v for k, v in cases.items() if k.startswith("single/")}
    if single:
        out.append("### Single-query route latency (search + aggregate + argmax), ms\n")
        out.append(
            "| case | f32 p50 / p99 | bf16 p50 | f16 p50 | int8 p50 | numpy | faiss | hnswlib BF | sklearn "
            "| best ref ÷ best ours | f32 bound ms | bound ÷ f32 p50 | bound ÷ best p50 | agree vs f32 |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        )
        for case, e in single.items():
            ours = {p: e.get(f"ours-{p}") for p in ("f32", "bf16", "f16", "int8")}
            f32 = ours["f32"]
            best_ours = min((v["p50_ms"] for v in ours.values() if v), default=None)
            refs = [e[r]["p50_ms"] for r in REFS if r in e]
            best_ref = min(refs) if refs else None
            agree = None
            if f32:
                agree = min(
                    sum(a == b for a, b in zip(v["routed"], f32["routed"], strict=False)) / len(f32["routed"])
                    for v in ours.values() if v
                )
            bound = f32["bound_ms"] if f32 else None

            def p(name, e=e):
                v = e.get(name)
                return _f(v["p50_ms"]) if v else "-"

            out.append(
                f"| {case[7:]} | {_f(f32 and f32['p50_ms'])} / {_f(f32 and f32['p99_ms'])} | {p('ours-bf16')} | "
                f"{p('ours-f16')} | {p('ours-int8')} | {p('numpy')} | {p('faiss')} | {p('hnswlib-bf')} | "
                f"{p('sklearn')} | {_f(best_ref / best_ours if best_ref and best_ours else None, 2)}x | "
                f"{_f(bound)} | {_f(bound / f32['p50_ms'] if f32 else None, 2)} | "
                f"{_f(bound / best_ours if bound and best_ours else None, 2)} | {_f(agree, 4)} |"
            )
        out.append("")
    for prefix, title in (("batch/", "Batch routing, 1,024 queries"), ("eval/", "Full evaluation")):
        sel = {k: v for k, v in cases.items() if k.startswith(prefix)}
        if not sel:
            continue
        out.append(f"### {title}\n")
        out.append("| case | impl | p50 ms | p99 ms | queries/s | GFLOP/s | ÷ SGEMM | best ours speed-up vs impl |\n"
                   "|---|---|---|---|---|---|---|---|")
        for case, e in sel.items():
            mine = [v for i, v in e.items() if i.startswith("ours") and v.get("p50_ms")]
            ours = min(mine, key=lambda v: v["p50_ms"]) if mine else None
            for impl, v in e.items():
                sp = ours["p50_ms"] and v["p50_ms"] / ours["p50_ms"] if ours else None
                out.append(
                    f"| {case[len(prefix):]} | {impl} | {_f(v['p50_ms'], 2)} | {_f(v['p99_ms'], 2)} | "
                    f"{_f(v.get('qps'), 0)} | {_f(v.get('gflops'), 1)} | {_f(v.get('sgemm_fraction'), 2)} | "
                    f"{_f(sp, 1)}x |"
                )
        out.append("")
    for key, title in (("memory", "Memory per support prompt"),
                       ("precision", "Reduced precision: recall and agreement"),
                       ("hnsw", "Approximate index (hnswlib)")):
        sel = {k: v for k, v in cases.items() if k.startswith(key)}
        if not sel:
            continue
        out.append(f"### {title}\n")
        for case, e in sel.items():
            cols = sorted({c for v in e.values() for c in v if not isinstance(v.get(c), list)})
            out.append(f"**{case}**\n")
            out.append("| impl | " + " | ".join(cols) + " |")
            out.append("|---" * (len(cols) + 1) + "|")
            for impl, v in e.items():
                cells = []
                for c in cols:
                    x = v.get(c)
                    cells.append(_f(x, 4) if isinstance(x, float) else ("-" if x is None else str(x)))
                out.append(f"| {impl} | " + " | ".join(cells) + " |")
            out.append("")
    e2e = {k: v for k, v in cases.items() if k.startswith("e2e/")}
    if e2e:
        out.append("### End to end: prompt text -> routed model (single prompt, 1 thread), ms\n")
        out.append("| case | impl | d | p50 | p99 | embed p50 | route p50 | embed share | MiniLM p50 ÷ p50 "
                   "| agree with library | support |\n|---|---|---|---|---|---|---|---|---|---|---|")
        for case, e in e2e.items():
            for impl, v in e.items():
                out.append(
                    f"| {case[4:]} | {impl} | {v.get('d')} | {_f(v.get('p50_ms'))} | {_f(v.get('p99_ms'))} | "
                    f"{_f(v.get('embed_p50_ms'))} | {_f(v.get('route_p50_ms'))} | {_f(v.get('embed_share'), 2)} | "
                    f"{_f(v.get('minilm_p50_ratio'), 0)}{'x' if v.get('minilm_p50_ratio') else ''} | "
                    f"{_f(v.get('agree_with_library'), 4)} | {v.get('source', '-')} |"
                )
        out.append("")
    return "\n".join(out)


def merge(base: dict, extra: dict, prefixes: tuple[str, ...]) -> dict:
    """``base`` with the cases of ``extra`` whose key starts with one of ``prefixes`` (replacing any there);
    ``extra``'s meta is kept under ``meta["merged_runs"]`` so the summary says where each case came from."""
    out = copy.deepcopy(base)
    taken = sorted(k for k in extra["cases"] if k.startswith(prefixes))
    if not taken:
        raise SystemExit(f"no case of the second file starts with {', '.join(prefixes)}")
    for k in taken:
        out["cases"][k] = extra["cases"][k]
    out["meta"].setdefault("merged_runs", []).append({"cases": taken, "meta": extra["meta"]})
    out["meta"].pop("note", None)
    return out


if __name__ == "__main__":
    # python -m bench.table [RESULTS.json]                     render a results file as markdown
    # python -m bench.table --merge BASE.json EXTRA.json PREFIX... > OUT.json
    #     BASE's cases plus EXTRA's cases whose key starts with a PREFIX (e.g. hnsw), as JSON
    if len(sys.argv) > 1 and sys.argv[1] == "--merge":
        if len(sys.argv) < 5:
            raise SystemExit("usage: python -m bench.table --merge BASE.json EXTRA.json PREFIX... > OUT.json")
        with open(sys.argv[2]) as fa, open(sys.argv[3]) as fb:
            print(json.dumps(merge(json.load(fa), json.load(fb), tuple(sys.argv[4:])), indent=1, sort_keys=True))
    else:
        path = sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json"
        with open(path) as fh:
            print(render(json.load(fh)))
