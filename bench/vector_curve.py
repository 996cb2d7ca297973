"""Do memory tokens pay under probability coding? The curve of vector bits against bits saved.

    python -m bench.vector_curve [--lengths 64 256 1024] [--codes 16x4 64x4 full] [--steps N] FILE...

For each file and segment length L (its first L tokens), a memory vector v is optimized with the model
frozen to minimize the segment's cross-entropy under the float model, seen through the vector code's
straight-through quantization (memzip.vectors.codes.VectorCode.train_view: every forward sees exactly the vector
the decoder rebuilds), keeping the code with the lowest loss seen. Then the real size is measured on
the exact engine: bits(text | v) from ``code_windows`` (what the arithmetic coder spends, -log2 of each
token's integer probability) against bits(text) without a vector (today's default), and

    net saving = bits(text) - bits(text | v) - bits(v)

with bits(v) counted two ways: as memzip stores compact codes today (2 + R bytes: one byte per number)
and packed (16 + R*B bits, what a bit-packed code would take). A vector pays only where the net saving
is positive. ``--whole`` also applies a vector optimized on a file's first L tokens to every row of the
whole file at the default level (a per-file learned prompt: one vector amortized over all rows).

Results go to stdout as a table and, with ``--out DIR``, to DIR/curve.json and DIR/curve.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from memzip.encoder import code_windows
from memzip.format.vectors import VectorSpec
from memzip.vectors.codes import VectorCode
from memzip.vectors.optimizer import optimize_for_size
from memzip.settings import OptimizerSettings


def parse_code(text: str) -> VectorSpec:
    """``full`` or ``RxB`` (rank x bits) as a VectorSpec."""
    if text == "full":
        return VectorSpec("full")
    rank, bits = text.lower().split("x")
    return VectorSpec("compact", int(rank), int(bits))


def vector_bits(code: VectorCode) -> tuple[int, int]:
    """(bits as stored today, bits packed) of one vector."""
    return code.size * 8, code.spec.stored_bits(code.hidden)


def exact_bits(lm, windows: list[list[int]], vectors=None) -> float:
    """What the arithmetic coder spends on ``windows`` on the exact engine (sum of -log2 p)."""
    return sum(code_windows(lm, windows, vectors)[1])


def run(lm, name: str, data: bytes, lengths: list[int], specs: list[VectorSpec], steps: int, whole: bool,
        say=print) -> list[dict]:
    tokens = lm.tokenizer(data.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"]
    rows = []
    whole_rows = whole_base = None
    for length in lengths:
        if length > len(tokens):
            continue
        seg = tokens[:length]
        base = exact_bits(lm, [seg])
        for spec in specs:
            code = VectorCode(spec, lm)
            start = time.perf_counter()
            stored, trace = optimize_for_size(lm, seg, OptimizerSettings(steps=steps, precision="fp32"), code)
            seconds = time.perf_counter() - start
            with_v = exact_bits(lm, [seg], code.rebuild([stored]))
            stored_bits, packed_bits = vector_bits(code)
            row = {
                "file": name, "tokens": length, "bytes": len(lm.detokenize(seg)), "code": spec.describe(),
                "rank": spec.rank if spec.code == "compact" else lm.hidden_size,
                "bits_per_number": spec.bits if spec.code == "compact" else 16,
                "vector_bits_stored": stored_bits, "vector_bits_packed": packed_bits,
                "text_bits": round(base, 1), "text_bits_with_vector": round(with_v, 1),
                "saved": round(base - with_v, 1), "net_packed": round(base - with_v - packed_bits, 1),
                "net_stored": round(base - with_v - stored_bits, 1), "steps": steps,
                "seconds": round(seconds, 1), "float_bits_first": round(trace[0], 1),
                "float_bits_best": round(min(trace), 1),
            }
            if whole and length < len(tokens):
                if whole_rows is None:  # the file's rows and their bits without a vector: once per file
                    whole_rows = file_rows(tokens)
                    whole_base = exact_bits(lm, whole_rows)
                row.update(_whole_file(lm, whole_rows, whole_base, code, stored))
            rows.append(row)
            say(json.dumps(row))
    return rows


def file_rows(tokens: list[int]) -> list[list[int]]:
    """The tokens cut into rows of the default level's row length (no shared context)."""
    from memzip.settings import row_plan

    window, context = row_plan(len(tokens))
    window -= context
    return [tokens[i : i + window] for i in range(0, len(tokens), window)]


def _whole_file(lm, windows: list[list[int]], base: float, code: VectorCode, stored: bytes) -> dict:
    """The vector applied to every row of the whole file (``base``: their bits without a vector)."""
    with_v = exact_bits(lm, windows, code.rebuild([stored] * len(windows)))
    return {"whole_tokens": sum(map(len, windows)), "whole_rows": len(windows), "whole_text_bits": round(base, 1),
            "whole_saved": round(base - with_v, 1)}


def plot(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    lengths = sorted({r["tokens"] for r in rows})
    files = sorted({r["file"] for r in rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for li, length in enumerate(lengths):
        for fi, name in enumerate(files):
            pts = sorted((r["vector_bits_packed"], r["saved"]) for r in rows if r["tokens"] == length and r["file"] == name)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "os^vDP"[fi % 6] + "-", color=colors[li % len(colors)],
                        label=f"{name}, first {length} tokens", ms=5, lw=1)
    top = max(max(r["vector_bits_packed"] for r in rows), max(r["saved"] for r in rows))
    ax.plot([10, top], [10, top], "k--", lw=1, label="break-even (saved = vector bits)")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=-10)
    ax.set_xlabel("vector bits (packed: 16 + rank x bits)")
    ax.set_ylabel("bits of text saved on the exact engine")
    ax.set_title("Memory vectors under probability coding: bits spent vs bits saved")
    ax.legend(fontsize=7, ncol=2)
    path = out / "curve.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vector_curve", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--codes", nargs="+", default=["8x4", "32x4", "64x4", "128x4", "full"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--whole", action="store_true", help="also apply each vector to the whole file's rows")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from memzip.model import load_model

    lm = load_model(args.model, progress=lambda m: print(m, file=sys.stderr))
    specs = [parse_code(c) for c in args.codes]
    rows = []
    for path in args.files:
        rows += run(lm, Path(path).name, Path(path).read_bytes(), args.lengths, specs, args.steps, args.whole)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "curve.json").write_text(json.dumps(rows, indent=1) + "\n")
        plot(rows, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
