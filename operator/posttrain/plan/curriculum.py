"""A Curriculum's chain and its promotion gates: what both drivers create, and the curriculum's status.

`chain()` is the whole chain as if every gate promoted (what `posttrain curriculum render` writes);
`plan_curriculum()` is what should exist now, given the children's statuses: stage k+1's children only
once stage k's gate has decided, so stage k+1's AlignRound battles with the model the gates kept (its
pairs are on-policy) and a rejected stage stops the chain or is skipped over. When every gate
promotes, the two agree object for object.

Children carry deterministic names, the curriculum's labels, and the specs a user would write; a
driver adds only what ties them to the curriculum object (the operator: an ownerReference). A child is
created once and changed only when its expanded spec changes, so editing one stage's settings re-runs
that stage and what reads from it (run ids are content hashes), nothing else. While the gate of a stage
that runs again decides anew, the later stages' children are not wanted: they would read the new model
before the gate kept it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from posttrain.api import labels
from posttrain.api.curriculum import Curriculum, CurriculumSpec, StageStatus, template_values
from posttrain.api.metrics import Progression
from posttrain.api.outputs import MODEL, PREFERENCES, slice_output
from posttrain.api.resources import API_VERSION, Resource
from posttrain.api.status import Condition, ConditionStatus, ConditionType, Phase
from posttrain.plan.conditions import set_condition, with_kstatus_conditions
from posttrain.plan.gates import GateVerdict, decide_gate
from posttrain.plan.types import Event
from posttrain.support.times import timestamp

Key = tuple[str, str]
Body = dict[str, Any]

CURRICULUM_LABEL = labels.CURRICULUM
STAGE_LABEL = labels.STAGE
PREVIOUS = "previous"
"""The gate's participant that serves the model the stage started from."""


# --- names ----------------------------------------------------------------------------------------


def data_name(curriculum: str) -> str:
    """The curriculum's DataSlice."""
    return f"{curriculum}-data"


def stage_name(curriculum: str, stage: int, role: str) -> str:
    """A stage's child: `<curriculum>-s<k>-<role>` (role `data`, `evol`, `align`, `sft`, `dpo`, `rleif`, `gate`)."""
    return f"{curriculum}-s{stage}-{role}"


def reward_name(curriculum: str, role: str) -> str:
    """A reward model of the curriculum (`irm`, `prm`)."""
    return f"{curriculum}-{role}"


def _from(kind: str, name: str, output: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"kind": kind, "name": name}
    if output is not None:
        ref["output"] = output
    return {"from": ref}


def merge_patch(target: Any, patch: Any) -> Any:
    """`patch` applied to `target` as a JSON merge patch (RFC 7386): objects merge, null removes a key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set a nested field, making the objects on the way."""
    node = body
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


# --- expansion --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """The children of one stage and the model it trains."""

    number: int
    children: list[Body]
    final: Key
    """(kind, name) of the TrainStage whose model is the stage's model."""
    gate: Key
    """(kind, name) of the gate's AlignRound."""


