"""TrainStage: progressive learning — SFT, Stage-DPO (one preference slice per stage) and RLEIF.

References: the WizardLM-2 announcement; Luo et al., 2023 (WizardMath, RLEIF); Arena Learning for the
reported hyperparameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from posttrain.api.base import ApiModel, Rule
from posttrain.api.common import DataRef, ModelRef, RunSettings, Verifier
from posttrain.api.reward import LoRA
from posttrain.api.tracking import Tracking

TrainMethod = Literal["sft", "dpo", "rleif"]
"""The learning methods of a TrainStage (`spec.method`)."""


@dataclass(frozen=True)
class MethodDefaults:
    """The hyperparameters a method starts from when the spec leaves them out."""

    epochs: float
    """Training epochs."""
    learning_rate: float
    """Peak learning rate."""


METHOD_DEFAULTS: dict[str, MethodDefaults] = {
    "sft": MethodDefaults(epochs=3.0, learning_rate=5e-6),
    "dpo": MethodDefaults(epochs=2.0, learning_rate=5e-7),
    "rleif": MethodDefaults(epochs=1.0, learning_rate=1e-7),
}
"""Per-method defaults, from Arena Learning (Luo et al., 2024, section "Implementation details": SFT 3
epochs at 5e-6, DPO 2 epochs at 5e-7 with beta 0.3, PPO 1 epoch at 1e-7 with KL 0.4). RLEIF is
WizardMath's PPO stage, so it takes the PPO row."""

RLEIF_KL_DEFAULT = 0.4
"""KL coefficient of RLEIF when the spec leaves it out (Arena Learning's PPO: KL 0.4)."""


class DPOSettings(ApiModel):
    """Direct preference optimisation."""

    beta: float = Field(default=0.3, gt=0.0, le=10.0)
    """Strength of the implicit KL constraint (Arena Learning used 0.3)."""
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    """DPO loss variant."""
    precompute_ref_log_probs: bool = False
    """Compute the reference model's log-probabilities once before training (frees its memory)."""
    sft_weight: float = Field(default=0.0, ge=0.0, le=10.0)
    """Weight of the chosen answers' NLL added to the DPO loss (RPO, Pang et al., 2024), so DPO does
    not lower their likelihood too; 0 turns it off."""


class RewardModelRef(ApiModel):
    """A reward model used by RLEIF."""

    role: Literal["irm", "prm"]
    """`irm` scores the instruction, `prm` the answer's steps."""
    model: ModelRef
    """The trained reward model (a RewardModel's `model` output)."""


class RLEIFSettings(ApiModel):
    """Reinforcement learning from evol-instruct feedback: online RL, reward = IRM x PRM.

    In WizardMath (PPO) the instruction score r_I weights each prompt's reward against the other
    prompts'. Under a group baseline (GRPO, RLOO) a score that is the same for every completion of a
    prompt acts only as a factor of that prompt's advantages: it must multiply the PRM's score
    (`combine: product`) and must not be divided out by a per-group standard deviation. Settings in
    which a reward model cannot influence the advantages are refused.
    """

    algorithm: Literal["grpo", "rloo"] = "grpo"
    """Online RL algorithm (TRL). `rloo`: the unnormalised leave-one-out advantage
    r - mean(others), which keeps r_I as a per-prompt weight."""
    scale_rewards: Literal["batch", "none", "group"] = "batch"
    """GRPO's advantage scaling (TRL `scale_rewards`): `batch` divides by the standard deviation of
    the whole batch, `none` does not scale (Dr. GRPO), `group` divides by each prompt's own standard
    deviation — which cancels r_I from r_I x r_A, so it is refused with an IRM."""
    num_generations: int = Field(default=4, ge=2, le=64)
    """Completions sampled per prompt."""
    kl_coef: float = Field(default_factory=lambda: RLEIF_KL_DEFAULT, ge=0.0, le=10.0)
    """KL penalty against the starting model. Default: 0.4 (Arena Learning's PPO)."""
    combine: Literal["product", "sum"] = "product"
    """How IRM and PRM scores combine: `product` (WizardMath: r = r_I x r_A). `sum` is refused when
    both models are given: r_I would cancel against the group mean."""
    step_format: bool = True
    """Ask for step-formatted solutions: every RL prompt gets the step-format instruction that the
    AlignRound's step labels used (one step per line, `Step 1:`, `Step 2:`, ...), so the policy writes
    steps of the kind the PRM was trained on."""
    step_aggregate: Literal["geomean", "min", "mean", "last", "product"] = "geomean"
    """How the PRM's per-step scores make the answer's score. Default `geomean` (the geometric mean,
    exp(mean log p)): a wrong step still pulls it down hard, but a longer solution is not punished
    for having more steps, as `min` and `product` do (every extra step is one more chance of a low
    minimum, a push towards short answers)."""
    max_steps: int = Field(default=16, ge=1, le=128)
    """A solution's steps are capped at this many (the AlignRound's `stepLabels.maxSteps`: the PRM
    never saw longer solutions); the text of later steps is merged into the last one, so it is still
    scored and the number of scored steps stays bounded."""
    truncated: Literal["exclude", "zero", "complete-steps", "as-is"] = "exclude"
    """Completions that hit `maxNewTokens` before the end (or whose steps do not all fit in the PRM's
    context): `exclude` gives them no reward, so they neither move the policy nor shift their group's
    baseline (TRL masks them, DAPO's practice); `zero` rewards them 0; `complete-steps` scores their
    complete steps only, dropping the unfinished last one; `as-is` scores them as written."""
    step_separator: str = Field(default="\n", max_length=32)
    """What separates solution steps."""
    max_new_tokens: int = Field(default=1024, ge=1, le=32768)
    """Completion length; enough for `maxSteps` steps, so few solutions are cut off."""
    use_vllm: Literal["auto", "never", "always"] = "auto"
    """Generate with vLLM: `auto` uses it when installed and a GPU is present."""
    temperature: float = Field(default=1.0, gt=0.0, le=2.0)
    """Sampling temperature of the completions."""


