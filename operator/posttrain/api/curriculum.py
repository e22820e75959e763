"""Curriculum: the progressive loop as one resource, from which the chain of the five kinds is made.

Stage k of N: slice k of the curriculum's DataSlice -> EvolJob -> AlignRound whose student is the model
the previous stage promoted (on-policy pairs) -> SFT -> Stage-DPO -> RLEIF (optional) -> a promotion
gate, an arena AlignRound in which the stage's model battles the model it started from on the fixed
evaluation set. The stage's model replaces its predecessor only when the gate's rule holds.

The spec holds one template per child kind: the child's own spec without the fields the curriculum
fills in (the references that make the chain). Each template is the child kind's model with those
fields left out, so `kubectl explain` documents it and the CRD validates it as it would the child.
`overrides` patches a template for one stage (a JSON merge patch, RFC 7386: objects merge, lists and
values replace). Expanding a curriculum into its children is the plan layer's (`plan.curriculum`).

References: the WizardLM-2 announcement (progressive learning); Luo et al., 2024 (Arena Learning).
"""

from __future__ import annotations

from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, create_model

from posttrain.api.align import AlignRoundSpec, GateRule
from posttrain.api.base import ApiModel, Rule
from posttrain.api.common import Budget, Participant
from posttrain.api.data import DataSliceSpec
from posttrain.api.evol import EvolJobSpec
from posttrain.api.resources import ObjectMeta, object_wire
from posttrain.api.reward import RewardModelSpec
from posttrain.api.status import Status
from posttrain.api.train import TrainStageSpec

KIND = "Curriculum"
PLURAL = "curricula"
SHORT_NAMES = ("curr",)
DESCRIPTION = (
    "The progressive loop: per stage a slice -> EvolJob -> AlignRound -> SFT -> Stage-DPO -> RLEIF, "
    "with promotion gates; creates and owns the chain."
)


def template_of(model: type[ApiModel], filled: tuple[str, ...], name: str, doc: str) -> type[ApiModel]:
    """The model of a child's spec without the fields the curriculum fills in (and without its rules).

    Args:
        model: the child kind's spec model.
        filled: the (Python) names of the fields the curriculum sets itself.
        name: the template model's name.
        doc: its description (the CRD's and `kubectl explain`'s text).

    Returns:
        A model with the child's other fields, their types, defaults and descriptions unchanged. Only
        the fields a user sets are kept when a template is expanded, so the child's own defaults apply.
    """
    fields: dict[str, Any] = {
        field: (info.annotation, info) for field, info in model.model_fields.items() if field not in filled
    }
    template = create_model(name, __base__=ApiModel, __doc__=doc, __module__=__name__, **fields)
    return cast(type[ApiModel], template)


DataTemplate = template_of(
    DataSliceSpec,
    (),
    "DataTemplate",
    "The curriculum's DataSlice: sources, analysis, cleaning and sampling. Its `slicing.count` is set"
    " to the number of stages; stage k reads `slice-k`, every gate the fixed evaluation set. Fields:"
    " `kubectl explain dataslices.spec`.",
)
EvolTemplate = template_of(
    EvolJobSpec,
    ("dataset",),
    "EvolTemplate",
    "Every stage's EvolJob, without `dataset` (the stage's slice). Fields: `kubectl explain evoljobs.spec`.",
)
AlignTemplate = template_of(
    AlignRoundSpec,
    ("datasets", "eval_set", "student", "promotion"),
    "AlignTemplate",
    "Every stage's AlignRound, without `datasets` (the stage's evolved data), `evalSet` (the"
    " curriculum's fixed set) and `student` (the curriculum's student, served from the model the"
    " previous stage promoted). Fields: `kubectl explain alignrounds.spec`.",
)
_TRAIN_FILLED = ("method", "model", "dataset", "preferences", "reward_models")
SFTTemplate = template_of(
    TrainStageSpec,
    _TRAIN_FILLED,
    "SFTTemplate",
    "Every stage's SFT TrainStage, without `method`, `model` (the model the stage starts from) and"
    " `dataset` (the stage's AlignRound's `sft` output). Fields: `kubectl explain trainstages.spec`.",
)
DPOTemplate = template_of(
    TrainStageSpec,
    _TRAIN_FILLED,
    "DPOTemplate",
    "Every stage's Stage-DPO TrainStage, without `method`, `model` (the stage's SFT model) and"
    " `preferences` (the stage's AlignRound's `preferences`). Fields: `kubectl explain trainstages.spec`.",
)
RLEIFTemplate = template_of(
    TrainStageSpec,
    _TRAIN_FILLED,
    "RLEIFTemplate",
    "Every stage's RLEIF TrainStage, without `method`, `model` (the stage's DPO model), `dataset`"
    " (the stage's evolved prompts) and `rewardModels` (the curriculum's IRM and PRM). Fields:"
    " `kubectl explain trainstages.spec`.",
)
RewardTemplate = template_of(
    RewardModelSpec,
    ("type", "dataset", "base_model"),
    "RewardTemplate",
    "A reward model RLEIF uses, trained from the loop's own outputs (stage 1's EvolJob rankings for"
    " the IRM, stage 1's AlignRound step labels for the PRM), starting from the base student's model."
    " Fields: `kubectl explain rewardmodels.spec`.",
)


