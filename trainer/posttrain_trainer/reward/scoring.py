"""Scoring with trained reward models: what RLEIF's reward is made of, and how the IRM and PRM read text.

The same feature functions serve training (`irm.py`, `prm.py`) and scoring (RLEIF), so a model is always
scored on exactly the inputs it was trained on.

- IRM (instruction quality): a sequence classifier with one output over the instruction's tokens
  (plain text, no template); its score is sigmoid(logit) in (0, 1).
- PRM (process supervision): a token classifier with two labels (incorrect, correct). Input: the question
  rendered with the chat template and its generation prompt, then every step followed by the step
  separator, each piece tokenized on its own (a space before the first step when the prompt text ends in
  a non-space). A step's score is P(correct) at the last token of its separator.
- Step format: the AlignRound asks for solutions in steps (`common.steps.STEP_FORMAT`: one step per line, `Step 1:`,
  `Step 2:`, ...) before labelling them, and RLEIF asks the policy for the same, so the PRM scores steps
  of the kind it was trained on. `split_steps` cuts a solution into steps; `cap_steps` merges the steps
  beyond a maximum into the last one (the PRM never saw longer solutions, and the late text is still
  scored).
- RLEIF reward of (instruction, answer): r = r_I x r_A (WizardMath), with r_A the PRM's step scores of
  the answer aggregated by `geomean` (default: exp(mean log p), length-robust), `min`, `mean`, `last`
  or `product`; `sum` adds them instead.

A trained reward model folder holds `posttrain-reward.json`: `{"type": "irm"|"prm", "stepSeparator",
"maxLength"}`.

Reference: Luo et al., 2023 (WizardMath: IRM, PRM and the product reward of RLEIF).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REWARD_FILE = "posttrain-reward.json"
"""Metadata of a trained reward model, in its folder."""


@dataclass(frozen=True)
class RewardMetadata:
    """How a reward model reads its input."""

    type: str
    """`irm` or `prm`."""
    step_separator: str = "\n"
    """PRM: the separator it was trained with."""
    max_length: int = 2048
    """Tokens it was trained on at most."""

    def to_json(self) -> str:
        """The contents of `posttrain-reward.json`."""
        return json.dumps(
            {"type": self.type, "stepSeparator": self.step_separator, "maxLength": self.max_length}
        )

    @classmethod
    def read(cls, folder: Path) -> RewardMetadata:
        """Read a reward model folder's metadata.

        Raises:
            ValueError: the folder is not a trained posttrain reward model.
        """
        path = folder / REWARD_FILE
        if not path.exists():
            raise ValueError(f"{folder}: no {REWARD_FILE}; not a RewardModel output")
        data = json.loads(path.read_text())
        return cls(data["type"], data.get("stepSeparator", "\n"), int(data.get("maxLength", 2048)))


# ---------------------------------------------------------------------------------------------------
# Features (pure given a tokenizer)


def instruction_ids(tokenizer: Any, instruction: str, max_length: int) -> list[int]:
    """IRM input: the instruction's tokens, truncated to `max_length`."""
    return list(tokenizer(instruction, truncation=True, max_length=max_length)["input_ids"])


@dataclass
class StepFeatures:
    """PRM input of one solution."""

    input_ids: list[int]
    positions: list[int]
    """Index of the token that carries each step's label (the end of its separator)."""
    labels: list[int] = field(default_factory=list)
    """-100 everywhere except at `positions` (the step's 1/0 label); empty when scoring."""