class Expansion:
    """Expands one curriculum; the templates with a stage's overrides merged in, and the children."""

    def __init__(self, curriculum: Curriculum) -> None:
        """Prepare the expansion of `curriculum`."""
        self.curriculum = curriculum
        self.spec: CurriculumSpec = curriculum.spec
        self.name = curriculum.metadata.name
        self.namespace = curriculum.metadata.namespace

    # Objects ---------------------------------------------------------------------------------------
    def _object(self, kind: str, name: str, spec: dict[str, Any], stage: int | None) -> Body:
        metadata: dict[str, Any] = {"name": name}
        if self.namespace:
            metadata["namespace"] = self.namespace
        metadata["labels"] = {CURRICULUM_LABEL: self.name}
        if stage is not None:
            metadata["labels"][STAGE_LABEL] = str(stage)
        if self.spec.budget is not None and "budget" not in spec:
            spec = {**spec, "budget": self.spec.budget.wire()}
        return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}

    def template(self, role: str, stage: int) -> dict[str, Any]:
        """A child template's set fields, with the stage's override merged in."""
        values = template_values(getattr(self.spec, role))
        for override in self.spec.overrides:
            patch = getattr(override, role, None)
            if override.stage == stage and patch is not None:
                values = merge_patch(values, patch)
        return dict(values)

    def student(self, model: dict[str, Any]) -> dict[str, Any]:
        """The curriculum's student, served from `model`."""
        student = self.spec.student.model_dump(
            mode="json", by_alias=True, exclude_unset=True, exclude_none=True
        )
        student.setdefault("served", {})["model"] = copy.deepcopy(model)
        return dict(student)

    def eval_ref(self) -> dict[str, Any]:
        """The fixed evaluation set every AlignRound and gate is rated on."""
        return _from("DataSlice", data_name(self.name), self.spec.eval_set)

    # Shared children -------------------------------------------------------------------------------
    def shared(self) -> list[Body]:
        """The DataSlice and the reward models (those RLEIF needs)."""
        data = self.template("data", 0)
        _set(data, ("data", "slicing", "count"), self.spec.stages)
        out = [self._object("DataSlice", data_name(self.name), data, None)]
        if self.spec.rleif is None:
            return out
        base = self.spec.student.served.model.wire() if self.spec.student.served else {}
        for role, source in (
            ("irm", _from("EvolJob", stage_name(self.name, 1, "evol"), "rankings")),
            ("prm", _from("AlignRound", stage_name(self.name, 1, "align"), "step-labels")),
        ):
            template = getattr(self.spec.reward_models, role)
            if template is None:
                continue
            values = template_values(template)
            spec = {"type": role, "baseModel": base, "dataset": source, **values}
            out.append(self._object("RewardModel", reward_name(self.name, role), spec, None))
        return out

    # One stage -------------------------------------------------------------------------------------
    def stage(self, number: int, start: dict[str, Any]) -> Stage:
        """Stage `number`'s children, its model starting from the model reference `start`."""
        name, k = self.name, number
        children: list[Body] = []
        dataset = _from("DataSlice", data_name(name), slice_output(k))
        if self.spec.skill_gaps.enabled and k > 1:
            data = self.template("data", k)
            reweighed = {key: value for key, value in data.items() if key not in ("sources", "data")} | {
                "sources": [dataset],
                "data": {
                    **{
                        key: value
                        for key, value in (data.get("data") or {}).items()
                        if key in ("attributes", "categories", "classifier", "tokenizer", "buckets", "seed")
                    },
                    "dedup": {"exact": False, "near": False},
                    "sampling": {
                        "targetsFrom": _from("AlignRound", stage_name(name, k - 1, "align"), "skill-gaps")
                    },
                },
            }
            children.append(self._object("DataSlice", stage_name(name, k, "data"), reweighed, k))
            dataset = _from("DataSlice", stage_name(name, k, "data"))
        rleif = self.spec.rleif is not None
        evol = {**self.template("evol", k), "dataset": dataset}
        if rleif and k == 1 and self.spec.reward_models.irm is not None:
            _set(evol, ("evol", "rankings", "enabled"), True)
        children.append(self._object("EvolJob", stage_name(name, k, "evol"), evol, k))

        align_values = self.template("align", k)
        align = {
            **align_values,
            "datasets": [_from("EvolJob", stage_name(name, k, "evol"))],
            "evalSet": self.eval_ref(),
            "student": self.student(start),
        }
        if rleif and k == 1 and self.spec.reward_models.prm is not None:
            _set(align, ("align", "stepLabels", "enabled"), True)
        children.append(self._object("AlignRound", stage_name(name, k, "align"), align, k))

        sft = {
            **self.template("sft", k),
            "method": "sft",
            "model": copy.deepcopy(start),
            "dataset": _from("AlignRound", stage_name(name, k, "align"), "sft"),
        }
        children.append(self._object("TrainStage", stage_name(name, k, "sft"), sft, k))
        dpo = {
            **self.template("dpo", k),
            "method": "dpo",
            "model": _from("TrainStage", stage_name(name, k, "sft")),
            "preferences": _from("AlignRound", stage_name(name, k, "align"), PREFERENCES),
        }
        children.append(self._object("TrainStage", stage_name(name, k, "dpo"), dpo, k))
        final = ("TrainStage", stage_name(name, k, "dpo"))
        if rleif:
            reward_models = [
                {"role": role, "model": _from("RewardModel", reward_name(name, role))}
                for role in ("irm", "prm")
                if getattr(self.spec.reward_models, role) is not None
            ]
            rl = {
                **self.template("rleif", k),
                "method": "rleif",
                "model": _from("TrainStage", stage_name(name, k, "dpo")),
                "dataset": _from("EvolJob", stage_name(name, k, "evol")),
                "rewardModels": reward_models,
            }
            children.append(self._object("TrainStage", stage_name(name, k, "rleif"), rl, k))
            final = ("TrainStage", stage_name(name, k, "rleif"))
        gate = self.gate(k, align_values, start, _from(*final))
        children.append(gate)
        return Stage(k, children, final, ("AlignRound", gate["metadata"]["name"]))

    def gate(self, k: int, align: dict[str, Any], start: dict[str, Any], trained: dict[str, Any]) -> Body:
        """The gate's arena: the stage's model (the student) against the model it started from."""
        promotion = self.spec.promotion
        previous = self.student(start)
        previous["name"] = PREVIOUS
        settings = {key: value for key, value in align.items() if key not in ("teachers", "align")}
        spec = {
            **settings,
            "datasets": [self.eval_ref()],
            "evalSet": self.eval_ref(),
            "student": self.student(trained),
            "teachers": [previous],
            "promotion": promotion.model_dump(
                mode="json", by_alias=True, include={"rule", "min_elo_gain", "min_win_rate"}
            ),
            "align": {
                "coTeaching": {"enabled": False},
                "arena": {
                    "enabled": True,
                    "bootstrap": promotion.bootstrap,
                    "evalSize": promotion.eval_size,
                    "reference": PREVIOUS,
                    "referenceElo": promotion.reference_elo,
                },
            },
        }
        judging = (align.get("align") or {}).get("judging")
        if judging is not None:
            spec["align"]["judging"] = judging
        return self._object("AlignRound", stage_name(self.name, k, "gate"), spec, k)


