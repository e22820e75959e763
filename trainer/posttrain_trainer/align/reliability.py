"""How far the judges can be trusted: position flips, agreement, self-preference and anchor drift.

Measured over a round's judged battles (each judged by every judge in both orders, see `judge`):

- **position flips**: per judge, the share of battles with both verdicts readable whose winner
  changes when the two answers swap places (a win against a tie counts). A judge that always
  prefers the first answer flips every battle; one that reads the answers flips none.
- **agreement** between judges (with several): `judge.judge_agreement` over the same battles.
- **self-preference**: per judge, the mean outcome (1 win, 1/2 tie, 0 loss) it gives the side of
  a battle whose model is of its own family, minus the reference outcome of that side: the mean of
  the other judges' outcomes, or the known outcome of an anchor battle. Battles where both or
  neither side is of the judge's family, or without a reference, are not counted.
- **anchor drift**: per judge, the share of anchor battles (a fixed set with known outcomes) it
  resolves differently from the known outcome. The set is fixed, so rounds compare.

The plan reads the metrics against the spec's thresholds (`align.reliability`) into the condition
`JudgeReliable`. Inputs: `Battle`s with their per-judge resolutions. Outputs: metrics by name.
Reference: Zheng et al., 2023 (Judging LLM-as-a-judge: position and self-enhancement bias).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from statistics import fmean

from posttrain.api.metrics import Align

from posttrain_trainer.align.battles import Battle
from posttrain_trainer.align.judge import judge_agreement


def position_flips(battles: Iterable[Battle]) -> dict[str, tuple[int, int]]:
    """Per judge, (verdict pairs that flipped under the swap, verdict pairs with both orders readable)."""
    counts: dict[str, tuple[int, int]] = {}
    for battle in battles:
        for judge, resolution in battle.per_judge.items():
            if resolution.status not in ("consistent", "inconsistent"):
                continue
            flipped, pairs = counts.get(judge, (0, 0))
            counts[judge] = (flipped + (resolution.status == "inconsistent"), pairs + 1)
    return counts


def _side_outcome(outcome: float | None, battle: Battle, side: str) -> float | None:
    """`outcome` (for X) seen from `side`."""
    if outcome is None:
        return None
    return outcome if side == battle.x else 1.0 - outcome


def self_preference(battles: Iterable[Battle], judge_families: Mapping[str, str]) -> dict[str, float]:
    """Per judge, its mean outcome for its own family's side minus the reference (see the module).

    Args:
        battles: judged battles; `Battle.families` names each side's model family.
        judge_families: judge name -> its model family.

    Returns:
        Judge -> self-preference, for the judges with at least one counted battle.
    """
    differences: dict[str, list[float]] = {}
    for battle in battles:
        for judge, family in judge_families.items():
            own = [side for side in (battle.x, battle.y) if battle.families.get(side) == family]
            resolution = battle.per_judge.get(judge)
            if len(own) != 1 or resolution is None or not resolution.kept:
                continue
            side = own[0]
            given = _side_outcome(resolution.outcome, battle, side)
            reference = _reference(battle, judge, side)
            if given is not None and reference is not None:
                differences.setdefault(judge, []).append(given - reference)
    return {judge: fmean(values) for judge, values in differences.items()}


def _reference(battle: Battle, judge: str, side: str) -> float | None:
    """The known outcome of `side`, else the mean of the other judges' kept outcomes, else None."""
    if battle.known is not None:
        return _side_outcome(battle.known, battle, side)
    others = [
        _side_outcome(resolution.outcome, battle, side)
        for name, resolution in battle.per_judge.items()
        if name != judge and resolution.kept
    ]
    values = [value for value in others if value is not None]
    return fmean(values) if values else None


def anchor_drift(anchors: Iterable[Battle]) -> dict[str, tuple[int, int]]:
    """Per judge, (anchor verdicts that differ from the known outcome, anchor verdicts kept)."""
    counts: dict[str, tuple[int, int]] = {}
    for battle in anchors:
        if battle.known is None:
            continue
        for judge, resolution in battle.per_judge.items():
            if not resolution.kept:
                continue
            differ, kept = counts.get(judge, (0, 0))
            counts[judge] = (differ + (resolution.outcome != battle.known), kept + 1)
    return counts


def reliability_metrics(
    battles: list[Battle], anchors: list[Battle], judge_families: Mapping[str, str]
) -> dict[str, float]:
    """The `reliability.*` metrics (and `judgeAgreement` with several judges) of a round.

    Args:
        battles: every judged battle of the round but the anchors (co-teaching, checks, arena).
        anchors: the judged anchor battles (`Battle.known` set).
        judge_families: judge name -> its model family.

    Returns:
        Metrics by catalogue name; a measure that could not be taken is absent.
    """
    every = [*battles, *anchors]
    metrics: dict[str, float] = {}
    flips = position_flips(every)
    pairs = sum(total for _, total in flips.values())
    metrics[Align.RELIABILITY_SWAP_PAIRS] = float(pairs)
    if pairs:
        metrics[Align.RELIABILITY_POSITION_FLIPS] = sum(f for f, _ in flips.values()) / pairs
        for judge, (flipped, total) in sorted(flips.items()):
            metrics[Align.RELIABILITY_POSITION_FLIPS_BY.of(judge)] = flipped / total
    if len(judge_families) > 1:
        agreement = judge_agreement([[r.outcome for r in b.per_judge.values()] for b in every if b.per_judge])
        if agreement is not None:
            metrics[Align.JUDGE_AGREEMENT] = agreement
    preference = self_preference(every, judge_families)
    if preference:
        metrics[Align.RELIABILITY_SELF_PREFERENCE] = max(preference.values())
        for judge, value in sorted(preference.items()):
            metrics[Align.RELIABILITY_SELF_PREFERENCE_BY.of(judge)] = value
    if anchors:
        metrics[Align.RELIABILITY_ANCHORS] = float(len(anchors))
        drift = anchor_drift(anchors)
        kept = sum(total for _, total in drift.values())
        if kept:
            metrics[Align.RELIABILITY_ANCHOR_DRIFT] = sum(d for d, _ in drift.values()) / kept
            for judge, (differ, total) in sorted(drift.items()):
                metrics[Align.RELIABILITY_ANCHOR_DRIFT_BY.of(judge)] = differ / total
    return metrics
