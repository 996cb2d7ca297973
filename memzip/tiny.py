"""A tiny, seeded, in-process language model and tokenizer (no files, no hub): for the unit tests and for
benchmark tools that check themselves without the real model (bench.fuzz)."""

from __future__ import annotations

import functools

TRAINING_TEXT = (
    "The quick brown fox jumps over the lazy dog. Memory tokens let a frozen model regenerate text. "
    "El veloz murciélago hindú comía feliz cardillo y kiwi. La cigüeña tocaba el saxofón detrás del palenque. "
    "Compression is prediction; prediction is compression. 0123456789 {}[]()<>=+-*/\\|\"'`~!?@#$%^&;:,. "
) * 3


@functools.lru_cache(maxsize=None)
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TRAINING_TEXT], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>"
    )


@functools.lru_cache(maxsize=None)
def _trained_state(seed: int):
    """Weights of a tiny Llama trained briefly on TRAINING_TEXT (deterministic on a given machine).

    A random model cannot copy anything; a briefly trained one has learned its corpus, so memory
    vectors can make it regenerate text from it, as with a real model.
    """
    import torch
    from transformers import LlamaForCausalLM

    tok = tiny_tokenizer()
    ids = torch.tensor(tok(TRAINING_TEXT, add_special_tokens=False)["input_ids"])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_config(len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(TRAIN_STEPS):
        starts = torch.randint(0, len(ids) - 65, (8,), generator=gen)
        batch = torch.stack([ids[i : i + 65] for i in starts])
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


TRAIN_STEPS = 120


def _config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )


def tiny_lm(seed: int = 0, model_id: str = "tiny-test-model", kernels: str = "auto"):
    """A fresh LanguageModel around the tiny trained weights (each call gets its own copy), on the
    exact engine with the given kernels ("auto": the C kernels where built)."""
    from transformers import LlamaForCausalLM

    from memzip.model import LanguageModel

    tok = tiny_tokenizer()
    model = LlamaForCausalLM(_config(len(tok)))
    model.load_state_dict(_trained_state(seed))
    return LanguageModel.from_hf(model_id, model, tok, prefix_id=0, kernels=kernels)
