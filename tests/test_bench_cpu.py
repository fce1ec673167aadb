"""bench.cpu: the OpenBLAS kernel the benchmarks export is one the CPU can run (a forced SkylakeX on an
AVX2-only AMD Zen 3 killed the benchmark smoke run with SIGILL)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.cpu import AVX512_BASE, choose_openblas_coretype, read_cpuinfo

ZEN3 = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni vaes".split())
SPR = ZEN3 | AVX512_BASE | {"avx512_vnni", "avx512_bf16", "amx_tile"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("vendor", "flags", "preset", "want"),
    [
        ("AuthenticAMD", ZEN3, None, "Zen"),
        ("GenuineIntel", ZEN3, None, "Haswell"),
        ("AuthenticAMD", ZEN3, "SkylakeX", "Zen"),  # the crash: a preset the CPU cannot run is replaced
        ("AuthenticAMD", ZEN3, "SapphireRapids", "Zen"),
        ("AuthenticAMD", ZEN3, "Haswell", "Haswell"),  # a preset the CPU runs is kept
        ("GenuineIntel", SPR, None, "SkylakeX"),
        ("AuthenticAMD", SPR, None, "SkylakeX"),
        ("GenuineIntel", SPR, "SapphireRapids", "SapphireRapids"),
        ("GenuineIntel", frozenset({"sse2", "avx"}), None, None),
        ("GenuineIntel", frozenset({"sse2", "avx"}), "Haswell", None),
        ("GenuineIntel", frozenset(), "SkylakeX", None),  # flags unreadable: leave it to OpenBLAS
    ],
)
def test_choice_follows_cpu_flags(vendor, flags, preset, want):
    choice = choose_openblas_coretype(preset, (vendor, "test cpu", flags), machine="x86_64")
    assert choice.coretype == want
    assert choice.reason
    if preset and want != preset:
        assert "unreadable" in choice.reason or "lacks" in choice.reason


def test_arm_is_left_to_openblas():
    choice = choose_openblas_coretype("SkylakeX", ("", "", ZEN3), machine="aarch64")
    assert choice.coretype is None and "aarch64" in choice.reason


def test_read_cpuinfo_first_processor(tmp_path):
    text = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n\n"
        "processor\t: 1\nvendor_id\t: Other\nmodel name\t: other\nflags\t\t: fpu avx512f\n\n"
    )
    (tmp_path / "cpuinfo").write_text(text)
    assert read_cpuinfo(tmp_path / "cpuinfo") == ("AuthenticAMD", "AMD EPYC 7B13", frozenset({"fpu", "avx2", "fma"}))
    assert read_cpuinfo(tmp_path / "missing") == ("", "", frozenset())


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo")
def test_this_host_runs_the_chosen_kernel():
    """The kernel chosen here loads and multiplies correctly in a fresh process (a SIGILL would fail it)."""
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]);"
        "from bench.cpu import choose_openblas_coretype as c;"
        "ch = c(None); print(ch.coretype, '|', ch.reason);"
        "os.environ.pop('OPENBLAS_CORETYPE', None);"
        "ch.coretype and os.environ.__setitem__('OPENBLAS_CORETYPE', ch.coretype);"
        "import numpy as np; a = np.arange(64.0).reshape(8, 8);"
        "assert np.allclose(a @ a, np.einsum('ij,jk->ik', a, a))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "|" in out.stdout
