"""How fast is the exact engine against the machine's limit and against llama.cpp on the same weights?

    python -m bench.speed [--rows 1 2 4] [--contexts 64 1024 4096] [--prefill 512 4096]
                          [--llama PYTHON] [--rounds 3] [--out DIR]

* **Bandwidth**: the engine's threads reading a buffer as large as the weights a decoding step streams
  (best of several reads), and with one thread; a step's bound is weight bytes / that rate.
* **Decoding steps**: what decompression runs once per token: one position per row through every layer,
  the token distribution of each row and the token found in it, for 1..R rows at each context length;
  in ms, as a multiple of the bound, and in tokens/s.
* **Prefill**: a row of N tokens evaluated all at once with every token's coding interval (what
  compression runs), in tokens/s, and the cost per token relative to the shortest row.
* **llama.cpp** (``--llama PYTHON``: an interpreter with ``llama-cpp-python``), the packaged GGUF, the same
  thread count: one-token ``eval`` steps at the same context lengths and the prefill of the same rows,
  run alternately with memzip's (``--rounds``; medians).

Writes DIR/speed.md and DIR/speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "speed"
TEXT = Path(__file__).resolve().parent / "texts" / "changelog.md"
WARMUP = 8  # untimed decoding steps before each timed run

LLAMA_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
gguf, threads, spec = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
llm = Llama(model_path=gguf, n_ctx=spec["n_ctx"], n_threads=threads, n_threads_batch=threads, n_batch=512,
            verbose=False, logits_all=False)
tokens = spec["tokens"]
out = {"steps": {}, "prefill": {}}
for context in spec["contexts"]:
    llm.reset()
    llm.eval(tokens[:context])
    for i in range(spec["warmup"]):
        llm.eval([tokens[context + i]])
    start = time.perf_counter()
    for i in range(spec["timed"]):
        llm.eval([tokens[context + spec["warmup"] + i]])
    out["steps"][str(context)] = (time.perf_counter() - start) / spec["timed"]
for n in spec["prefill"]:
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens[:n])
    out["prefill"][str(n)] = n / (time.perf_counter() - start)
print(json.dumps(out))
"""


def weight_bytes(lm) -> int:
    """int8 weight bytes a decoding step streams: every layer's matrices and the output head."""
    w = lm.engine.weights
    return sum(getattr(w, name).numel() for name in ("qkv", "out", "gate_up", "down", "head"))


