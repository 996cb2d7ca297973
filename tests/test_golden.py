"""Golden files: the bytes compress() writes for fixed inputs and settings, pinned as SHA-256 digests
(format 10, engine exact-2). A change of any of them is a change of what memzip writes
(the file format, a setting's default, how windows are chosen), never a refactoring.

The real model's digests hold on every machine (its engine is exact, its tokenizer packaged). The tiny
model is trained at import with float arithmetic, so its weights are pinned by its fingerprint: where
another machine trains other weights, its digests cannot apply and those cases are skipped, saying so.
"""

import hashlib

import pytest

from memzip import CompressSettings, OptimizerSettings, compress, decompress
from memzip.format.vectors import VectorSpec
from memzip.tiny import TRAINING_TEXT

TINY_FINGERPRINT = "b3e61bb4c94204f255ac152805a79471c664226751b5d0b5ce6b1931a5345477"

TINY_INPUTS = {
    "prose": TRAINING_TEXT[:300].encode(),
    "mixed": b"\xff\xfe\x00 binary \x80\x81 then text: " + TRAINING_TEXT[100:260].encode() + b"\xc3",
    "long": (TRAINING_TEXT * 3).encode(),  # over 768 tokens: two rows at the default level
}
TINY_SETTINGS = {
    "default": CompressSettings(),
    "level1": CompressSettings(level=1),
    "always": CompressSettings(window=8, store="always"),
    "vectors": CompressSettings(window=4, optimizer=OptimizerSettings(steps=30, lr=0.1, batch=8), store="always",
                                vectors=VectorSpec("compact")),
    "size": CompressSettings(optimizer=OptimizerSettings(steps=8, lr=0.05), vectors=VectorSpec("compact", 16, 4),
                             objective="size"),
}
TINY_GOLDEN = {
    ("default", "prose"): "0e46b5bfb49107e7c53f970340a672c4e4dac1b04b488624845d7b8c909cc5c5",
    ("default", "mixed"): "abdb9ecc640a5b68235bfc9c8ef77452225fcbdee9faafe3de18d0ce2141d116",
    ("default", "long"): "bab713a54dc42a015dc909daa780d97070acf44df03accec34395a4841845b45",
    ("level1", "prose"): "5a14e4765598868e06ae860da5782864a76f7e1e366c17fdfef2b4e17ad9809a",
    ("level1", "mixed"): "1ad69d7d37a37e191601e4dcaa165d73e556068fd7206884ee3cc8532740387d",
    ("level1", "long"): "f8fe470a82970bd04bd0a49ad49d5194b5cb012b9c9f16f9bad3a5dc70f99621",
    ("always", "prose"): "6d5057961dc966374f48d6fe2fc37555d22e9a48ee83289761ef1fb9e8cd7227",
    ("always", "mixed"): "2849df380b779b10a20101341ee2639fe84473e33492d101c177012bb889c443",
    ("always", "long"): "969a2f5b439d66411e2576a6aa3cc76969dcdf67f0942bea5eac801914439295",
    ("vectors", "prose"): "8285724e1b55f7b28275370e6c587a6f68e1c587b52d57f663c773dd88eee82e",
    # vectors chosen for size do not pay on the tiny model: the file is the default one
    ("size", "prose"): "0e46b5bfb49107e7c53f970340a672c4e4dac1b04b488624845d7b8c909cc5c5",
}

REAL_INPUTS = {
    "english": b"The quick brown fox jumps over the lazy dog. Compression is prediction; prediction is compression.\n",
    "mixed": "El veloz murci\u00e9lago hind\u00fa \xff".encode("utf-8", "surrogateescape") + b"\xff\xfe then text again.\r\n",
}
REAL_GOLDEN = {
    "english": "3e63d9b1b073e32f195db7231c63aa6406a456f6dd7fdd985337745e3ad197e0",
    "mixed": "3bee4dca54b0b6d11a15f74db32e0e3046e3e3e65195b6bdddada3dbf07befd8",
}


@pytest.mark.parametrize("case", sorted(TINY_GOLDEN), ids=lambda c: "-".join(c))
def test_the_tiny_model_writes_the_golden_bytes(lm, case):
    if lm.fingerprint != TINY_FINGERPRINT:
        pytest.skip(f"this machine trains other tiny weights (fingerprint {lm.fingerprint[:16]}): digests do not apply")
    settings, name = case
    data = TINY_INPUTS[name]
    blob = compress(data, lm, TINY_SETTINGS[settings])
    assert hashlib.sha256(blob).hexdigest() == TINY_GOLDEN[case]
    assert decompress(blob, lm) == data


@pytest.mark.model
@pytest.mark.parametrize("name", sorted(REAL_GOLDEN))
def test_the_packaged_model_writes_the_golden_bytes(real_lm, name):
    blob = compress(REAL_INPUTS[name], real_lm)
    assert hashlib.sha256(blob).hexdigest() == REAL_GOLDEN[name]
    assert decompress(blob, real_lm) == REAL_INPUTS[name]
