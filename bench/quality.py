"""What does exactness cost in prediction? Cross-entropy of texts under the exact engine and under the
float32 model it was converted from, side by side.

    python -m bench.quality FILE [FILE ...] [--context 512] [--out DIR]

For each file: bits per byte with a sliding context of ``--context`` tokens (stride half of it), under
memzip's exact engine (what every replay runs) and under the transformers float32 model of the same
weights (the GGUF dequantized by transformers), and the engine's excess in percent. Writes
DIR/quality.md and DIR/quality.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import model_limit

RESULTS = Path(__file__).resolve().parent / "results" / "quality"


def measure(lm, files: list[str], context: int, say=print) -> list[dict]:
    rows = []
    for path in files:
        data = Path(path).read_bytes()
        t0 = time.perf_counter()
        engine = model_limit.long_context_bits(lm, data, context, engine=True)
        t1 = time.perf_counter()
        float32 = model_limit.long_context_bits(lm, data, context, engine=False)
        row = {"file": path, "bytes": len(data), "context": context,
               "engine_bits_per_byte": engine / len(data), "float32_bits_per_byte": float32 / len(data),
               "engine_excess_percent": 100 * (engine / float32 - 1), "engine_s": t1 - t0}
        rows.append(row)
        say(f"{Path(path).name}: engine {row['engine_bits_per_byte']:.4f} bpb, float32 "
            f"{row['float32_bits_per_byte']:.4f} bpb ({row['engine_excess_percent']:+.2f}%)")
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| file | bytes | context | exact engine, bits/byte | float32 model, bits/byte | engine excess |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {Path(r['file']).name} | {r['bytes']:,} | {r['context']} | {r['engine_bits_per_byte']:.4f} | "
                     f"{r['float32_bits_per_byte']:.4f} | {r['engine_excess_percent']:+.2f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    from memzip.model import load_model

    from .report import write_table

    rows = measure(load_model(progress=lambda _t: None), args.files, args.context)
    write_table(args.out, "quality", rows, table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
