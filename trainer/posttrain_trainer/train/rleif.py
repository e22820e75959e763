"""RLEIF: reinforcement learning from evol-instruct feedback, online RL on TRL's GRPO or RLOO trainer.

The policy answers the stage's prompts (`numGenerations` samples each, through vLLM when it is installed
on a GPU, else transformers' generate); every answer is rewarded by the two trained reward models of
RLEIF — the IRM scores the instruction, the PRM every step of the answer (split on `stepSeparator`,
aggregated by `stepAggregate`, the minimum by default) — combined as r = r_I x r_A (WizardMath) or as a
sum. A KL penalty (`klCoef`) against the starting model keeps the policy close to it.

Inputs: `spec.model.uri`, `spec.dataset` (chat rows; the first user message of each is a prompt),
`spec.rewardModels` (RewardModel outputs with role `irm` / `prm`; one of the two is enough).
Outputs: `model`, `checkpoints/`; metrics `loss`, `reward.mean.start` / `reward.mean.end` (mean reward
of the first / last quarter of the logged steps), `kl` (last logged).

References: Luo et al., 2023 (WizardMath, RLEIF); Shao et al., 2024 (GRPO); Ahmadian et al., 2024 (RLOO).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from posttrain.api.metrics import Train
from posttrain.api.train import RLEIFSettings, TrainStageSpec

from posttrain_trainer.common.chat import instruction
from posttrain_trainer.common.storage import local_path
from posttrain_trainer.reward.scoring import (
    InstructionScorer,
    StepScorer,
    aggregate_steps,
    combine,
    split_steps,
)
from posttrain_trainer.train import common
from posttrain_trainer.train.evaluation import mean
from posttrain_trainer.train.stage import StageMethod, schedule
from posttrain_trainer.train.template import Place, Setup, Split


def message_text(value: Any) -> str:
    """The text of a prompt or completion as TRL hands it over: a string, or chat messages (the last
    user message of a prompt, the assistant's text of a completion)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        users = [m["content"] for m in value if m.get("role") == "user"]
        if users and value[-1].get("role") == "user":
            return str(users[-1])
        return "".join(str(m.get("content", "")) for m in value if m.get("role") == "assistant")
    return ""


def use_vllm(setting: str, hardware: common.Hardware) -> bool:
    """Whether to generate with vLLM (`auto`: installed and on a GPU).

    Raises:
        ValueError: `always` where vLLM cannot run.
    """
    available = hardware.cuda and hardware.vllm
    if setting == "always" and not available:
        raise ValueError("useVllm `always` needs vLLM installed and a GPU")
    return setting == "always" or (setting == "auto" and available)


def check_generation_batch(
    micro_batch_size: int, world_size: int, accumulation: int, generations: int
) -> None:
    """The online batch must hold whole prompt groups (every prompt with all its samples).

    Raises:
        ValueError: naming the settings to change.
    """
    total = micro_batch_size * world_size * accumulation
    if total % generations:
        raise ValueError(
            f"RLEIF samples {generations} answers per prompt (numGenerations), but a batch holds {total} answers "
            f"(microBatchSize {micro_batch_size} x {world_size} processes x {accumulation} accumulation steps); "
            "choose batch sizes that are a multiple of numGenerations"
        )


class RLEIFReward:
    """The reward function handed to TRL: one float per (prompt, completion)."""

    __name__ = "rleif"

    def __init__(
        self,
        settings: RLEIFSettings,
        instruction_scores: Callable[[Sequence[str]], list[float]] | None,
        step_scores: Callable[[Sequence[tuple[str, Sequence[str]]]], list[list[float]]] | None,
    ) -> None:
        if instruction_scores is None and step_scores is None:
            raise ValueError("RLEIF needs an IRM or a PRM")
        self.settings = settings
        self.instruction_scores = instruction_scores
        self.step_scores = step_scores
        self._irm_cache: dict[str, float] = {}

    def irm(self, instructions: Sequence[str]) -> list[float]:
        """r_I of each instruction; every prompt comes back numGenerations times, so scores are cached."""
        assert self.instruction_scores is not None
        missing = sorted({i for i in instructions if i not in self._irm_cache})
        if missing:
            self._irm_cache.update(zip(missing, self.instruction_scores(missing), strict=True))
        return [self._irm_cache[i] for i in instructions]

    def prm(self, instructions: Sequence[str], answers: Sequence[str]) -> list[float]:
        """r_A of each answer: its PRM step scores, aggregated."""
        assert self.step_scores is not None
        steps = [split_steps(a, self.settings.step_separator) for a in answers]
        scored = self.step_scores(list(zip(instructions, steps, strict=True)))
        return [aggregate_steps(s, self.settings.step_aggregate) for s in scored]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        instructions = [message_text(p) for p in prompts]
        answers = [message_text(c) for c in completions]
        irm: list[float | None] = (
            list(self.irm(instructions)) if self.instruction_scores else [None] * len(answers)
        )
        prm: list[float | None] = (
            list(self.prm(instructions, answers)) if self.step_scores else [None] * len(answers)
        )
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            if self.instruction_scores:
                log_metric("rewards/irm", mean([s for s in irm if s is not None]))
            if self.step_scores:
                log_metric("rewards/prm", mean([s for s in prm if s is not None]))
        return [combine(i, a, self.settings.combine) for i, a in zip(irm, prm, strict=True)]


def prompts_of(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RL prompts: the first user message of each chat, as a one-turn conversation."""
    return [
        {"prompt": [{"role": "user", "content": text}]}
        for text in (instruction(r) for r in rows)
        if text.strip()
    ]


def rl_config(
    spec: TrainStageSpec, output_dir: Path, hardware: common.Hardware, dist: common.DistributedEnv
) -> Any:
    """TRL's GRPOConfig or RLOOConfig for a TrainStage."""
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.rloo_config import RLOOConfig

    settings = spec.train.rleif
    arguments = common.training_arguments(schedule(spec), output_dir, hardware, dist)
    check_generation_batch(
        arguments["per_device_train_batch_size"],
        dist.world_size,
        arguments["gradient_accumulation_steps"],
        settings.num_generations,
    )
    config_class = GRPOConfig if settings.algorithm == "grpo" else RLOOConfig
    return config_class(
        **arguments,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_new_tokens,
        temperature=settings.temperature,
        beta=settings.kl_coef,
        use_vllm=use_vllm(settings.use_vllm, hardware),
        vllm_mode="colocate",
    )


def build_trainer(
    spec: TrainStageSpec,
    model: Any,
    tokenizer: Any,
    prompts: list[dict[str, Any]],
    reward: RLEIFReward,
    args: Any,
    callbacks: list[Any] | None = None,
) -> Any:
    """A GRPOTrainer or RLOOTrainer with the RLEIF reward."""
    from datasets import Dataset
    from trl.trainer.grpo_trainer import GRPOTrainer
    from trl.trainer.rloo_trainer import RLOOTrainer

    trainer_class = GRPOTrainer if spec.train.rleif.algorithm == "grpo" else RLOOTrainer
    reward_funcs: list[Any] = [reward]
    return trainer_class(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(prompts),
        processing_class=tokenizer,
        peft_config=common.lora_config(spec.train.lora, "CAUSAL_LM"),
        callbacks=callbacks or [],
    )


def load_reward(spec: TrainStageSpec, device: str) -> RLEIFReward:
    """The RLEIF reward from the stage's IRM and PRM (the last one of each role counts)."""
    irm: InstructionScorer | None = None
    prm: StepScorer | None = None
    for reference in spec.reward_models:
        assert reference.model.uri is not None
        folder = local_path(reference.model.uri)
        if reference.role == "irm":
            irm = InstructionScorer(folder, device)
        else:
            prm = StepScorer(folder, device)
    return RLEIFReward(spec.train.rleif, irm.score if irm else None, prm.score if prm else None)


class RLEIF(StageMethod[dict[str, Any], None]):
    """Online RL against the RLEIF reward: prompts in; the mean reward of the first and last quarter of
    the steps, and the KL to the starting model. Nothing is held out (the reward is the measure)."""

    watch = ("reward", "kl")

    def load_data(self) -> Split[dict[str, Any]]:
        """The prompts of `spec.dataset` (the first user message of each chat)."""
        dataset = self.spec.dataset
        assert dataset is not None and dataset.uri is not None
        loaded = common.load_chats(dataset.uri, dataset.format)
        prompts = prompts_of(loaded.rows)
        if not prompts:
            raise ValueError(f"{dataset.uri}: no prompt (a chat's first user message)")
        rejected = loaded.rejected + len(loaded.rows) - len(prompts)
        return Split(
            prompts, [], {Train.ROWS_USED: float(len(prompts)), Train.ROWS_REJECTED: float(rejected)}
        )

    def trainer_config(self, output_dir: Path, place: Place) -> Any:
        """TRL's GRPOConfig or RLOOConfig."""
        return rl_config(self.spec, output_dir, place.hardware, place.dist)

    def build_trainer(self, setup: Setup[dict[str, Any]]) -> Any:
        """TRL's GRPOTrainer or RLOOTrainer with the reward of the stage's IRM and PRM."""
        reward = load_reward(self.spec, setup.place.device)
        return build_trainer(
            self.spec, setup.model, setup.tokenizer, setup.train, reward, setup.args, setup.callbacks
        )

    def score(self, model: Any, tokenizer: Any, held_out: list[dict[str, Any]]) -> None:
        """Nothing: RLEIF holds no rows out."""
        return None

    def evaluation_metrics(self, scores: None, start: None) -> dict[str, float]:
        """None: RLEIF holds no rows out."""
        return {}

    def training_metrics(self, trainer: Any) -> dict[str, float]:
        """`reward.mean.start` / `reward.mean.end` (mean reward of the first / last quarter of the
        logged steps) and `kl` (last logged)."""
        history = trainer.state.log_history
        start, end = common.window_means(common.logged_values(history, "reward"))
        return {
            Train.REWARD_MEAN_START: start,
            Train.REWARD_MEAN_END: end,
            Train.KL: common.last_logged(history, "kl"),
        }
