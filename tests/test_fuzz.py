"""Property-based fuzzing of the whole decompressor: a hostile file is refused cleanly or decodes exactly.

The long run (100,000+ cases) is `python -m bench.fuzz`; this is its short form, kept in CI.
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import fuzz


@pytest.fixture(scope="module")
def seeds(lm):
    return fuzz.seed_containers(lm)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 5), st.integers(0, 2**32 - 1))
def test_mutated_containers_are_refused_or_exact(lm, seeds, which, seed):
    blob, original = seeds[which]
    outcome = fuzz.check(fuzz.mutate(blob, random.Random(seed)), original, lm)
    assert not outcome.startswith("BUG"), outcome


def test_unmutated_seeds_decode_and_the_fuzzer_reaches_the_decoder(lm, seeds):
    assert all(fuzz.check(blob, original, lm) == "ok" for blob, original in seeds)
    from memzip.format import container

    with_windows = [container.read(blob) for blob, _ in seeds[:4]]
    assert [c.vector_spec.code for c in with_windows] == ["none", "none", "compact", "full"]
    assert all(c.window_count >= 1 for c in with_windows)  # the codes and tokens sections are really fuzzed
    assert sum(len(s) for s in with_windows[0].streams) > 4  # streams that carry information are fuzzed
    assert {k for k, _ in with_windows[1].segments} == {container.KIND_WINDOW, container.KIND_RAW}  # both kinds
    result = fuzz.run(300, seed=1, lm=lm, say=lambda _t: None)
    assert result["bugs"] == [] and sum(result["outcomes"].values()) == 300
    refused = {k for k in result["outcomes"] if k.startswith("refused")}
    # the mutations reach past the checksum: header, container structure and the final checksum all refuse
    assert {"refused: ContainerError", "refused: IntegrityError"} <= refused, result["outcomes"]


@pytest.fixture(scope="module")
def framed(lm):
    return fuzz.seed_framed(lm)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32 - 1))
def test_mutated_framed_files_are_refused_or_exact(lm, framed, seed):
    blob, original = framed
    rng = random.Random(seed)
    mutated, positions = fuzz.mutate_framed(blob, rng)
    outcome = fuzz.check_framed(mutated, original, lm, rng if positions else None)
    assert not outcome.startswith("BUG"), outcome


def test_the_framed_seed_restores_and_its_reordered_frames_are_refused(lm, framed):
    blob, original = framed
    assert fuzz.check_framed(blob, original, lm) == "ok"
    parts, values = fuzz._framed_parts(blob)
    assert len(parts) == 3
    checksum = blob[-12:-8]
    swapped = fuzz.framed_file([parts[1], parts[0], parts[2]], values[2:4] + values[:2] + values[4:], checksum)
    assert fuzz.check_framed(swapped, original, lm) == "refused: IntegrityError"
