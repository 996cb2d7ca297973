"""Many small files: a corpus of held-out files reported as totals, side by side.

    python -m bench.small_files [CORPUS_DIR ...] [--out bench/results/small-files] [--dictionaries DIR]

A corpus directory holds ``train/`` (samples a dictionary is trained on) and ``test/`` (the files
measured; disjoint from train). Default corpora: bench/texts/small/*. For each corpus, every test file is
compressed on its own and the outputs' sizes summed:

* zstd -19, and zstd -19 -D with zstd's own dictionary (``zstd --train train/* -o DICT``, the zstd
  command, defaults), xz -9e, brotli -q 11;
* memzip without a dictionary, and with one made by ``memzip.dictionary.train`` on the same samples
  (the files of one corpus coded together, as one ``memzip c`` command does: ``codec.compress_many``, and
  restored together: ``codec.decompress_many``), every file checked to restore exactly.

Reports bits per byte of the totals, memzip's files/s both ways, and the dictionary's training time.
Trained dictionaries are kept in ``--dictionaries`` (default: the output directory) and reused when
present, so a rerun times coding without training again.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import brotli
import zstandard

from memzip import codec
from memzip import dictionary as mzdict
from memzip.format import dictionary as dictfile

ROOT = Path(__file__).resolve().parent
DEFAULT_CORPORA = sorted(p for p in (ROOT / "texts" / "small").iterdir() if (p / "test").is_dir())
RESULTS = ROOT / "results" / "small-files"


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file())


def _zstd_sizes(train: list[Path], test: list[Path], work: Path) -> tuple[int, int]:
    """Totals of the zstd command at -19 without and with its own trained dictionary."""
    dict_path = work / "zstd.dict"
    subprocess.run(["zstd", "-q", "-f", "--train", *map(str, train), "-o", str(dict_path)], check=True)
    plain = with_dict = 0
    for path in test:
        plain += len(subprocess.run(["zstd", "-q", "-19", "-c", str(path)], capture_output=True, check=True).stdout)
        out = subprocess.run(["zstd", "-q", "-19", "-D", str(dict_path), "-c", str(path)], capture_output=True, check=True).stdout
        back = subprocess.run(["zstd", "-q", "-d", "-D", str(dict_path), "-c"], input=out, capture_output=True, check=True).stdout
        assert back == path.read_bytes()
        with_dict += len(out)
    return plain, with_dict


def _memzip(lm, inputs: list[bytes], dictionary) -> dict:
    started = time.perf_counter()
    blobs = [blob for blob, _report in codec.compress_many(inputs, lm, dictionary=dictionary)]
    compress_s = time.perf_counter() - started
    started = time.perf_counter()
    restored = codec.decompress_many(blobs, lm, dictionary=dictionary)
    decompress_s = time.perf_counter() - started
    assert restored == inputs, "a file did not restore exactly"
    return {"bytes": sum(map(len, blobs)), "compress_s": round(compress_s, 2), "decompress_s": round(decompress_s, 2),
            "files_per_s_compress": round(len(inputs) / compress_s, 3),
            "files_per_s_decompress": round(len(inputs) / decompress_s, 3)}


def _dictionary(lm, corpus: Path, samples: list[bytes], keep: Path) -> tuple[object, float | None]:
    """The corpus's memzip dictionary: read from ``keep`` if trained before, else trained and kept."""
    path = keep / f"{corpus.name}.mzd"
    if path.exists():
        return mzdict.load(path, lm), None
    started = time.perf_counter()
    file = mzdict.train(samples, lm)
    seconds = time.perf_counter() - started
    path.write_bytes(dictfile.write(file))
    return mzdict.bind(file, lm), round(seconds, 1)


