import pytest

from memzip.tiny import tiny_lm


@pytest.fixture(scope="session")
def lm():
    """The tiny seeded model: fast, deterministic, good for everything but real compression ratios."""
    return tiny_lm()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, lm):
    """The tiny model saved as a local Hugging Face directory, for the CLI's --model PATH."""
    path = tmp_path_factory.mktemp("tiny-model")
    lm.float_model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def real_lm():
    """The packaged default model (SmolLM2-135M-Instruct), loaded once for the whole session."""
    from memzip.model import load_model

    return load_model(device="cpu")
