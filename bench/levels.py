"""Compression levels side by side: size, compression and decompression speed of each file at each level.

    python -m bench.levels FILE [FILE ...] [--levels 1 3 5 7 9] [--out DIR]

Each level cuts a file into rows of at most LEVEL_ROWS[level] tokens (equal rows, as few as allowed);
longer rows give each token more context, more rows decode in parallel. Files and levels alternate, one
process, the model loaded once (not timed); every run must restore its input. Writes DIR/levels.md and
DIR/levels.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from memzip import CompressSettings, compress, decompress
from memzip.settings import LEVEL_ROWS
from memzip.format import container

RESULTS = Path(__file__).resolve().parent / "results" / "levels"


def measure(lm, files: list[str], levels: list[int], say=print) -> list[dict]:
    rows = []
    for path in files:
        data = Path(path).read_bytes()
        for level in levels:
            settings = CompressSettings(level=level)
            t0 = time.perf_counter()
            blob = compress(data, lm, settings)
            t1 = time.perf_counter()
            back = decompress(blob, lm)
            t2 = time.perf_counter()
            if back != data:
                raise SystemExit(f"{path} at level {level} did not round-trip")
            c = container.read(blob)
            row = {"file": path, "level": level, "bytes": len(data), "compressed": len(blob),
                   "rows": c.window_count, "window": c.header["window"], "compress_s": t1 - t0, "decompress_s": t2 - t1}
            rows.append(row)
            say(f"{Path(path).name} -{level}: {len(blob)} B ({len(blob) / len(data):.3f}), {c.window_count} rows of "
                f"<= {c.header['window']}, {len(data) / (t1 - t0):.0f} / {len(data) / (t2 - t1):.0f} B/s")
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| file | bytes | level | rows | ratio | compress B/s | decompress B/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {Path(r['file']).name} | {r['bytes']:,} | -{r['level']} | {r['rows']} | "
                     f"{r['compressed'] / r['bytes']:.3f} | {r['bytes'] / r['compress_s']:,.0f} | "
                     f"{r['bytes'] / r['decompress_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.levels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--levels", type=int, nargs="+", default=sorted(LEVEL_ROWS))
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    from memzip.model import load_model

    from .report import write_table

    rows = measure(load_model(progress=lambda _t: None), args.files, args.levels)
    write_table(args.out, "levels", rows, table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
