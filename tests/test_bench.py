"""The benchmark's quick mode runs in the suite, so the benchmark code cannot rot."""

import json

from bench import corpora
from bench.__main__ import parse_variant, run
from memzip.format import container
from memzip.format.vectors import VectorSpec
from memzip.settings import CompressSettings, OptimizerSettings


def test_quick_bench_on_the_tiny_model(lm, tmp_path):
    settings = CompressSettings(window=4, optimizer=OptimizerSettings(steps=20, lr=0.1), store="always", vectors=VectorSpec("compact"))
    full = parse_variant("full:window=4,steps=20,vectors=full,store=always")
    paper_settings = {30: OptimizerSettings(steps=10, lr=0.1, batch=20)}
    summary = run(lm, corpora.quick(), [("memzip", settings), full], [30], paper_settings, tmp_path, "test", say=lambda _: None)
    rows = summary["rows"]
    methods = {r["method"] for r in rows}
    assert {"gzip -9", "bzip2 -9", "xz -9e", "zstd -19", "memzip"} <= methods
    assert any(m.startswith("model limit (4-token") for m in methods)
    assert any(m.startswith("model limit (512-token") for m in methods)
    assert all(r["exact"] for r in rows if r["exact"] is not None)
    mz = next(r for r in rows if r["method"] == "memzip")
    assert mz["windows"] == mz["vectors"] + mz["predicted"] + mz["fallbacks"] and mz["input_bytes"] == len(corpora.quick()[0].data)
    limit = next(r for r in rows if r["method"].startswith("model limit (4"))
    assert limit["bits"] > 0 and limit["output_bytes"] * 8 >= limit["bits"]
    (p,) = summary["paper"]
    assert p["chunk_chars"] == 30 and 0 <= p["token_accuracy"] <= 1 and 0 <= p["exact"] <= p["chunks"]
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["rows"] == rows and "machine" in written
    assert "| memzip |" in (tmp_path / "summary.md").read_text()
    assert mz["bits_per_vector"] == 16 + 64 * 4 and mz["settings"]["vectors"] == "rank 64, 4-bit"  # rank capped at 64
    lengths = sum(len(container.varint(n)) for name, n in mz["sections"].items() if name != "header")
    framing = len(container.MAGIC) + 1 + lengths + container.CHECKSUM_LEN + container.TRAILER_LEN  # 1: version
    assert sum(mz["sections"].values()) + framing == mz["output_bytes"]
    mz_full = next(r for r in rows if r["method"] == "memzip full")
    assert mz_full["bits_per_vector"] == 64 * 16 and mz_full["exact"]
    for name in ("compression.png", "paper.png", "codes.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_variant_parsing():
    label, s = parse_variant("w32:window=32,steps=400,lr=0.02")
    assert label == "memzip w32" and s.window == 32 and s.optimizer.steps == 400 and s.optimizer.lr == 0.02
    assert s.vectors == CompressSettings().vectors
    _, s = parse_variant("r64:rank=64,bits=3")
    assert (s.vectors.code, s.vectors.rank, s.vectors.bits) == ("compact", 64, 3)
    assert parse_variant("f:vectors=full")[1].vectors.code == "full"
    assert parse_variant("a:store=always")[1].store == "always" and parse_variant("d:")[1].store == "smaller"


def test_reproducibility_measurement_on_the_tiny_model(lm):
    from bench import reproducibility

    from memzip.tiny import TRAINING_TEXT

    ids = lm.tokenizer(TRAINING_TEXT[:150], add_special_tokens=False)["input_ids"]
    windows = [ids[i : i + 9] for i in range(0, len(ids), 9)]
    result = reproducibility.measure(lm, windows, [1, 4], [1, 2], say=lambda _t: None)
    assert len(result["runs"]) == 2 * 2 * 3 and result["windows"] == len(windows)
    assert result["positions"] == sum(len(w) for w in windows)
    assert result["positions_differing_any_run"] == 0


def test_ceiling_times_the_decoding_step(lm):
    from bench.ceiling import float_step_seconds, step_seconds

    assert 0 < step_seconds(lm, rows=3, context=2, timed=2) < 10
    assert 0 < float_step_seconds(lm, rows=3, context=2, timed=2) < 10


def test_revisions_table_reports_medians_per_file_and_revision():
    from bench.revisions import table

    runs = [{"file": "a.txt", "rev": rev, "bytes": 1000, "compressed": size, "compress_s": c, "decompress_s": 1.0}
            for rev, size, c in (("old" * 4, 500, 10.0), ("old" * 4, 500, 4.0), ("new" * 4, 400, 2.0),
                                 ("new" * 4, 400, 3.0))]
    lines = table(runs, ["old" * 4, "new" * 4]).splitlines()
    assert lines[2] == "| a.txt | 1,000 | oldoldoldo | 500 | 0.500 | 143 | 1000 | 2 |"  # 1000 B / 7 s median
    assert lines[3] == "| a.txt | 1,000 | newnewnewn | 400 | 0.400 | 400 | 1000 | 2 |"


def test_portability_tool_fills_the_matrix(tiny_model_dir, tmp_path, monkeypatch):
    import subprocess

    from bench import portability

    text = tmp_path / "t.txt"
    text.write_bytes(b"The quick brown fox jumps over the lazy dog, twice.")
    monkeypatch.setattr(portability, "LEVELS", {"avx2": portability.LEVELS["avx2"]})
    result = portability.measure([str(text)], {}, str(tiny_model_dir), say=lambda _: None)
    (row,) = result["rows"]
    assert row["bytes"] == 51 and row["compressed"] > 0
    assert set(row["cells"]) == set(result["environments"]) and len(result["environments"]) == 3 + 3 + 1
    assert all(cell == "exact" for cell in row["cells"].values()), row["cells"]
    assert "7 of 7 cells exact" in portability.table(result)
    real = portability._memzip  # a decoder that refuses the file is reported with its error line

    def refusing(python, args, env):
        if args[0] == "x":
            return subprocess.CompletedProcess(args, 1, "", "memzip: decoded data does not match the original checksum\n")
        return real(python, args, env)

    monkeypatch.setattr(portability, "_memzip", refusing)
    (row,) = portability.measure([str(text)], {}, str(tiny_model_dir), say=lambda _: None)["rows"]
    assert set(row["cells"].values()) == {"refused: memzip: decoded data does not match the original checksum"}


def test_quality_tool_compares_engine_and_float_model(lm, tmp_path):
    from bench import quality

    from memzip.tiny import TRAINING_TEXT

    text = tmp_path / "t.txt"
    text.write_bytes(TRAINING_TEXT.encode()[:400])
    (row,) = quality.measure(lm, [str(text)], 64, say=lambda _t: None)
    assert row["bytes"] == 400 and row["engine_bits_per_byte"] > 0 and row["float32_bits_per_byte"] > 0
    assert abs(row["engine_excess_percent"]) < 10  # the tiny model's quantization costs little
    assert "| t.txt | 400 | 64 |" in quality.table([row])


def test_peer_rows_run_the_peer_as_an_external_program(tmp_path):
    """The plumbing of --peer, with stand-ins for llama-zip and Nacrith that store their input as is."""
    from bench import peers

    (tmp_path / "llama_zip.py").write_text(
        "import sys\nassert sys.argv[1].endswith('.gguf') and sys.argv[2] in ('-c', '-d')\n"
        "sys.stdout.buffer.write(sys.stdin.buffer.read())\n")
    (tmp_path / "cli.py").write_text(
        "import os, shutil, sys\nassert os.path.exists('smollm2-135m.gguf')\nshutil.copy(sys.argv[2], sys.argv[3])\n")
    data = "fresh text ☃\n".encode() * 10
    for name in peers.PEERS:
        parsed = peers.parse(f"{name}={tmp_path}")
        assert parsed[1] == tmp_path.resolve()
        result = peers.run(*parsed, data, say=lambda _t: None)
        assert result["exact"] and result["output_bytes"] == len(data) and result["compress_s"] > 0
    assert (tmp_path / "smollm2-135m.gguf").resolve() == peers.gguf_path().resolve()
    import pytest

    with pytest.raises(SystemExit):
        peers.parse("gzip=/tmp")


def test_mixing_tool_measures_the_match_model_exactly(lm):
    from bench import mixing
    from memzip.encoder import code_windows
    from memzip.tiny import TRAINING_TEXT

    ids = lm.tokenizer(TRAINING_TEXT[:150], add_special_tokens=False)["input_ids"]
    windows = [ids + ids + ids + ids[:20], ids[:30]]
    bits = mixing.measure(lm, windows)
    assert abs(bits["model"] - sum(code_windows(lm, windows)[1])) < 1e-6  # the format's own streams
    assert bits["match, in window"] < 0.8 * bits["model"]  # exact repeats inside a window: the flag pays
    guessed = mixing.guesses([[1, 2, 3, 9, 1, 2, 3, 7], [5, 1, 2, 3, 4]], across=True)
    assert guessed[1][4] == (9, 3)  # the second window finds "1 2 3" in the first one's tokens so far
    assert guessed[0][7] == (4, 3)  # the latest earlier "1 2 3" was in the second window
    alone = mixing.guesses([[1, 2, 3, 9, 1, 2, 3, 7], [5, 1, 2, 3, 4]], across=False)
    assert alone[0][7] == (9, 3) and alone[1][4] == (-1, 0)


def test_levels_tool_measures_every_level_and_writes_its_table(lm, tmp_path):
    from bench import levels
    from bench.report import write_table
    from memzip.tiny import TRAINING_TEXT

    text = tmp_path / "t.txt"
    text.write_bytes(TRAINING_TEXT.encode())
    rows = levels.measure(lm, [str(text)], [1, 9], say=lambda _t: None)
    assert [r["level"] for r in rows] == [1, 9]
    assert rows[0]["rows"] > rows[1]["rows"] == 1  # short rows at -1, one row at -9
    write_table(tmp_path / "out", "levels", rows, levels.table(rows))
    assert "| t.txt |" in (tmp_path / "out" / "levels.md").read_text()
    assert len(json.loads((tmp_path / "out" / "levels.json").read_text())) == 2


def test_vector_curve_tool_measures_vectors_on_the_exact_engine(lm, tmp_path):
    from bench import vector_curve
    from memzip.encoder import code_windows
    from memzip.tiny import TRAINING_TEXT

    specs = [vector_curve.parse_code("8x4"), vector_curve.parse_code("full")]
    rows = vector_curve.run(lm, "t", TRAINING_TEXT.encode(), [16, 40, 10_000], specs, steps=6, whole=True,
                            say=lambda _t: None)
    assert [(r["tokens"], r["code"]) for r in rows] == [(16, "rank 8, 4-bit"), (16, "full bf16"),
                                                      (40, "rank 8, 4-bit"), (40, "full bf16")]  # 10,000: too long
    ids = lm.tokenizer(TRAINING_TEXT, add_special_tokens=False)["input_ids"]
    assert rows[0]["text_bits"] == round(sum(code_windows(lm, [ids[:16]])[1]), 1)  # the format's own coder
    assert rows[0]["vector_bits_packed"] == 16 + 8 * 4 and rows[1]["vector_bits_stored"] == lm.hidden_size * 16
    for r in rows:
        net = r["text_bits"] - r["text_bits_with_vector"] - r["vector_bits_packed"]
        assert abs(r["net_packed"] - net) < 0.2  # each figure rounded to 0.1 bit
        assert r["float_bits_best"] <= r["float_bits_first"] and r["whole_rows"] >= 1
    vector_curve.plot(rows, tmp_path)
    assert (tmp_path / "curve.png").stat().st_size > 1000
