"""python -m bench: run the compression benchmark and the paper reproduction, write bench/results/."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

from memzip import CompressSettings, OptimizerSettings, codec
from memzip.format.vectors import VectorSpec
from memzip.settings import default_steps

from . import corpora, methods, model_limit, paper, peers, report

RESULTS = Path(__file__).resolve().parent / "results" / "default"  # the current default run, refreshed in place
# Besides memzip's defaults: vectors tried for every window, with the default compact code and with the
# paper's full bf16 vectors (both expand text; they show what the vectors cost and how often they verify).
DEFAULT_VARIANTS = ["compact-always:vectors=compact,store=always", "full-always:vectors=full,store=always"]


def parse_variant(text: str) -> tuple[str, CompressSettings]:
    """'NAME:window=32,steps=400,lr=0.01,batch=16,margin=0.5,betas=0.9/0.999,precision=fp32,verify_batch=1,
    vectors=compact,rank=128,bits=4,store=always,objective=size' -> (label, settings)."""
    name, _, spec = text.partition(":")
    values = dict(item.split("=", 1) for item in spec.split(",") if item)
    opt_fields = {"steps": int, "lr": float, "batch": int, "margin": float, "precision": str, "verify_batch": int,
                  "betas": lambda v: tuple(float(b) for b in v.split("/"))}
    code_fields = {"vectors": str, "rank": int, "bits": int}
    unknown = set(values) - set(opt_fields) - set(code_fields) - {"window", "store", "objective"}
    if unknown:
        raise SystemExit(f"bench: unknown variant settings {sorted(unknown)}")
    values.setdefault("steps", str(default_steps(values.get("objective", "greedy"))))
    opt = OptimizerSettings(**{k: opt_fields[k](v) for k, v in values.items() if k in opt_fields})
    code = {("code" if k == "vectors" else k): code_fields[k](v) for k, v in values.items() if k in code_fields}
    if ("rank" in code or "bits" in code) and "code" not in code:
        code["code"] = "compact"  # rank and bits only mean something for compact codes
    window = int(values["window"]) if "window" in values else None
    return f"memzip {name}", CompressSettings(
        window=window, optimizer=opt, vectors=VectorSpec(**code), store=values.get("store", "smaller"),
        objective=values.get("objective", "greedy"),
    )


def compression_rows(lm, corpus, variants, peer_specs=(), say=print) -> list[dict]:
    rows = methods.classic(corpus)
    for spec in peer_specs:
        name, checkout, python = peers.parse(spec)
        say(f"bench: {name} on {corpus.name}")
        result = peers.run(name, checkout, python, corpus.data, say)
        rows.append(methods.row(corpus, name, result["output_bytes"], result["compress_s"], result["decompress_s"],
                                result["exact"]))
    first = variants[0][1] if variants else CompressSettings()
    window = codec.resolved_settings(corpus.data, lm, first).window  # the windows memzip's first variant uses here
    for label, bits_fn in (
        (f"model limit ({window}-token windows)", lambda: model_limit.window_context_bits(lm, corpus.data, window)),
        ("model limit (512-token context)", lambda: model_limit.long_context_bits(lm, corpus.data, 512)),
    ):
        t0 = time.perf_counter()
        bits = bits_fn()
        rows.append(methods.row(corpus, label, math.ceil(bits / 8), time.perf_counter() - t0, None, None, bits=bits))
    for label, settings in variants:
        rows.append(methods.memzip(corpus, lm, settings, label))
    return rows


