"""Builds memzip's optional C kernels (memzip/engine/_kernels.c); everything else is in pyproject.toml.

The kernels only speed the exact engine up: without them (no C compiler) memzip runs the same
arithmetic in PyTorch ops and produces the same bits. -ffp-contract=off keeps the compiler from fusing
a multiply and an add into one rounding, which would change results; -fno-trapping-math lets it turn
comparisons into vector selections (no value changes: it only assumes no program traps on FP exceptions)."""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math"]
setup(ext_modules=[Extension("memzip.engine._kernels", ["memzip/engine/_kernels.c"], extra_compile_args=flags,
                             optional=True)])
