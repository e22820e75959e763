"""RewardModel: the instruction quality (IRM) and process-supervised (PRM) reward models of RLEIF.

Reference: Luo et al., 2023 (WizardMath).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from posttrain.api.base import ApiModel
from posttrain.api.common import DataRef, ModelRef, RunSettings
from posttrain.api.tracking import Tracking

RewardType = Literal["irm", "prm"]
"""The reward models of RLEIF (`spec.type` of a RewardModel)."""


class LoRA(ApiModel):
    """Low-rank adapters (peft)."""

    enabled: bool = False
    """Train adapters instead of all weights."""
    r: int = Field(default=16, ge=1, le=1024)
    """Rank."""
    alpha: int = Field(default=32, ge=1)
    """Scaling alpha."""
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the adapter input."""
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], max_length=32)
    """Modules to adapt."""
    merge: bool = True
    """Merge the adapters into the weights of the `model` output (a plain model folder). Off: `model` holds
    the adapters only (peft format, `adapter_config.json` naming the base model folder), which later stages
    load on top of that base."""


class RewardConfig(ApiModel):
    """What the reward workload does."""

    epochs: float = Field(default=1.0, gt=0.0, le=100.0)
    """Training epochs."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (overrides epochs)."""
    learning_rate: float = Field(default=1e-6, gt=0.0, le=1.0)
    """Peak learning rate."""
    batch_size: int = Field(default=32, ge=1)
    """Global batch size (pairs for IRM, solutions for PRM)."""
    micro_batch_size: int = Field(default=4, ge=1)
    """Per-device batch size; gradient accumulation makes up the rest."""
    max_length: int = Field(default=2048, ge=16, le=131072)
    """Maximum tokens per example."""
    step_separator: str = Field(default="\n", max_length=32)
    """PRM: what separates solution steps."""
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share held out to report accuracy."""
    checkpoint_steps: int = Field(default=200, ge=1)
    """Optimizer steps between checkpoints; a restarted attempt resumes from the latest."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """`auto`: bf16 on GPUs that support it, else fp32."""
    zero_stage: Literal[0, 2, 3] = 0
    """DeepSpeed ZeRO stage (0 = no DeepSpeed)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory."""
    lora: LoRA = Field(default_factory=LoRA)
    """Adapters."""
    seed: int = 0
    """Random seed."""


class RewardModelSpec(RunSettings):
    """A RewardModel trains an IRM or a PRM.

    An IRM is pairwise, from instruction-variant rankings; a PRM learns per-step correctness labels.
    """

    type: RewardType = Field(
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "type is immutable"}]
        }
    )
    """`irm` (instruction quality) or `prm` (process supervision)."""
    base_model: ModelRef
    """Model the reward head is put on."""
    dataset: DataRef
    """Rankings (IRM: EvolJob `rankings`) or step labels (PRM: AlignRound `step-labels`)."""
    reward: RewardConfig = Field(default_factory=RewardConfig)
    """Training settings."""
    tracking: Tracking | None = None
    """Experiment trackers (W&B, MLflow) to report to, besides the TensorBoard event files the reward
    model always writes to `<output>/tensorboard`."""