def run(lm, corpus_list, variants, paper_sizes, paper_settings, out: Path, command: str, paper_models=(), plots=True,
        say=print, peer_specs=()):
    """Run everything; ``lm`` is the default model, ``paper_models`` extra (name, lm) pairs for the paper tables."""
    summary = {"machine": report.machine(), "command": command, "rows": [], "paper": []}
    for corpus in corpus_list:
        say(f"bench: compression on {corpus.name} ({len(corpus.data)} bytes)")
        summary["rows"] += compression_rows(lm, corpus, variants, peer_specs, say)
        report.write(summary, out, with_plots=False)  # keep what is done if a long run is stopped
    paper_corpus = corpora.paper()
    text = paper_corpus.data.decode("utf-8") if paper_corpus else corpora.QUICK_TEXT.decode() * 4
    for name, model in [(lm.model_id, lm), *paper_models]:
        for size in paper_sizes:
            settings = paper_settings.get(size, OptimizerSettings())
            say(f"bench: paper reproduction, {name}, {size}-character chunks, budget {settings.steps} steps")
            summary["paper"].append(paper.reproduce(model, name, text, size, settings))
            report.write(summary, out, with_plots=False)
    report.write(summary, out, with_plots=plots)
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("files", nargs="*", help="extra corpus files")
    p.add_argument("--quick", action="store_true", help="a few hundred bytes and tiny paper chunks (seconds to a minute)")
    p.add_argument("--model", help="model for everything (default: packaged SmolLM2-135M-Instruct)")
    p.add_argument("--paper-model", action="append", default=[],
                   help="extra model for the paper tables (installed packaged models are added automatically)")
    p.add_argument("--max-bytes", type=int, help="use only the first N bytes of each corpus")
    p.add_argument("--pydoc-bytes", type=int, default=4000, help="size of the pydoc_data sample (default 4000)")
    p.add_argument("--no-default-corpora", action="store_true", help="only the files given")
    p.add_argument("--variant", action="append", default=[],
                   help="memzip run besides the default, e.g. 'w32:window=32,steps=400' or 'r128:rank=128,bits=6,store=always' "
                   f"(default: {' '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--only-default", action="store_true", help="memzip with its default settings only (no variants)")
    p.add_argument("--paper-sizes", default="100,1000", help="chunk lengths in characters (default 100,1000)")
    p.add_argument("--paper-steps", default="100:300,1000:40",
                   help="step budget per chunk length (default 100:300,1000:40: 1000-char chunks cost ~53 s per step on 2 CPU cores)")
    p.add_argument("--no-paper", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--peer", action="append", default=[], metavar="NAME=CHECKOUT[,PYTHON]",
                   help=f"another LLM compressor on the same weights ({', '.join(peers.PEERS)}): see bench/peers.py")
    p.add_argument("--level", type=int, action="append", default=[],
                   help="memzip at this level besides the default (repeatable), e.g. --level 9")
    args = p.parse_args(argv)

    from memzip.model import installed_packaged_models, load_model

    lm = load_model(args.model)
    extra_variants = [] if args.only_default else args.variant or DEFAULT_VARIANTS
    variants = [("memzip", CompressSettings())] + [(f"memzip -{k}", CompressSettings(level=k)) for k in args.level]
    variants += [parse_variant(v) for v in extra_variants]
    sizes = [] if args.no_paper else [int(s) for s in args.paper_sizes.split(",") if s]
    budget = dict(item.split(":") for item in args.paper_steps.split(",") if item)
    paper_settings = {int(k): OptimizerSettings(steps=int(v), batch=20) for k, v in budget.items()}
    if args.quick:
        corpus_list = corpora.quick()
        variants = [("memzip", CompressSettings(optimizer=OptimizerSettings(steps=40)))]
        sizes = [] if args.no_paper else [40, 80]
        paper_settings = {40: OptimizerSettings(steps=20, batch=20), 80: OptimizerSettings(steps=20, batch=20)}
    else:
        defaults = [corpora.paper(args.max_bytes), corpora.pydoc_sample(args.pydoc_bytes), *corpora.fresh_prose(args.max_bytes),
                    *corpora.other_kinds(args.max_bytes)]
        corpus_list = [] if args.no_default_corpora else [c for c in defaults if c]
    corpus_list += [corpora.from_file(f, args.max_bytes) for f in args.files]
    others = [m for m in installed_packaged_models() if m != lm.model_id and not args.quick] + args.paper_model
    extra = [(spec, load_model(spec)) for spec in others]
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    run(lm, corpus_list, variants, sizes, paper_settings, args.out, command, extra, plots=not args.no_plots,
        peer_specs=args.peer)
    print(f"bench: results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
