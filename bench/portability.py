"""Do files decode everywhere? Compress here, decode in other environments, and write the matrix.

    python -m bench.portability FILE [FILE ...] [--python LABEL=PYTHON ...] [--model M] [--out DIR]

Each file is compressed once here (default settings, `memzip c`), then decoded by `memzip x` in fresh
processes under each environment: this CPU's native kernel level (AMX where it has it), the C engine
capped at AVX-512, at AVX2 and at baseline x86-64 (MEMZIP_ISA; torch's and oneDNN's kernels restricted
likewise), each with 1, 2 and 3 threads; other numbers of
rows decoded together (1, 7, 64); the PyTorch reference instead of the C kernels; and, for every
``--python LABEL=/path/to/python`` given, that interpreter (a second virtualenv with another torch or
transformers release, which imports this checkout's memzip through PYTHONPATH; such an interpreter
also compresses each file, and this one decodes it). A cell is "exact" when
the output equals the input, "refused: <message>" when memzip x refused (no output), and "WRONG" when
it returned other bytes (never acceptable). Writes DIR/portability.md and DIR/portability.json.
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

ROOT = Path(__file__).resolve().parent.parent
# the C engine's kernels capped by MEMZIP_ISA, torch's and oneDNN's by their own variables (the PyTorch
# reference and the tokenizer side run under them)
LEVELS = {
    "native": {},
    "avx512": {"MEMZIP_ISA": "avx512"},
    "avx2": {"MEMZIP_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "baseline": {"MEMZIP_ISA": "baseline", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                 "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def environments(pythons: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(label, python, environment variables) for every decoding setup."""
    out = []
    for level, env in LEVELS.items():
        for threads in (1, 2, 3):
            out.append((f"{level}, {threads} thread{'s' if threads > 1 else ''}", sys.executable,
                        {**env, "MEMZIP_THREADS": str(threads)}))
    for rows in (1, 7, 64):
        out.append((f"{rows} rows at a time", sys.executable, {"MEMZIP_DECODE_ROWS": str(rows)}))
    out.append(("PyTorch kernels (no C)", sys.executable, {"MEMZIP_KERNELS": "torch"}))
    for label, python in pythons.items():
        out.append((label, python, {}))
    return out


def _memzip(python: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full.update(env)
    full["PYTHONPATH"] = str(ROOT)
    threads = full.pop("MEMZIP_THREADS", None)
    extra = ["-T", threads] if threads else []
    return subprocess.run([python, "-m", "memzip", *args, *extra, "-q"], env=full, capture_output=True, text=True,
                          cwd=ROOT)


def describe(python: str) -> str:
    """torch and transformers versions an interpreter has (as it reports them)."""
    code = ("import torch\ntry:\n import transformers; t = transformers.__version__\nexcept Exception: t = 'none'\n"
            "print(f'torch {torch.__version__}, transformers {t}')")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def measure(files: list[str], pythons: dict[str, str], model: str | None, say=print) -> dict:
    extra = ["--model", model] if model else []
    setups = environments(pythons)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            original = Path(path).read_bytes()
            packed = Path(tmp) / (Path(path).name + ".mz")
            t0 = time.perf_counter()
            done = _memzip(sys.executable, ["c", str(Path(path).resolve()), "-f", "-o", str(packed), *extra], {})
            if done.returncode != 0:
                raise SystemExit(f"memzip c failed on {path}: {done.stderr.strip()}")
            row = {"file": path, "bytes": len(original), "compressed": packed.stat().st_size,
                   "compress_s": time.perf_counter() - t0, "cells": {}}
            for label, python, env in setups:
                restored = Path(tmp) / "restored"
                restored.unlink(missing_ok=True)
                run = _memzip(python, ["x", str(packed), "-f", "-o", str(restored), *extra], env)
                if run.returncode == 0:
                    cell = "exact" if restored.read_bytes() == original else "WRONG"
                else:
                    cell = "refused: " + ((run.stderr.strip().splitlines() or ["(no message)"])[-1])
                row["cells"][label] = cell
                say(f"{path} | {label} | {cell}")
            for label, python in pythons.items():  # and the other way: compressed there, decoded here
                there, restored = Path(tmp) / "there.mz", Path(tmp) / "restored"
                restored.unlink(missing_ok=True)
                made = _memzip(python, ["c", str(Path(path).resolve()), "-f", "-o", str(there), *extra], {})
                if made.returncode != 0:
                    cell = "compression failed: " + ((made.stderr.strip().splitlines() or ["?"])[-1])
                else:
                    run = _memzip(sys.executable, ["x", str(there), "-f", "-o", str(restored), *extra], {})
                    cell = ("exact" if restored.read_bytes() == original else "WRONG") if run.returncode == 0 else \
                        "refused: " + ((run.stderr.strip().splitlines() or ["(no message)"])[-1])
                    cell += "" if there.read_bytes() == packed.read_bytes() else " (another file)"
                row["cells"][f"made by {label}, decoded here"] = cell
                say(f"{path} | made by {label} | {cell}")
            rows.append(row)
    labels = [label for label, _, _ in setups] + [f"made by {label}, decoded here" for label in pythons]
    return {"python": {label: describe(py) for label, py in {"here": sys.executable, **pythons}.items()},
            "environments": labels, "rows": rows}


def table(result: dict) -> str:
    envs = result["environments"]
    lines = ["| file | bytes | compressed | " + " | ".join(envs) + " |", "|---|---:|---:|" + "---|" * len(envs)]
    for row in result["rows"]:
        lines.append(f"| {Path(row['file']).name} | {row['bytes']:,} | {row['compressed']:,} | "
                     + " | ".join(row["cells"][e] for e in envs) + " |")
    cells = [c for row in result["rows"] for c in row["cells"].values()]
    lines += ["", f"{cells.count('exact')} of {len(cells)} cells exact"
              + ("" if cells.count("exact") == len(cells) else f"; {len(cells) - cells.count('exact')} NOT")]
    lines += ["", "Interpreters: " + "; ".join(f"{k}: {v}" for k, v in result["python"].items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.portability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--python", action="append", default=[], metavar="LABEL=PYTHON",
                   help="another interpreter to decode with (a virtualenv's bin/python); repeatable")
    p.add_argument("--model", help="model directory or ID (default: memzip's default)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "portability"))
    args = p.parse_args(argv)
    pythons = dict(item.split("=", 1) for item in args.python)
    result = measure(args.files, pythons, args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "portability.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "portability.md").write_text(table(result))
    print(table(result))
    cells = [c for row in result["rows"] for c in row["cells"].values()]
    return 0 if all(c == "exact" for c in cells) else 1


if __name__ == "__main__":
    raise SystemExit(main())
