"""How much do replayed logits move with batch size and thread count? (python -m bench.reproducibility)

Compresses a sample (by default the first 4,000 bytes of the paper text, with a zero safety margin so
that close calls are kept), then replays every window with decode batch sizes 1..64 under 1 and 2
threads. At every generated position it compares the margin (top-1 minus runner-up logit) with the
reference replay -- the compressor's own: batch DECODE_BATCH, default threads -- and counts tokens that
differ. It also compares the teacher-forced margins the optimizer sees with the replay's.
The largest margin difference is what a safety margin must exceed for a token never to flip.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from memzip import CompressSettings, OptimizerSettings, codec, container
from memzip.decoder import replay
from memzip.optimizer import teacher_forced

from . import corpora, report

RESULTS = Path(__file__).resolve().parent / "results"


def measure(lm, c, batch_sizes, thread_counts, say=print) -> dict:
    lengths = [n for kind, n in c.segments if kind == container.KIND_WINDOW]
    prefix = c.header["prefix_id"]
    default_threads = torch.get_num_threads()
    vectors = codec.stored_vectors(c, lm)
    ref_tokens, ref_gaps = replay(lm, vectors, lengths, codec.DECODE_BATCH, prefix)
    ref = torch.tensor([g for row in ref_gaps for g in row], dtype=torch.float64)
    runs = []
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for b in batch_sizes:
                t0 = time.perf_counter()
                tokens, gaps = replay(lm, vectors, lengths, b, prefix)
                flat = torch.tensor([g for row in gaps for g in row], dtype=torch.float64)
                same = [t == r for t, r in zip(tokens, ref_tokens)]
                # compare margins only where the whole window replayed identically (same path)
                mask = torch.tensor([s for s, row in zip(same, gaps) for _ in row])
                diff = (flat - ref).abs()[mask]
                runs.append({
                    "threads": threads, "batch": b, "windows_differing": same.count(False),
                    "max_margin_diff": diff.max().item() if len(diff) else 0.0,
                    "positions_changed": int((diff > 0).sum()), "seconds": time.perf_counter() - t0,
                })
            say(f"reproducibility: {threads} thread(s), batch 1..{max(batch_sizes)} done")
    finally:
        torch.set_num_threads(default_threads)
    with torch.no_grad():
        windows = [t for t in ref_tokens]
        tf_gaps = []
        for i in range(0, len(windows), 16):
            _, m = teacher_forced(lm, vectors[i:i + 16], windows[i:i + 16])
            tf_gaps += [m[row, : len(w)].tolist() for row, w in enumerate(windows[i:i + 16])]
    tf = torch.tensor([g for row in tf_gaps for g in row], dtype=torch.float64)
    return {
        "windows": len(lengths),
        "positions": len(ref),
        "reference": {"batch": codec.DECODE_BATCH, "threads": default_threads},
        "smallest_replay_margin": ref.min().item() if len(ref) else None,
        "max_margin_diff_any_run": max((r["max_margin_diff"] for r in runs), default=0.0),
        "windows_differing_any_run": max((r["windows_differing"] for r in runs), default=0),
        "teacher_forced_vs_replay_max_margin_diff": (tf - ref).abs().max().item() if len(ref) else 0.0,
        "runs": runs,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reproducibility", description=__doc__)
    p.add_argument("file", nargs="?", help="text to compress (default: first --bytes of the paper text)")
    p.add_argument("--from-mz", type=Path, help="measure an existing .mz instead of compressing")
    p.add_argument("--bytes", type=int, default=4000)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--model")
    p.add_argument("--out", type=Path, default=RESULTS / "reproducibility.json")
    p.add_argument("--save-mz", type=Path, help="keep the compressed sample here (to re-measure with --from-mz)")
    args = p.parse_args(argv)

    from memzip.model import load_model

    lm = load_model(args.model)
    if args.from_mz:
        blob = args.from_mz.read_bytes()
    else:
        corpus = corpora.from_file(args.file, args.bytes) if args.file else corpora.paper(args.bytes)
        settings = CompressSettings(optimizer=OptimizerSettings(margin=0.0))
        t0 = time.perf_counter()
        blob = codec.compress(corpus.data, lm, settings)
        print(f"reproducibility: compressed {len(corpus.data)} bytes in {time.perf_counter() - t0:.0f} s")
        if args.save_mz:
            args.save_mz.write_bytes(blob)
    c = container.read(blob)
    result = measure(lm, c, list(range(1, args.max_batch + 1)), [int(t) for t in args.threads.split(",")])
    result["machine"] = report.machine()
    result["command"] = "python -m bench.reproducibility " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    keys = ("windows", "positions", "smallest_replay_margin", "max_margin_diff_any_run",
            "windows_differing_any_run", "teacher_forced_vs_replay_max_margin_diff")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
