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
    ("default", "prose"): "3f54d7b54fe63fee46f19834c14605aafdd0020df3f158bb5b3463c8e1497641",
    ("default", "mixed"): "0c39c6efe9272c461c9ca0ddf1dfa0975b8af97557e2a5fbe315862feaf00f93",
    ("default", "long"): "14994a13f588ae6c0e4297c6c3521512bc49bc917c122590bc1daaeade260885",
    ("level1", "prose"): "f7db924130803531e806769126cc4566e31003aef717acc6eaa435c13f9147b1",
    ("level1", "mixed"): "5fd13495eb5a6020da7b6bae7a17f6f05026c4d5fc3e75e2c1ccfc21e188bbbe",
    ("level1", "long"): "e30fcf054c43d6b98bf0bc4ba6a2c8aa769a970ba57a2b7e17d8654345ba6c12",
    ("always", "prose"): "20bed74c22f17d5010c51061814761e2d731ee8b2213b44415889b3ea9d81fac",
    ("always", "mixed"): "1157f9abe749458e5a7b248e03e6098ffdd20e8518b6a8c690311f905824120c",
    ("always", "long"): "453d6493c8272f91379e6ac000903289bf4dc1bd162cc1bebc92dff9d336269e",
    ("vectors", "prose"): "c0fa6b78c4918a7652c0a17734e1e702f1753c9d406b6b56e33d1a02466a253d",
    # vectors chosen for size do not pay on the tiny model: the file is the default one
    ("size", "prose"): "3f54d7b54fe63fee46f19834c14605aafdd0020df3f158bb5b3463c8e1497641",
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