def sample_tokens(lm, count: int) -> list[int]:
    """``count`` tokens of real text (the changelog, repeated as needed)."""
    ids = lm.tokenizer(TEXT.read_text(), add_special_tokens=False)["input_ids"]
    return (ids * (count // len(ids) + 1))[:count]


@torch.no_grad()
def step_seconds(lm, rows: int, context: int, timed: int, tokens: list[int]) -> float:
    """Mean seconds of a decoding step (forward of one position per row, distributions, tokens found)
    after ``context`` positions already in the cache."""
    e = lm.engine
    cache = e.new_cache(rows, context + WARMUP + timed + 1)
    ids = torch.tensor([tokens[: context + WARMUP + timed + 1]] * rows)
    e.forward(e.embed(ids[:, :context]), cache)
    last = torch.arange(rows)

    def step(i: int) -> None:
        hidden = e.forward(e.embed(ids[:, i : i + 1]), cache)
        dist = e.distributions(hidden, last)
        dist.find_many([dist.total(k) // 2 for k in range(rows)])

    for i in range(WARMUP):  # the first steps after other work find the weights out of the caches
        step(context + i)
    start = time.perf_counter()
    for i in range(timed):
        step(context + WARMUP + i)
    return (time.perf_counter() - start) / timed


@torch.no_grad()
def prefill_rate(lm, n: int, tokens: list[int]) -> float:
    """Tokens per second of one row of ``n`` tokens evaluated all at once, with every token's interval."""
    e = lm.engine
    ids = torch.tensor([[lm.prefix_id] + tokens[: n - 1]])
    start = time.perf_counter()
    hidden = e.forward(e.embed(ids), e.new_cache(1, n))
    e.intervals(hidden, torch.arange(n), torch.tensor(tokens[:n]))
    return n / (time.perf_counter() - start)


def llama_run(python: str, gguf: str, threads: int, contexts, prefill, timed: int, tokens) -> dict:
    spec = {"n_ctx": max(max(contexts) + WARMUP + timed + 8, max(prefill) + 8), "contexts": contexts,
            "prefill": prefill, "timed": timed, "warmup": WARMUP, "tokens": tokens}
    out = subprocess.run([python, "-c", LLAMA_SCRIPT, gguf, str(threads), json.dumps(spec)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(result: dict) -> str:
    bw, wb = result["bandwidth"], result["weight_bytes"]
    bound = wb / bw["threads"]
    lines = [f"Machine: {result['machine']}; engine kernels: {result['isa']}, {result['threads']} threads.",
             f"Read bandwidth: {bw['threads'] / 1e9:.1f} GB/s with {result['threads']} threads, "
             f"{bw['one'] / 1e9:.1f} GB/s with one (a buffer of {wb / 1e6:.0f} MB, the weights a step streams); "
             f"bound of a step: {bound * 1e3:.2f} ms.", "",
             "| decoding step | memzip ms | x bound | memzip tokens/s | llama.cpp ms | memzip / llama.cpp speed |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in result["steps"]:
        ll = s.get("llama_s")
        lines.append(f"| {s['rows']} row{'s' if s['rows'] > 1 else ''}, {s['context']:,} positions | "
                     f"{s['seconds'] * 1e3:.2f} | {s['seconds'] / bound:.2f} | {s['rows'] / s['seconds']:,.0f} | "
                     + (f"{ll * 1e3:.2f} | {ll * s['rows'] / s['seconds']:.2f}x |" if ll else "— | — |"))
    lines += ["", "| prefill (all at once, with intervals) | memzip tokens/s | per token vs the shortest | "
              "llama.cpp tokens/s | memzip / llama.cpp |", "|---|---:|---:|---:|---:|"]
    first = result["prefill"][0]["rate"]
    for p in result["prefill"]:
        ll = p.get("llama_rate")
        lines.append(f"| {p['tokens']:,} tokens | {p['rate']:,.0f} | {first / p['rate']:.2f}x | "
                     + (f"{ll:,.0f} | {p['rate'] / ll:.2f}x |" if ll else "— | — |"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--contexts", type=int, nargs="+", default=[64, 1024, 4096])
    p.add_argument("--prefill", type=int, nargs="+", default=[512, 4096])
    p.add_argument("--timed", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--llama", metavar="PYTHON", help="an interpreter with llama-cpp-python installed")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    import platform

    from memzip.engine import native
    from memzip.model import PACKAGED_MODELS, DEFAULT_MODEL_ID, load_model

    from .report import write_table

    lm = load_model(progress=lambda _t: None)
    threads = torch.get_num_threads()
    tokens = sample_tokens(lm, max(max(args.contexts) + WARMUP + args.timed + 1, max(args.prefill)))
    wb = weight_bytes(lm)
    native.read_bandwidth(wb, 2)  # warm up the threads
    bw = {"threads": native.read_bandwidth(wb, 10)}
    torch.set_num_threads(1)
    bw["one"] = native.read_bandwidth(wb, 10)
    torch.set_num_threads(threads)
    steps = {(r, c): [] for r in args.rows for c in args.contexts}
    llama_steps = {c: [] for c in args.contexts}
    rates = {n: [] for n in args.prefill}
    llama_rates = {n: [] for n in args.prefill}
    gguf = str(PACKAGED_MODELS[DEFAULT_MODEL_ID].locate())
    for round_ in range(args.rounds):  # memzip and llama.cpp alternate, so both see the same machine
        for (r, c) in steps:
            steps[(r, c)].append(step_seconds(lm, r, c, args.timed, tokens))
        for n in rates:
            rates[n].append(prefill_rate(lm, n, tokens))
        if args.llama:
            got = llama_run(args.llama, gguf, threads, args.contexts, args.prefill, args.timed, tokens)
            for c in args.contexts:
                llama_steps[c].append(got["steps"][str(c)])
            for n in args.prefill:
                llama_rates[n].append(got["prefill"][str(n)])
        print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr)
    med = statistics.median
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {threads} threads",
        "isa": native.isa(), "threads": threads, "weight_bytes": wb, "bandwidth": bw, "rounds": args.rounds,
        "steps": [{"rows": r, "context": c, "seconds": med(v), **({"llama_s": med(llama_steps[c])} if r == 1 and
                                                                 args.llama else {})} for (r, c), v in steps.items()],
        "prefill": [{"tokens": n, "rate": med(v), **({"llama_rate": med(llama_rates[n])} if args.llama else {})}
                    for n, v in rates.items()],
    }
    text = table(result)
    write_table(args.out, "speed", [result], text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
