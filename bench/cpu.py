"""Which OpenBLAS kernel the benchmark references run, read from what this CPU supports.

Standard library only: ``bench/conftest.py`` calls :func:`choose_openblas_coretype` before NumPy or faiss load
a BLAS, because OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when it loads.

Why set it at all: the faiss-cpu wheel bundles its own OpenBLAS, which mis-detected an AMD Zen 4 VM and chose an
old kernel (batch search 5-10x slower than with SkylakeX). Why not always ``SkylakeX``: that kernel executes
AVX-512 instructions, and on an AVX2-only CPU (AMD Zen 3, seen in CI) the process dies with SIGILL.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

# The CPU flags (as /proc/cpuinfo names them) that each OpenBLAS x86 kernel executes. A kernel not listed
# here runs on any x86-64 CPU this project builds for.
AVX512_BASE = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
AVX2_BASE = frozenset({"avx2", "fma"})
KERNEL_NEEDS: dict[str, frozenset[str]] = {
    "sapphirerapids": AVX512_BASE | {"avx512_bf16", "amx_tile"},
    "cooperlake": AVX512_BASE | {"avx512_bf16"},
    "skylakex": AVX512_BASE,
    "zen": AVX2_BASE,
    "haswell": AVX2_BASE,
    "sandybridge": frozenset({"avx"}),
}


@dataclass(frozen=True)
class CoretypeChoice:
    """The value to export (``None``: leave ``OPENBLAS_CORETYPE`` unset), why, and the CPU it was read from."""

    coretype: str | None
    reason: str
    model: str


def read_cpuinfo(path: str | Path = "/proc/cpuinfo") -> tuple[str, str, frozenset[str]]:
    """(vendor, model name, flags) of the first processor in a Linux ``/proc/cpuinfo``; empty when unreadable."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "", "", frozenset()
    vendor = model = ""
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if not line.strip() and flags:  # the end of the first processor's block
            break
    return vendor, model, flags


def choose_openblas_coretype(
    preset: str | None, cpuinfo: tuple[str, str, frozenset[str]] | None = None, machine: str | None = None
) -> CoretypeChoice:
    """The OpenBLAS kernel for this CPU.

    ``preset`` (the environment's ``OPENBLAS_CORETYPE``) is kept when the CPU can run it: some hosts set it on
    purpose. Otherwise: ``SkylakeX`` with AVX-512 (F, CD, BW, DQ, VL), ``Zen`` on AMD with AVX2 and FMA,
    ``Haswell`` on other CPUs with AVX2 and FMA, and unset (OpenBLAS detects) on anything else, ARM included.
    """
    machine = (machine or platform.machine()).lower()
    if machine not in {"x86_64", "amd64", "i686", "i386"}:
        return CoretypeChoice(None, f"not x86 ({machine}): OpenBLAS detects the kernel itself", "")
    vendor, model, flags = read_cpuinfo() if cpuinfo is None else cpuinfo
    if not flags:
        return CoretypeChoice(None, "CPU flags unreadable: OpenBLAS detects the kernel itself", model)
    if preset:
        missing = sorted(KERNEL_NEEDS.get(preset.strip().lower(), frozenset()) - flags)
        if not missing:
            return CoretypeChoice(preset, f"kept from the environment ({preset}); the CPU runs it", model)
        dropped = f"environment asked for {preset}, which needs {', '.join(missing)} that this CPU lacks; "
    else:
        dropped = ""
    if AVX512_BASE <= flags:
        return CoretypeChoice("SkylakeX", dropped + "CPU has AVX-512 F/CD/BW/DQ/VL", model)
    if AVX2_BASE <= flags:
        if vendor == "AuthenticAMD":
            return CoretypeChoice("Zen", dropped + "AMD CPU with AVX2+FMA, no AVX-512", model)
        return CoretypeChoice("Haswell", dropped + "CPU with AVX2+FMA, no AVX-512", model)
    return CoretypeChoice(None, dropped + "no AVX2: OpenBLAS detects the kernel itself", model)
