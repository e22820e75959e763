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

import logging
import math
from pathlib import Path
from typing import Any

from posttrain.api.train import TrainStageSpec

from posttrain_trainer.common.storage import Workspace, local_path
from posttrain_trainer.train import common
from posttrain_trainer.train.evaluation import exact_match, generate_answers, prompt_and_reference

log = logging.getLogger(__name__)


def trainable_chats(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chats with at least one assistant answer after a user turn (nothing to learn otherwise),
    reduced to the `messages` the trainer reads."""
    return [{"messages": r["messages"]} for r in rows if prompt_and_reference(r["messages"]) is not None]


def schedule(spec: TrainStageSpec) -> common.Schedule:
    """The common training settings of a TrainStage."""
    train = spec.train
    return common.Schedule(
        epochs=train.epochs,
        max_steps=train.max_steps,
        learning_rate=train.learning_rate,
        batch_size=train.batch_size,
        micro_batch_size=train.micro_batch_size,
        precision=train.precision,
        zero_stage=train.zero_stage,
        gradient_checkpointing=train.gradient_checkpointing,
        checkpoint_steps=train.checkpoint_steps,
        seed=train.seed,
        lr_scheduler=train.lr_scheduler,
        warmup_ratio=train.warmup_ratio,
        liger_kernels=train.liger_kernels,
    )


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
    """An SFTTrainer over chat rows (`{"messages": [...]}`) with this project's settings (`args`: from
    `sft_config`, made before the model is loaded so that ZeRO-3 loads it sharded)."""
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


def load_student(spec: TrainStageSpec, hardware: common.Hardware) -> Any:
    """The starting model of the stage, in the dtype and attention kernel the spec and hardware call for."""
    train = spec.train
    precision = common.resolve_precision(train.precision, hardware)
    dtype = common.torch_dtype(precision, frozen_base=train.lora.enabled or train.zero_stage > 0)
    assert spec.model.uri is not None
    return common.load_model(
        local_path(spec.model.uri), dtype=dtype, attention=common.resolve_attention(train.attention, hardware)
    )


def exact_match_of(model: Any, tokenizer: Any, held_out: list[dict[str, Any]], max_new_tokens: int) -> float:
    """Exact match of greedy answers to held-out chats."""
    pairs = [p for p in (prompt_and_reference(r["messages"]) for r in held_out) if p is not None]
    if not pairs:
        return math.nan
    answers = generate_answers(model, tokenizer, [p for p, _ in pairs], max_new_tokens)
    return exact_match(answers, [ref for _, ref in pairs])


def _evaluation_device(hardware: common.Hardware, dist: common.DistributedEnv) -> str:
    return f"cuda:{dist.local_rank}" if hardware.cuda else "cpu"


def run(spec: TrainStageSpec, workspace: Workspace, reporter: Any) -> dict[str, float]:
    """Fine-tune the stage's model on its chats; returns the metrics."""

    dist = common.distributed_env()
    hardware = common.probe_hardware()
    assert spec.dataset is not None and spec.dataset.uri is not None and spec.model.uri is not None
    loaded = common.load_chats(spec.dataset.uri, spec.dataset.format)
    chats = trainable_chats(loaded.rows)
    rejected = loaded.rejected + len(loaded.rows) - len(chats)
    evaluation = spec.train.evaluation
    if spec.eval_dataset is not None and spec.eval_dataset.uri is not None:
        held_out = trainable_chats(common.load_chats(spec.eval_dataset.uri, spec.eval_dataset.format).rows)
        held_out = held_out[: evaluation.max_samples]
    else:
        chats, held_out = common.split_holdout(
            chats, evaluation.fraction, evaluation.max_samples, spec.train.seed
        )
    if not chats:
        raise ValueError(f"{spec.dataset.uri}: no chat with an assistant answer to learn from")
    # Under ZeRO-3 the weights are sharded across processes; generation on one of them cannot run.
    evaluate = bool(held_out) and dist.is_main and spec.train.zero_stage < 3
    if held_out and spec.train.zero_stage == 3:
        log.warning("held-out evaluation is skipped under ZeRO-3 (sharded weights)")

    checkpoints = workspace.path(common.CHECKPOINTS)
    args = sft_config(spec, checkpoints, hardware, dist)
    tokenizer = common.load_tokenizer(local_path(spec.model.uri), spec.train.chat_template)
    common.seed_everything(spec.train.seed)
    model = load_student(spec, hardware)
    common.set_pad_token(model, tokenizer)
    metrics: dict[str, float] = {
        "rows": float(len(chats)),
        "rowsRejected": float(rejected),
    }
    if evaluate:
        model.to(_evaluation_device(hardware, dist))
        metrics["eval.exactMatch.start"] = exact_match_of(
            model, tokenizer, held_out, evaluation.max_new_tokens
        )

    trainer = build_trainer(spec, model, tokenizer, chats, args, [common.progress_callback(reporter)])
    target = workspace.path(common.MODEL)
    metrics.update(
        common.train_and_save(
            trainer,
            tokenizer,
            checkpoints,
            target,
            dist.world_size,
            base_path=local_path(spec.model.uri),
            merge=spec.train.lora.merge,
        )
    )
    del trainer, model
    common.release_memory(hardware.cuda)
    if evaluate:
        trained = common.load_model(
            target, attention=common.resolve_attention(spec.train.attention, hardware)
        )
        trained.to(_evaluation_device(hardware, dist))
        metrics["eval.exactMatch"] = exact_match_of(trained, tokenizer, held_out, evaluation.max_new_tokens)
    return metrics
