"""The shared base of a TrainStage's methods (SFT, Stage-DPO, RLEIF): their settings, read from the spec.

Inputs: the TrainStage spec (`posttrain.api.train`). The hooks of each method are in its own module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from posttrain.api.common import DataRef
from posttrain.api.metrics import Train
from posttrain.api.reward import LoRA
from posttrain.api.tracking import Tracking
from posttrain.api.train import TrainStageSpec

from posttrain_trainer.common.chat import prompt_key
from posttrain_trainer.common.storage import local_path
from posttrain_trainer.common.verify import RIGHT, AnswerVerifier
from posttrain_trainer.train import common
from posttrain_trainer.train.evaluation import generate_answers
from posttrain_trainer.train.template import ItemT, LearningMethod, ScoresT, Split
from posttrain_trainer.train.tracking import report_to


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
        report_to=tuple(report_to(spec.tracking)),
    )


class StageMethod(LearningMethod[ItemT, ScoresT]):
    """A TrainStage method: the settings every one of them reads from `spec.train`."""

    catalogue = Train.ALL

    def __init__(self, spec: TrainStageSpec) -> None:
        self.spec = spec

    @property
    def base_model(self) -> Path:
        """The stage's starting model (`spec.model`)."""
        assert self.spec.model.uri is not None, "references are resolved before the workload runs"
        return local_path(self.spec.model.uri)

    @property
    def schedule(self) -> common.Schedule:
        """The common training settings of `spec.train`."""
        return schedule(self.spec)

    @property
    def lora(self) -> LoRA:
        """`spec.train.lora`."""
        return self.spec.train.lora

    @property
    def attention(self) -> str:
        """`spec.train.attention`."""
        return self.spec.train.attention

    @property
    def tracking(self) -> Tracking | None:
        """`spec.tracking`."""
        return self.spec.tracking

    @property
    def chat_template(self) -> str:
        """`spec.train.chatTemplate`."""
        return self.spec.train.chat_template

    def hold_out(
        self, rows: list[ItemT], read_eval: Callable[[DataRef], list[ItemT]]
    ) -> tuple[list[ItemT], list[ItemT]]:
        """(train, held out), at most `maxSamples` held out.

        Held out are the rows of `spec.evalDataset` when there is one (read by `read_eval`), else a seeded
        share of `rows` (`train.evaluation.fraction`).
        """
        evaluation = self.spec.train.evaluation
        if self.spec.eval_dataset is not None and self.spec.eval_dataset.uri is not None:
            return rows, read_eval(self.spec.eval_dataset)[: evaluation.max_samples]
        return common.split_holdout(rows, evaluation.fraction, evaluation.max_samples, self.spec.train.seed)

    def task_rows(self) -> list[dict[str, Any]]:
        """The chats of `train.evaluation.tasks` (at most `maxSamples`), none without tasks."""
        tasks = self.spec.train.evaluation.tasks
        if tasks is None:
            return []
        assert tasks.dataset.uri is not None, "references are resolved before the workload runs"
        return common.load_chats(tasks.dataset.uri, tasks.dataset.format).rows[: tasks.max_samples]

    def set_aside_tasks(
        self, rows: list[ItemT], first_user_turn: Callable[[ItemT], str]
    ) -> tuple[list[ItemT], float]:
        """(`rows` without those whose first user turn is an `evaluation.tasks` problem, how many went).

        The tasks measure what the stage teaches on problems it did not see: an earlier stage (an
        evolution that happened to produce a benchmark question, a co-teaching battle on it) can put one
        into the training data, so it is set aside here and counted as `rows.contaminated`.
        """
        problems = [task_problem(row["messages"]) for row in self.task_rows()]
        held_out = {prompt_key(p[0][-1]["content"]) for p in problems if p is not None}
        if not held_out:
            return rows, 0.0
        kept = [row for row in rows if prompt_key(first_user_turn(row)) not in held_out]
        return kept, float(len(rows) - len(kept))

    def split(
        self, train: list[ItemT], held_out: list[ItemT], rejected: int, contaminated: float
    ) -> Split[ItemT]:
        """The method's `Split`, with the data counts every method reports."""
        counts = {
            Train.ROWS_USED: float(len(train)),
            Train.ROWS_REJECTED: float(rejected),
            Train.ROWS_CONTAMINATED: contaminated,
        }
        return Split(train, held_out, {str(name): value for name, value in counts.items()})

    def task_metrics(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """`eval.taskAccuracy`: the share of `train.evaluation.tasks` problems the verifier finds right."""
        tasks = self.spec.train.evaluation.tasks
        if tasks is None:
            return {}
        problems = [task_problem(row["messages"]) for row in self.task_rows()]
        usable = [p for p in problems if p is not None]
        if not usable:
            raise ValueError(f"{tasks.dataset.uri}: no problem (a chat row with a user turn) to evaluate on")
        answers = generate_answers(model, tokenizer, [prompt for prompt, _ in usable], tasks.max_new_tokens)
        verifier = AnswerVerifier(tasks.verifier.type, tasks.verifier.tolerance)
        scores = [
            verifier.score(prompt[-1]["content"], answer, reference)
            for (prompt, reference), answer in zip(usable, answers, strict=True)
        ]
        checked = [score for score in scores if score is not None]
        return {Train.TASK_ACCURACY: sum(s == RIGHT for s in checked) / len(checked) if checked else math.nan}


def task_problem(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str | None] | None:
    """(the conversation up to the first user turn, the answer after it or None), None without a user turn."""
    first = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if first is None:
        return None
    following = messages[first + 1 : first + 2]
    reference = following[0]["content"] if following and following[0]["role"] == "assistant" else None
    return list(messages[: first + 1]), reference
