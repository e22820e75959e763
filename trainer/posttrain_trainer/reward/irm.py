"""IRM: the instruction quality reward model of RLEIF, trained pairwise on TRL's RewardTrainer.

For each seed instruction the EvolJob generates several evolved variants and a strong model ranks them
(definition, precision, integrity). Every ranking of n variants gives n(n-1)/2 pairs (better, worse);
the IRM — the base model with a one-output sequence-classification head — learns
P(better > worse) = sigmoid(r(better) - r(worse)) (Bradley–Terry).

Inputs: `spec.baseModel.uri`, `spec.dataset` (ranking rows `{"id", "instructions": [best ... worst],
"meta"}`). Rankings, not pairs, are held out (`reward.evalFraction`) so no instruction of the evaluation
is seen in training.
Outputs: `model` (the IRM, with `posttrain-reward.json`), `checkpoints/`; metrics `loss`, `pairs`,
`eval.accuracy.start` / `eval.accuracy` (pairwise accuracy on the held-out rankings before / after training) and
`eval.loss.start` / `eval.loss` (the Bradley–Terry loss on the same pairs). Accuracy only counts which
side of zero each margin falls on, so a few held-out pairs give it a handful of values, the top one
included before any training; the loss also measures how far, and keeps falling as the margins grow.

The score head is new weights, drawn from `reward.seed` (as is the held-out split), so two runs of one
spec start from the same model and report the same figures.

Reference: Luo et al., 2023 (WizardMath, the Instruction quality Reward Model).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from posttrain.api.metrics import Reward

from posttrain_trainer.common.chat import RowError
from posttrain_trainer.reward.base import RewardMethod
from posttrain_trainer.reward.scoring import instruction_ids, instruction_logits
from posttrain_trainer.train import common
from posttrain_trainer.train.template import Place, Setup, Split

MAX_EVAL_PAIRS = 2048
"""Held-out pairs scored for the accuracy metric at most."""


def ranking(row: dict[str, Any]) -> list[str]:
    """The instructions of a ranking row, best first.

    Raises:
        RowError: fewer than two non-empty instructions.
    """
    instructions = row.get("instructions")
    if not isinstance(instructions, list):
        raise RowError("`instructions` is not a list")
    texts = [t for t in instructions if isinstance(t, str) and t.strip()]
    if len(texts) != len(instructions) or len(texts) < 2:
        raise RowError("a ranking needs at least two non-empty instructions")
    return texts


def ranking_pairs(instructions: list[str]) -> list[tuple[str, str]]:
    """(better, worse) for every two positions of a ranking; identical texts make no pair."""
    return [(a, b) for a, b in itertools.combinations(instructions, 2) if a != b]


def pairwise_accuracy(better: list[float], worse: list[float]) -> float:
    """Share of pairs whose better instruction scores higher; NaN when empty."""
    if not better:
        return math.nan
    return sum(b > w for b, w in zip(better, worse, strict=True)) / len(better)


def pairwise_loss(better: list[float], worse: list[float]) -> float:
    """Mean Bradley–Terry loss -log sigmoid(r(better) - r(worse)) of scored pairs; NaN when empty."""
    if not better:
        return math.nan
    total = 0.0
    for b, w in zip(better, worse, strict=True):
        margin = b - w
        # log(1 + e^-m) written so that neither a large nor a very negative margin overflows.
        total += max(-margin, 0.0) + math.log1p(math.exp(-abs(margin)))
    return total / len(better)


def load_rankings(uri: str) -> tuple[list[list[str]], int]:
    """The rankings of a dataset and the number of rows set aside as malformed."""
    return common.load_parsed(uri, ranking)


def evaluate_pairs(
    model: Any, tokenizer: Any, pairs: list[tuple[str, str]], max_length: int
) -> dict[str, float]:
    """Pairwise accuracy and Bradley–Terry loss of an IRM on (better, worse) pairs.

    The metrics are `eval.accuracy` and `eval.loss`, from one scoring pass.
    """
    better = instruction_logits(model, tokenizer, [b for b, _ in pairs], max_length)
    worse = instruction_logits(model, tokenizer, [w for _, w in pairs], max_length)
    return {Reward.ACCURACY: pairwise_accuracy(better, worse), Reward.EVAL_LOSS: pairwise_loss(better, worse)}


Pair = tuple[str, str]
"""(better, worse) instruction."""


class IRM(RewardMethod[Pair, dict[str, float]]):
    """The instruction quality reward model: ranked instruction variants in.

    Pairwise accuracy and Bradley–Terry loss on the held-out rankings before and after.
    """

    auto_class = "AutoModelForSequenceClassification"
    model_kwargs = {"num_labels": 1}
    lora_task = "SEQ_CLS"
    watch = ("loss", "accuracy")

    def load_data(self) -> Split[Pair]:
        """Every ordered pair of the training rankings, and the held-out rankings' pairs.

        At most MAX_EVAL_PAIRS pairs are held out.
        """
        dataset = self.spec.dataset
        assert dataset.uri is not None
        rankings, rejected = load_rankings(dataset.uri)
        train_rankings, held_out = self.hold_out(rankings)
        train_pairs = [p for r in train_rankings for p in ranking_pairs(r)]
        eval_pairs = [p for r in held_out for p in ranking_pairs(r)][:MAX_EVAL_PAIRS]
        if not train_pairs:
            raise ValueError(f"{dataset.uri}: no ranking with two different instructions")
        counts: dict[str, float] = {
            Reward.ROWS_USED: float(len(train_rankings)),
            Reward.ROWS_REJECTED: float(rejected),
            Reward.PAIRS: float(len(train_pairs)),
        }
        return Split(train_pairs, eval_pairs, counts)

    def trainer_config(self, output_dir: Path, place: Place) -> Any:
        """TRL's RewardConfig."""
        from trl.trainer.reward_config import RewardConfig

        return RewardConfig(
            **common.training_arguments(self.schedule, output_dir, place.hardware, place.dist),
            max_length=self.spec.reward.max_length,
        )

    def build_trainer(self, setup: Setup[Pair]) -> Any:
        """TRL's RewardTrainer over the tokenized pairs."""
        from datasets import Dataset
        from trl.trainer.reward_trainer import RewardTrainer

        max_length = self.spec.reward.max_length
        dataset = Dataset.from_list(
            [
                {
                    "chosen_ids": instruction_ids(setup.tokenizer, better, max_length),
                    "rejected_ids": instruction_ids(setup.tokenizer, worse, max_length),
                }
                for better, worse in setup.train
            ]
        )
        return RewardTrainer(
            model=setup.model,
            args=setup.args,
            train_dataset=dataset,
            processing_class=setup.tokenizer,
            peft_config=common.lora_config(self.lora, self.lora_task),
            callbacks=setup.callbacks,
        )

    def score(self, model: Any, tokenizer: Any, held_out: list[Pair]) -> dict[str, float]:
        """`eval.accuracy` and `eval.loss` of the held-out pairs."""
        return evaluate_pairs(model, tokenizer, held_out, self.spec.reward.max_length)

    def evaluation_metrics(
        self, scores: dict[str, float], start: dict[str, float] | None
    ) -> dict[str, float]:
        """`eval.accuracy` and `eval.loss`."""
        return scores
