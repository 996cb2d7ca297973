"""The engine's weights: a conversion memzip owns, from a model file's own numbers, fingerprinted.

Sources: a GGUF file (its Q4_0/Q4_1/Q8_0/F16/F32 blocks, dequantized exactly into float64 by
memzip itself, with the ``gguf`` package only reading the file) or the float weights of a Hugging Face
Llama model in memory (the tiny test model, local model directories). Either way:

* RMSNorm gains stay separate, in float64 (folding them into the next weights before quantizing cost
  0.3-1% more cross-entropy on the bench texts: a few large gains widen whole rows);
* each output row is quantized to ``LEVELS`` = 63: ``s = max|W_row| / 63``, ``q = round(W / s)``
  (float64, one IEEE operation each), codes int8 in -63..63. The engine's integer matrix products
  then never exceed what every int8 kernel computes exactly (see memzip.engine.arith);
* q and k rows are in GGUF order (RoPE on adjacent pairs); Hugging Face q/k rows are permuted into it;
* the input embeddings stay exact (float32 holds every Q8_0 value d * q exactly; HF weights are float32).

The result depends only on the source numbers and IEEE arithmetic, so every machine builds the same
bytes, and ``fingerprint`` (SHA-256 over the configuration, every tensor, the engine's tables and the
detokenizer table) names them: a container records it and a decoder must match it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass

import torch

from . import tables

ENGINE_VERSION = "exact-2"  # any change that moves a bit of any logit is a new version (and file format)
LEVELS = 63


class UnsupportedModel(ValueError):
    """The model is not one the exact engine can run (architecture or options it does not implement)."""


@dataclass(frozen=True)
class EngineConfig:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    rope_base: float
    norm_eps: float

    def check(self) -> None:
        if self.heads % self.kv_heads or self.head_dim % 2 or self.head_dim * self.heads < 1:
            raise UnsupportedModel("attention heads do not fit this engine")


@dataclass
class EngineWeights:
    config: EngineConfig
    embed: torch.Tensor  # float32 [vocab, hidden], exact input embeddings
    qkv: torch.Tensor  # int8 [layers, (heads + 2 kv_heads) * head_dim, hidden]
    qkv_scale: torch.Tensor  # float64 [layers, rows]
    out: torch.Tensor  # int8 [layers, hidden, heads * head_dim]
    out_scale: torch.Tensor
    gate_up: torch.Tensor  # int8 [layers, 2 ffn, hidden]
    gate_up_scale: torch.Tensor
    down: torch.Tensor  # int8 [layers, hidden, ffn]
    down_scale: torch.Tensor
    head: torch.Tensor  # int8 [vocab, hidden]
    head_scale: torch.Tensor  # float64 [vocab]
    attn_gain: torch.Tensor  # float64 [layers, hidden]: the RMSNorm gains
    ffn_gain: torch.Tensor
    final_gain: torch.Tensor  # float64 [hidden]
    fingerprint: str = ""

    TENSORS = ("embed", "qkv", "qkv_scale", "out", "out_scale", "gate_up", "gate_up_scale", "down", "down_scale",
               "head", "head_scale", "attn_gain", "ffn_gain", "final_gain")

    def tensors(self) -> dict:
        return {name: getattr(self, name) for name in self.TENSORS}


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes, float64 scales) of a float64 matrix, per output row, in -LEVELS..LEVELS."""
    amax = w.abs().amax(dim=1)
    scale = amax / torch.tensor(float(LEVELS), dtype=torch.float64)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(w / safe[:, None]).clamp(-LEVELS, LEVELS).to(torch.int8)
    return codes, scale


