"""Writing benchmark results: summary.json, a Markdown table and PNG plots."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    import transformers

    info["transformers"] = transformers.__version__
    return info


def _fmt(value, digits=3):
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


BEST_CLASSIC = ("xz -9e", "brotli -q 11", "PPMd order 8")
PEERS = ("llama-zip", "nacrith")


def comparison_markdown(rows: list[dict]) -> list[str]:
    """Per corpus: the best of the classic compressors memzip must beat, the LLM peers and memzip's runs,
    as ratios, with memzip's default against the best classic."""
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    mine = list(dict.fromkeys(r["method"] for r in rows if r["method"].startswith("memzip")))
    peers = [p for p in PEERS if any(r["method"] == p for r in rows)]
    head = ["corpus", "bytes", "best classic"] + peers + mine + ["memzip vs best classic"]
    lines = ["| " + " | ".join(head) + " |", "| --- | ---: | ---: |" + " ---: |" * (len(peers) + len(mine) + 1)]
    for corpus in corpora:
        by = {r["method"]: r for r in rows if r["corpus"] == corpus}
        classic = [by[m] for m in BEST_CLASSIC if m in by]
        if not classic or "memzip" not in by:
            continue
        best = min(classic, key=lambda r: r["output_bytes"])
        cells = [corpus, f"{best['input_bytes']:,}", f"{_fmt(best['ratio'])} ({best['method']})"]
        for name in peers + mine:
            r = by.get(name)
            cells.append("" if r is None else f"{_fmt(r['ratio'])}" + ("" if r["exact"] else " (NOT EXACT)"))
        cells.append(f"{100 * (by['memzip']['output_bytes'] / best['output_bytes'] - 1):+.0f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def summary_markdown(summary: dict) -> str:
    lines = ["# memzip benchmark\n", f"Machine: `{json.dumps(summary['machine'])}`\n", f"Command: `{summary['command']}`\n"]
    if summary.get("rows"):
        lines += ["## Side by side (ratios: output / input)\n", *comparison_markdown(summary["rows"])]
        lines += [
            "## Compression\n",
            "| corpus | method | vectors | input B | output B | ratio | bits/byte | compress s | compress B/s | decompress s | decompress B/s | exact | windows (vectors/predicted/raw) | steps median / p90 |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
        ]
        for r in summary["rows"]:
            windows = f"{r['windows']} ({r['vectors']}/{r.get('predicted', 0)}/{r['fallbacks']})" if "windows" in r else ""
            steps = f"{_fmt(r['steps_median'], 1)} / {_fmt(r['steps_p90'])}" if "steps_median" in r else ""
            code = r.get("settings", {}).get("vectors", "")
            code += f" ({r['bits_per_vector']} bits)" if "bits_per_vector" in r else ""
            lines.append(
                f"| {r['corpus']} | {r['method']} | {code} | {r['input_bytes']} | {r['output_bytes']} | {_fmt(r['ratio'])} | "
                f"{_fmt(r['bits_per_byte'])} | {_fmt(r['compress_s'], 2)} | {_fmt(r.get('compress_bytes_per_s'), 1)} | "
                f"{_fmt(r['decompress_s'], 2)} | {_fmt(r.get('decompress_bytes_per_s'), 0)} | "
                f"{_fmt(r['exact'])} | {windows} | {steps} |"
            )
        lines.append("")
    if summary.get("paper"):
        lines += [
            "## Paper reproduction (one full bf16 vector per chunk)\n",
            "| model | chunk chars | tokens (mean) | token accuracy | exact / chunks | steps (converged, mean) | steps (all, mean) | budget | batch steps/s | window steps/s | wall s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for p in summary["paper"]:
            lines.append(
                f"| {p['model']} | {p['chunk_chars']} | {_fmt(p['tokens_mean'], 1)} | {_fmt(p['token_accuracy'])} | "
                f"{p['exact']} / {p['chunks']} | {_fmt(p['steps_mean_converged'], 1)} | {_fmt(p['steps_mean_all'], 1)} | "
                f"{p['step_budget']} | {_fmt(p['batch_steps_per_s'], 2)} | {_fmt(p['window_steps_per_s'], 1)} | {_fmt(p['wall_s'], 0)} |"
            )
        lines.append("")
    return "\n".join(lines)


def plots(summary: dict, out: Path) -> list[Path]:
    """PNG plots; needs matplotlib (installed by `make bench`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rows = summary.get("rows") or []
    corpora = sorted({r["corpus"] for r in rows})
    if rows:
        fig, axes = plt.subplots(1, len(corpora), figsize=(5 * len(corpora), 4), squeeze=False)
        for ax, corpus in zip(axes[0], corpora):
            sub = [r for r in rows if r["corpus"] == corpus and r["ratio"] is not None]
            ax.barh([r["method"] for r in sub], [r["bits_per_byte"] for r in sub], color="tab:blue")
            ax.set_xscale("log")
            ax.set_xlabel("bits per byte (log scale; lower is better)")
            ax.set_title(corpus, fontsize=9)
        written.append(_save(plt, fig, out / "compression.png"))
    coded = [r for r in rows if "bits_per_vector" in r and r["ratio"] is not None]
    if coded:
        written.append(_codes_plot(plt, rows, coded, corpora, out))
    paper = summary.get("paper") or []
    if paper:
        fig, (acc, steps) = plt.subplots(1, 2, figsize=(10, 4))
        for model in sorted({p["model"] for p in paper}):
            sub = sorted((p for p in paper if p["model"] == model), key=lambda p: p["chunk_chars"])
            x = [p["chunk_chars"] for p in sub]
            acc.plot(x, [p["token_accuracy"] for p in sub], marker="o", label=f"{model} token accuracy")
            acc.plot(x, [p["exact"] / p["chunks"] for p in sub], marker="x", linestyle="--", label=f"{model} exact fraction")
            line, = steps.plot(x, [p["steps_mean_all"] for p in sub], marker="o", label=f"{model}, mean over all chunks")
            conv = [(p["chunk_chars"], p["steps_mean_converged"]) for p in sub if p["steps_mean_converged"] is not None]
            if conv:
                steps.plot(*zip(*conv), marker="s", linestyle=":", color=line.get_color(), label=f"{model}, converged chunks")
            steps.scatter(x, [p["step_budget"] for p in sub], marker="_", s=300, color="gray")
            for p in sub:
                steps.annotate(f"budget {p['step_budget']}", (p["chunk_chars"], p["step_budget"]), fontsize=7,
                               textcoords="offset points", xytext=(4, 4), color="gray")
        for ax in (acc, steps):
            ax.set_xscale("log")
            ax.set_xlabel("chunk length (characters)")
            ax.legend(fontsize=7)
        acc.set_ylabel("fraction")
        acc.set_ylim(0, 1.05)
        steps.set_ylabel("optimizer steps per chunk (capped by the budget)")
        written.append(_save(plt, fig, out / "paper.png"))
    return written


def _codes_plot(plt, rows, coded, corpora, out: Path) -> Path:
    """Ratio against the bits stored per vector (rank x bits + scale, or 16 x hidden), per corpus, with
    the classic compressors and the model limits as horizontal references."""
    fig, axes = plt.subplots(1, len(corpora), figsize=(5.5 * len(corpora), 4), squeeze=False)
    for ax, corpus in zip(axes[0], corpora):
        mine = [r for r in coded if r["corpus"] == corpus]
        ax.scatter([r["bits_per_vector"] for r in mine], [r["ratio"] for r in mine], color="tab:red", zorder=3)
        for r in mine:
            stored = f"{r['vectors']}/{r['windows']} vec" if r["vectors"] or not r.get("predicted") else f"{r['predicted']}/{r['windows']} pred"
            ax.annotate(f"{r['settings']['vectors']}, w{r['settings']['window']}: {stored}",
                        (r["bits_per_vector"], r["ratio"]), fontsize=6, textcoords="offset points", xytext=(4, 2))
        for r in rows:
            if r["corpus"] == corpus and "bits_per_vector" not in r and r["ratio"] is not None:
                style = ":" if r["method"].startswith("model limit") else "--"
                ax.axhline(r["ratio"], linestyle=style, linewidth=0.8, color="gray")
                ax.annotate(r["method"], (0, r["ratio"]), xycoords=("axes fraction", "data"), fontsize=6, color="gray")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("symlog", linthresh=1)  # 0 bits: predicted windows, no memory vector
        ax.set_yscale("log")
        ax.set_xlabel("bits stored per memory vector (0 = none: ranks only; symlog)")
        ax.set_ylabel("compression ratio (output / input, log)")
        ax.set_title(corpus, fontsize=9)
    return _save(plt, fig, out / "codes.png")


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(summary: dict, out: Path, with_plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=False) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
    written = [out / "summary.json", out / "summary.md"]
    if with_plots:
        written += plots(summary, out)
    return written


def write_table(out, name: str, rows: list[dict], markdown: str) -> None:
    """A tool's results: OUT/NAME.json (the rows) and OUT/NAME.md (the table), also printed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
