"""Detokenizing without a tokenizer library: each token id stands for a fixed byte string.

For byte-level BPE vocabularies (GPT-2, SmolLM2, Llama 3) a token's text is its bytes written with
GPT-2's byte-to-character map; special and added tokens stand for their own text in UTF-8. A window's
bytes are the concatenation of its tokens' bytes, which is what memzip's decoder writes: the table is
built from the model file (or the tokenizer's vocabulary) and fingerprinted with the engine, so decoding
depends on no tokenizer library release. Tokenizing (the compressor's side) may use any tokenizer: a
window is kept only if these bytes give back its text exactly.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def _char_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256+."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def byte_level_bytes(token: str) -> bytes:
    """The bytes a byte-level BPE token string stands for (ValueError if it is not one)."""
    table = _char_to_byte()
    try:
        return bytes(table[c] for c in token)
    except KeyError:
        raise ValueError(f"token {token!r} is not byte-level BPE") from None


def hf_token_bytes(tokenizer) -> list[bytes]:
    """The byte table of a transformers fast tokenizer with a byte-level vocabulary (ValueError otherwise)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = type(getattr(backend, "decoder", None)).__name__ if backend is not None else None
    if decoder != "ByteLevel":
        raise ValueError(f"tokenizer decoder {decoder} is not byte-level")
    size = len(tokenizer)
    special = {int(i): t.content for i, t in tokenizer.added_tokens_decoder.items()}
    strings = tokenizer.convert_ids_to_tokens(list(range(size)))
    return [special[i].encode("utf-8") if i in special else byte_level_bytes(s) for i, s in enumerate(strings)]


def detokenize(table: list[bytes], ids) -> bytes:
    """The bytes of a token sequence: its tokens' bytes, concatenated."""
    return b"".join(table[i] for i in ids)


class TextTokenizer:
    """Tokenizing with the ``tokenizers`` library alone (a tokenizer.json file), with the small part of
    the transformers tokenizer interface memzip uses: ``tok(text, add_special_tokens=False,
    return_offsets_mapping=False)`` -> {"input_ids": [...], "offset_mapping": [(start, end), ...]} and
    ``len(tok)``. A tokenizer cache written by one transformers release is then read the same way by
    any other (their own loaders name release-specific classes in tokenizer_config.json)."""

    def __init__(self, tokenizer):
        self.backend_tokenizer = tokenizer

    @classmethod
    def from_file(cls, path) -> "TextTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> dict:
        encoding = self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens)
        out = {"input_ids": list(encoding.ids)}
        if return_offsets_mapping:
            out["offset_mapping"] = list(encoding.offsets)
        return out

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)
