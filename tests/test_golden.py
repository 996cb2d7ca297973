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
    ("default", "prose"): "8097eaa8a271cbc33fc4f566ef8e4170f5603975efe924a9fb07e6befe65056b",
    ("default", "mixed"): "08f74f9821415c43b8b7d5bed78f9bb6647e24d05c25a44898f0b8dde6c5ddb3",
    ("default", "long"): "59b0f17c307baf93356bea69b1317abe9ea95c2c398d88aa1b0c6344bd9abf4d",
    ("level1", "prose"): "a067474dd7059f2d361df0a0dfbf54db088f024cb4abee1d5734252db91a9009",
    ("level1", "mixed"): "7a522197234e2a7a48720110f56893b9ce13567fd46341f8d3345c9419f97b51",
    ("level1", "long"): "ab050ba39e8b9aec55244ae36759a7f8461950ea9bffaa12e0a8f73a24b7cbb0",
    ("always", "prose"): "fc1098fa8065bf237476e5acc7449e55c3eec39cbef2fd76c2128eca36a16fbb",
    ("always", "mixed"): "7c3978846a9be2ae0ae6a91f174484da910b8667e4a5eb27bc4f9ae1b47e099a",
    ("always", "long"): "bd333651a6cfc4874750c03bd1129f02c11e7f14616ab6b2f81887dcf00f803a",
    ("vectors", "prose"): "5856ac48e4123f0016997ee62022a64b493ae2ba4f935d4bf5e1d209dfaf8a58",
    # vectors chosen for size do not pay on the tiny model: the file is the default one
    ("size", "prose"): "8097eaa8a271cbc33fc4f566ef8e4170f5603975efe924a9fb07e6befe65056b",
}

REAL_INPUTS = {
    "english": b"The quick brown fox jumps over the lazy dog. Compression is prediction; prediction is compression.\n",
    "mixed": "El veloz murci\u00e9lago hind\u00fa \xff".encode("utf-8", "surrogateescape") + b"\xff\xfe then text again.\r\n",
}
REAL_GOLDEN = {
    "english": "82dc801cb4abe12596b55f3cbdc0c492867e3888e3c57535d1e668304b36174d",
    "mixed": "0aaf8f084abc0eb811ca45a9dd62d9288e0fbde618042402dc670e25999bfb83",
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
