"""Conditions a finished run's result decides: `JudgeReliable` of an AlignRound.

The align workload measures its judges (`reliability.*` metrics, see
`posttrain_trainer.align.reliability`); the spec holds the thresholds (`align.reliability`). Which
measures fail, and the figures, are decided here, once, for both drivers: the operator and the local
runner apply the same plan. A Curriculum's promotion gate reads the condition, not the figures.

Per kind, `RESULT_CONDITIONS` names the function that reads a result; kinds without one set nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from posttrain.api.align import AlignRoundSpec
from posttrain.api.metrics import Align
from posttrain.api.status import ConditionStatus, ConditionType

JUDGE_RELIABLE: ConditionType = "JudgeReliable"


@dataclass(frozen=True)
class ResultCondition:
    """A condition decided from a run's result."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class _Measure:
    """One reliability measure: its metric, its threshold and which side of it is bad."""

    name: str
    """How the message names it."""
    reason: str
    """The condition's reason when it fails."""
    metric: str
    threshold: float
    at_most: bool
    """True: the figure must not exceed the threshold; False: it must not fall below it."""

    def fails(self, value: float) -> bool:
        return value > self.threshold if self.at_most else value < self.threshold

    def describe(self, value: float | None) -> str:
        bound = f"{'max' if self.at_most else 'min'} {self.threshold:.2f}"
        figure = "not measured" if value is None else f"{value:.2f}"
        return f"{self.name} {figure} ({bound})"


def judge_reliability(spec: AlignRoundSpec, metrics: Mapping[str, float]) -> ResultCondition:
    """The `JudgeReliable` condition of an AlignRound from its result metrics and its thresholds.

    Args:
        spec: the AlignRound spec (`align.reliability` holds the thresholds).
        metrics: the result document's metrics.

    Returns:
        True (`Reliable`) when every measure taken is within its threshold; False with the failing
        measures as the reason (`PositionBias`, `JudgesDisagree`, `SelfPreference`, `AnchorDrift`,
        comma-separated) when any is not; Unknown (`NotMeasured`) when none could be taken. The message
        gives every figure and its threshold.
    """
    limits = spec.align.reliability
    measures = (
        _Measure(
            "position flips",
            "PositionBias",
            Align.RELIABILITY_POSITION_FLIPS,
            limits.max_position_flips,
            True,
        ),
        _Measure(
            "judge agreement", "JudgesDisagree", Align.JUDGE_AGREEMENT, limits.min_judge_agreement, False
        ),
        _Measure(
            "self-preference",
            "SelfPreference",
            Align.RELIABILITY_SELF_PREFERENCE,
            limits.max_self_preference,
            True,
        ),
        _Measure(
            "anchor drift", "AnchorDrift", Align.RELIABILITY_ANCHOR_DRIFT, limits.max_anchor_drift, True
        ),
    )
    figures = [(measure, metrics.get(measure.metric)) for measure in measures]
    failing = [m for m, value in figures if value is not None and m.fails(value)]
    pairs = int(metrics.get(Align.RELIABILITY_SWAP_PAIRS, 0))
    message = "; ".join(m.describe(value) for m, value in figures) + f"; over {pairs} swapped verdict pairs"
    worst = _worst_judges(metrics)
    if worst:
        message += f"; by judge: {worst}"
    if failing:
        return ResultCondition(JUDGE_RELIABLE, "False", ",".join(m.reason for m in failing), message)
    if all(value is None for _, value in figures):
        return ResultCondition(JUDGE_RELIABLE, "Unknown", "NotMeasured", message)
    return ResultCondition(JUDGE_RELIABLE, "True", "Reliable", message)


def _worst_judges(metrics: Mapping[str, float]) -> str:
    """Per-judge figures (`positionFlips judge=0.90`, ...), for the message."""
    parts = []
    for family in (
        Align.RELIABILITY_POSITION_FLIPS_BY,
        Align.RELIABILITY_SELF_PREFERENCE_BY,
        Align.RELIABILITY_ANCHOR_DRIFT_BY,
    ):
        for key in sorted(metrics):
            items = family.items(key)
            if items:
                parts.append(f"{family.split('.')[1]} {items[0]}={metrics[key]:.2f}")
    return ", ".join(parts)


def _align_conditions(spec: Any, metrics: Mapping[str, float]) -> list[ResultCondition]:
    return [judge_reliability(spec, metrics)]


RESULT_CONDITIONS: dict[str, Callable[[Any, Mapping[str, float]], list[ResultCondition]]] = {
    "AlignRound": _align_conditions,
}
"""Kind -> the conditions its run's result decides."""

RESULT_CONDITION_TYPES: tuple[ConditionType, ...] = (JUDGE_RELIABLE,)
"""Every condition type a result decides: a new run clears them until its own result is in."""


def result_conditions(kind: str, spec: Any, metrics: Mapping[str, float]) -> list[ResultCondition]:
    """The conditions a finished run of `kind` with this spec and these metrics carries (may be none)."""
    decide = RESULT_CONDITIONS.get(kind)
    return decide(spec, metrics) if decide is not None else []
