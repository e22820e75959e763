"""PRM: the process-supervised reward model of RLEIF, on transformers' Trainer.

A strong model judges every step of a solution correct or not (the AlignRound's `step-labels`); the PRM
learns those labels per step. It is the base model with a two-label token-classification head, and the
loss is the cross-entropy at one token per step.

Data format (one JSON object per line, `steps` format of `common/chat.py`):

    {"id": "...", "prompt": "the question", "steps": ["step 1", "step 2", ...], "labels": [1, 0, ...]}

`labels[i]` is 1 when step i is correct, 0 when it is not; `steps` and `labels` have the same length.
Each solution becomes one sequence (see `scoring.step_features`): the question rendered with the chat
template and its generation prompt, then each step followed by the step separator (`reward.stepSeparator`,
a newline by default); the label sits on the last token of the step's separator, every other position
is ignored (-100). Steps beyond `reward.maxLength` are dropped.

Inputs: `spec.baseModel.uri`, `spec.dataset` (step rows). Solutions, not steps, are held out
(`reward.evalFraction`).
Outputs: `model` (the PRM, with `posttrain-reward.json`), `checkpoints/`; metrics `loss`,
`labelledSteps` (steps trained on), `eval.accuracy.start` / `eval.accuracy` (held-out step accuracy before / after),
`eval.loss.start` / `eval.loss` (the cross-entropy of the same held-out step labels, which still falls
where accuracy has no room left to rise). The new token-classification head (and LoRA adapters) are
drawn from `reward.seed`, so two runs of one spec start from the same model.

Reference: Luo et al., 2023 (WizardMath, the Process-supervised Reward Model); Lightman et al., 2023
(Let's Verify Step by Step) for per-step labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.api.metrics import Reward

from posttrain_trainer.common.chat import RowError
from posttrain_trainer.reward.base import RewardMethod
from posttrain_trainer.reward.scoring import StepFeatures, step_features, step_probabilities
from posttrain_trainer.train import common
from posttrain_trainer.train.template import Place, Setup, Split


def solution(row: dict[str, Any]) -> tuple[str, list[str], list[int]]:
    """(question, steps, labels) of a step row.

    Raises:
        RowError: a missing question, no steps, or labels that are not one 0/1 per step.
    """
    prompt, steps, labels = row.get("prompt"), row.get("steps"), row.get("labels")
    if isinstance(prompt, list):  # a chat prompt: its last user turn is the question
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1] if users else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise RowError("`prompt` is not a non-empty string")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise RowError("`steps` is not a non-empty list of strings")
    if not isinstance(labels, list) or len(labels) != len(steps):
        raise RowError("`labels` must have one entry per step")
    if not all(label in (0, 1) and not isinstance(label, float) for label in labels):
        raise RowError("`labels` must be 1 (correct) or 0 (incorrect)")
    return prompt, list(steps), [int(label) for label in labels]


def load_solutions(uri: str) -> tuple[list[tuple[str, list[str], list[int]]], int]:
    """The labelled solutions of a dataset and the number of rows set aside as malformed."""
    return common.load_parsed(uri, solution)


def step_accuracy(predicted: Sequence[Sequence[float]], labels: Sequence[Sequence[int]]) -> float:
    """Share of steps whose P(correct) is on the side of 0.5 their label is on; NaN without steps."""
    hits = total = 0
    for scores, truth in zip(predicted, labels, strict=True):
        for score, label in zip(scores, truth, strict=False):  # steps cut by maxLength have no score
            hits += int((score > 0.5) == bool(label))
            total += 1
    return hits / total if total else math.nan


def step_loss(predicted: Sequence[Sequence[float]], labels: Sequence[Sequence[int]]) -> float:
    """Mean cross-entropy of step labels under the predicted P(correct); NaN without steps."""
    total, count = 0.0, 0
    for scores, truth in zip(predicted, labels, strict=True):
        for score, label in zip(scores, truth, strict=False):  # steps cut by maxLength have no score
            likelihood = score if label else 1.0 - score
            # A saturated softmax can round to exactly 0; the floor keeps the loss finite.
            total -= math.log(max(likelihood, 1e-12))
            count += 1
    return total / count if count else math.nan


class StepLabelCollator:
    """Pads PRM features into a batch: input ids with the pad token, labels with -100."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        """One batch: `input_ids`, `attention_mask` and `labels` as tensors padded to the longest feature."""
        import torch

        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            input_ids[row, :length] = torch.tensor(feature["input_ids"])
            attention[row, :length] = 1
            labels[row, :length] = torch.tensor(feature["labels"])
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def process_reward_trainer(
    model: Any, args: Any, features: Sequence[StepFeatures], tokenizer: Any, callbacks: list[Any]
) -> Any:
    """A transformers Trainer that trains a token classifier on PRM features.

    The token-classification head's own loss (cross-entropy over the labelled positions, -100 ignored)
    is the PRM loss, so the Trainer needs only the data and its collator.
    """
    from transformers import Trainer

    class ProcessRewardTrainer(Trainer):
        """Trainer of a process-supervised reward model (one label per solution step)."""

    rows = [{"input_ids": f.input_ids, "labels": f.labels} for f in features]
    return ProcessRewardTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=StepLabelCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


Solution = tuple[str, list[str], list[int]]
"""(question, steps, labels) of one labelled solution."""


def labelled_steps(rows: Sequence[dict[str, list[int]]]) -> int:
    """Steps that carry a label in PRM training rows (every other position is -100)."""
    return sum(sum(label != -100 for label in row["labels"]) for row in rows)


@dataclass(frozen=True)
class StepScores:
    """One scoring pass of held-out solutions: P(correct) of every step, and the steps' labels."""

    predicted: list[list[float]]
    labels: list[list[int]]


