"""Golden files: the bytes compress() writes for fixed inputs and settings, pinned as SHA-256 digests
(format 10, engine exact-2). A change of any of them is a change of what memzip writes
(the file format, a setting's default, how windows are chosen), never a refactoring.

The real model's digests hold on every machine (its engine is exact, its tokenizer packaged). The tiny
model is trained at import with float arithmetic, so its weights are pinned by its fingerprint: where
the digests are kept for each kind of machine seen (the same code wrote both tables); where a machine
trains weights of neither, its digests cannot apply and those cases are skipped, saying so.
"""

import hashlib

import pytest

from memzip import CompressSettings, OptimizerSettings, compress, decompress
from memzip.format.vectors import VectorSpec
from memzip.tiny import TRAINING_TEXT


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
# the tiny model's fingerprint, then the digests of the bytes written with its weights
TINY_GOLDEN = {
  # an Intel Xeon with AVX-512 (Emerald Rapids) trains these weights
  "b3e61bb4c94204f255ac152805a79471c664226751b5d0b5ce6b1931a5345477": {
    ("default", "prose"): "2ea95ff19fec2ae8514cad245b2c599628f6204daa61c38b1943260a749cb474",
    ("default", "mixed"): "df63423f83e71b083c7a0e0a9db39d44ed4ae75fd629080e54bc13a9084238a8",
    ("default", "long"): "288f33cb0a46a563e5dd7a9e4c106470185867492665409859b8613765a7432e",
    ("level1", "prose"): "ccf1fbc4566388921945f393b6aa6ded8d768362ea6584db4e91f0430d573927",
    ("level1", "mixed"): "6bda51e16f75c62abd49c66a6e9cddcfd3801cbbc818cfed02e0f7563a8a80e4",
    ("level1", "long"): "9d014e20bb56face5cad1ba182a611b709ac614f5865f3ac1e04098308421ce9",
    ("always", "prose"): "6dbc2105f97fd6f7044851c7afdaebedf50ec8db00feb2e0a27530016f4ed4c8",
    ("always", "mixed"): "baa9a22d5d06072c8f8011b233fa771319d5be84a464f417ee3d69f69cac3b5d",
    ("always", "long"): "ced542f224c6084c08f529312deb6829f2796fa73c27295d59c1c11aab989f4d",
    ("vectors", "prose"): "b5a395b19003db5b567a0e8994b08fddb5856db12f1ae80360d48272002d213a",
    # vectors chosen for size do not pay on the tiny model: the file is the default one
    ("size", "prose"): "2ea95ff19fec2ae8514cad245b2c599628f6204daa61c38b1943260a749cb474",
  },
  # the same code on an AMD EPYC with AVX2 only, whose float training gives other tiny weights
  "0f8fc3c98e9f8b56f4dc79d7806f6c05deed1534763ce1f1b2d193db84bcca73": {
    ('always', 'long'): "863e3e3358342d419d692797d5ad08b5fd90c1a4bf6c6746cd443c9f047d345d",
    ('always', 'mixed'): "3fe3a408e21770c115a668a44594a6f965ebfbd2c003bf19c25e856add6e3ea3",
    ('always', 'prose'): "bc31bf6137a48343e6898e790caab04f5382cc310abb871a8ec3eea20769191c",
    ('default', 'long'): "65f059eb547bd1dcdc7d0b1676c45b1d768fa2198cc0085b4ceb10bb264d38b7",
    ('default', 'mixed'): "f3a07cd88d53b9f9d2e7d94e77f4ca03e4e842672f6c089d211f8d57b5c9c507",
    ('default', 'prose'): "7f11eef716e37d42f5cd26a301fe63c2fbea8bbe0e09e8477cae9fe138a0ad6b",
    ('level1', 'long'): "1a4ba6ab4eb3a4e6fd638eaf6bfb7828552cbb695f47341a78e34b39798013f9",
    ('level1', 'mixed'): "9136c5d1907806426752f388b663037fcc1f2ad3138d0293121d28377cd8f3fe",
    ('level1', 'prose'): "5cea0049b177fd02fee905bb6c8af71da8ec89e413c88e2c8216df51aa59d3de",
    ('size', 'prose'): "7f11eef716e37d42f5cd26a301fe63c2fbea8bbe0e09e8477cae9fe138a0ad6b",
    ('vectors', 'prose'): "6f891707ff43caa33ad62f8b32ceee2bdf91a5f293f84736edd7792764d10cf2",
  },
}

REAL_INPUTS = {
    "english": b"The quick brown fox jumps over the lazy dog. Compression is prediction; prediction is compression.\n",
    "mixed": "El veloz murci\u00e9lago hind\u00fa \xff".encode("utf-8", "surrogateescape") + b"\xff\xfe then text again.\r\n",
}
REAL_GOLDEN = {
    "english": "8d92d6cbdb3020c997667e79237a87be0d858fb4fbe435aac89c415b3f7a9858",
    "mixed": "0aaf8f084abc0eb811ca45a9dd62d9288e0fbde618042402dc670e25999bfb83",
}


@pytest.mark.parametrize("case", sorted(next(iter(TINY_GOLDEN.values()))), ids=lambda c: "-".join(c))
def test_the_tiny_model_writes_the_golden_bytes(lm, case):
    if lm.fingerprint not in TINY_GOLDEN:
        pytest.skip(f"this machine trains other tiny weights (fingerprint {lm.fingerprint[:16]}): digests do not apply")
    settings, name = case
    data = TINY_INPUTS[name]
    blob = compress(data, lm, TINY_SETTINGS[settings])
    assert hashlib.sha256(blob).hexdigest() == TINY_GOLDEN[lm.fingerprint][case]
    assert decompress(blob, lm) == data


@pytest.mark.model
@pytest.mark.parametrize("name", sorted(REAL_GOLDEN))
def test_the_packaged_model_writes_the_golden_bytes(real_lm, name):
    blob = compress(REAL_INPUTS[name], real_lm)
    assert hashlib.sha256(blob).hexdigest() == REAL_GOLDEN[name]
    assert decompress(blob, real_lm) == REAL_INPUTS[name]