def _with_vectors(lm, corpus: Path, d, samples: list[bytes], keep: Path, count: int, steps: int) -> tuple[object, float | None]:
    """The corpus's dictionary with ``count`` memory vectors tuned after its text (kept like the text's)."""
    path = keep / f"{corpus.name}.v{count}s{steps}.mzd"
    if path.exists():
        return mzdict.load(path, lm), None
    from memzip.vectors.dictionary_vectors import tune

    tokens = [lm.tokenizer(s.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"] for s in samples]
    started = time.perf_counter()
    vectors = tune(lm, d.file, tokens, count=count, steps=steps)
    seconds = time.perf_counter() - started
    file = mzdict.with_vectors(d.file, vectors, count)
    path.write_bytes(dictfile.write(file))
    return mzdict.bind(file, lm), round(seconds, 1)


def run(corpora: list[Path], lm, keep: Path, vectors: int = 0, vector_steps: int = 60,
        vector_corpora: list[str] | None = None) -> list[dict]:
    rows = []
    for corpus in corpora:
        train, test = _files(corpus / "train"), _files(corpus / "test")
        inputs = [p.read_bytes() for p in test]
        total = sum(map(len, inputs))
        with tempfile.TemporaryDirectory() as work:
            zstd_plain, zstd_dict = _zstd_sizes(train, test, Path(work))
        sizes = {
            "zstd -19": zstd_plain,
            "zstd -19 -D": zstd_dict,
            "xz -9e": sum(len(lzma.compress(d, preset=9 | lzma.PRESET_EXTREME)) for d in inputs),
            "brotli -q 11": sum(len(brotli.compress(d, quality=11)) for d in inputs),
        }
        plain = _memzip(lm, inputs, None)
        d, train_s = _dictionary(lm, corpus, [p.read_bytes() for p in train], keep)
        with_dict = _memzip(lm, inputs, d)
        extra = {}
        if vectors and (not vector_corpora or corpus.name in vector_corpora):
            dv, tune_s = _with_vectors(lm, corpus, d, [p.read_bytes() for p in train], keep, vectors, vector_steps)
            extra = {"memzip -D +vectors": {**_memzip(lm, inputs, dv), "vectors": vectors, "steps": vector_steps, "tune_s": tune_s}}
        row = {**extra, "corpus": corpus.name, "files": len(inputs), "bytes": total, "train_files": len(train),
               "sizes": sizes, "memzip": plain, "memzip -D": with_dict,
               "dictionary": {"id": d.id, "tokens": len(d.file.tokens), "how": d.file.header["samples"]["text"],
                              "train_s": train_s}}
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    n = row["bytes"]
    parts = [f"{k} {v / n:.3f}" for k, v in row["sizes"].items()]
    parts += [f"memzip {row['memzip']['bytes'] / n:.3f}", f"memzip -D {row['memzip -D']['bytes'] / n:.3f}"]
    if "memzip -D +vectors" in row:
        parts.append(f"memzip -D +vectors {row['memzip -D +vectors']['bytes'] / n:.3f}")
    return f"{row['corpus']}: {n:,} B in {row['files']} files: " + ", ".join(parts)


def table(rows: list[dict]) -> str:
    head = ("| corpus | files | bytes | zstd -19 | xz -9e | brotli -q 11 | zstd -19 -D | memzip | memzip -D | -D + vectors "
            "| -D ÷ zstd -D | -D ÷ memzip | memzip files/s (c / x) | -D files/s (c / x) | dictionary |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        n, s, m, md = r["bytes"], r["sizes"], r["memzip"], r["memzip -D"]
        d = r["dictionary"]
        lines.append(
            f"| {r['corpus']} | {r['files']} | {n:,} | {s['zstd -19'] / n:.3f} | {s['xz -9e'] / n:.3f} | "
            f"{s['brotli -q 11'] / n:.3f} | {s['zstd -19 -D'] / n:.3f} | {m['bytes'] / n:.3f} | {md['bytes'] / n:.3f} | "
            f"{_vectors_cell(r)} | "
            f"**{md['bytes'] / s['zstd -19 -D']:.2f}** | **{md['bytes'] / m['bytes']:.2f}** | "
            f"{m['files_per_s_compress']:.2f} / {m['files_per_s_decompress']:.2f} | "
            f"{md['files_per_s_compress']:.2f} / {md['files_per_s_decompress']:.2f} | "
            f"{d['tokens']} tokens ({d['how']})" + (f", trained in {d['train_s']} s" if d["train_s"] else "") + " |")
    return "\n".join(lines)


def _vectors_cell(row: dict) -> str:
    v = row.get("memzip -D +vectors")
    if v is None:
        return "not run"
    tuned = f", tuned in {v['tune_s']} s" if v["tune_s"] else ""
    return f"{v['bytes'] / row['bytes']:.3f} ({v['vectors']} vectors, {v['steps']} steps{tuned})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.small_files", description=__doc__.split("\n\n")[0])
    p.add_argument("corpora", nargs="*", type=Path, help="corpus directories with train/ and test/ (default: bench/texts/small/*)")
    p.add_argument("--model", help="model (default: packaged SmolLM2-135M-Instruct)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--vectors", type=int, default=0, metavar="K",
                   help="also a dictionary with K memory vectors tuned after its text (memzip.vectors.dictionary_vectors)")
    p.add_argument("--vector-corpora", nargs="+", metavar="NAME", help="only these corpora get the vectors row")
    p.add_argument("--vector-steps", type=int, default=60, help="Adam steps tuning the vectors (default 60)")
    p.add_argument("--dictionaries", type=Path, help="where trained dictionaries are kept and reused (default: --out)")
    args = p.parse_args(argv)
    from memzip.model import load_model

    args.out.mkdir(parents=True, exist_ok=True)
    keep = args.dictionaries or args.out
    keep.mkdir(parents=True, exist_ok=True)
    lm = load_model(args.model)
    rows = run(args.corpora or DEFAULT_CORPORA, lm, keep, args.vectors, args.vector_steps, args.vector_corpora)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "model": lm.model_id,
            "command": "python -m bench.small_files " + " ".join(argv if argv is not None else [])}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (args.out / "table.md").write_text(table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