TEMPLATE_FIELDS = ("data", "evol", "align", "sft", "dpo", "rleif", "rewardModels")
"""The spec's fields that hold another kind's settings (their CRD schemas are kept brief)."""


class RewardModels(ApiModel):
    """The reward models of RLEIF (both are trained once, from stage 1's outputs)."""

    irm: RewardTemplate | None = None  # type: ignore[valid-type]
    """Instruction reward model, from stage 1's EvolJob `rankings` (its rankings are switched on)."""
    prm: RewardTemplate | None = None  # type: ignore[valid-type]
    """Process reward model, from stage 1's AlignRound `step-labels` (its step labels are switched on)."""


class Promotion(GateRule):
    """When a stage's model replaces the model it started from.

    After a stage trains, an arena AlignRound (`<curriculum>-s<k>-gate`) battles its model (as the
    student) against the model it started from (participant `previous`, fixed at `referenceElo`) on
    the curriculum's fixed evaluation set, judged by the stage's judges. A gate whose AlignRound
    reports `JudgeReliable=False` never promotes.
    """

    on_reject: Literal["stop", "continue"] = "stop"
    """`stop`: the curriculum ends (Failed, `Promoted=False` names the figures); `continue`: the next
    stage starts from the model the rejected stage started from."""
    bootstrap: int = Field(default=200, ge=1, le=10000)
    """Bootstrap samples of the gate's Elo intervals."""
    eval_size: int = Field(default=500, ge=1, le=100000)
    """At most this many prompts of the evaluation set are battled."""
    reference_elo: float = 1000.0
    """Rating the previous model is fixed at."""


class SkillGaps(ApiModel):
    """Closing skill gaps: feed the student what it lost on.

    Stage k > 1 re-samples its slice to the target weights of stage k-1's AlignRound `skill-gaps` output
    (a DataSlice `<curriculum>-s<k>-data` between the slice and the EvolJob).
    """

    enabled: bool = False
    """Re-weight each later stage's slice by the previous stage's skill gaps."""


