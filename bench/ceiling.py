"""How fast can any replay be on this machine? Tokens per second of the model's cached decoding step
alone (memzip.model.LanguageModel.next_logits, what every replay runs once per token and row), by the
number of rows decoded together, at a given context length; with a file, also the bytes per second
that rate means at that file's bytes per token.

    python -m bench.ceiling [--rows 1 8 16 32 64 128] [--context 128] [--dtype float32] [FILE]

Decompression and (since the ranking pass is the proof) compression of predicted windows cannot beat
these figures: they add rank selection, detokenizing and container work on top.
"""

from __future__ import annotations

import argparse
import time

import torch

from memzip.model import load_model


@torch.no_grad()
def step_seconds(lm, rows: int, context: int, timed: int) -> float:
    """Mean seconds per decoding step for ``rows`` rows, after ``context`` steps of warm-up."""
    embeds, past = lm.embed(torch.full((rows, 1), lm.prefix_id, device=lm.device)), None
    for _ in range(context):
        logits, past = lm.next_logits(embeds, past)
        embeds = lm.embed(logits.argmax(-1, keepdim=True))
    _sync(lm.device)
    start = time.perf_counter()
    for _ in range(timed):
        logits, past = lm.next_logits(embeds, past)
        embeds = lm.embed(logits.argmax(-1, keepdim=True))
    _sync(lm.device)
    return (time.perf_counter() - start) / timed


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="a text whose bytes per token turn tokens/s into bytes/s")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8, 16, 32, 64, 128])
    p.add_argument("--context", type=int, default=128, help="tokens already in the cache when timing starts")
    p.add_argument("--timed", type=int, default=16, help="steps timed per row count")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16 is not what memzip replays in; shown for comparison")
    args = p.parse_args(argv)
    lm = load_model(progress=lambda _t: None)
    lm.model.to(getattr(torch, args.dtype))
    per_token = None
    if args.file:
        data = open(args.file, "rb").read()
        per_token = len(data) / len(lm.tokenizer(data.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"])
    where = (torch.cuda.get_device_name(lm.device) if lm.device.type == "cuda"
             else f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    print(f"{lm.model_id}, {args.dtype}, {where}, context {args.context}"
          + (f", {args.file}: {per_token:.2f} bytes/token" if per_token else ""))
    for rows in args.rows:
        seconds = step_seconds(lm, rows, args.context, args.timed)
        rate = rows / seconds
        extra = f", {rate * per_token:,.0f} B/s" if per_token else ""
        print(f"  rows {rows:4d}: {seconds * 1000:7.1f} ms/step, {rate:6.0f} tokens/s{extra}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