def pairs_from_halves(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Hugging Face q/k rows (RoPE pairs (i, i + d/2) within a head) in GGUF order (pairs (2i, 2i + 1))."""
    out, inp = w.shape
    d = out // heads
    return w.reshape(heads, 2, d // 2, inp).transpose(1, 2).reshape(out, inp)


def build(config: EngineConfig, embed: torch.Tensor, head: torch.Tensor, final_gain: torch.Tensor, layers) -> EngineWeights:
    """Quantize float64 weights into EngineWeights. ``layers`` yields per layer a dict of float64
    tensors: q, k, v, o, gate, up, down ([out, in], q/k in GGUF pair order), attn_gain, ffn_gain."""
    config.check()
    parts: dict[str, list] = {k: [] for k in ("qkv", "qkv_scale", "out", "out_scale", "gate_up", "gate_up_scale",
                                              "down", "down_scale", "attn_gain", "ffn_gain")}
    for layer in layers:
        for name, w in (
            ("qkv", torch.cat([layer["q"], layer["k"], layer["v"]])),
            ("out", layer["o"]),
            ("gate_up", torch.cat([layer["gate"], layer["up"]])),
            ("down", layer["down"]),
        ):
            codes, scale = quantize_rows(w)
            parts[name].append(codes)
            parts[name + "_scale"].append(scale)
        parts["attn_gain"].append(layer["attn_gain"].to(torch.float64).reshape(-1))
        parts["ffn_gain"].append(layer["ffn_gain"].to(torch.float64).reshape(-1))
    head_codes, head_scale = quantize_rows(head)
    weights = EngineWeights(config, embed.to(torch.float32).contiguous(),
                            head=head_codes, head_scale=head_scale,
                            final_gain=final_gain.to(torch.float64).reshape(-1).contiguous(),
                            **{k: torch.stack(v).contiguous() for k, v in parts.items()})
    expected = {"qkv": (config.heads + 2 * config.kv_heads) * config.head_dim, "out": config.hidden,
                "gate_up": 2 * config.ffn, "down": config.hidden}
    for name, rows in expected.items():
        if tuple(getattr(weights, name).shape[:2]) != (config.layers, rows):
            raise UnsupportedModel(f"unexpected shape of {name}: {tuple(getattr(weights, name).shape)}")
    return weights


CONFIG_FIELDS = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab", "rope_base", "norm_eps")
_DTYPES = {torch.int8: b"i1", torch.uint8: b"u1", torch.int32: b"i4", torch.int64: b"i8", torch.float32: b"f4",
           torch.float64: b"f8"}


def hash_array(h, name: str, t: torch.Tensor) -> None:
    """Feed one named array into ``h``: name, NUL, its dtype code (i1 u1 i4 i8 f4 f8), the number of
    dimensions (1 byte), each dimension (8 bytes, little-endian), then its elements in row-major order,
    little-endian (docs/ENGINE.md, *Fingerprint*)."""
    t = t.detach().to("cpu").contiguous()
    h.update(name.encode() + b"\0" + _DTYPES[t.dtype] + bytes([t.dim()]))
    for size in t.shape:
        h.update(int(size).to_bytes(8, "little"))
    if t.numel():
        array = t.numpy()
        h.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())


def fingerprint(weights: EngineWeights, token_bytes: list[bytes]) -> str:
    """SHA-256 over the engine version, the configuration, the tables, every weight tensor and the
    detokenizer table, in the byte layout of docs/ENGINE.md, *Fingerprint*."""
    h = hashlib.sha256(b"memzip-engine\0" + ENGINE_VERSION.encode() + b"\0")
    c = weights.config
    for name in CONFIG_FIELDS:
        value = getattr(c, name)
        h.update(name.encode() + b"\0" + (struct.pack("<d", value) if isinstance(value, float) else struct.pack("<q", value)))
    cos, sin = tables.rope_tables(c.rope_base, c.head_dim)
    for name, t in [("code", tables.code_table()), ("sigmoid", tables.sigmoid_table()),
                    ("attention", tables.attention_table()), ("cos", cos), ("sin", sin), *weights.tensors().items()]:
        hash_array(h, name, t)
    h.update(b"tokens\0" + len(token_bytes).to_bytes(8, "little"))
    for b in token_bytes:
        h.update(len(b).to_bytes(4, "little") + b)
    return h.hexdigest()


# ---- from a Hugging Face Llama model (float weights in memory) ---------------------------------------


def from_hf(model) -> EngineWeights:
    """Engine weights of a transformers LlamaForCausalLM (float weights, converted exactly)."""
    cfg = model.config
    if getattr(cfg, "model_type", None) != "llama":
        raise UnsupportedModel(f"the exact engine runs Llama models, not '{getattr(cfg, 'model_type', '?')}'")
    if getattr(cfg, "rope_scaling", None) not in (None, {}) and (cfg.rope_scaling or {}).get("rope_type", "default") != "default":
        raise UnsupportedModel("RoPE scaling is not implemented by the exact engine")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise UnsupportedModel("biases are not implemented by the exact engine")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise UnsupportedModel(f"activation {cfg.hidden_act} is not implemented by the exact engine")
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    rope = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    config = EngineConfig(cfg.num_hidden_layers, cfg.hidden_size, heads, kv, head_dim, cfg.intermediate_size,
                          cfg.vocab_size, float(rope), float(cfg.rms_norm_eps))
    sd = {k: v.detach().to("cpu", torch.float64) for k, v in model.state_dict().items()}
    embed = model.get_input_embeddings().weight.detach().to("cpu", torch.float32)
    head = model.get_output_embeddings().weight.detach().to("cpu", torch.float64)

    def layers():
        for i in range(config.layers):
            p = f"model.layers.{i}."
            yield {
                "q": pairs_from_halves(sd[p + "self_attn.q_proj.weight"], heads),
                "k": pairs_from_halves(sd[p + "self_attn.k_proj.weight"], kv),
                "v": sd[p + "self_attn.v_proj.weight"],
                "o": sd[p + "self_attn.o_proj.weight"],
                "gate": sd[p + "mlp.gate_proj.weight"],
                "up": sd[p + "mlp.up_proj.weight"],
                "down": sd[p + "mlp.down_proj.weight"],
                "attn_gain": sd[p + "input_layernorm.weight"],
                "ffn_gain": sd[p + "post_attention_layernorm.weight"],
            }

    return build(config, embed, head, sd["model.norm.weight"], layers())


# ---- from a GGUF file (the model file's own integer codes) ---------------------------------------------


def _half(raw):
    import numpy as np

    return raw.copy().view(np.float16)[..., 0].astype(np.float64)


def dequantize(tensor) -> torch.Tensor:
    """A GGUF tensor as float64 [rows, cols], exactly: each value is d * q (+ m), computed in float64,
    where every product and sum is exact (11-bit d and m, at most 8-bit q)."""
    import numpy as np

    kind = tensor.tensor_type.name
    raw = np.asarray(tensor.data)
    if kind in ("F32", "F16"):
        return torch.from_numpy(np.array(raw, dtype=np.float64))
    rows = raw.shape[0]
    if kind == "Q8_0":
        blocks = raw.reshape(rows, -1, 34)
        q = blocks[..., 2:].copy().view(np.int8).astype(np.float64)
        return torch.from_numpy((_half(blocks[..., 0:2])[..., None] * q).reshape(rows, -1))
    if kind in ("Q4_0", "Q4_1"):
        size = 18 if kind == "Q4_0" else 20
        blocks = raw.reshape(rows, -1, size)
        nib = blocks[..., size - 16 :]
        q = np.concatenate([nib & 15, nib >> 4], axis=-1).astype(np.float64)
        d = _half(blocks[..., 0:2])[..., None]
        if kind == "Q4_0":
            return torch.from_numpy((d * (q - 8)).reshape(rows, -1))
        return torch.from_numpy((d * q + _half(blocks[..., 2:4])[..., None]).reshape(rows, -1))
    raise UnsupportedModel(f"GGUF tensor type {kind} is not supported by the exact engine")


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.parts[field.data[0]]
    return value.tobytes().decode("utf-8") if field.types[0].name == "STRING" else value.tolist()[0]


def from_gguf(path) -> tuple[EngineWeights, list[bytes]]:
    """Engine weights and the detokenizer table of a Llama GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise UnsupportedModel(f"the exact engine runs Llama models, not '{arch}'")
    tensors = {t.name: t for t in reader.tensors}
    heads = int(_field(reader, "llama.attention.head_count"))
    hidden = int(_field(reader, "llama.embedding_length"))
    config = EngineConfig(
        layers=int(_field(reader, "llama.block_count")), hidden=hidden, heads=heads,
        kv_heads=int(_field(reader, "llama.attention.head_count_kv", heads)), head_dim=hidden // heads,
        ffn=int(_field(reader, "llama.feed_forward_length")), vocab=int(tensors["token_embd.weight"].shape[-1]),
        rope_base=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
    )
    embed = dequantize(tensors["token_embd.weight"])
    head = dequantize(tensors["output.weight"]) if "output.weight" in tensors else embed

    def layers():
        for i in range(config.layers):
            t = lambda name: dequantize(tensors[f"blk.{i}.{name}.weight"])  # noqa: E731
            yield {"q": t("attn_q"), "k": t("attn_k"), "v": t("attn_v"), "o": t("attn_output"),
                   "gate": t("ffn_gate"), "up": t("ffn_up"), "down": t("ffn_down"),
                   "attn_gain": t("attn_norm"), "ffn_gain": t("ffn_norm")}

    weights = build(config, embed, head, dequantize(tensors["output_norm.weight"]), layers())
    return weights, gguf_token_bytes(reader)


def gguf_token_bytes(reader) -> list[bytes]:
    """Each token's bytes, from the GGUF vocabulary (byte-level BPE: gpt2's byte-to-character map)."""
    from .tokens import byte_level_bytes

    field = reader.fields["tokenizer.ggml.tokens"]
    strings = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
    kinds_field = reader.fields.get("tokenizer.ggml.token_type")
    kinds = [int(kinds_field.parts[i][0]) for i in kinds_field.data] if kinds_field else [1] * len(strings)
    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise UnsupportedModel(f"tokenizer '{model}' is not byte-level BPE")
    # token types: 1 normal, 3 control, 4 user-defined: control and user-defined tokens stand for their text
    return [s.encode("utf-8") if k in (3, 4) else byte_level_bytes(s) for s, k in zip(strings, kinds)]


# ---- cache file ------------------------------------------------------------------------------------------


def save(path, weights: EngineWeights, token_bytes: list[bytes]) -> None:
    """Write engine weights and the detokenizer table as one safetensors file (atomically)."""
    import os

    from safetensors.torch import save as serialize

    from ..files import write_atomically

    blob = b"".join(token_bytes)
    lengths = torch.tensor([len(b) for b in token_bytes], dtype=torch.int64)
    tensors = {**{k: v.contiguous() for k, v in weights.tensors().items()},
               "token_bytes": torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.zeros(0, dtype=torch.uint8),
               "token_lengths": lengths}
    meta = {"engine_version": ENGINE_VERSION, "config": json.dumps(asdict(weights.config)), "fingerprint": weights.fingerprint}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, serialize(tensors, metadata=meta), force=True)


def load(path) -> tuple[EngineWeights, list[bytes]] | None:
    """Engine weights and detokenizer table from a cache file, with the fingerprint recomputed (a file
    whose contents no longer match the fingerprint it was saved with, or of another engine version, gives
    None: rebuild it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("engine_version") != ENGINE_VERSION:
                return None
            t = {k: f.get_tensor(k) for k in f.keys()}
        config = EngineConfig(**json.loads(meta["config"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    lengths = t.pop("token_lengths").tolist()
    blob = t.pop("token_bytes").numpy().tobytes()
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    token_bytes = [blob[a:b] for a, b in zip(offsets, offsets[1:])]
    try:
        weights = EngineWeights(config, **t)
    except TypeError:
        return None
    weights.fingerprint = fingerprint(weights, token_bytes)
    if weights.fingerprint != meta.get("fingerprint"):
        return None
    return weights, token_bytes
