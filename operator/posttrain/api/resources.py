"""The five kinds as whole objects (apiVersion, kind, metadata, spec, status) and their registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from posttrain.api.align import AlignRoundSpec
from posttrain.api.base import ApiModel
from posttrain.api.common import KindName
from posttrain.api.data import DataSliceSpec
from posttrain.api.evol import EvolJobSpec
from posttrain.api.metrics import Align, Data, Evol, Metric, Reward, Train
from posttrain.api.reward import RewardModelSpec
from posttrain.api.status import Status
from posttrain.api.train import TrainStageSpec

GROUP = "posttrain.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "posttrain"
Workload = Literal["data", "evol", "align", "reward", "train"]


class ObjectMeta(BaseModel):
    """The parts of Kubernetes object metadata posttrain reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


@dataclass(frozen=True)
class Column:
    """A printer column of `kubectl get`."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""


@dataclass(frozen=True)
class KindInfo:
    """Everything known about a kind: names, spec model, workload, outputs and display."""

    kind: KindName
    plural: str
    short_names: tuple[str, ...]
    spec_model: type[ApiModel]
    workload: Workload
    main_output: str
    extra_column: Column
    description: str
    metrics: tuple[Metric, ...] = ()
    """Every metric its workload may write into `status.metrics` (`posttrain.api.metrics`)."""
    headlines: tuple[Metric, ...] = ()
    """The few metrics the end-of-run report shows first, in order."""

    @property
    def singular(self) -> str:
        """The kind in lower case, as `kubectl` and the CRD's `singular` name spell it."""
        return self.kind.lower()


KINDS: dict[str, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo(
            "DataSlice",
            "dataslices",
            ("dslice",),
            DataSliceSpec,
            "data",
            "dataset",
            Column("Rows", ".status.outputs.dataset.rows", "integer", "Rows after sampling"),
            "Analyses, cleans and re-weights instruction data and cuts it into progressive slices.",
            Data.ALL,
            Data.HEADLINES,
        ),
        KindInfo(
            "EvolJob",
            "evoljobs",
            ("evol",),
            EvolJobSpec,
            "evol",
            "dataset",
            Column("Kept", Evol.KEPT.json_path(), "integer", "Evolved instructions kept"),
            "Evolves instructions and answers with teacher LLMs (Evol-Instruct, Evol-Answer, Auto Evol).",
            Evol.ALL,
            Evol.HEADLINES,
        ),
        KindInfo(
            "AlignRound",
            "alignrounds",
            ("align",),
            AlignRoundSpec,
            "align",
            "preferences",
            Column("WinRate", Align.STUDENT_WIN_RATE.json_path(), "number", "Student win rate"),
            "AI Align AI: co-teaching, judged battles and self-teaching; SFT data and preference pairs.",
            Align.ALL,
            Align.HEADLINES,
        ),
        KindInfo(
            "TrainStage",
            "trainstages",
            ("tstage",),
            TrainStageSpec,
            "train",
            "model",
            Column("Method", ".spec.method", "string", "sft, dpo or rleif"),
            "One stage of progressive training: SFT, a Stage-DPO slice, or RLEIF.",
            Train.ALL,
            Train.HEADLINES,
        ),
        KindInfo(
            "RewardModel",
            "rewardmodels",
            ("rmodel",),
            RewardModelSpec,
            "reward",
            "model",
            Column("Type", ".spec.type", "string", "irm or prm"),
            "Trains an instruction-quality (IRM) or process-supervised (PRM) reward model.",
            Reward.ALL,
            Reward.HEADLINES,
        ),
    )
}


class Resource(BaseModel):
    """A posttrain resource as read from a manifest or the API server."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Literal["posttrain.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: KindName
    metadata: ObjectMeta
    spec: Any
    status: Status | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Resource:
        """Validate a whole object, its spec with the kind's model.

        Raises:
            pydantic.ValidationError: one error per problem, with the field path.
        """
        envelope = cls.model_validate({**body, "spec": body.get("spec", {})})
        spec = KINDS[envelope.kind].spec_model.model_validate(body.get("spec", {}))
        return envelope.model_copy(update={"spec": spec})

    @property
    def info(self) -> KindInfo:
        """The static description of this resource's kind."""
        return KINDS[self.kind]

    @property
    def key(self) -> tuple[str, str]:
        """(kind, name): the identity within a namespace."""
        return (self.kind, self.metadata.name)

    def wire(self) -> dict[str, Any]:
        """The object as YAML/JSON."""
        return object_wire(self.api_version, self.kind, self.metadata, self.spec, self.status)


def object_wire(
    api_version: str, kind: str, metadata: ObjectMeta, spec: ApiModel, status: ApiModel | None
) -> dict[str, Any]:
    """A posttrain object as YAML/JSON: metadata without unset fields, spec and status in wire form."""
    out: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": metadata.model_dump(exclude_none=True, exclude_defaults=True),
        "spec": spec.wire(),
    }
    out["metadata"]["name"] = metadata.name
    if status is not None:
        out["status"] = status.wire()
    return out
