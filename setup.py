"""Builds memzip's C engine (memzip/engine/csrc/); everything else is in pyproject.toml.

The C engine only makes the exact engine fast: without it (no C compiler) memzip runs the same
arithmetic in PyTorch operations (memzip/engine/reference.py) and produces the same bits.
-ffp-contract=off keeps the compiler from fusing a multiply and an add into one rounding, which would
change results; -fno-trapping-math lets it turn comparisons into vector selections (no value changes:
it only assumes no program traps on floating-point exceptions)."""

import sys
from pathlib import Path

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math",
                                            "-pthread", "-std=gnu11"]
sources = sorted(str(p) for p in Path("memzip/engine/csrc").glob("*.c"))
setup(ext_modules=[Extension("memzip.engine._native", sources, depends=["memzip/engine/csrc/engine.h",
                                                                         "memzip/engine/csrc/forward.h"],
                             extra_compile_args=flags, extra_link_args=["-pthread"], optional=True)])
