"""Are the engine's logits the same bits however a file's windows are evaluated? (python -m bench.reproducibility)

Takes the windows of a text (by default the first 4,000 bytes of the paper text, as memzip's default
compression cuts them), computes the logits at every position all at once (one row per window, as
compression does) and digests them; then again one position at a time (as decompression does) with
1 .. N rows stepped together, under 1 and 2 CPU threads and with both kernel implementations (the C
kernels and the PyTorch reference), and counts the positions whose logits differ in any bit from the
first evaluation. The engine's construction says that count is 0 everywhere (memzip/engine/arith.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from memzip import CompressSettings, codec
from memzip.engine import Engine
from memzip.windows import segment

from . import corpora

RESULTS = Path(__file__).resolve().parent / "results"


def _digests_all_at_once(engine, lm, windows) -> list[str]:
    out = []
    for w in windows:
        ids = torch.tensor([[lm.prefix_id] + w[:-1]])
        hidden = engine.forward(engine.embed(ids), engine.new_cache(1, ids.shape[1]))
        logits = engine.logits(hidden)
        out += [hashlib.sha256(row.numpy().tobytes()).hexdigest() for row in logits]
    return out


def _digests_one_at_a_time(engine, lm, windows, rows: int) -> list[str]:
    per_window: list[list[str]] = [[] for _ in windows]
    for start in range(0, len(windows), rows):
        batch = windows[start : start + rows]
        steps = max(len(w) for w in batch)
        padded = torch.tensor([[lm.prefix_id] + w[:-1] + [0] * (steps - len(w)) for w in batch])
        cache = engine.new_cache(len(batch), steps)
        for i in range(steps):
            logits = engine.logits(engine.forward(engine.embed(padded[:, i : i + 1]), cache))
            for r, w in enumerate(batch):
                if i < len(w):
                    per_window[start + r].append(hashlib.sha256(logits[r].numpy().tobytes()).hexdigest())
    return [d for row in per_window for d in row]


def measure(lm, windows, rows_list, thread_counts, kernels=("c", "torch"), say=print) -> dict:
    before = torch.get_num_threads()
    runs = []
    try:
        torch.set_num_threads(thread_counts[0])
        reference = _digests_all_at_once(Engine(lm.engine.weights, "cpu", kernels[0]), lm, windows)
        for kind in kernels:
            engine = Engine(lm.engine.weights, "cpu", kind)
            for threads in thread_counts:
                torch.set_num_threads(threads)
                t0 = time.perf_counter()
                got = _digests_all_at_once(engine, lm, windows)
                runs.append({"kernels": kind, "threads": threads, "evaluation": "all at once", "rows": 1,
                             "positions_differing": sum(a != b for a, b in zip(got, reference)),
                             "seconds": time.perf_counter() - t0})
                for rows in rows_list:
                    t0 = time.perf_counter()
                    got = _digests_one_at_a_time(engine, lm, windows, rows)
                    runs.append({"kernels": kind, "threads": threads, "evaluation": "one position at a time",
                                 "rows": rows, "positions_differing": sum(a != b for a, b in zip(got, reference)),
                                 "seconds": time.perf_counter() - t0})
                say(f"reproducibility: {kind} kernels, {threads} thread(s) done")
    finally:
        torch.set_num_threads(before)
    return {"windows": len(windows), "positions": len(reference), "runs": runs,
            "positions_differing_any_run": max(r["positions_differing"] for r in runs)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reproducibility", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="text to cut into windows (default: first 4,000 B of the paper text)")
    p.add_argument("--bytes", type=int, default=4000)
    p.add_argument("--rows", type=int, nargs="+", default=[1, 3, 8, 64])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default=str(RESULTS / "reproducibility.json"))
    args = p.parse_args(argv)
    from memzip.model import load_model

    lm = load_model(progress=lambda _t: None)
    if args.file:
        data = Path(args.file).read_bytes()[: args.bytes]
    else:
        corpus = corpora.paper(args.bytes)
        if corpus is None:
            raise SystemExit("no paper text here: name a FILE")
        data = corpus.data
    settings = codec.resolved_settings(data, lm, CompressSettings())
    windows = [list(s.tokens) for s in segment(data, lm.tokenizer, lm.token_bytes, settings.window) if s.is_window]
    result = measure(lm, windows, args.rows, args.threads)
    result["text"] = args.file or "paper text"
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).write_text(text + "\n")
    return 0 if result["positions_differing_any_run"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
