"""The status every kind shares: phase, KEP-1623 conditions, outputs, metrics, progress.

Every field the operator writes is declared here: the CRD's structural schema silently prunes
undeclared status fields. The operator framework's own bookkeeping lives in annotations instead.

The conditions serve three readers at once. `Ready` is what Argo CD's health check and people read;
`Stalled` and `Reconciling` are kstatus' abnormal-true pair (sigs.k8s.io/cli-utils, used by Flux,
kpt and `kubectl wait`-style tools): kstatus reports a resource Failed while `Stalled=True`,
InProgress while `Reconciling=True` or while `status.observedGeneration` lags `metadata.generation`,
and Current otherwise. The CRD gives a new object the status `UNOBSERVED` (`phase: Pending`,
`observedGeneration: 0`), so no reader sees it as current before the operator has looked at it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from posttrain.api.base import ApiModel

Phase = Literal["Pending", "Waiting", "Running", "Succeeded", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]
ConditionType = Literal[
    "Ready", "InputsReady", "Progressing", "Stalled", "Reconciling", "JudgeReliable", "Promoted"
]


class Condition(ApiModel):
    """A KEP-1623 condition."""

    type: ConditionType
    """`Ready` (finished successfully), `InputsReady` (every referenced resource succeeded),
    `Progressing` (a workload is running), `Stalled` (True: it cannot finish without a change: its
    retries are used up, its spec is invalid, or an input upstream failed, is missing or is part of a
    reference cycle), `Reconciling` (True: it is working towards its spec: waiting for inputs on their
    way, starting, running or backing off before a retry), for an AlignRound `JudgeReliable` (its
    judges' position flips, agreement, self-preference and anchor drift within `align.reliability`;
    Unknown when none could be measured; absent until a run has finished), and `Promoted` (a promotion
    gate's verdict: a Curriculum's last gate, or an AlignRound with `promotion`; True when the new
    model replaced its predecessor, False with the figures when not)."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """CamelCase reason."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail."""
    observed_generation: int = Field(default=0, ge=0)
    """The generation of the spec the condition was computed from."""
    last_transition_time: str = Field(max_length=64)
    """When the status last changed (RFC 3339)."""


class Output(ApiModel):
    """One artifact produced by the resource."""

    uri: str = Field(max_length=2048)
    """Location of the artifact."""
    rows: int | None = Field(default=None, ge=0)
    """Rows of a dataset."""
    digest: str | None = Field(default=None, max_length=128)
    """Content digest (`sha256:...`)."""
    format: str | None = Field(default=None, max_length=32)
    """Data format of a dataset (`chat`, `preference`, ...) or `model`."""


class Progress(ApiModel):
    """How far the running workload is."""

    done: int = Field(default=0, ge=0)
    """Units done."""
    total: int = Field(default=0, ge=0)
    """Units in all (0 when unknown)."""
    unit: str = Field(default="items", max_length=32)
    """What is counted: rows, requests, battles, steps."""
    message: str = Field(default="", max_length=1024)
    """A short note from the workload."""
    summary: str = Field(default="", max_length=64)
    """`done/total unit`, for `kubectl get`."""


class Failure(ApiModel):
    """Why the last attempt failed."""

    reason: str = Field(max_length=256)
    """Machine-readable cause (BackoffLimitExceeded, DeadlineExceeded, Error, ...)."""
    exit_code: int | None = None
    """Exit code of the workload container."""
    message: str = Field(default="", max_length=4096)
    """The termination message or the Job's condition message."""


class Status(ApiModel):
    """Observed state, written by the operator only."""

    phase: Phase = "Pending"
    """Pending (not looked at by the operator yet), Waiting (for inputs), Running, Succeeded or Failed."""
    conditions: list[Condition] = Field(default_factory=list, max_length=8)
    """KEP-1623 conditions: Ready, InputsReady, Progressing, Stalled, Reconciling."""
    observed_generation: int = Field(default=0, ge=0)
    """The spec generation this status describes."""
    run_id: str | None = Field(default=None, max_length=64)
    """Content hash of (spec, input digests): names the output folder and the children."""
    attempt: int = Field(default=0, ge=0)
    """Attempts started for the current run (1 = first)."""
    retry_after: str | None = Field(default=None, max_length=64)
    """When the next attempt may start (RFC 3339), while backing off."""
    last_failure: Failure | None = None
    """The last failed attempt."""
    outputs: dict[str, Output] = Field(default_factory=dict)
    """Artifacts by name (`dataset`, `slice-1`, `model`, `preferences`, ...)."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Numbers reported by the workload (loss, win rate, kept/eliminated, ...)."""
    progress: Progress | None = None
    """Progress of the running workload."""
    inputs: dict[str, str] = Field(default_factory=dict)
    """Resolved inputs: field path -> digest (or URI) they were read at."""
    start_time: str | None = Field(default=None, max_length=64)
    """When the current run started."""
    completion_time: str | None = Field(default=None, max_length=64)
    """When the current run finished."""
    history: list[str] = Field(default_factory=list, max_length=16)
    """Run ids of earlier successful generations (their outputs are kept)."""


UNOBSERVED = Status(phase="Pending", observed_generation=0)
"""The status of an object the operator has not looked at yet: the CRD's default for `status`.

The API server fills it in when it reads an object without a status, so a just-applied resource is
`Pending` with `observedGeneration: 0` < `metadata.generation`: kstatus and Flux see it in progress
(not current, as they would an object without a status), and Flux's CEL expressions find
`status.observedGeneration` instead of failing on a missing field.
"""


def unobserved_default() -> dict[str, object]:
    """`UNOBSERVED` as the CRD's schema default (only the fields it sets)."""
    return UNOBSERVED.model_dump(mode="json", by_alias=True, include={"phase", "observed_generation"})