class TaskEvaluation(ApiModel):
    """Problems with checkable answers, solved by the model before and after training (every method).

    The model answers each problem greedily; a verifier checks the answers. The share it finds right
    is `eval.taskAccuracy` (`eval.taskAccuracy.start` before training). Training rows that ask one of
    the problems are set aside (`rows.contaminated`). Give every stage of a chain the same set to
    follow the accuracy from stage to stage.
    """

    dataset: DataRef
    """Chat rows: the first user turn is the problem, the answer after it the reference."""
    verifier: Verifier
    """How answers are checked."""
    max_samples: int = Field(default=64, ge=1, le=100000)
    """At most this many problems."""
    max_new_tokens: int = Field(default=64, ge=1, le=32768)
    """Tokens generated per answer."""


class TrainEvaluation(ApiModel):
    """Held-out evaluation, measured on the starting model and on the trained one.

    It fills the metrics: `eval.exactMatch` for SFT, `eval.preferenceAccuracy` for DPO, and with
    `tasks`, `eval.taskAccuracy` for every method.
    """

    fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Share of the training rows held out when no `evalDataset` is given (0: hold out nothing)."""
    max_samples: int = Field(default=64, ge=0, le=100000)
    """At most this many evaluation rows; 0 turns the evaluation off."""
    max_new_tokens: int = Field(default=64, ge=1, le=32768)
    """SFT exact match: tokens generated per answer (greedy)."""
    tasks: TaskEvaluation | None = None
    """Problems whose answers a verifier checks, solved before and after training."""


class TrainConfig(ApiModel):
    """What the train workload does."""

    epochs: float = Field(default_factory=lambda: METHOD_DEFAULTS["sft"].epochs, gt=0.0, le=100.0)
    """Training epochs. Default per method (Arena Learning): `sft` 3, `dpo` 2, `rleif` 1 (its PPO
    stage)."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (overrides epochs)."""
    learning_rate: float = Field(default_factory=lambda: METHOD_DEFAULTS["sft"].learning_rate, gt=0.0, le=1.0)
    """Peak learning rate. Default per method (Arena Learning): `sft` 5e-6, `dpo` 5e-7, `rleif` 1e-7
    (its PPO stage)."""
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule."""
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    """Share of steps warming up."""
    batch_size: int = Field(default=128, ge=1)
    """Global batch size in sequences."""
    micro_batch_size: int = Field(default=4, ge=1)
    """Per-device batch size; gradient accumulation makes up the rest."""
    max_length: int = Field(default=4096, ge=16, le=1048576)
    """Context length in tokens."""
    packing: bool = True
    """Pack SFT sequences (padding-free) instead of padding them."""
    chat_template: Literal["vicuna", "model"] = "vicuna"
    """`vicuna`: the WizardLM-2 format with its system prompt; `model`: the base model's own template."""
    lora: LoRA = Field(default_factory=LoRA)
    """Adapters."""
    zero_stage: Literal[0, 2, 3] = 0
    """DeepSpeed ZeRO stage (0 = no DeepSpeed)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """`auto`: bf16 on GPUs that support it, else fp32."""
    attention: Literal[
        "auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"
    ] = "auto"
    """Attention kernel: `auto` picks FlashAttention 2 when it is installed and a GPU is present, else `sdpa`."""
    liger_kernels: Literal["auto", "never"] = "auto"
    """`auto` patches the model with Liger's Triton kernels when liger-kernel is installed and a GPU is present."""
    checkpoint_steps: int = Field(default=200, ge=1)
    """Optimizer steps between checkpoints; a restarted attempt resumes from the latest."""
    evaluation: TrainEvaluation = Field(default_factory=TrainEvaluation)
    """Held-out evaluation into the metrics."""
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    """DPO settings (method `dpo`)."""
    rleif: RLEIFSettings = Field(default_factory=RLEIFSettings)
    """RLEIF settings (method `rleif`)."""
    seed: int = 0
    """Random seed."""