def base_model(curriculum: Curriculum) -> dict[str, Any]:
    """The model reference stage 1 starts from: the student's served model."""
    served = curriculum.spec.student.served
    return served.model.wire() if served is not None else {}


def chain(curriculum: Curriculum) -> list[Body]:
    """Every child of the curriculum as if every gate promoted, in creation order (no owner).

    This is what `posttrain curriculum render` writes; the operator creates the same objects, stage by
    stage, as long as the gates promote.
    """
    expansion = Expansion(curriculum)
    out = expansion.shared()
    start = base_model(curriculum)
    for number in range(1, curriculum.spec.stages + 1):
        stage = expansion.stage(number, start)
        out.extend(stage.children)
        start = _from(*stage.final)
    return out


class ChainError(ValueError):
    """A child the curriculum expands to is invalid; `problems` names each child and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def validate_children(children: list[Body]) -> list[Resource]:
    """The children as resources, validated by their kinds' models.

    Raises:
        ChainError: one problem per invalid field of every invalid child, with its path.
    """
    problems: list[str] = []
    resources: list[Resource] = []
    for body in children:
        where = f"{body['kind']}/{body['metadata']['name']}"
        try:
            resources.append(Resource.parse(body))
        except ValidationError as error:
            for item in error.errors():
                path = ".".join("from" if p == "from_" else str(p) for p in item["loc"])
                message = item["msg"].removeprefix("Value error, ")
                problems.append(f"{where}: spec.{path}: {message}" if path else f"{where}: {message}")
    if problems:
        raise ChainError(problems)
    return resources


# --- the curriculum's plan --------------------------------------------------------------------------

ChildStatus = Callable[[Key], Mapping[str, Any] | None]
"""(kind, name) -> the child's status (wire form; `{}` when it has none yet), or None if it does not exist."""


@dataclass(frozen=True)
class CurriculumDecision:
    """What should exist now and the curriculum's new status."""

    children: list[Body]
    """Every child that should exist now, in creation order, without owner."""
    complete: bool
    """True when `children` is the whole set (a driver removes the curriculum's other children); False
    when the expansion is invalid: then nothing is created and nothing removed."""
    status: dict[str, Any]
    """The complete new status (wire form)."""
    events: list[Event] = field(default_factory=list)
    """Events to record on the curriculum."""


