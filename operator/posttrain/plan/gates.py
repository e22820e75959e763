"""Promotion gates: whether a new model replaces the one it started from, from an arena's results.

A gate is an AlignRound whose student is the new model and one of whose teachers (`previous`) serves
the model it started from, rated on a fixed evaluation set. The same verdict serves a Curriculum's
stages (`plan.curriculum`) and any AlignRound with `spec.promotion` (its `Promoted` condition), so a
TrainStage outside a curriculum is gated the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from posttrain.api.align import AlignRoundSpec, GateRule
from posttrain.api.metrics import Align
from posttrain.api.resources import Resource
from posttrain.api.status import Condition


@dataclass(frozen=True)
class GateVerdict:
    """What a gate decided, with its figures."""

    promoted: bool
    reason: str
    """`Promoted`, `NotPromoted`, `JudgeUnreliable` or `GateInconclusive`."""
    message: str
    elo: float | None = None
    elo_low: float | None = None
    elo_high: float | None = None
    previous_elo: float | None = None
    win_rate: float | None = None

    @property
    def gain(self) -> float | None:
        """The new model's Elo minus the previous model's."""
        return None if self.elo is None or self.previous_elo is None else self.elo - self.previous_elo


def _figures(verdict: GateVerdict) -> str:
    parts = []
    if verdict.elo is not None and verdict.previous_elo is not None:
        low = "?" if verdict.elo_low is None else f"{verdict.elo_low - verdict.previous_elo:+.0f}"
        high = "?" if verdict.elo_high is None else f"{verdict.elo_high - verdict.previous_elo:+.0f}"
        parts.append(
            f"Elo {verdict.elo:.0f} vs {verdict.previous_elo:.0f} (gain {verdict.gain:+.0f}, 95% [{low}, {high}])"
        )
    if verdict.win_rate is not None:
        parts.append(f"win rate {verdict.win_rate:.2f}")
    return ", ".join(parts) or "no arena figures"


def decide_gate(
    rule: GateRule,
    student: str,
    previous: str,
    metrics: Mapping[str, float],
    conditions: Sequence[Mapping[str, Any]],
) -> GateVerdict:
    """Whether the student of a gate's arena is promoted over `previous`, from the round's results.

    Args:
        rule: the promotion rule.
        student: the student's participant name (the new model).
        previous: the participant that serves the model it must beat.
        metrics: the round's `status.metrics` (Elo with interval per participant, the student's win rate).
        conditions: the round's `status.conditions` (wire form); `JudgeReliable=False` refuses promotion,
            `JudgeReliable=Unknown` (not measured) does not, and the message says so.

    Returns:
        The verdict; its message names the figures and the rule.
    """
    figures = GateVerdict(
        promoted=False,
        reason="",
        message="",
        elo=metrics.get(Align.ELO.of(student)),
        elo_low=metrics.get(Align.ELO_LOW.of(student)),
        elo_high=metrics.get(Align.ELO_HIGH.of(student)),
        previous_elo=metrics.get(Align.ELO.of(previous)),
        win_rate=metrics.get(Align.STUDENT_WIN_RATE),
    )
    shown = _figures(figures)
    judged = next((c for c in conditions if c.get("type") == "JudgeReliable"), None)
    why = str((judged or {}).get("message") or (judged or {}).get("reason") or "")
    if judged is not None and judged.get("status") == "False":
        message = f"not promoted: the gate's judges are unreliable (JudgeReliable=False: {why}); {shown}"
        return _verdict(figures, False, "JudgeUnreliable", message)
    if judged is not None and judged.get("status") == "Unknown":
        # Not measured (e.g. too few battles): the figures decide, and the message says so.
        shown += f"; judge reliability not measured (JudgeReliable=Unknown: {why})"
    if rule.rule == "winRate":
        if figures.win_rate is None:
            message = f"not promoted: the gate reported no win rate; {shown}"
            return _verdict(figures, False, "GateInconclusive", message)
        promoted = figures.win_rate >= rule.min_win_rate
        described = f"rule winRate: at least {rule.min_win_rate:.2f}"
    else:
        if figures.elo_low is None or figures.previous_elo is None:
            message = f"not promoted: the gate reported no Elo interval; {shown}"
            return _verdict(figures, False, "GateInconclusive", message)
        promoted = figures.elo_low - figures.previous_elo > rule.min_elo_gain
        described = f"rule eloGain: the interval's lower end above {rule.min_elo_gain:+.0f}"
    if promoted:
        return _verdict(figures, True, "Promoted", f"promoted: {shown} ({described})")
    return _verdict(figures, False, "NotPromoted", f"not promoted: {shown} ({described})")


def gate_condition(
    resource: Resource, metrics: Mapping[str, float], conditions: Sequence[Condition]
) -> GateVerdict | None:
    """The verdict of an AlignRound that is a promotion gate (`spec.promotion`), or None for any other resource.

    Args:
        resource: the resource that just succeeded.
        metrics: its metrics.
        conditions: its conditions so far.

    Returns:
        The verdict for the `Promoted` condition, or None.
    """
    spec = resource.spec
    if not isinstance(spec, AlignRoundSpec) or spec.promotion is None:
        return None
    raw = [c.wire() for c in conditions]
    return decide_gate(spec.promotion, spec.student.name, spec.promotion.previous, metrics, raw)


def _verdict(figures: GateVerdict, promoted: bool, reason: str, message: str) -> GateVerdict:
    return GateVerdict(
        promoted,
        reason,
        message,
        figures.elo,
        figures.elo_low,
        figures.elo_high,
        figures.previous_elo,
        figures.win_rate,
    )
