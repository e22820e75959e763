"""Held-out evaluation of the learning workloads: what the metrics in the result document measure.

- SFT: exact match of greedy answers against the reference answer of held-out chats
  (`eval.exactMatch`): the conversation up to its last assistant turn is the prompt.
- Stage-DPO: preference accuracy, the share of held-out pairs whose chosen answer the model gives a
  higher log-probability than the rejected one (`eval.preferenceAccuracy`), and the DPO implicit reward
  margin against the stage's starting model (`eval.rewardMargin`, Rafailov et al., 2023).

Inputs: chat rows / preference rows, a model and its tokenizer. Outputs: floats for the metrics.
The pure parts (what the prompt and reference are, when two answers match, the margins) are separate
from the two functions that run the model (`generate_answers`, `completion_logprobs`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, str]


def prompt_and_reference(messages: Sequence[Message]) -> tuple[list[Message], str] | None:
    """(the conversation before the last assistant turn, that turn's text), or None without one."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == "assistant":
            if not any(m["role"] == "user" for m in messages[:index]):
                return None
            return list(messages[:index]), messages[index]["content"]
    return None


def normalize_answer(text: str) -> str:
    """Answers compare equal modulo surrounding and repeated whitespace."""
    return re.sub(r"\s+", " ", text).strip()


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference (after `normalize_answer`); NaN when empty."""
    if not references:
        return math.nan
    hits = sum(
        normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True)
    )
    return hits / len(references)


@dataclass(frozen=True)
class PreferenceScores:
    """Summed log-probabilities of the chosen and the rejected answer of each pair."""

    chosen: list[float]
    rejected: list[float]


def preference_accuracy(scores: PreferenceScores) -> float:
    """Share of pairs where the chosen answer is more likely than the rejected one; NaN when empty."""
    if not scores.chosen:
        return math.nan
    wins = sum(c > r for c, r in zip(scores.chosen, scores.rejected, strict=True))
    return wins / len(scores.chosen)


def implicit_reward_margins(
    policy: PreferenceScores, reference: PreferenceScores, beta: float
) -> list[float]:
    """DPO's implicit reward margin per pair: beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))."""
    return [
        beta * ((pc - rc) - (pr - rr))
        for pc, rc, pr, rr in zip(
            policy.chosen, reference.chosen, policy.rejected, reference.rejected, strict=True
        )
    ]


def mean(values: Sequence[float]) -> float:
    """The mean, NaN when empty."""
    return sum(values) / len(values) if values else math.nan


# ---------------------------------------------------------------------------------------------------
# The two places that run the model


def model_device(model: Any) -> Any:
    """The device of the model's (first) weights."""
    return next(model.parameters()).device


def generate_answers(
    model: Any, tokenizer: Any, prompts: Sequence[list[Message]], max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """Greedy answers to chat prompts, rendered with the tokenizer's chat template."""
    import torch

    model.eval()
    answers: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [
                tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                for p in prompts[start : start + batch_size]
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                model_device(model)
            )
            with torch.inference_mode():
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return answers


def _prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def completion_token_ids(tokenizer: Any, prompt: list[Message], completion: str) -> tuple[list[int], int]:
    """(ids of prompt + completion, where the completion starts).

    The prompt is rendered with the generation prompt, the completion as the assistant's turn, and they are
    split where the two renderings diverge (the way the DPO trainer does it).
    """
    prompt_ids = tokenizer.apply_chat_template(
        prompt, tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    full_ids = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": completion}], tokenize=True, return_dict=True
    )["input_ids"]
    return list(full_ids), _prefix_length(prompt_ids, full_ids)


def completion_logprobs(
    model: Any, tokenizer: Any, items: Sequence[tuple[list[Message], str]], batch_size: int = 8
) -> list[float]:
    """Summed log-probability of each completion given its chat prompt."""
    import torch

    model.eval()
    scores: list[float] = []
    device = model_device(model)
    for start in range(0, len(items), batch_size):
        encoded = [completion_token_ids(tokenizer, p, c) for p, c in items[start : start + batch_size]]
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.bool)
        for row, (ids, begin) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            mask[row, begin : len(ids)] = True
        input_ids, attention, mask = input_ids.to(device), attention.to(device), mask.to(device)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
        # Token t is predicted by the logits at t-1.
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        scores.extend((logprobs * mask[:, 1:]).sum(dim=1).tolist())
    return scores


def preference_scores(model: Any, tokenizer: Any, pairs: Sequence[dict[str, Any]]) -> PreferenceScores:
    """Log-probabilities of the chosen and rejected answers of preference pairs.

    A pair is `{"prompt": [messages], "chosen": text, "rejected": text}`.
    """
    chosen = completion_logprobs(model, tokenizer, [(p["prompt"], p["chosen"]) for p in pairs])
    rejected = completion_logprobs(model, tokenizer, [(p["prompt"], p["rejected"]) for p in pairs])
    return PreferenceScores(chosen, rejected)
