"""Golden files: the bytes compress() writes for fixed inputs and settings, pinned as SHA-256 digests
computed before the issue-23 refactoring. A change of any of them is a change of what memzip writes
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

TINY_FINGERPRINT = "a4c094e1eddce3ef96495bcc66d55c482be7f8a11508f11f9ee73d368c666954"

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
    ("default", "prose"): "838aceb61aac2c93f184535143ec490474a702467aa83a535af8e766747722f8",
    ("default", "mixed"): "fa5b53456c80d32a91da940e6aa519dd7f2da7c08f38554beaee463347e442e3",
    ("default", "long"): "7ed904b06b1670be3b199a35230025e632a04a9c42281f458f03336a6f455435",
    ("level1", "prose"): "1d591f1f8a2e716cef0032663b25cdc9353058fdd483af26c461c2d968dd79b3",
    ("level1", "mixed"): "82109c81170f9ad5d5160326c27747719ad0664f45928eff837aaa4be2bd45ce",
    ("level1", "long"): "92f428bdd712545146ef3f725b0289766f6ed0d86970c80b1e13cb6ce15be592",
    ("always", "prose"): "6d43bac30b4fa7bbac9e9905f698275a37495b92a2fa2b6676630ba4f16ec7a5",
    ("always", "mixed"): "332a9bcf057c37a03391fef103100237404ea335a6eeda74b28a017c79c4cdd2",
    ("always", "long"): "3e86d95c61f510f1dc287fd99e02980e9b914463a6a4472465a49ccf4959a638",
    ("vectors", "prose"): "8498295c37c5a40266f23cfd2dc3e0e2cf6a4c04adc24155ae8449783658b93e",
    # vectors chosen for size do not pay on the tiny model: the file is the default one
    ("size", "prose"): "838aceb61aac2c93f184535143ec490474a702467aa83a535af8e766747722f8",
}

REAL_INPUTS = {
    "english": b"The quick brown fox jumps over the lazy dog. Compression is prediction; prediction is compression.\n",
    "mixed": "El veloz murci\u00e9lago hind\u00fa \xff".encode("utf-8", "surrogateescape") + b"\xff\xfe then text again.\r\n",
}
REAL_GOLDEN = {
    "english": "045c8019ab4bfc3b7b009e41349953dec6fb1ad91d1fb79f52e57ceac4ebf8e7",
    "mixed": "bd04f1a407ac74cc4ec321b7046137f6828b95861c087873b92001e068d6b286",
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
