"""One learning template for SFT, Stage-DPO, RLEIF and the IRM / PRM reward models.

Every learning workload runs the same skeleton; only the hooks of its method differ (the TRL pattern:
a small module per method over a shared base):

1. load the data and hold out a share of it (`load_data`);
2. make the trainer's config before the model is loaded, so that ZeRO-3 loads it sharded
   (`trainer_config`);
3. load the tokenizer and, from the spec's seed, the model (`auto_class`, `model_kwargs`,
   `prepare_model`);
4. measure the held-out rows (`score`, `evaluation_metrics`) and any problems a verifier checks
   (`task_metrics`), reported as `<name>.start`;
5. train, resuming from the latest complete checkpoint, and save the `model` folder (`build_trainer`,
   `training_metrics`);
6. reload the saved model and measure the held-out rows again (`reload_attention`).

A method is registered once by name (`posttrain_trainer.train.METHODS`, `posttrain_trainer.reward.TYPES`),
checked by mypy against the spec's `Literal`. Progress goes to progress.json, the curves and the
held-out measurements to TensorBoard event files in `<output>/tensorboard/`, and the metrics to the
result document.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from posttrain.api.metrics import Metric
from posttrain.api.reward import LoRA
from posttrain.api.tracking import Tracking
from posttrain.api.workload import Result, WorkloadConfig

from posttrain_trainer.client.budget import BudgetTracker
from posttrain_trainer.common.lineage import write_manifest
from posttrain_trainer.common.report import Reporter, output
from posttrain_trainer.common.storage import Workspace
from posttrain_trainer.train import common
from posttrain_trainer.train.tracking import TENSORBOARD, EventLog, start_tracking, tensorboard_callback

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
"""One training or held-out row as the method reads it (a chat, a preference pair, a ranking...)."""
ScoresT = TypeVar("ScoresT")
"""What one scoring pass of the held-out rows gives (answers matched, log-probabilities...)."""

START = ".start"
"""Suffix of a held-out measurement taken before training."""


@dataclass
class Split(Generic[ItemT]):
    """The rows a method learns from, those it holds out, and counts for the metrics."""

    train: list[ItemT]
    """Rows to train on."""
    held_out: list[ItemT]
    """Rows measured before and after training (none: no held-out evaluation)."""
    counts: dict[str, float] = field(default_factory=dict)
    """Metrics known from the data alone (`rows.used`, `rows.rejected`, `pairs`...)."""


@dataclass(frozen=True)
class Place:
    """Where this process runs: the hardware and its rank under torchrun."""

    hardware: common.Hardware
    dist: common.DistributedEnv

    @property
    def device(self) -> str:
        """The device the held-out evaluation runs on."""
        return f"cuda:{self.dist.local_rank}" if self.hardware.cuda else "cpu"


@dataclass(frozen=True)
class Setup(Generic[ItemT]):
    """What a method's trainer is built from."""

    model: Any
    """The model to train (loaded, prepared, on its device)."""
    tokenizer: Any
    """Its tokenizer, with the chat template."""
    train: list[ItemT]
    """The training rows."""
    args: Any
    """The trainer's config (`trainer_config`)."""
    callbacks: list[Any]
    """Progress and TensorBoard callbacks."""
    place: Place
    """Where this process runs."""