class PRM(RewardMethod[Solution, StepScores]):
    """The process-supervised reward model: labelled solution steps in.

    Step accuracy and cross-entropy on the held-out solutions before and after.
    """

    auto_class = "AutoModelForTokenClassification"
    model_kwargs = {"num_labels": 2}
    lora_task = "TOKEN_CLS"

    def load_data(self) -> Split[Solution]:
        """The labelled solutions of the dataset, and the held-out ones."""
        assert self.spec.dataset.uri is not None
        solutions, rejected = load_solutions(self.spec.dataset.uri)
        train, held_out = self.hold_out(solutions)
        if not train:
            raise ValueError(f"{self.spec.dataset.uri}: no labelled solution")
        return Split(
            train, held_out, {Reward.ROWS_USED: float(len(train)), Reward.ROWS_REJECTED: float(rejected)}
        )

    def trainer_config(self, output_dir: Path, place: Place) -> Any:
        """The TrainingArguments of transformers."""
        from transformers import TrainingArguments

        return TrainingArguments(
            **common.training_arguments(self.schedule, output_dir, place.hardware, place.dist),
            # Rows are pre-tokenized lists, not a datasets.Dataset with columns to prune.
            remove_unused_columns=False,
        )

    def prepare_model(self, model: Any) -> Any:
        """The token classifier, with LoRA adapters when the spec turns them on (drawn from the seed)."""
        lora = common.lora_config(self.lora, self.lora_task)
        if lora is None:
            return model
        from peft import get_peft_model

        return get_peft_model(model, lora)

    def features(self, tokenizer: Any, items: Sequence[Solution], labelled: bool) -> list[StepFeatures]:
        """The PRM inputs of solutions (with their step labels when `labelled`)."""
        settings = self.spec.reward
        return [
            step_features(
                tokenizer, p, s, settings.step_separator, settings.max_length, labels if labelled else None
            )
            for p, s, labels in items
        ]

    def build_trainer(self, setup: Setup[Solution]) -> Any:
        """A token-classification Trainer over the solutions with at least one step that fits."""
        features = [f for f in self.features(setup.tokenizer, setup.train, True) if f.positions]
        return process_reward_trainer(setup.model, setup.args, features, setup.tokenizer, setup.callbacks)

    def score(self, model: Any, tokenizer: Any, held_out: list[Solution]) -> StepScores:
        """P(correct) of every held-out step."""
        predicted = step_probabilities(model, tokenizer, self.features(tokenizer, held_out, False))
        return StepScores(predicted, [labels for _, _, labels in held_out])

    def evaluation_metrics(self, scores: StepScores, start: StepScores | None) -> dict[str, float]:
        """`eval.accuracy` and `eval.loss` of the held-out step labels."""
        return {
            Reward.ACCURACY: step_accuracy(scores.predicted, scores.labels),
            Reward.EVAL_LOSS: step_loss(scores.predicted, scores.labels),
        }

    def training_metrics(self, trainer: Any) -> dict[str, float]:
        """`labelledSteps`: the steps trained on."""
        return {Reward.LABELLED_STEPS: float(labelled_steps(trainer.train_dataset))}
