"""Build of the native CPU backend's extension (ryzanstein.models._native); everything else is in pyproject.toml.

One C11 extension, compiled by the ordinary `pip install`: the portable kernels plus AVX2 and AVX-512 VNNI
ones, each file selecting its instruction set with `#pragma GCC target`, chosen at run time by cpuid.
-ffp-contract=off keeps every multiply and add a separate IEEE operation, as the bit-exactness between the
instruction sets (and between batch sizes) requires.
"""
from setuptools import Extension, setup

SOURCES = ["module.c", "model.c", "pool.c", "types.c", "repack.c", "act.c", "isa.c", "kern_ref.c", "kern_avx2.c", "kern_avx512.c"]

setup(ext_modules=[Extension(
    "ryzanstein.models._native",
    sources=[f"csrc/native/{s}" for s in SOURCES],
    depends=["csrc/native/rz.h", "csrc/native/layout.h", "csrc/native/model.h", "csrc/native/ops_impl.h"],
    extra_compile_args=["-O3", "-std=gnu11", "-ffp-contract=off", "-fno-math-errno", "-Wno-unknown-pragmas", "-Wno-psabi"],
    extra_link_args=["-pthread"],
    libraries=["m"],
)])
