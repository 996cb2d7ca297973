"""How fast can a replay be on this machine? The exact engine's decoding step alone (one position per
row through every layer, then the token chosen from the head's logits: what decompression runs once per
token and row), by the number of rows decoded together, at a given context length; with a file, also
the bytes per second that rate means at that file's bytes per token. ``--float`` times, side by side in
the same process, the transformers float32 step that memzip replayed before the engine (format 7).

    python -m bench.ceiling [--rows 1 16 64] [--context 128] [--float] [FILE]
"""

from __future__ import annotations

import argparse
import time

import torch

from memzip.model import load_model


@torch.no_grad()
def step_seconds(lm, rows: int, context: int, timed: int) -> float:
    """Mean seconds per engine decoding step for ``rows`` rows, after ``context`` positions of warm-up."""
    engine = lm.engine
    cache = engine.new_cache(rows, context + timed + 1)
    ids = torch.full((rows, 1), lm.prefix_id, dtype=torch.long)
    engine.forward(engine.embed(torch.randint(0, lm.vocab_size, (rows, context))), cache)
    last = torch.arange(rows)
    _sync(engine.device)
    start = time.perf_counter()
    for _ in range(timed):
        hidden = engine.forward(engine.embed(ids), cache)
        ids = engine.greedy(hidden, last).unsqueeze(1)
    _sync(engine.device)
    return (time.perf_counter() - start) / timed


@torch.no_grad()
def float_step_seconds(lm, rows: int, context: int, timed: int) -> float:
    """The same for the transformers float32 model with its KV cache and the head as weight @ hidden.T
    (how format 7 replayed), for comparison."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' cache-argument deprecation
    model = lm.float_model
    base, head = model.get_decoder(), model.get_output_embeddings().weight
    out = base(input_ids=torch.randint(0, lm.vocab_size, (rows, context)), use_cache=True)
    past, ids = out.past_key_values, torch.full((rows, 1), lm.prefix_id, dtype=torch.long)
    start = time.perf_counter()
    for _ in range(timed):
        out = base(input_ids=ids, past_key_values=past, use_cache=True)
        past = out.past_key_values
        ids = (head @ out.last_hidden_state[:, -1, :].T).T.argmax(-1, keepdim=True)
    return (time.perf_counter() - start) / timed


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="a text whose bytes per token turn tokens/s into bytes/s")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--context", type=int, default=128, help="positions already in the cache when timing starts")
    p.add_argument("--timed", type=int, default=16, help="steps timed per row count")
    p.add_argument("--float", action="store_true", help="also time the transformers float32 step, alternating")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds (medians are printed)")
    args = p.parse_args(argv)
    lm = load_model(progress=lambda _t: None)
    per_token = None
    if args.file:
        data = open(args.file, "rb").read()
        per_token = len(data) / len(lm.tokenizer(data.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"])
    where = (torch.cuda.get_device_name(lm.device) if lm.device.type == "cuda"
             else f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    print(f"{lm.model_id}, engine {lm.engine.kernels} kernels, {where}, context {args.context}"
          + (f", {args.file}: {per_token:.2f} bytes/token" if per_token else ""))
    for rows in args.rows:
        timings: dict[str, list[float]] = {"engine": [], "float32": []}
        for _ in range(args.rounds):
            timings["engine"].append(step_seconds(lm, rows, args.context, args.timed))
            if args.float:
                timings["float32"].append(float_step_seconds(lm, rows, args.context, args.timed))
        parts = []
        for name, values in timings.items():
            if not values:
                continue
            seconds = sorted(values)[len(values) // 2]
            rate = rows / seconds
            extra = f", {rate * per_token:,.0f} B/s" if per_token else ""
            parts.append(f"{name} {seconds * 1000:7.1f} ms/step ({rate:6.0f} tokens/s{extra})")
        print(f"  rows {rows:4d}: " + "; ".join(parts), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
