"""KEP-1623 conditions: set one, keeping its lastTransitionTime unless its status changes."""

from __future__ import annotations

from posttrain.api.status import Condition, ConditionStatus, ConditionType

ORDER: tuple[ConditionType, ...] = ("Ready", "InputsReady", "Progressing")


def set_condition(
    conditions: list[Condition],
    type: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """The conditions with `type` set; the others unchanged; sorted Ready, InputsReady, Progressing."""
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


def get_condition(conditions: list[Condition], type: ConditionType) -> Condition | None:
    """The condition of that type, if set."""
    return next((c for c in conditions if c.type == type), None)