def step_features(
    tokenizer: Any,
    prompt: str,
    steps: Sequence[str],
    separator: str,
    max_length: int,
    labels: Sequence[int] | None = None,
) -> StepFeatures:
    """PRM input of a question and its solution steps; steps that do not fit in `max_length` are left out.

    The question keeps at most half of `max_length` (its end), so there is always room for steps.
    """
    prompt_text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])[-(max_length // 2) :]
    separator_ids = list(tokenizer(separator, add_special_tokens=False)["input_ids"]) if separator else []
    positions: list[int] = []
    targets = [-100] * len(ids)
    lead = " " if prompt_text and not prompt_text[-1].isspace() else ""
    for index, step in enumerate(steps):
        piece = list(tokenizer((lead if index == 0 else "") + step, add_special_tokens=False)["input_ids"])
        piece += separator_ids
        if not piece or len(ids) + len(piece) > max_length:
            break
        ids += piece
        positions.append(len(ids) - 1)
        targets += [-100] * (len(piece) - 1) + [int(labels[index]) if labels is not None else -100]
    return StepFeatures(ids, positions, targets if labels is not None else [])


# ---------------------------------------------------------------------------------------------------
# RLEIF's reward (pure)


def split_steps(text: str, separator: str) -> list[str]:
    """The steps of a solution: split on the separator, stripped, empty pieces dropped."""
    parts = text.split(separator) if separator else [text]
    return [p.strip() for p in parts if p.strip()]


def cap_steps(steps: Sequence[str], max_steps: int, separator: str) -> list[str]:
    """At most `max_steps` steps: the ones beyond are joined onto the last kept step.

    They are joined with the separator, so their text is still scored while the number of scored steps stays
    bounded.
    """
    if len(steps) <= max_steps:
        return list(steps)
    head = list(steps[: max_steps - 1])
    return [*head, separator.join(steps[max_steps - 1 :])]


def aggregate_steps(scores: Sequence[float], how: str) -> float:
    """One answer score from its step scores; 0 for an answer without steps.

    `min` (one wrong step spoils the solution), `mean`, `last` or `product`.
    """
    if not scores:
        return 0.0
    if how == "geomean":
        return math.exp(sum(math.log(max(s, 1e-6)) for s in scores) / len(scores))
    if how == "min":
        return min(scores)
    if how == "mean":
        return sum(scores) / len(scores)
    if how == "last":
        return scores[-1]
    if how == "product":
        return math.prod(scores)
    raise ValueError(f"unknown step aggregate {how!r}")


def combine(instruction_score: float | None, answer_score: float | None, how: str) -> float:
    """RLEIF's reward from the IRM score r_I and the PRM score r_A.

    `product` (r_I x r_A) or `sum`; a missing model leaves the other score alone.
    """
    present = [s for s in (instruction_score, answer_score) if s is not None]
    if not present:
        raise ValueError("RLEIF needs an IRM or a PRM score")
    if how == "product":
        return math.prod(present)
    if how == "sum":
        return sum(present)
    raise ValueError(f"unknown combination {how!r}")


# ---------------------------------------------------------------------------------------------------
# The places that run reward models


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def instruction_logits(
    model: Any, tokenizer: Any, instructions: Sequence[str], max_length: int, batch_size: int = 16
) -> list[float]:
    """Raw IRM outputs of instructions."""
    import torch

    model.eval()
    out: list[float] = []
    for start in range(0, len(instructions), batch_size):
        encoded = [
            instruction_ids(tokenizer, text, max_length) for text in instructions[start : start + batch_size]
        ]
        input_ids, attention = _pad(encoded, tokenizer.pad_token_id)
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids.to(_device(model)), attention_mask=attention.to(_device(model))
            ).logits
        out.extend(logits[:, 0].float().tolist())
    return out


def step_probabilities(
    model: Any, tokenizer: Any, features: Sequence[StepFeatures], batch_size: int = 8
) -> list[list[float]]:
    """P(correct) of every step of every solution."""
    import torch

    model.eval()
    out: list[list[float]] = []
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        input_ids, attention = _pad([f.input_ids for f in chunk], tokenizer.pad_token_id)
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids.to(_device(model)), attention_mask=attention.to(_device(model))
            ).logits
        correct = torch.softmax(logits.float(), dim=-1)[..., 1]
        out.extend([correct[row, f.positions].tolist() for row, f in enumerate(chunk)])
    return out


def _pad(sequences: Sequence[list[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max((len(s) for s in sequences), default=1) or 1
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        if ids:
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
    return input_ids, attention


class InstructionScorer:
    """A trained IRM: instruction -> quality in (0, 1)."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.metadata = RewardMetadata.read(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(folder)).to(device)

    def score(self, instructions: Sequence[str]) -> list[float]:
        """sigmoid(IRM output) of each instruction."""
        logits = instruction_logits(self.model, self.tokenizer, instructions, self.metadata.max_length)
        return [1.0 / (1.0 + math.exp(-x)) for x in logits]


class StepScorer:
    """A trained PRM: (question, steps) -> P(correct) per step."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.metadata = RewardMetadata.read(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForTokenClassification.from_pretrained(str(folder)).to(device)

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Step scores of each (question, steps); steps beyond the length limit get no score.

        The list is then shorter than the steps: the caller decides what an incompletely scored solution is
        worth.
        """
        features = [
            step_features(
                self.tokenizer, prompt, steps, self.metadata.step_separator, self.metadata.max_length
            )
            for prompt, steps in items
        ]
        return step_probabilities(self.model, self.tokenizer, features)