class LearningMethod(ABC, Generic[ItemT, ScoresT]):
    """The hooks of one learning method; `learn` calls them in the template's order."""

    catalogue: ClassVar[tuple[Metric, ...]]
    """The metric names the method may report (`posttrain.api.metrics`); the result refuses others."""
    auto_class: ClassVar[str] = "AutoModelForCausalLM"
    """transformers' Auto class of the trained model."""
    model_kwargs: ClassVar[Mapping[str, Any]] = {}
    """Extra arguments of the model's `from_pretrained` (a head's `num_labels`)."""
    lora_task: ClassVar[str] = "CAUSAL_LM"
    """peft's task type of the LoRA adapters."""
    watch: ClassVar[tuple[str, ...]] = ("loss",)
    """Trainer log keys shown in the progress message."""

    # -- settings every method has, read from its spec ---------------------------------------------

    @property
    @abstractmethod
    def base_model(self) -> Path:
        """The folder of the model training starts from."""

    @property
    @abstractmethod
    def schedule(self) -> common.Schedule:
        """The common training settings."""

    @property
    @abstractmethod
    def lora(self) -> LoRA:
        """The adapter settings."""

    @property
    @abstractmethod
    def attention(self) -> str:
        """The spec's attention setting (`auto` or a kernel)."""

    @property
    @abstractmethod
    def tracking(self) -> Tracking | None:
        """The spec's experiment trackers."""

    @property
    def chat_template(self) -> str:
        """`vicuna` (the WizardLM-2 format) or `model` (the model's own)."""
        return "vicuna"

    @property
    def extra_files(self) -> dict[str, str]:
        """Files written beside the saved model (name -> text)."""
        return {}

    # -- the hooks ---------------------------------------------------------------------------------

    @abstractmethod
    def load_data(self) -> Split[ItemT]:
        """Read the training rows and hold out the evaluation rows.

        Raises:
            ValueError: nothing to learn from.
        """

    @abstractmethod
    def trainer_config(self, output_dir: Path, place: Place) -> Any:
        """The trainer's config (a TRL config or TrainingArguments), checkpoints in `output_dir`."""

    def prepare_model(self, model: Any) -> Any:
        """The model the trainer trains, from the loaded one (e.g. wrapped in adapters)."""
        return model

    @abstractmethod
    def build_trainer(self, setup: Setup[ItemT]) -> Any:
        """The trainer over the training rows."""

    @abstractmethod
    def score(self, model: Any, tokenizer: Any, held_out: list[ItemT]) -> ScoresT:
        """One scoring pass of the held-out rows with `model`."""

    @abstractmethod
    def evaluation_metrics(self, scores: ScoresT, start: ScoresT | None) -> dict[str, float]:
        """The held-out metrics of `scores`; `start` is None before training, else the scores then."""

    def task_metrics(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """Measurements of `model` beyond the held-out rows (problems a verifier checks); none by default."""
        return {}

    def training_metrics(self, trainer: Any) -> dict[str, float]:
        """Metrics of the finished training run beyond loss, steps, resumedFromStep and worldSize."""
        return {}

    def reload_attention(self, place: Place) -> str:
        """The attention kernel of the saved model for the evaluation after training."""
        return common.resolve_attention(self.attention, place.hardware)

    # -- model loading -----------------------------------------------------------------------------

    def load_model(self, place: Place) -> Any:
        """The starting model, in the dtype and attention kernel the spec and the hardware call for."""
        schedule = self.schedule
        precision = common.resolve_precision(schedule.precision, place.hardware)
        frozen_base = self.lora.enabled or schedule.zero_stage > 0
        return common.load_model(
            self.base_model,
            self.auto_class,
            dtype=common.torch_dtype(precision, frozen_base=frozen_base),
            attention=common.resolve_attention(self.attention, place.hardware),
            **self.model_kwargs,
        )


def learn(
    method: LearningMethod[Any, Any],
    workspace: Workspace,
    reporter: Reporter | None,
    budget: BudgetTracker | None = None,
) -> dict[str, float]:
    """Run the learning template with `method`'s hooks; returns the metrics of the result document.

    With a `budget`, training stops cleanly at its wall-time or GPU-hour limit (the model so far is saved).
    """
    place = Place(common.probe_hardware(), common.distributed_env())
    schedule = method.schedule
    start_tracking(method.tracking)
    data = method.load_data()
    # Under ZeRO-3 the weights are sharded across processes; generation on one of them cannot run.
    evaluate = bool(data.held_out) and place.dist.is_main and schedule.zero_stage < 3
    if data.held_out and schedule.zero_stage == 3:
        log.warning("held-out evaluation is skipped under ZeRO-3 (sharded weights)")

    checkpoints = workspace.path(common.CHECKPOINTS)
    args = method.trainer_config(checkpoints, place)  # before loading: ZeRO-3 loads sharded
    tokenizer = common.load_tokenizer(method.base_model, method.chat_template)
    # Heads and adapters are new weights: drawn from the spec's seed, a run starts where the last one did.
    common.seed_everything(schedule.seed)
    model = method.load_model(place)
    common.set_pad_token(model, tokenizer)
    model = method.prepare_model(model)
    metrics = dict(data.counts)
    events = EventLog(workspace.path(TENSORBOARD)) if place.dist.is_main else None
    start = None
    measure = place.dist.is_main and schedule.zero_stage < 3
    if evaluate or measure:
        model.to(place.device)
        before = method.task_metrics(model, tokenizer) if measure else {}
        if evaluate:
            start = method.score(model, tokenizer, data.held_out)
            before.update(method.evaluation_metrics(start, None))
        metrics.update({name + START: value for name, value in before.items()})
        _write(events, before, 0)

    callbacks = [
        common.progress_callback(reporter, method.watch),
        tensorboard_callback(workspace.path(TENSORBOARD)),
    ]
    if budget is not None and budget.limited:
        callbacks.append(common.budget_callback(budget))
    trainer = method.build_trainer(Setup(model, tokenizer, data.train, args, callbacks, place))
    target = workspace.path(common.MODEL)
    metrics.update(
        common.train_and_save(
            trainer,
            tokenizer,
            checkpoints,
            target,
            place.dist.world_size,
            base_path=method.base_model,
            merge=method.lora.merge,
            auto_class=method.auto_class,
            model_kwargs=dict(method.model_kwargs),
            extra_files=method.extra_files,
        )
    )
    metrics.update(method.training_metrics(trainer))
    last_step = int(trainer.state.global_step)
    del trainer, model
    common.release_memory(place.hardware.cuda)
    if evaluate or (measure and any(name.endswith(START) for name in metrics)):
        trained = common.load_model(target, method.auto_class, attention=method.reload_attention(place))
        trained.to(place.device)
        after = method.task_metrics(trained, tokenizer) if measure else {}
        if evaluate:
            after.update(method.evaluation_metrics(method.score(trained, tokenizer, data.held_out), start))
        metrics.update(after)
        _write(events, after, last_step)
    if events is not None:
        events.close()
    return metrics


def _write(events: EventLog | None, values: Mapping[str, float], step: int) -> None:
    if events is not None:
        events.scalars({name: value for name, value in values.items() if math.isfinite(value)}, step)


def run_workload(config: WorkloadConfig, method: LearningMethod[Any, Any]) -> Result:
    """Run a learning workload; the main process writes result.json with the `model` output.

    It also writes the training manifest (`lineage.jsonl`: the ids of the rows and the models read).
    """
    workspace = Workspace(config.output_uri)
    main = common.distributed_env().is_main
    reporter = Reporter(workspace, catalogue=method.catalogue) if main else None
    budget = BudgetTracker(config.typed_spec().budget, config.started_at, config.gpus)
    measured = learn(method, workspace, reporter, budget)
    measured.update(budget.metrics())
    # NaN (a metric with nothing to measure) is not JSON the API server accepts in status.
    metrics = {name: value for name, value in measured.items() if math.isfinite(value)}
    if reporter is None:
        return Result(metrics=metrics)
    write_manifest(config, workspace)
    model = {common.MODEL: output(workspace, common.MODEL, format="hf-model")}
    return reporter.finish(model, metrics, budget_exhausted=budget.reached)
