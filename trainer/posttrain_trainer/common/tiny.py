"""Tiny models made locally, for tests and the CPU quickstart: nothing is downloaded.

A byte-level BPE tokenizer trained on a few KB of built-in text, and a 2-layer Llama from a config with
random weights, saved with the Vicuna chat template. Different seeds give different models (a teacher
and a student that disagree).
"""

from __future__ import annotations

from pathlib import Path

from posttrain_trainer.common.chat import VICUNA_SYSTEM, VICUNA_TEMPLATE

CORPUS = (
    VICUNA_SYSTEM
    + """
USER: ASSISTANT: What is the sum of two numbers? Add the numbers step by step. The answer is 7.
Write a Python function that reverses a string. def reverse(text): return text[::-1]
Explain why the sky is blue. Sunlight is scattered by the air, and blue light scatters the most.
Rewrite the instruction to make it harder: add one more constraint, deepen the question,
replace general concepts with specific ones, ask for multiple reasoning steps, add a table or code.
Score each answer from 1 to 10. Assistant A: 8. Assistant B: 5. Explanation: A is more accurate.
Step 1: read the question. Step 2: compute the value. Step 3: check the result. Correct. Incorrect.
Equal. Not equal. Yes. No. Sorry, I cannot help with that. Here is a helpful, detailed answer.
The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 + - * / = ( ) [ ] { } : ; , .
math coding writing general poem email haiku SQL JSON bash git recursion hash map list tuple
"""
)


def make_tokenizer(vocab_size: int = 512):  # type: ignore[no-untyped-def]
    """A byte-level BPE tokenizer trained on the built-in corpus, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = VICUNA_TEMPLATE
    return fast


def make_tiny_model(
    path: str | Path, seed: int = 0, hidden_size: int = 64, layers: int = 2, vocab_size: int = 512
) -> Path:
    """Write a tiny random Llama with its tokenizer to `path` (idempotent) and return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path
    tokenizer = make_tokenizer(vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
