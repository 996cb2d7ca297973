"""Do default files decode under other CPU kernels? A stand-in for another machine of the same kind.

    python -m bench.kernels [--margins 0 1e-4] [--env ATEN_CPU_CAPABILITY=avx2 ...] [--model M] FILE [FILE ...]

For each file and rank margin: `memzip c` here, with this machine's kernels; then `memzip x` in a
subprocess under each environment (by default torch's own kernels restricted to AVX2, MKL's and
oneDNN's restricted to AVX2, and all three at once), and the output compared with the input. Ranks
follow the logits exactly, so a kernel that orders near-tied logits differently changes a token and the
checksum refuses the file; `--rank-margin` stores such tokens by id (see README, Guarantees).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ENVIRONMENTS = (
    "ATEN_CPU_CAPABILITY=avx2",
    "MKL_ENABLE_INSTRUCTIONS=AVX2",
    "ONEDNN_MAX_CPU_ISA=AVX2",
    "ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2",
)


def _memzip(args: list[str], env_settings: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(pair.split("=", 1) for pair in env_settings.split())
    return subprocess.run([sys.executable, "-m", "memzip", *args, "-q"], env=env, capture_output=True, text=True)


def measure(files: list[str], margins: list[float], environments: list[str], model: str | None, say=print) -> list[dict]:
    """One row per file, margin and environment: compressed size and whether it decoded exactly."""
    rows = []
    extra = ["--model", model] if model else []
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            original = Path(path).read_bytes()
            for margin in margins:
                packed = Path(tmp) / f"{Path(path).name}.{margin}.mz"
                done = _memzip(["c", path, "-f", "-o", str(packed), "--rank-margin", str(margin), *extra])
                if done.returncode != 0:
                    raise RuntimeError(f"memzip c failed on {path}: {done.stderr.strip()}")
                size = packed.stat().st_size
                for settings in environments:
                    restored = Path(tmp) / "restored"
                    run = _memzip(["x", str(packed), "-f", "-o", str(restored), *extra], settings)
                    exact = run.returncode == 0 and restored.read_bytes() == original
                    row = {"file": path, "margin": margin, "bytes": len(original), "compressed": size,
                           "environment": settings,
                           "decoded": "exact" if exact else (run.stderr.strip().splitlines() or ["failed"])[-1]}
                    rows.append(row)
                    say(f"{path} | margin {margin:g} | {row['compressed']} B | {settings} | {row['decoded']}")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--margins", type=float, nargs="+", default=[0.0, 1e-4])
    p.add_argument("--env", action="append", metavar="VAR=VALUE ...",
                   help="an environment to decode under (repeatable); default: the four in ENVIRONMENTS")
    p.add_argument("--model", help="model directory or ID (default: memzip's default)")
    args = p.parse_args(argv)
    measure(args.files, args.margins, args.env or list(ENVIRONMENTS), args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