_HAS_IRM = "(has(self.rewardModels) && self.rewardModels.exists(r, r.role == 'irm'))"
_HAS_PRM = "(has(self.rewardModels) && self.rewardModels.exists(r, r.role == 'prm'))"


def _given(field: str) -> str:
    """CEL: `train.rleif.<field>` is given (unset fields take the model's default)."""
    return f"(has(self.train) && has(self.train.rleif) && has(self.train.rleif.{field}))"


def _roles(spec: TrainStageSpec) -> set[str]:
    return {reference.role for reference in spec.reward_models}


class TrainStageSpec(RunSettings):
    """A TrainStage trains the student one stage: SFT, one Stage-DPO slice, or RLEIF."""

    rules = (
        Rule(
            cel="self.method != 'sft' || has(self.dataset)",
            message="method `sft` needs `dataset`",
            check=lambda m: m.method != "sft" or m.dataset is not None,
            field_path=".dataset",
        ),
        Rule(
            cel="self.method != 'dpo' || has(self.preferences)",
            message="method `dpo` needs preference data in `preferences`",
            check=lambda m: m.method != "dpo" or m.preferences is not None,
            field_path=".preferences",
        ),
        Rule(
            cel="self.method != 'rleif' || (has(self.rewardModels) && size(self.rewardModels) > 0)",
            message="method `rleif` needs `rewardModels`",
            check=lambda m: m.method != "rleif" or len(m.reward_models) > 0,
            field_path=".rewardModels",
        ),
        Rule(
            cel="self.method != 'rleif' || has(self.dataset)",
            message="method `rleif` needs prompts in `dataset`",
            check=lambda m: m.method != "rleif" or m.dataset is not None,
            field_path=".dataset",
        ),
        Rule(
            cel=f"self.method != 'rleif' || !{_HAS_IRM} || {_HAS_PRM}",
            message="an `irm` reward model needs a `prm` beside it: the instruction score is the same for"
            " every completion of a prompt, so alone it makes every advantage 0",
            check=lambda m: m.method != "rleif" or not _roles(m) & {"irm"} or "prm" in _roles(m),
            field_path=".rewardModels",
        ),
        Rule(
            cel=f"self.method != 'rleif' || !({_HAS_IRM} && {_HAS_PRM})"
            f" || !({_given('combine')} && self.train.rleif.combine == 'sum')",
            message="`train.rleif.combine: sum` lets the instruction score cancel against the group mean;"
            " use `product` (r_I x r_A) so the IRM weights each prompt",
            check=lambda m: (
                m.method != "rleif" or _roles(m) != {"irm", "prm"} or m.train.rleif.combine != "sum"
            ),
            field_path=".train.rleif.combine",
        ),
        Rule(
            cel=f"self.method != 'rleif' || !{_HAS_IRM}"
            f" || ({_given('algorithm')} && self.train.rleif.algorithm == 'rloo')"
            f" || !({_given('scaleRewards')} && self.train.rleif.scaleRewards == 'group')",
            message="`train.rleif.scaleRewards: group` divides each prompt's advantages by their own standard"
            " deviation, which cancels the instruction score; use `batch` or `none`",
            check=lambda m: (
                m.method != "rleif"
                or "irm" not in _roles(m)
                or m.train.rleif.algorithm == "rloo"
                or m.train.rleif.scale_rewards != "group"
            ),
            field_path=".train.rleif.scaleRewards",
        ),
    )

    method: TrainMethod = Field(
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "method is immutable"}]
        }
    )
    """`sft`, `dpo` (one Stage-DPO slice) or `rleif`."""
    model: ModelRef
    """Starting model: a base model URI or the previous stage (`from: {kind: TrainStage, name: ...}`)."""
    dataset: DataRef | None = None
    """SFT conversations, or RLEIF prompts."""
    preferences: DataRef | None = None
    """Preference pairs of this stage's slice (method `dpo`)."""
    reward_models: list[RewardModelRef] = Field(default_factory=list, max_length=4)
    """IRM and PRM used by RLEIF."""
    eval_dataset: DataRef | None = None
    """Held-out rows for the evaluation metrics, in the format of the training data (chats for `sft`,
    preference pairs for `dpo`); without it a share of the training data is held out
    (`train.evaluation.fraction`)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Hyperparameters."""
    tracking: Tracking | None = None
    """Experiment trackers (W&B, MLflow) to report to, besides the TensorBoard event files the stage
    always writes to `<output>/tensorboard`."""

    @model_validator(mode="after")
    def _method_defaults(self) -> TrainStageSpec:
        """Fill the hyperparameters the spec leaves out with the method's defaults (`METHOD_DEFAULTS`)."""
        defaults = METHOD_DEFAULTS[self.method]
        given = self.train.model_fields_set
        if "epochs" not in given:
            self.train.epochs = defaults.epochs
        if "learning_rate" not in given:
            self.train.learning_rate = defaults.learning_rate
        return self
