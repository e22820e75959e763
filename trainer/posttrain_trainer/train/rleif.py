"""RLEIF: reinforcement learning from evol-instruct feedback, online RL on TRL's GRPO or RLOO trainer.

The policy answers the stage's prompts (`numGenerations` samples each, through vLLM when it is installed
on a GPU, else transformers' generate), asked for step-formatted solutions (`stepFormat`: the format
the PRM's labels were made on); every answer is rewarded by the two trained reward models of RLEIF —
the IRM scores the instruction, the PRM every step of the answer (split on `stepSeparator`, capped at
`maxSteps`, aggregated by `stepAggregate`, the geometric mean by default) — combined as
r = r_I x r_A (WizardMath). A KL penalty (`klCoef`) against the starting model keeps the policy close.

Why r_I survives the group baseline: in WizardMath's PPO r_I weights each prompt's reward against the
other prompts'. GRPO and RLOO subtract a per-prompt baseline; r_I is the same for every completion of
a prompt, so the advantage of r_I x r_A is r_I x (r_A - baseline(r_A)): r_I scales the prompt's
advantages — a per-prompt weight — as long as nothing divides it out again. GRPO's default per-group
standard deviation would (TRL `scale_rewards="group"`), so RLEIF uses batch-level scaling
(`scaleRewards: batch`, "rewards are scaled by the standard deviation across the entire batch") or
none ("Dr. GRPO ... recommends not scaling rewards"), or RLOO's unnormalised leave-one-out advantage
(`normalize_advantages=False`: r - mean of the other completions). The spec refuses the settings in
which a reward model cannot move the advantages (an IRM alone, a `sum` of both, GRPO's group
scaling with an IRM).

Cut-off completions (`truncated`): a completion that ends because `maxNewTokens` ran out, or whose
steps do not all fit in the PRM's context, has an unfinished or unscored last step; `exclude` (default)
returns no reward for it — TRL leaves it out of its group's baseline and gives it advantage 0, and
`mask_truncated_completions` keeps its tokens out of the loss —, `zero` rewards it 0,
`complete-steps` scores its complete steps only, `as-is` scores it as written.

Inputs: `spec.model.uri`, `spec.dataset` (chat rows; the first user message of each is a prompt),
`spec.rewardModels` (RewardModel outputs with role `irm` / `prm`; one of the two is enough).
Outputs: `model`, `checkpoints/`; metrics `loss`, `reward.mean.start` / `reward.mean.end` (mean reward
of the first / last quarter of the logged steps: different prompts, so it also moves with the prompt
mix), `eval.reward.start` / `eval.reward` (mean reward of the greedy answers to the held-out prompts,
`evaluation.fraction` of them, before and after: the same prompts both times), `kl` (last logged). Logged per step: `reward.irm`,
`reward.prm` (means of r_I and r_A), `reward.truncated`; per completion, in TRL's completions table
beside its advantage: `reward.irm`, `reward.prm`.

References: Luo et al., 2023 (WizardMath, RLEIF: r = r_I x r_A under PPO); Shao et al., 2024 (GRPO);
Ahmadian et al., 2024 (RLOO); Liu et al., 2025 (Dr. GRPO: no std scaling); the TRL documentation of
`GRPOConfig.scale_rewards` and `RLOOConfig.normalize_advantages` / `mask_truncated_completions`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from posttrain.api.metrics import Train
from posttrain.api.train import RLEIFSettings, TrainStageSpec

from posttrain_trainer.common.chat import instruction
from posttrain_trainer.common.steps import step_prompt
from posttrain_trainer.common.storage import local_path
from posttrain_trainer.reward.scoring import (
    InstructionScorer,
    StepScorer,
    aggregate_steps,
    cap_steps,
    combine,
    split_steps,
)
from posttrain_trainer.train import common
from posttrain_trainer.train.evaluation import generate_answers, mean, model_device
from posttrain_trainer.train.stage import StageMethod, schedule
from posttrain_trainer.train.template import Place, Setup, Split


def message_text(value: Any) -> str:
    """The text of a prompt or completion as TRL hands it over.

    A string, or chat messages: the last user message of a prompt, the assistant's text of a completion.
    """
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
    """The reward function handed to TRL: one float per (prompt, completion), or None.

    None is for a completion left out (a cut-off one under `truncated: exclude`).
    """

    __name__ = "rleif"

    def __init__(
        self,
        settings: RLEIFSettings,
        instruction_scores: Callable[[Sequence[str]], list[float]] | None,
        step_scores: Callable[[Sequence[tuple[str, Sequence[str]]]], list[list[float]]] | None,
        eos_token_id: int | None = None,
    ) -> None:
        if instruction_scores is None and step_scores is None:
            raise ValueError("RLEIF needs an IRM or a PRM")
        self.settings = settings
        self.instruction_scores = instruction_scores
        self.step_scores = step_scores
        self.eos_token_id = eos_token_id
        self._irm_cache: dict[str, float] = {}

    def irm(self, instructions: Sequence[str]) -> list[float]:
        """r_I of each instruction; every prompt comes back numGenerations times, so scores are cached."""
        assert self.instruction_scores is not None
        missing = sorted({i for i in instructions if i not in self._irm_cache})
        if missing:
            self._irm_cache.update(zip(missing, self.instruction_scores(missing), strict=True))
        return [self._irm_cache[i] for i in instructions]

    def steps(self, answer: str, cut_off: bool) -> list[str]:
        """The answer's steps as the PRM scores them.

        Split, capped at `maxSteps`, and without the unfinished last step of a cut-off answer under
        `truncated: complete-steps`.
        """
        settings = self.settings
        steps = split_steps(answer, settings.step_separator)
        if cut_off and settings.truncated == "complete-steps":
            steps = steps[:-1]
        return cap_steps(steps, settings.max_steps, settings.step_separator)

    def prm(self, instructions: Sequence[str], steps: Sequence[list[str]]) -> tuple[list[float], list[bool]]:
        """r_A of each answer (its PRM step scores, aggregated) and whether every step was scored."""
        assert self.step_scores is not None
        scored = self.step_scores(list(zip(instructions, steps, strict=True)))
        complete = [len(s) == len(t) for s, t in zip(scored, steps, strict=True)]
        return [aggregate_steps(s, self.settings.step_aggregate) for s in scored], complete

    def cut_off(self, completion_ids: Sequence[Sequence[int]] | None, count: int) -> list[bool]:
        """Whether each completion ran into `maxNewTokens` without ending."""
        if completion_ids is None:
            return [False] * count
        limit = self.settings.max_new_tokens
        return [
            len(ids) >= limit and (self.eos_token_id is None or self.eos_token_id not in list(ids))
            for ids in completion_ids
        ]

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """The reward of each completion (TRL's reward-function interface).

        Combines r_I of the instruction and r_A of the answer's steps; a cut-off completion gets None,
        0 or its combined reward, as `truncated` says. Logs through TRL's `log_metric` and `log_extra`
        when it passes them.
        """
        given = kwargs.get("instruction")
        instructions = list(given) if given is not None else [message_text(p) for p in prompts]
        answers = [message_text(c) for c in completions]
        cut = self.cut_off(kwargs.get("completion_ids"), len(answers))
        irm: list[float | None] = (
            list(self.irm(instructions)) if self.instruction_scores else [None] * len(answers)
        )
        prm: list[float | None] = [None] * len(answers)
        if self.step_scores:
            steps = [self.steps(a, c) for a, c in zip(answers, cut, strict=True)]
            scores, complete = self.prm(instructions, steps)
            prm = list(scores)
            cut = [c or not whole for c, whole in zip(cut, complete, strict=True)]
        rewards: list[float | None] = []
        for i, a, c in zip(irm, prm, cut, strict=True):
            if c and self.settings.truncated == "exclude":
                rewards.append(None)
            elif c and self.settings.truncated == "zero":
                rewards.append(0.0)
            else:
                rewards.append(combine(i, a, self.settings.combine))
        self._log(kwargs, irm, prm, cut)
        return rewards

    def _log(
        self, kwargs: dict[str, Any], irm: list[float | None], prm: list[float | None], cut: list[bool]
    ) -> None:
        """Log r_I and r_A, and the share of cut-off completions.

        r_I and r_A are logged per step (means) and per completion (TRL's completions table, beside the
        advantages).
        """
        log_metric, log_extra = kwargs.get("log_metric"), kwargs.get("log_extra")
        for name, values, present in (
            (Train.REWARD_IRM, irm, self.instruction_scores is not None),
            (Train.REWARD_PRM, prm, self.step_scores is not None),
        ):
            if not present:
                continue
            numbers = [v for v in values if v is not None]
            if callable(log_metric) and numbers:
                log_metric(str(name), mean(numbers))
            if callable(log_extra):
                log_extra(str(name), [float("nan") if v is None else v for v in values])
        if callable(log_metric) and cut:
            log_metric(str(Train.REWARD_TRUNCATED), sum(cut) / len(cut))


def prompts_of(rows: Sequence[dict[str, Any]], step_format: bool = False) -> list[dict[str, Any]]:
    """The RL prompts, and the instruction that the IRM and the PRM read.

    A prompt is the first user message of each chat, as a one-turn conversation (with the step-format
    instruction appended when `step_format`); TRL hands extra dataset columns, the instruction among them, to
    the reward function.
    """
    return [
        {
            "prompt": [{"role": "user", "content": step_prompt(text) if step_format else text}],
            "instruction": text,
        }
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
    common_arguments: dict[str, Any] = {
        **arguments,
        "num_generations": settings.num_generations,
        "max_completion_length": settings.max_new_tokens,
        "temperature": settings.temperature,
        "beta": settings.kl_coef,
        "use_vllm": use_vllm(settings.use_vllm, hardware),
        "vllm_mode": "colocate",
        "mask_truncated_completions": settings.truncated == "exclude",
    }
    if settings.algorithm == "grpo":
        # Not "group": a per-prompt std would divide r_I out of r_I x r_A (see the module docstring).
        return GRPOConfig(**common_arguments, scale_rewards=settings.scale_rewards)
    # RLOO's leave-one-out advantage stays unnormalised, so r_I keeps weighting its prompt.
    return RLOOConfig(**common_arguments, normalize_advantages=False)


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


def load_reward(spec: TrainStageSpec, device: str, eos_token_id: int | None = None) -> RLEIFReward:
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
    return RLEIFReward(spec.train.rleif, irm.score if irm else None, prm.score if prm else None, eos_token_id)


class RLEIF(StageMethod[dict[str, Any], list[float]]):
    """Online RL against the RLEIF reward: prompts in.

    Measures the mean reward of the first and last quarter of the steps, the KL to the starting model,
    and the reward of greedy answers to held-out prompts before and after.
    """

    watch = ("reward", "kl")
    _reward: RLEIFReward | None = None

    def reward(self, device: str, eos_token_id: int | None) -> RLEIFReward:
        """The stage's reward (its reward models are loaded once, for training and evaluation)."""
        if self._reward is None:
            self._reward = load_reward(self.spec, device, eos_token_id)
        return self._reward

    def load_data(self) -> Split[dict[str, Any]]:
        """The prompts of `spec.dataset` (the first user message of each chat)."""
        dataset = self.spec.dataset
        assert dataset is not None and dataset.uri is not None
        loaded = common.load_chats(dataset.uri, dataset.format)
        prompts = prompts_of(loaded.rows, self.spec.train.rleif.step_format)
        rejected = loaded.rejected + len(loaded.rows) - len(prompts)
        prompts, contaminated = self.set_aside_tasks(prompts, lambda prompt: str(prompt["instruction"]))
        step_format = self.spec.train.rleif.step_format
        prompts, held_out = self.hold_out(
            prompts, lambda ref: prompts_of(common.load_chats(str(ref.uri), ref.format).rows, step_format)
        )
        if not prompts:
            raise ValueError(f"{dataset.uri}: no prompt (a chat's first user message)")
        return self.split(prompts, held_out, rejected, contaminated)

    def trainer_config(self, output_dir: Path, place: Place) -> Any:
        """TRL's GRPOConfig or RLOOConfig."""
        return rl_config(self.spec, output_dir, place.hardware, place.dist)

    def build_trainer(self, setup: Setup[dict[str, Any]]) -> Any:
        """TRL's GRPOTrainer or RLOOTrainer with the reward of the stage's IRM and PRM."""
        reward = self.reward(setup.place.device, setup.tokenizer.eos_token_id)
        return build_trainer(
            self.spec, setup.model, setup.tokenizer, setup.train, reward, setup.args, setup.callbacks
        )

    def score(self, model: Any, tokenizer: Any, held_out: list[dict[str, Any]]) -> list[float]:
        """The reward of the greedy answer to each held-out prompt (a left-out, cut-off answer: none)."""
        answers = generate_answers(
            model, tokenizer, [p["prompt"] for p in held_out], self.spec.train.rleif.max_new_tokens
        )
        reward = self.reward(str(model_device(model)), tokenizer.eos_token_id)
        ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
        rewards = reward(
            [p["prompt"] for p in held_out],
            answers,
            instruction=[p["instruction"] for p in held_out],
            completion_ids=ids,
        )
        return [r for r in rewards if r is not None]

    def evaluation_metrics(self, scores: list[float], start: list[float] | None) -> dict[str, float]:
        """`eval.reward`: the mean reward of the held-out prompts' greedy answers."""
        return {Train.EVAL_REWARD: mean(scores)}

    def training_metrics(self, trainer: Any) -> dict[str, float]:
        """`reward.mean.start`, `reward.mean.end` and `kl` from the logged steps.

        The means are of the first and last quarter of the logged steps; `kl` is the last logged.
        """
        history = trainer.state.log_history
        start, end = common.window_means(common.logged_values(history, "reward"))
        metrics: dict[str, float] = {
            Train.REWARD_MEAN_START: start,
            Train.REWARD_MEAN_END: end,
            Train.KL: common.last_logged(history, "kl"),
        }
        for name in (Train.REWARD_IRM, Train.REWARD_PRM, Train.REWARD_TRUNCATED):
            values = common.logged_values(history, str(name))
            if values:
                metrics[name] = mean(values)
        return metrics
