"""Supervised fine-tuning (the "Learning" step of WizardLM-2) on TRL's SFTTrainer.

Conversations are rendered in the WizardLM-2 (Vicuna) format unless the spec keeps the model's own
template; the loss is on the assistant's answers only (the template's generation markers). Sequences are
packed padding-free (best-fit decreasing) or padded; LoRA, DeepSpeed ZeRO 2/3, gradient accumulation,
bf16 and Liger kernels come from the spec and the hardware.

Inputs: `spec.model.uri` (a model folder), `spec.dataset` (chat rows: posttrain chat, ShareGPT, Alpaca,
OpenAI messages), optionally `spec.evalDataset`.
Outputs: `model` (the fine-tuned model folder), `checkpoints/`; metrics `loss`, `eval.exactMatch.start`,
`eval.exactMatch` (greedy answers to held-out chats equal to the reference answer).

References: the WizardLM-2 announcement; Luo et al., 2024 (Arena Learning) for the SFT settings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from posttrain.api.metrics import Train
from posttrain.api.train import TrainStageSpec

from posttrain_trainer.common.chat import instruction
from posttrain_trainer.train import common
from posttrain_trainer.train.evaluation import exact_match, generate_answers, prompt_and_reference
from posttrain_trainer.train.stage import StageMethod, schedule
from posttrain_trainer.train.template import Place, Setup, Split


def trainable_chats(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chats with at least one assistant answer after a user turn, as the trainer reads them.

    A chat without one has nothing to learn; each is reduced to its `messages`.
    """
    return [{"messages": r["messages"]} for r in rows if prompt_and_reference(r["messages"]) is not None]


def sft_config(
    spec: TrainStageSpec, output_dir: Path, hardware: common.Hardware, dist: common.DistributedEnv
) -> Any:
    """TRL's SFTConfig for a TrainStage."""
    from trl.trainer.sft_config import SFTConfig

    return SFTConfig(
        **common.training_arguments(schedule(spec), output_dir, hardware, dist),
        max_length=spec.train.max_length,
        packing=spec.train.packing,
        packing_strategy="bfd",
        assistant_only_loss=True,
    )


def build_trainer(
    spec: TrainStageSpec,
    model: Any,
    tokenizer: Any,
    chats: list[dict[str, Any]],
    args: Any,
    callbacks: list[Any] | None = None,
) -> Any:
    """An SFTTrainer over chat rows (`{"messages": [...]}`) with this project's settings.

    `args` come from `sft_config`, made before the model is loaded so that ZeRO-3 loads it sharded.
    """
    from datasets import Dataset
    from trl.trainer.sft_trainer import SFTTrainer

    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(chats),
        processing_class=tokenizer,
        peft_config=common.lora_config(spec.train.lora, "CAUSAL_LM"),
        callbacks=callbacks or [],
    )


def exact_match_of(model: Any, tokenizer: Any, held_out: list[dict[str, Any]], max_new_tokens: int) -> float:
    """Exact match of greedy answers to held-out chats."""
    pairs = [p for p in (prompt_and_reference(r["messages"]) for r in held_out) if p is not None]
    if not pairs:
        return math.nan
    answers = generate_answers(model, tokenizer, [p for p, _ in pairs], max_new_tokens)
    return exact_match(answers, [ref for _, ref in pairs])


class SFT(StageMethod[dict[str, Any], float]):
    """Supervised fine-tuning: chats in, exact match of held-out answers before and after."""

    def load_data(self) -> Split[dict[str, Any]]:
        """The trainable chats of `spec.dataset`, and the held-out ones."""
        dataset = self.spec.dataset
        assert dataset is not None and dataset.uri is not None
        loaded = common.load_chats(dataset.uri, dataset.format)
        chats = trainable_chats(loaded.rows)
        rejected = loaded.rejected + len(loaded.rows) - len(chats)
        chats, contaminated = self.set_aside_tasks(chats, instruction)
        chats, held_out = self.hold_out(
            chats, lambda ref: trainable_chats(common.load_chats(str(ref.uri), ref.format).rows)
        )
        if not chats:
            raise ValueError(f"{dataset.uri}: no chat with an assistant answer to learn from")
        return self.split(chats, held_out, rejected, contaminated)

    def trainer_config(self, output_dir: Path, place: Place) -> Any:
        """TRL's SFTConfig."""
        return sft_config(self.spec, output_dir, place.hardware, place.dist)

    def build_trainer(self, setup: Setup[dict[str, Any]]) -> Any:
        """TRL's SFTTrainer."""
        return build_trainer(
            self.spec, setup.model, setup.tokenizer, setup.train, setup.args, setup.callbacks
        )

    def score(self, model: Any, tokenizer: Any, held_out: list[dict[str, Any]]) -> float:
        """Exact match of greedy answers to the held-out chats."""
        return exact_match_of(model, tokenizer, held_out, self.spec.train.evaluation.max_new_tokens)

    def evaluation_metrics(self, scores: float, start: float | None) -> dict[str, float]:
        """`eval.exactMatch`."""
        return {Train.EXACT_MATCH: scores}
