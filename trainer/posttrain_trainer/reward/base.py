"""The shared base of the reward models (IRM, PRM): their settings, read from the RewardModel spec.

Inputs: the RewardModel spec (`posttrain.api.reward`). The hooks of each model are in its own module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from posttrain.api.metrics import Reward
from posttrain.api.reward import LoRA, RewardModelSpec
from posttrain.api.tracking import Tracking

from posttrain_trainer.common.storage import local_path
from posttrain_trainer.reward.scoring import REWARD_FILE, RewardMetadata
from posttrain_trainer.train import common
from posttrain_trainer.train.template import ItemT, LearningMethod, Place, ScoresT
from posttrain_trainer.train.tracking import report_to

RowT = TypeVar("RowT")


def schedule(spec: RewardModelSpec) -> common.Schedule:
    """The common training settings of a RewardModel."""
    reward = spec.reward
    return common.Schedule(
        epochs=reward.epochs,
        max_steps=reward.max_steps,
        learning_rate=reward.learning_rate,
        batch_size=reward.batch_size,
        micro_batch_size=reward.micro_batch_size,
        precision=reward.precision,
        zero_stage=reward.zero_stage,
        gradient_checkpointing=reward.gradient_checkpointing,
        checkpoint_steps=reward.checkpoint_steps,
        seed=reward.seed,
        lr_scheduler="cosine",
        warmup_ratio=0.03,
        report_to=tuple(report_to(spec.tracking)),
    )


class RewardMethod(LearningMethod[ItemT, ScoresT]):
    """A reward model: a head on the base model, trained with the settings of `spec.reward`.

    It is saved with its `posttrain-reward.json` (what RLEIF's scorers read).
    """

    catalogue = Reward.ALL

    def __init__(self, spec: RewardModelSpec) -> None:
        self.spec = spec

    @property
    def base_model(self) -> Path:
        """`spec.baseModel`."""
        assert self.spec.base_model.uri is not None, "references are resolved before the workload runs"
        return local_path(self.spec.base_model.uri)

    @property
    def schedule(self) -> common.Schedule:
        """The common training settings of `spec.reward`."""
        return schedule(self.spec)

    @property
    def lora(self) -> LoRA:
        """`spec.reward.lora`."""
        return self.spec.reward.lora

    @property
    def attention(self) -> str:
        """`auto`: reward models have no attention setting."""
        return "auto"

    @property
    def tracking(self) -> Tracking | None:
        """`spec.tracking`."""
        return self.spec.tracking

    @property
    def extra_files(self) -> dict[str, str]:
        """`posttrain-reward.json`: the model's type, step separator and maximum length."""
        settings = self.spec.reward
        metadata = RewardMetadata(self.spec.type, settings.step_separator, settings.max_length)
        return {REWARD_FILE: metadata.to_json()}

    def reload_attention(self, place: Place) -> str:
        """PyTorch's scaled-dot-product attention: the trained head scores padded batches in any dtype."""
        return "sdpa"

    def hold_out(self, rows: list[RowT]) -> tuple[list[RowT], list[RowT]]:
        """(train, held out): a seeded share of the rows (`reward.evalFraction`)."""
        settings = self.spec.reward
        return common.split_holdout(rows, settings.eval_fraction, len(rows), settings.seed)
