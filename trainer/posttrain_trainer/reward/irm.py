"""IRM: the instruction quality reward model of RLEIF, trained pairwise on TRL's RewardTrainer.

For each seed instruction the EvolJob generates several evolved variants and a strong model ranks them
(definition, precision, integrity). Every ranking of n variants gives n(n-1)/2 pairs (better, worse);
the IRM — the base model with a one-output sequence-classification head — learns
P(better > worse) = sigmoid(r(better) - r(worse)) (Bradley–Terry).

Inputs: `spec.baseModel.uri`, `spec.dataset` (ranking rows `{"id", "instructions": [best ... worst],
"meta"}`). Rankings, not pairs, are held out (`reward.evalFraction`) so no instruction of the evaluation
is seen in training.
Outputs: `model` (the IRM, with `posttrain-reward.json`), `checkpoints/`; metrics `loss`, `pairs`,
`accuracy.start` / `accuracy` (pairwise accuracy on the held-out rankings before / after training) and
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
from typing import Any

from posttrain.api.reward import RewardModelSpec

from posttrain_trainer.common.chat import RowError
from posttrain_trainer.common.storage import Workspace, local_path
from posttrain_trainer.reward.scoring import REWARD_FILE, RewardMetadata, instruction_ids, instruction_logits
from posttrain_trainer.train import common

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
    )


def load_rankings(uri: str) -> tuple[list[list[str]], int]:
    """The rankings of a dataset and the number of rows set aside as malformed."""
    return common.load_parsed(uri, ranking)


def evaluate_pairs(
    model: Any, tokenizer: Any, pairs: list[tuple[str, str]], max_length: int
) -> dict[str, float]:
    """Pairwise accuracy and Bradley–Terry loss of an IRM on (better, worse) pairs (`accuracy`,
    `eval.loss`), from one scoring pass."""
    better = instruction_logits(model, tokenizer, [b for b, _ in pairs], max_length)
    worse = instruction_logits(model, tokenizer, [w for _, w in pairs], max_length)
    return {"accuracy": pairwise_accuracy(better, worse), "eval.loss": pairwise_loss(better, worse)}


def run(spec: RewardModelSpec, workspace: Workspace, reporter: Any) -> dict[str, float]:
    """Train the IRM; returns the metrics."""
    from datasets import Dataset
    from trl.trainer.reward_config import RewardConfig
    from trl.trainer.reward_trainer import RewardTrainer

    dist = common.distributed_env()
    hardware = common.probe_hardware()
    assert spec.dataset.uri is not None and spec.base_model.uri is not None
    settings = spec.reward
    rankings, rejected = load_rankings(spec.dataset.uri)
    train_rankings, held_out = common.split_holdout(
        rankings, settings.eval_fraction, len(rankings), settings.seed
    )
    train_pairs = [p for r in train_rankings for p in ranking_pairs(r)]
    eval_pairs = [p for r in held_out for p in ranking_pairs(r)][:MAX_EVAL_PAIRS]
    if not train_pairs:
        raise ValueError(f"{spec.dataset.uri}: no ranking with two different instructions")
    evaluate = bool(eval_pairs) and dist.is_main and settings.zero_stage < 3

    checkpoints = workspace.path(common.CHECKPOINTS)
    # Made before the model is loaded, so that ZeRO-3 loads it sharded.
    args = RewardConfig(
        **common.training_arguments(schedule(spec), checkpoints, hardware, dist),
        max_length=settings.max_length,
    )
    base = local_path(spec.base_model.uri)
    tokenizer = common.load_tokenizer(base)
    precision = common.resolve_precision(settings.precision, hardware)
    # The score head is new weights: drawn from the spec's seed, a run starts where the last one did.
    common.seed_everything(settings.seed)
    model = common.load_model(
        base,
        "AutoModelForSequenceClassification",
        dtype=common.torch_dtype(precision, frozen_base=settings.lora.enabled or settings.zero_stage > 0),
        attention=common.resolve_attention("auto", hardware),
        num_labels=1,
    )
    common.set_pad_token(model, tokenizer)
    device = f"cuda:{dist.local_rank}" if hardware.cuda else "cpu"
    metrics: dict[str, float] = {
        "rows": float(len(train_rankings)),
        "rowsRejected": float(rejected),
        "pairs": float(len(train_pairs)),
    }
    if evaluate:
        model.to(device)
        start = evaluate_pairs(model, tokenizer, eval_pairs, settings.max_length)
        metrics.update({f"{name}.start": value for name, value in start.items()})

    dataset = Dataset.from_list(
        [
            {
                "chosen_ids": instruction_ids(tokenizer, better, settings.max_length),
                "rejected_ids": instruction_ids(tokenizer, worse, settings.max_length),
            }
            for better, worse in train_pairs
        ]
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=common.lora_config(settings.lora, "SEQ_CLS"),
        callbacks=[common.progress_callback(reporter, ("loss", "accuracy"))],
    )
    target = workspace.path(common.MODEL)
    metadata = RewardMetadata("irm", settings.step_separator, settings.max_length)
    metrics.update(
        common.train_and_save(
            trainer,
            tokenizer,
            checkpoints,
            target,
            dist.world_size,
            base_path=base,
            merge=settings.lora.merge,
            auto_class="AutoModelForSequenceClassification",
            model_kwargs={"num_labels": 1},
            extra_files={REWARD_FILE: metadata.to_json()},
        )
    )
    del trainer, model
    common.release_memory(hardware.cuda)
    if evaluate:
        trained = common.load_model(target, "AutoModelForSequenceClassification").to(device)
        metrics.update(evaluate_pairs(trained, tokenizer, eval_pairs, settings.max_length))
    return metrics
