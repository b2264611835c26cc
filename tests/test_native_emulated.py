"""The AVX-512 kernels (csrc/native/kern_avx512.c) held to the portable C reference on a CPU without AVX-512.

test_native_backend.py compares each instruction set's kernels with kern_ref.c only where the CPU has that
instruction set; this machine and CI have AVX2 and no AVX-512. Here kern_avx512.c is compiled with
-DRZ_EMULATE_AVX512 against tests/native_emu/immintrin.h (scalar stand-ins for its intrinsics, each as Intel
documents the instruction, floats rounded once as the instruction rounds), linked with kern_ref.c and the
table, repacker and activation code, and tests/native_emu/check_avx512.c compares, bit for bit: the matmul
kernel of all 9 weight types at n = 1..24, 32, 40, 64 rows, and the AVX-512 compilation of ops_impl.h
(activation quantization, RMSNorm, SwiGLU, attention). It checks the kernels' logic (unpacking, offsets,
scales, the order of the float steps), not the compiler's code for the real instructions. About 8 s on 2 cores.

Needs a C compiler (CC, else cc or gcc); skipped, saying so, where there is none.
"""
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "csrc" / "native"
EMU = ROOT / "tests" / "native_emu"
# setup.py's flags (-O1 instead of -O3: the same results, built in seconds), warnings of the stand-ins' 64-byte
# vector arguments off
CFLAGS = ["-O1", "-std=gnu11", "-ffp-contract=off", "-fno-math-errno", "-Wno-unknown-pragmas", "-Wno-psabi", f"-I{NATIVE}"]
LINKED = ["kern_ref.c", "types.c", "repack.c", "act.c"]  # with kern_avx512.c: all the check calls
CHECKS = [f"matmul {t}" for t in ("Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K", "F16", "BF16", "F32")] + [
    "activation quantization", "rmsnorm", "swiglu", "attention"]


def c_compiler():
    """the compiler's command as a list (CC may hold several words), or None"""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    return shlex.split(cc) if cc else None


def test_avx512_kernels_equal_the_portable_kernels_under_emulation(tmp_path):
    cc = c_compiler()
    if not cc:
        pytest.skip("no C compiler (CC, cc or gcc) to build the emulated AVX-512 check")

    def obj(src):
        return ["-c", str(src), "-o", str(tmp_path / (src.stem + ".o"))]

    jobs = [[*cc, *CFLAGS, "-DRZ_EMULATE_AVX512", f"-I{EMU}", *obj(NATIVE / "kern_avx512.c")]]
    jobs += [[*cc, *CFLAGS, *obj(NATIVE / f)] for f in LINKED] + [[*cc, *CFLAGS, *obj(EMU / "check_avx512.c")]]
    procs = [subprocess.Popen(j, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for j in jobs]
    for j, p in zip(jobs, procs):
        out = p.communicate()[0]
        assert p.returncode == 0, f"{' '.join(j)}\n{out}"
    exe = tmp_path / "check_avx512"
    objs = sorted(str(o) for o in tmp_path.glob("*.o"))
    link = subprocess.run([*cc, *objs, "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert link.returncode == 0, link.stdout + link.stderr

    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    lines = run.stdout.splitlines()
    results = {line[:36].strip(): line[36:].strip() for line in lines}
    assert list(results) == CHECKS, run.stdout + run.stderr
    differ = [f"{name}: {r}" for name, r in results.items() if not r.startswith("equal")]
    assert not differ, "AVX-512 (emulated) differs from kern_ref.c:\n" + "\n".join(differ)
    assert run.returncode == 0, run.stdout + run.stderr