def _stalled(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return str(condition.get("message") or condition.get("reason") or "")
    return None


def _label(ref: Mapping[str, Any]) -> str:
    source = ref.get("from")
    if isinstance(source, Mapping):
        return f"{source.get('kind')}/{source.get('name')}"
    return str(ref.get("uri") or "")


def _model_uri(status: Mapping[str, Any] | None) -> str | None:
    outputs = (status or {}).get("outputs") or {}
    model = outputs.get(MODEL) if isinstance(outputs, Mapping) else None
    return str(model["uri"]) if isinstance(model, Mapping) and model.get("uri") else None


@dataclass
class _Walk:
    """The state of walking the stages in order."""

    start: dict[str, Any]
    current_uri: str | None
    elo: float
    promoted: int = 0
    last: GateVerdict | None = None
    last_stage: int = 0
    stopped: str | None = None
    failed: str | None = None
    running: str | None = None
    stages: list[StageStatus] = field(default_factory=list)


def _walk_stage(
    expansion: Expansion, walk: _Walk, number: int, child_status: ChildStatus, desired: list[Body]
) -> bool:
    """Add stage `number`'s children and status; True when the next stage may start."""
    stage = expansion.stage(number, walk.start)
    desired.extend(stage.children)
    keys = [(c["kind"], c["metadata"]["name"]) for c in stage.children]
    status = StageStatus(stage=number, resources=[f"{k}/{n}" for k, n in keys], student=_label(walk.start))
    walk.stages.append(status)
    statuses = {key: child_status(key) for key in keys}
    status.model = _model_uri(statuses[stage.final])
    for key, child in statuses.items():
        why = _stalled(child or {})
        if why is not None:
            status.phase = "Failed"
            status.message = f"{key[0]}/{key[1]}: {why}"[:1024]
            walk.failed = f"stage {number}: {status.message}"
            return False
    gate = statuses[stage.gate]
    if gate is None or gate.get("phase") != "Succeeded":
        status.phase = "Running" if any(s is not None for s in statuses.values()) else "Pending"
        working = next(
            (
                f"{k}/{n} {s.get('phase') or 'Pending'}"
                for (k, n), s in statuses.items()
                if s is not None and s.get("phase") != "Succeeded"
            ),
            None,
        )
        walk.running = f"stage {number}/{expansion.spec.stages}: {working or 'creating its resources'}"
        return False
    spec = expansion.spec
    metrics, conditions = gate.get("metrics") or {}, list(gate.get("conditions") or [])
    verdict = decide_gate(spec.promotion, spec.student.name, PREVIOUS, metrics, conditions)
    status.elo, status.elo_low, status.elo_high = verdict.elo, verdict.elo_low, verdict.elo_high
    status.previous_elo, status.win_rate = verdict.previous_elo, verdict.win_rate
    status.promoted = verdict.promoted
    status.message = f"stage {number}: {verdict.message}"[:1024]
    walk.last, walk.last_stage = verdict, number
    if verdict.promoted:
        status.phase = "Promoted"
        walk.promoted += 1
        walk.elo += verdict.gain or 0.0
        walk.start = _from(*stage.final)
        walk.current_uri = status.model
        return True
    status.phase = "Rejected"
    if expansion.spec.promotion.on_reject == "stop":
        walk.stopped = status.message
        return False
    return True


def plan_curriculum(curriculum: Curriculum, child_status: ChildStatus, now: datetime) -> CurriculumDecision:
    """The children that should exist now and the curriculum's status.

    Stage k's children exist once stage k-1's gate decided and promoted (or rejected, with
    `promotion.onReject: continue`: then stage k starts from the model stage k-1 started from). A
    stalled child (failed, or blocked) fails the curriculum with that child's message, until a change
    makes it move again.

    Args:
        curriculum: the curriculum with its current status.
        child_status: each child's status as the driver sees it.
        now: the time of this decision (UTC).

    Returns:
        The children (wire bodies, no owner) and the new status (wire form).
    """
    spec = curriculum.spec
    expansion = Expansion(curriculum)
    desired = expansion.shared()
    base = base_model(curriculum)
    walk = _Walk(start=base, current_uri=base.get("uri"), elo=spec.promotion.reference_elo)
    for key in [(c["kind"], c["metadata"]["name"]) for c in desired]:
        why = _stalled(child_status(key) or {})
        if why is not None and walk.failed is None:
            walk.failed = f"{key[0]}/{key[1]}: {why}"
    number = 0
    if walk.failed is None:
        for number in range(1, spec.stages + 1):
            if not _walk_stage(expansion, walk, number, child_status, desired):
                break
    for later in range(len(walk.stages) + 1, spec.stages + 1):
        walk.stages.append(StageStatus(stage=later))
    try:
        validate_children(desired)
    except ChainError as error:
        walk.failed = f"invalid chain: {error}"
        return _decision(curriculum, walk, [], max(number, 1), now, complete=False)
    return _decision(curriculum, walk, desired, max(number, 1), now, complete=True)


Verdict = tuple[ConditionStatus, str, str]
"""(status, reason, message) of a condition."""


def _phase(spec: CurriculumSpec, walk: _Walk) -> tuple[Phase, Verdict]:
    """The curriculum's phase and its Ready condition."""
    if walk.failed is not None:
        return "Failed", ("False", "StageFailed", walk.failed)
    if walk.stopped is not None:
        return "Failed", ("False", "NotPromoted", walk.stopped)
    if walk.running is not None:
        return "Running", ("Unknown", "Running", walk.running)
    model = walk.current_uri or "the base student"
    return "Succeeded", (
        "True",
        "Succeeded",
        f"{walk.promoted} of {spec.stages} stages promoted; model: {model}",
    )


def _conditions(
    old: list[Condition], phase: Phase, ready: Verdict, walk: _Walk, generation: int, at: str
) -> list[Condition]:
    """Ready, Progressing, Promoted (the last gate) and kstatus' pair."""
    progressing: Verdict = (
        ("True", "StageRunning", ready[2]) if phase == "Running" else ("False", ready[1], ready[2])
    )
    promoted: Verdict = ("Unknown", "GatePending", "no gate has decided yet")
    if walk.last is not None:
        decided: ConditionStatus = "True" if walk.last.promoted else "False"
        promoted = (decided, walk.last.reason, f"stage {walk.last_stage}: {walk.last.message}")
    conditions = [c for c in old if c.type != "InputsReady"]
    updates: tuple[tuple[ConditionType, Verdict], ...] = (
        ("Ready", ready),
        ("Progressing", progressing),
        ("Promoted", promoted),
    )
    for type_, (status, reason, message) in updates:
        conditions = set_condition(conditions, type_, status, reason, message, generation, at)
    return with_kstatus_conditions(conditions, phase, generation, at)


def _metrics(walk: _Walk) -> dict[str, float]:
    """The current model's Elo on the base student's scale, and the last gate's figures."""
    metrics: dict[str, float] = {
        Progression.ELO: round(walk.elo, 1),
        Progression.STAGES_PROMOTED: walk.promoted,
    }
    last = walk.last
    if last is None or last.previous_elo is None:
        return metrics
    figures = {
        Progression.ELO_GAIN: last.elo,
        Progression.ELO_GAIN_LOW: last.elo_low,
        Progression.ELO_GAIN_HIGH: last.elo_high,
    }
    for name, value in figures.items():
        if value is not None:
            metrics[name] = round(value - last.previous_elo, 1)
    if last.win_rate is not None:
        metrics[Progression.WIN_RATE] = round(last.win_rate, 4)
    return metrics


def _last_gate(walk: _Walk) -> str | None:
    """`s2 promoted +35 Elo`, for `kubectl get`."""
    if walk.last is None:
        return None
    gain = walk.last.gain
    shown = f" {gain:+.0f} Elo" if gain is not None else ""
    return f"s{walk.last_stage} {'promoted' if walk.last.promoted else 'rejected'}{shown}"


def _decision(
    curriculum: Curriculum, walk: _Walk, desired: list[Body], number: int, now: datetime, complete: bool
) -> CurriculumDecision:
    spec = curriculum.spec
    generation = curriculum.metadata.generation or 1
    old = curriculum.status
    at = timestamp(now)
    phase, ready = _phase(spec, walk)
    conditions = _conditions(
        list(old.conditions) if old is not None else [], phase, ready, walk, generation, at
    )
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [c.wire() for c in conditions],
        "observedGeneration": generation,
        "metrics": _metrics(walk),
        "stage": number,
        "stageSummary": f"{number}/{spec.stages}",
        "stages": [s.wire() for s in walk.stages],
    }
    if walk.current_uri:
        status["currentModel"] = walk.current_uri
        status["outputs"] = {MODEL: {"uri": walk.current_uri, "format": "model"}}
    last_gate = _last_gate(walk)
    if last_gate is not None:
        status["lastGate"] = last_gate
    status["startTime"] = old.start_time if old is not None and old.start_time else at
    if phase in ("Succeeded", "Failed"):
        kept = old is not None and old.phase == phase and old.completion_time
        status["completionTime"] = old.completion_time if kept and old is not None else at
    return CurriculumDecision(desired, complete, status, _events(old, walk))


def _events(old: Any, walk: _Walk) -> list[Event]:
    """An event for every gate that decided since the last status."""
    before = {s.stage: s.promoted for s in (old.stages if old is not None else [])}
    events = []
    for stage in walk.stages:
        if stage.promoted is None or before.get(stage.stage) == stage.promoted:
            continue
        if stage.promoted:
            events.append(Event("Normal", "Promoted", stage.message))
        else:
            events.append(Event("Warning", "NotPromoted", stage.message))
    return events


def parse_curriculum(body: Mapping[str, Any]) -> Curriculum:
    """A Curriculum from its wire form (raises pydantic.ValidationError on a spec the model rejects)."""
    return Curriculum.model_validate(dict(body))
