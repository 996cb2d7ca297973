"""The exact engine: the same bits whatever the evaluation shape, batch, thread count, kernel
implementation or CPU vector level, by construction (memzip/engine/arith.py)."""

import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memzip.engine import Engine, arith, kernels_available, native, tables
from memzip.engine import weights as engine_weights
from memzip.tiny import tiny_lm

ROOT = Path(__file__).parent.parent


def _ids(lm, rows=3, n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, lm.vocab_size, (rows, n), generator=gen)
    ids[:, 0] = lm.prefix_id
    return ids


def _prefill(engine, ids):
    hidden = engine.forward(engine.embed(ids), engine.new_cache(ids.shape[0], ids.shape[1]))
    return engine.logits(hidden).reshape(ids.shape[0], ids.shape[1], -1)


def _incremental(engine, ids, chunks=1):
    cache = engine.new_cache(ids.shape[0], ids.shape[1])
    out = []
    for start in range(0, ids.shape[1], chunks):
        part = ids[:, start : start + chunks]
        out.append(engine.logits(engine.forward(engine.embed(part), cache)).reshape(ids.shape[0], part.shape[1], -1))
    return torch.cat(out, dim=1)


def test_the_c_engine_is_built():
    """`make install` compiles memzip/engine/csrc/; without it everything still works, much slower."""
    assert kernels_available()


@pytest.mark.parametrize("kernels", ["torch", "c"])
def test_all_at_once_one_at_a_time_and_in_chunks_give_the_same_bits(lm, kernels):
    engine = Engine(lm.engine.weights, "cpu", kernels)
    ids = _ids(lm)
    ref = _prefill(engine, ids)
    assert torch.equal(_incremental(engine, ids), ref)
    assert torch.equal(_incremental(engine, ids, 5), ref)


@pytest.mark.parametrize("kernels", ["torch", "c"])
def test_a_rows_logits_do_not_depend_on_its_batch(lm, kernels):
    engine = Engine(lm.engine.weights, "cpu", kernels)
    ids = _ids(lm, rows=5)
    ref = _prefill(engine, ids)
    for rows in ([2], [0, 4], [3, 1, 2]):
        assert torch.equal(_prefill(engine, ids[rows]), ref[rows])
    other = ids.clone()
    other[1] = _ids(lm, rows=1, seed=9)[0]
    changed = _prefill(engine, other)
    assert torch.equal(changed[[0, 2, 3, 4]], ref[[0, 2, 3, 4]]) and not torch.equal(changed[1], ref[1])


