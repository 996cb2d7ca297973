"""memzip's exact inference engine: a Llama model whose logits are the same bits on every machine.

* ``weights``: the conversion from a model file's own numbers (GGUF blocks, or a Hugging Face model's
  floats) to int8 weights with float64 scales, cached and fingerprinted;
* ``tables``: exp, sigmoid and RoPE tables built by exact construction;
* ``arith``: the operations the forward pass is made of, each exact or one IEEE operation;
* ``forward``: the model (``Engine``), evaluated all at once or incrementally with the same bits;
* ``tokens``: detokenizing by a fixed byte table, without a tokenizer library;
* ``_kernels.c``: optional fused C kernels performing the same operations in the same order.

docs/ENGINE.md specifies the arithmetic; ENGINE_VERSION names it (a change that moves any bit of any
logit is a new version, and a new container format).
"""

from .forward import Engine, Hidden, KVCache, kernels_available
from .tokens import detokenize
from .weights import ENGINE_VERSION, EngineConfig, EngineWeights, UnsupportedModel

__all__ = ["Engine", "Hidden", "KVCache", "kernels_available", "detokenize", "ENGINE_VERSION", "EngineConfig",
           "EngineWeights", "UnsupportedModel"]
