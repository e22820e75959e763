"""KEP-1623 conditions: set one, keeping its lastTransitionTime unless its status changes."""

from __future__ import annotations

from posttrain.api.status import Condition, ConditionStatus, ConditionType, Phase

ORDER: tuple[ConditionType, ...] = (
    "Ready",
    "InputsReady",
    "Progressing",
    "Stalled",
    "Reconciling",
    "JudgeReliable",
    "Promoted",
)

STALLING_INPUT_REASONS = frozenset(
    {"ReferenceCycle", "OutputUnknown", "InputFailed", "InputBlocked", "InputMissing", "OutputMissing"}
)
"""`InputsReady` reasons that waiting does not resolve: some spec must change first."""


def set_condition(
    conditions: list[Condition],
    type: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """The conditions with `type` set; the others unchanged; sorted as `ORDER`."""
    by_type = {c.type: c for c in conditions}
    old = by_type.get(type)
    changed = old is None or old.status != status
    by_type[type] = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message[:32000],
        observed_generation=generation,
        last_transition_time=now if changed or old is None else old.last_transition_time,
    )
    return [by_type[t] for t in ORDER if t in by_type]


def without_condition(conditions: list[Condition], type: ConditionType) -> list[Condition]:
    """The conditions without the one of that type."""
    return [c for c in conditions if c.type != type]


def get_condition(conditions: list[Condition], type: ConditionType) -> Condition | None:
    """The condition of that type, if set."""
    return next((c for c in conditions if c.type == type), None)


def with_kstatus_conditions(
    conditions: list[Condition], phase: Phase, generation: int, now: str
) -> list[Condition]:
    """The conditions with kstatus' `Stalled` and `Reconciling` set from the phase and the others.

    kstatus (sigs.k8s.io/cli-utils; Flux's `wait`, kpt) reports a resource Failed while `Stalled` is
    True and InProgress while `Reconciling` is True; otherwise, at the current generation, it reads
    `Ready`. So: Stalled when the resource failed, or waits for an input that will not come without a
    spec change (a failed, blocked or missing input, a missing output, a reference cycle); Reconciling
    while it waits for inputs on their way, starts or runs; neither once it succeeded. Each takes the
    reason and message of the condition it follows, so every tool shows the same text.

    Args:
        conditions: the other conditions, already set for this decision.
        phase: the phase of this decision.
        generation: the spec generation the status describes.
        now: the time of this decision (RFC 3339).

    Returns:
        The conditions with both set (True or False), in `ORDER`.
    """
    follows: ConditionType = "Progressing"
    if phase in ("Failed", "Succeeded"):
        follows = "Ready"
    elif phase == "Waiting":
        follows = "InputsReady"
    source = get_condition(conditions, follows)
    reason, message = (source.reason, source.message) if source is not None else (phase, "")
    stalled = phase == "Failed" or (phase == "Waiting" and reason in STALLING_INPUT_REASONS)
    reconciling = not stalled and phase != "Succeeded"
    pair: tuple[tuple[ConditionType, bool], ...] = (("Stalled", stalled), ("Reconciling", reconciling))
    for type_, value in pair:
        status: ConditionStatus = "True" if value else "False"
        conditions = set_condition(conditions, type_, status, reason, message, generation, now)
    return conditions


def stalled_message(conditions: list[Condition]) -> str | None:
    """The message of a True `Stalled` condition (why the resource cannot finish), or None."""
    stalled = get_condition(conditions, "Stalled")
    return stalled.message if stalled is not None and stalled.status == "True" else None
