"""memzip's exact inference engine: a Llama model whose logits are the same bits on every machine.

* ``weights``: the conversion from a model file's own numbers (GGUF blocks, or a Hugging Face model's
  floats) to int8 weights with float64 scales, cached and fingerprinted;
* ``tables``: exp, sigmoid and RoPE tables built by exact construction;
* ``forward``: the model (``Engine``), evaluated all at once or incrementally with the same bits, by
  either implementation of its arithmetic:
* ``native``: the C engine (``csrc/``: products, attention, thread pool; built at install), or
* ``reference``: the same arithmetic in PyTorch operations (``arith``: each exact or one IEEE operation);
* ``tokens``: detokenizing by a fixed byte table, without a tokenizer library.

docs/ENGINE.md specifies the arithmetic; ENGINE_VERSION names it (a change that moves any bit of any
logit is a new version, and a new container format).
"""

from .forward import Distributions, Engine, FloatEnvironmentError, kernels_available
from .tokens import detokenize
from .weights import ENGINE_VERSION, EngineConfig, EngineWeights, UnsupportedModel

__all__ = ["Engine", "Distributions", "FloatEnvironmentError", "kernels_available", "detokenize", "ENGINE_VERSION",
           "EngineConfig", "EngineWeights", "UnsupportedModel"]