def test_c_engine_and_torch_reference_agree_bit_for_bit(lm):
    c, t = Engine(lm.engine.weights, "cpu", "c"), Engine(lm.engine.weights, "cpu", "torch")
    ids = _ids(lm, rows=4, n=40)
    assert torch.equal(_prefill(c, ids), _prefill(t, ids))
    assert torch.equal(_incremental(c, ids, 3), _incremental(t, ids, 3))
    hc, ht = c.forward(c.embed(ids), c.new_cache(4, 40)), t.forward(t.embed(ids), t.new_cache(4, 40))
    rows = torch.arange(160)
    tokens = torch.randint(0, lm.vocab_size, (160,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(c.ranks(hc, rows, tokens), t.ranks(ht, rows, tokens))
    assert torch.equal(c.greedy(hc, rows), t.greedy(ht, rows))
    freq = c.frequencies(hc, rows)
    assert torch.equal(freq, t.frequencies(ht, rows))
    assert c.intervals(hc, rows, tokens) == t.intervals(ht, rows, tokens)
    cum = freq.cumsum(1)
    expected = [(int(cum[k, tok] - freq[k, tok]), int(cum[k, tok]), int(cum[k, -1])) for k, tok in enumerate(tokens.tolist())]
    assert c.intervals(hc, rows, tokens) == expected
    dist = c.distributions(hc, rows[:5])
    for k in range(5):
        lo, hi, total = expected[k]
        assert dist.total(k) == total and dist.find(k, lo) == (tokens[k].item(), lo, hi) == dist.find(k, hi - 1)


@pytest.mark.skipif(not kernels_available(), reason="needs the C engine")
def test_every_instruction_set_level_gives_the_same_bits(lm):
    """The C engine's baseline, AVX2, AVX-512 VNNI and AMX kernels (those this CPU has) compute the same
    integer sums and the same IEEE operations: logits, frequencies and prefill vs incremental agree."""
    levels = ["baseline", "avx2", "avx512", "amx"]
    here = levels[: levels.index(native.available_isa()) + 1]
    engine = Engine(lm.engine.weights, "cpu", "c")
    ids = _ids(lm, rows=3, n=48)  # 144 positions: the many-row products (AMX tiles) and the few-row ones
    before = native.isa()
    try:
        outs = []
        for level in here:
            native.set_isa(level)
            outs.append((_prefill(engine, ids), _incremental(engine, ids, 5)))
    finally:
        native.set_isa(before)
    assert all(torch.equal(o[0], outs[0][0]) and torch.equal(o[1], outs[0][0]) for o in outs)
    with pytest.raises(ValueError, match="unknown kernel level"):
        native.set_isa("sse9")


def test_token_distributions_are_integer_and_close_to_the_softmax(lm):
    ids = _ids(lm, rows=2, n=20)
    hidden = lm.engine.forward(lm.engine.embed(ids), lm.engine.new_cache(2, 20))
    rows = torch.arange(40)
    freq = lm.engine.frequencies(hidden, rows)
    total = freq.sum(dim=1)
    assert freq.dtype == torch.int64 and freq.min() >= 1 and total.max() <= 1 << 24
    p = torch.softmax(lm.engine.logits(hidden, rows), dim=-1)
    assert ((freq.double() / total[:, None]) - p).abs().max() < 1e-3


def test_one_and_two_threads_give_the_same_bits(lm):
    ids = _ids(lm, rows=4, n=30)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append((_prefill(lm.engine, ids), _incremental(lm.engine, ids, 7)))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_the_exact_float_product_path_gives_the_same_bits(lm, monkeypatch):
    """Where torch._int_mm is not exact (int8 kernels that saturate), the engine multiplies in float32
    chunks instead: the sums are the same integers."""
    ids = _ids(lm)
    ref = _prefill(lm.engine, ids)
    monkeypatch.setitem(arith._INT_MM_OK, "cpu", False)
    assert torch.equal(_prefill(lm.engine, ids), ref)


def test_both_product_paths_give_the_same_bits(lm, monkeypatch):
    """torch._int_mm is used only where it is exact and faster than the float32 path: a choice of speed.
    Forced either way (where _int_mm is exact here), the engine's hidden states are the same bits."""
    if not arith._int_mm_exact(torch.device("cpu")):  # then the float path is the only one, whatever its speed
        monkeypatch.delitem(arith._INT_MM_OK, "cpu", raising=False)
        assert not arith._use_int_mm(torch.device("cpu"))
        return
    ids = _ids(lm)
    outs = []
    for use in (True, False):
        monkeypatch.setitem(arith._INT_MM_OK, "cpu", use)
        outs.append(_prefill(lm.engine, ids))
    assert torch.equal(outs[0], outs[1])


def test_int_mm_exactness_is_checked_with_saturating_pairs():
    a = torch.tensor([[127, 127, -128, -128]], dtype=torch.int8)
    w = torch.tensor([[-63, -63, 63, 63], [63, 63, -63, -63]], dtype=torch.int8)
    assert torch.equal(arith.int_mm(a, w).long(), a.long() @ w.long().t())


SCRIPT = """
import hashlib, torch
from memzip.engine import Engine
from memzip.engine import weights as w
torch.set_num_threads({threads})
weights, _ = w.load({path!r})
e = Engine(weights, "cpu", {kernels!r})
gen = torch.Generator().manual_seed(0)
ids = torch.randint(0, weights.config.vocab, (3, 24), generator=gen)
logits = e.logits(e.forward(e.embed(ids), e.new_cache(3, 24)))
from memzip.engine import native
level = native.isa() if {kernels!r} == "c" else torch.backends.cpu.get_cpu_capability()
print(level, hashlib.sha256(logits.numpy().tobytes()).hexdigest())
"""


def _subprocess_digest(path, env: dict, threads: int, kernels: str) -> list[str]:
    code = SCRIPT.format(path=str(path), threads=threads, kernels=kernels)
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_other_cpu_vector_levels_give_the_same_bits(lm, tmp_path):
    """The tiny model's engine weights, evaluated in fresh processes with the C engine capped at baseline
    x86-64 and at AVX2 (MEMZIP_ISA) and with torch's and oneDNN's kernels restricted likewise for the
    PyTorch reference: the logits hash the same as at this CPU's own level and in this process, with 1, 2
    and 3 threads. (The weights travel by file: the tiny model is trained in-process, and its float
    training is not portable.)"""
    path = tmp_path / "tiny.safetensors"
    from memzip.engine import weights as w

    w.save(path, lm.engine.weights, lm.token_bytes)
    ids = torch.randint(0, lm.vocab_size, (3, 24), generator=torch.Generator().manual_seed(0))
    here = hashlib.sha256(_prefill(lm.engine, ids).reshape(72, -1).numpy().tobytes()).hexdigest()
    own = _subprocess_digest(path, {}, 2, "c")
    baseline = _subprocess_digest(path, {"MEMZIP_ISA": "baseline"}, 1, "c")
    avx2 = _subprocess_digest(path, {"MEMZIP_ISA": "avx2"}, 3, "c")
    torch_default = _subprocess_digest(path, {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}, 1, "torch")
    assert baseline[0] == "baseline" and avx2[0] in ("avx2", "baseline") and torch_default[0] == "DEFAULT"
    assert own[1] == baseline[1] == avx2[1] == torch_default[1] == here


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


ATTENTION_TABLE = "ec4898eb25e47f8abe46b37be6a357a2bc14034d87caf133c1204af6690cbcec"


def test_tables_are_the_pinned_bits():
    """Built by exact construction (Python's decimal arithmetic), so the same on every machine."""
    assert _digest(tables.attention_table()) == ATTENTION_TABLE
    assert _digest(tables.sigmoid_table()) == "972d107f9817c4f3fa500975ac44b6a0708ebf221d386d46819989d577bd14e2"
    assert _digest(tables.code_table()) == "17c063b3037b5d58690af946db0c1adb4e3ab709c1b0409c3baa484c34738a79"
    cos, sin = tables.rope_tables(100000.0, 64)
    assert _digest(cos) == "3de1b2e51f3a671f523f2724124cfb390c144052d74aae1c44d4ab30f56654cd"
    assert _digest(sin) == "7223b2c988a2feb11e26000cfedb2b33253d9b6b17c9ea71a8270628f20ccb0e"


def _python_sqrt(v: float) -> float:
    """arith.sqrt written with Python floats (IEEE doubles): the definition, op by op."""
    _, e = __import__("math").frexp(v)
    y = struct.unpack("<d", struct.pack("<q", ((e + 1) // 2 + 1023) << 52))[0]
    for _ in range(arith.SQRT_STEPS):
        y = (y + v / y) * 0.5
    return y


def test_square_root_is_its_definition_and_close_to_the_true_one():
    gen = torch.Generator().manual_seed(0)
    v = torch.cat([torch.rand(20000, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(-8, 12, (20000,), generator=gen),
                   torch.tensor([1e-5, 1.0, 2.0, 4.0, 0.5, 1e300], dtype=torch.float64)])
    got = arith.sqrt(v)
    assert got.tolist() == [_python_sqrt(x) for x in v.tolist()]
    assert ((got - v.sqrt()) / v.sqrt()).abs().max() < 1e-15


def test_weights_stay_in_the_range_every_int8_kernel_computes_exactly(lm):
    w = lm.engine.weights
    for name in ("qkv", "out", "gate_up", "down", "head"):
        assert getattr(w, name).abs().max() <= engine_weights.LEVELS == 63


def test_cache_round_trip_keeps_the_fingerprint(lm, tmp_path):
    path = tmp_path / "engine.safetensors"
    engine_weights.save(path, lm.engine.weights, lm.token_bytes)
    weights, table = engine_weights.load(path)
    assert weights.fingerprint == lm.fingerprint and table == lm.token_bytes
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1  # one bit of the last tensor
    path.write_bytes(bytes(blob))
    assert engine_weights.load(path) is None  # no longer matches its fingerprint: rebuilt by the caller


def test_hf_rope_halves_are_permuted_into_pairs():
    w = torch.arange(2 * 8 * 3, dtype=torch.float64).reshape(16, 3)  # 2 heads of 8 rows
    out = engine_weights.pairs_from_halves(w, 2)
    # head 0: rows (0, 4), (1, 5), (2, 6), (3, 7) become adjacent pairs
    assert out[:8, 0].tolist() == [0, 12, 3, 15, 6, 18, 9, 21]


def test_tiny_model_runs_on_the_engine_close_to_its_float_model(lm):
    """Quantization changes logits a little, not the model: the top token mostly agrees."""
    ids = _ids(lm, rows=2, n=32)
    with torch.no_grad():
        ref = lm.float_model(ids).logits.double()
    got = _prefill(lm.engine, ids)
    assert (got.argmax(-1) == ref.argmax(-1)).double().mean() > 0.9
    assert (got - ref).abs().max() < 1.0


def test_an_unsupported_model_is_refused_with_a_reason():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(engine_weights.UnsupportedModel, match="Llama"):
        engine_weights.from_hf(model)


def test_fresh_tiny_models_are_identical(lm):
    assert tiny_lm().fingerprint == lm.fingerprint


@pytest.mark.parametrize("kernels", ["torch", "c"])
def test_a_forked_cache_continues_as_a_row_that_evaluated_the_context_itself(lm, kernels):
    """Rows that share a context evaluate it once (Engine.fork_cache) and go on with the same bits as
    rows that evaluated context and continuation all at once."""
    engine = Engine(lm.engine.weights, "cpu", kernels)
    ids = _ids(lm, rows=3, n=30)
    ids[:, :20] = ids[0, :20]  # one context of 20 positions, three continuations
    shared = engine.new_cache(1, 20)
    engine.forward(engine.embed(ids[:1, :20]), shared)
    forked = engine.fork_cache(shared, 0, 3, 30)
    got = engine.logits(engine.forward(engine.embed(ids[:, 20:]), forked)).reshape(3, 10, -1)
    assert torch.equal(got, _prefill(engine, ids)[:, 20:])
    with pytest.raises(ValueError, match="fork_cache"):
        engine.fork_cache(shared, 0, 2, 10)  # cannot hold the context