def _patch() -> Any:
    """A free-form field (a merge patch): the API server keeps whatever it holds."""
    return Field(default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class StageOverride(ApiModel):
    """Settings of one stage that differ from the templates: JSON merge patches (RFC 7386)."""

    stage: int = Field(ge=1, le=16)
    """The stage (from 1)."""
    evol: dict[str, Any] | None = _patch()
    """Merged into `evol` for this stage."""
    align: dict[str, Any] | None = _patch()
    """Merged into `align` for this stage."""
    sft: dict[str, Any] | None = _patch()
    """Merged into `sft` for this stage."""
    dpo: dict[str, Any] | None = _patch()
    """Merged into `dpo` for this stage."""
    rleif: dict[str, Any] | None = _patch()
    """Merged into `rleif` for this stage."""


class CurriculumSpec(ApiModel):
    """A Curriculum runs the progressive loop: it creates and owns one chain of the five kinds per stage.

    Children are named `<curriculum>-data`, `<curriculum>-s<k>-evol`, `-align`, `-sft`, `-dpo`,
    `-rleif`, `-gate`, and `<curriculum>-irm` / `-prm`; `posttrain curriculum render` writes the chain
    as plain manifests.
    """

    rules = (
        Rule(
            cel="has(self.student.served)",
            message="the student must be `served`: each stage serves the model the previous one promoted",
            check=lambda m: m.student.served is not None,
            field_path=".student",
        ),
        Rule(
            cel="self.student.name != 'previous'",
            message="the student may not be called `previous` (the gates' name of the model it started from)",
            check=lambda m: m.student.name != "previous",
            field_path=".student.name",
        ),
        Rule(
            cel="!has(self.overrides) || self.overrides.all(o, o.stage <= self.stages)",
            message="`overrides[].stage` must be at most `stages`",
            check=lambda m: all(o.stage <= m.stages for o in m.overrides),
            field_path=".overrides",
        ),
        Rule(
            cel="!has(self.overrides) || self.overrides.all(a, self.overrides.exists_one(b, b.stage == a.stage))",
            message="each stage may appear in `overrides` only once",
            check=lambda m: len({o.stage for o in m.overrides}) == len(m.overrides),
            field_path=".overrides",
        ),
        Rule(
            cel="!has(self.rleif) || (has(self.rewardModels) && has(self.rewardModels.prm))",
            message="`rleif` needs `rewardModels.prm` (and optionally `irm`)",
            check=lambda m: m.rleif is None or m.reward_models.prm is not None,
            field_path=".rewardModels",
        ),
        Rule(
            cel="has(self.evalSet) && self.evalSet == 'eval-hard' ? (has(self.data.data) && has(self.data.data.evalSets)"
            " && has(self.data.data.evalSets.hard) && self.data.data.evalSets.hard > 0)"
            " : (has(self.data.data) && has(self.data.data.evalSets)"
            " && has(self.data.data.evalSets.diverse) && self.data.data.evalSets.diverse > 0)",
            message="the gates need a fixed evaluation set: set `data.data.evalSets.diverse` (or `hard`"
            " with `evalSet: eval-hard`)",
            check=lambda m: _eval_set_size(m) > 0,
            field_path=".evalSet",
        ),
    )

    stages: int = Field(ge=1, le=16)
    """Number of stages (and of slices of the data)."""
    student: Participant
    """The base student: its `served.model` is the model stage 1 starts from; later stages serve the
    model the previous stage promoted with the same settings."""
    data: DataTemplate  # type: ignore[valid-type]
    """The DataSlice every stage's slice and the fixed evaluation set come from (a DataSlice spec;
    `slicing.count` is set to `stages`). Fields: `kubectl explain dataslices.spec`."""
    eval_set: Literal["eval-diverse", "eval-hard"] = "eval-diverse"
    """The DataSlice output every AlignRound and gate is rated on (WizardArena's fixed yardstick)."""
    evol: EvolTemplate  # type: ignore[valid-type]
    """Evol-Instruct settings of every stage: an EvolJob spec without `dataset`. Fields: `kubectl
    explain evoljobs.spec`."""
    align: AlignTemplate  # type: ignore[valid-type]
    """Co-teaching, judging and arena settings of every stage (and the judges of the gates): an
    AlignRound spec without `datasets`, `evalSet` and `student`. Fields: `kubectl explain
    alignrounds.spec`."""
    sft: SFTTemplate = Field(default_factory=lambda: SFTTemplate())  # type: ignore[valid-type]
    """SFT settings of every stage: a TrainStage spec without `method`, `model` and `dataset`. Fields:
    `kubectl explain trainstages.spec`."""
    dpo: DPOTemplate = Field(default_factory=lambda: DPOTemplate())  # type: ignore[valid-type]
    """Stage-DPO settings of every stage: a TrainStage spec without `method`, `model` and
    `preferences`. Fields: `kubectl explain trainstages.spec`."""
    rleif: RLEIFTemplate | None = None  # type: ignore[valid-type]
    """RLEIF settings; without it the stages end with Stage-DPO. A TrainStage spec without `method`,
    `model`, `dataset` and `rewardModels`. Fields: `kubectl explain trainstages.spec`."""
    reward_models: RewardModels = Field(default_factory=RewardModels)
    """RLEIF's reward models."""
    promotion: Promotion = Field(default_factory=Promotion)
    """The gate's rule."""
    skill_gaps: SkillGaps = Field(default_factory=SkillGaps)
    """Closing skill gaps between stages."""
    overrides: list[StageOverride] = Field(default_factory=list, max_length=16)
    """Per-stage settings that differ from the templates."""
    budget: Budget | None = None
    """Limits of every child's run (each child gets its own copy), unless its template or the stage's
    override sets a `budget` of its own."""


def _eval_set_size(spec: CurriculumSpec) -> int:
    data: Any = spec.data
    sets = data.data.eval_sets
    return int(sets.hard if spec.eval_set == "eval-hard" else sets.diverse)


# --- status -------------------------------------------------------------------------------------------

StagePhase = Literal["Pending", "Running", "Promoted", "Rejected", "Failed"]


class StageStatus(ApiModel):
    """What one stage did."""

    stage: int = Field(ge=1)
    """The stage (from 1)."""
    phase: StagePhase = "Pending"
    """Pending, Running (its chain or gate works), Promoted, Rejected (the gate said no) or Failed."""
    resources: list[str] = Field(default_factory=list, max_length=16)
    """Its children, `Kind/name`."""
    student: str = Field(default="", max_length=2048)
    """The model it started from (a URI or `Kind/name`)."""
    model: str | None = Field(default=None, max_length=2048)
    """The URI of the model it trained."""
    elo: float | None = None
    """The trained model's gate Elo (bootstrap median)."""
    elo_low: float | None = None
    """Lower end of its 95% interval."""
    elo_high: float | None = None
    """Upper end of its 95% interval."""
    previous_elo: float | None = None
    """The rating of the model it started from (fixed at `promotion.referenceElo`)."""
    win_rate: float | None = None
    """Its win rate against the model it started from."""
    promoted: bool | None = None
    """Whether it replaced the model it started from (unset until the gate decides)."""
    message: str = Field(default="", max_length=1024)
    """The gate's verdict with its figures, or why the stage cannot go on."""


class CurriculumStatus(Status):
    """Observed state of a curriculum, written by the operator only."""

    stage: int = Field(default=0, ge=0)
    """The stage being worked on (the last one once finished)."""
    stage_summary: str = Field(default="", max_length=16)
    """`k/N`, for `kubectl get`."""
    current_model: str | None = Field(default=None, max_length=2048)
    """The model the curriculum stands at: the last promoted stage's, or the base student's."""
    last_gate: str | None = Field(default=None, max_length=256)
    """The last gate's verdict in short, for `kubectl get`."""
    stages: list[StageStatus] = Field(default_factory=list, max_length=16)
    """Per stage: its resources, model, Elo with interval, win rate and whether it was promoted."""


class Curriculum(BaseModel):
    """A Curriculum object as read from a manifest or the API server."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Literal["posttrain.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Curriculum"]
    metadata: ObjectMeta
    spec: CurriculumSpec
    status: CurriculumStatus | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(kind, name): the identity within a namespace."""
        return (self.kind, self.metadata.name)

    def wire(self) -> dict[str, Any]:
        """The object as YAML/JSON."""
        return object_wire(self.api_version, self.kind, self.metadata, self.spec, self.status)


def template_values(template: BaseModel | None) -> dict[str, Any]:
    """What a user set in a template, in wire form (the child's defaults apply to the rest)."""
    if template is None:
        return {}
    return template.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
