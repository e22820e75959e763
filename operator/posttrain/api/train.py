"""TrainStage: progressive learning — SFT, Stage-DPO (one preference slice per stage) and RLEIF.

References: the WizardLM-2 announcement; Luo et al., 2023 (WizardMath, RLEIF); Arena Learning for the
reported hyperparameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from posttrain.api.base import ApiModel, Rule
from posttrain.api.common import DataRef, ModelRef, RunSettings
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


class RewardModelRef(ApiModel):
    """A reward model used by RLEIF."""

    role: Literal["irm", "prm"]
    """`irm` scores the instruction, `prm` the answer's steps."""
    model: ModelRef
    """The trained reward model (a RewardModel's `model` output)."""


class RLEIFSettings(ApiModel):
    """Reinforcement learning from evol-instruct feedback: online RL, reward = IRM x PRM."""

    algorithm: Literal["grpo", "rloo"] = "grpo"
    """Online RL algorithm (TRL)."""
    num_generations: int = Field(default=4, ge=2, le=64)
    """Completions sampled per prompt."""
    kl_coef: float = Field(default_factory=lambda: RLEIF_KL_DEFAULT, ge=0.0, le=10.0)
    """KL penalty against the starting model. Default: 0.4 (Arena Learning's PPO)."""
    combine: Literal["product", "sum"] = "product"
    """How IRM and PRM scores combine: `product` (WizardMath: r = r_I x r_A) or a `sum`."""
    step_aggregate: Literal["min", "mean", "last", "product"] = "min"
    """How the PRM's per-step scores make the answer's score."""
    step_separator: str = Field(default="\n", max_length=32)
    """What separates solution steps."""
    max_new_tokens: int = Field(default=256, ge=1, le=32768)
    """Completion length."""
    use_vllm: Literal["auto", "never", "always"] = "auto"
    """Generate with vLLM: `auto` uses it when installed and a GPU is present."""
    temperature: float = Field(default=1.0, gt=0.0, le=2.0)
    """Sampling temperature of the completions."""


class TrainEvaluation(ApiModel):
    """Held-out evaluation that fills the metrics (`eval.exactMatch` for SFT, `eval.preferenceAccuracy` for
    DPO), measured on the starting model and on the trained one."""

    fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Share of the training rows held out when no `evalDataset` is given (0: hold out nothing)."""
    max_samples: int = Field(default=64, ge=0, le=100000)
    """At most this many evaluation rows; 0 turns the evaluation off."""
    max_new_tokens: int = Field(default=64, ge=1, le=32768)
    """SFT exact match: tokens generated per answer (greedy)."""


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
            cel="self.method != 'rleif' || (has(self.rewardModels) && size(self.rewardModels) > 0"
            " && has(self.dataset))",
            message="method `rleif` needs `rewardModels` and prompts in `dataset`",
            check=lambda m: m.method != "rleif" or (len(m.reward_models) > 0 and m.dataset is not None),
            field_path=".rewardModels",
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
