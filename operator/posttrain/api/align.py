"""AlignRound: AI Align AI — co-teaching, judged battles, self-teaching and arena Elo.

References: the WizardLM-2 announcement; Luo et al., 2024 (Arena Learning).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from posttrain.api.base import ApiModel, Rule
from posttrain.api.common import DataRef, Participant, RunSettings, no_verifier_rule


class CoTeaching(ApiModel):
    """The student battles each teacher; lost battles yield SFT targets, margins yield pairs."""

    enabled: bool = True
    """Run co-teaching battles."""
    sft_margin: float = Field(default=3.0, ge=0.0, le=9.0)
    """Where the student loses by more than this (judge points), the winner's answer becomes an SFT
    target (K; Arena Learning used 3, then 1)."""
    preference_margin: float = Field(default=2.0, ge=0.0, le=9.0)
    """Score gap of at least this makes a (chosen, rejected) pair (Arena Learning used 2, then 1)."""
    suggestions: bool = True
    """Teachers suggest improvements to lost student answers and the student revises them. Every
    revised answer is judged again (both orders, every judge) against the teacher's answer it learned
    from; only those within `revisionMargin` become SFT data."""
    revision_margin: float = Field(default=1.0, ge=0.0, le=9.0)
    """A revised answer enters SFT when the judges score it at most this many points below the
    teacher's answer (0: it must tie or win); revisions that still lose by more, or whose verdicts
    cannot be read, are left out (`revisions.rejected`). The teacher's answer itself becomes the SFT
    target where the gap exceeds `sftMargin`."""
    turns: int = Field(default=1, ge=1, le=8)
    """Turns of simulated chat per instruction. Every turn is a battle; the follow-up questions are the
    dataset's own later user turns or are asked by the user simulator, and the earlier answers in the
    conversation are the first teacher's, so all participants answer the same dialogue."""
    user_simulator: str | None = Field(default=None, max_length=40)
    """Participant that asks follow-up questions; defaults to the first teacher."""


class SelfTeaching(ApiModel):
    """The student generates candidates; the judge ranks them into preference pairs."""

    enabled: bool = False
    """Run self-teaching."""
    candidates: int = Field(default=4, ge=2, le=16)
    """Candidates per instruction."""
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    """Sampling temperature of the candidates."""
    sft: bool = True
    """Also make SFT data from the student itself (the announcement's self-teaching): the judges'
    best candidate battles the reference answer — the row's own answer, or else the first teacher's —
    and where it wins (both orders, every judge), it becomes an SFT row (`meta.source`
    `self-teaching`)."""


class Judging(ApiModel):
    """How battles are judged.

    Every battle is played twice with the positions swapped; a battle with an unreadable verdict (no scores
    1-10 found) is counted as unparsed and left out of win rates, pairs and Elo.
    """

    inconsistency: Literal["tie", "average", "drop"] = "tie"
    """When the two orders disagree on the winner: count a tie (both answers get the mean score, so
    no pair or SFT target), average each answer's two scores, or drop the battle."""
    criteria: list[str] = Field(
        default_factory=lambda: ["coherence", "factual accuracy", "context-awareness", "overall quality"],
        max_length=16,
    )
    """What the judge weighs."""


class Reliability(ApiModel):
    """How far the judges' verdicts can be trusted, and the thresholds below which they are not.

    The round measures four things over its judged battles (`reliability.*` metrics) and the status
    carries the condition `JudgeReliable`: False, with the figures in its message, when any measure
    is beyond its threshold (a Curriculum's promotion gate refuses to promote on such a round);
    Unknown when nothing could be measured. A measure that cannot be taken (agreement with one
    judge, self-preference without a reference, drift without an `anchorSet`) is not held against it.
    """

    max_position_flips: float = Field(default=0.3, ge=0.0, le=1.0)
    """Largest share of (battle, judge) verdict pairs whose winner changes when the two answers swap
    places (both orders readable). A judge that always prefers the first answer flips every one."""
    min_judge_agreement: float = Field(default=0.6, ge=0.0, le=1.0)
    """With several judges, the smallest share of (battle, pair of judges) naming the same outcome."""
    max_self_preference: float = Field(default=0.15, ge=0.0, le=1.0)
    """Largest mean outcome a judge gives answers of its own model family (`family` of a participant)
    above the reference outcome for the same battles: the other judges' outcomes, or the known outcome
    of an anchor battle (an outcome is 1 for a win, 1/2 a tie, 0 a loss)."""
    max_anchor_drift: float = Field(default=0.25, ge=0.0, le=1.0)
    """Largest share of the anchor battles (`anchorSet`) that a judge resolves differently from their
    known outcome. The set is fixed, so the figure compares across rounds: its rise is the judge's
    drift."""


class Arena(ApiModel):
    """Arena evaluation of the student against the teachers."""

    enabled: bool = True
    """Compute Elo ratings on the evaluation set."""
    bootstrap: int = Field(default=100, ge=1, le=10000)
    """Bootstrap samples for the confidence intervals."""
    reference: str | None = Field(default=None, max_length=40)
    """Participant fixed at `referenceElo`; defaults to the first teacher."""
    reference_elo: float = 1100.0
    """Rating of the reference."""
    eval_size: int = Field(default=32, ge=1, le=100000)
    """Evaluation prompts: with `evalSet`, at most this many of its prompts are used; without it, this
    many instructions are held out of the datasets at random (at most a quarter of them) and not used
    for co-teaching — a set that changes with the data, so its ratings do not compare across rounds."""
    all_pairs: bool = True
    """Every pair of participants battles on the evaluation prompts (Arena Learning); false: only the
    student against each teacher."""


class StepLabels(ApiModel):
    """Training data for the process reward model (PRM): a strong model judges each solution step.

    The solutions are step-formatted (WizardMath) and the student's — point the student at the policy RLEIF
    will train, so the PRM learns to score the kind of solutions it will see — answering each first-turn
    instruction with the step-format instruction appended (one step per line, `Step 1:`, `Step 2:`, ...), the
    same instruction RLEIF's `stepFormat` adds to its prompts (`stepFormat: false`: the instruction as it is).
    """

    enabled: bool = False
    """Produce the `step-labels` output."""
    labeler: str | None = Field(default=None, max_length=40)
    """Participant that labels steps; defaults to the first judge."""
    samples: int = Field(default=1, ge=1, le=16)
    """Step-formatted solutions sampled from the student per instruction (more than one: sampled at
    temperature 1 with distinct seeds, duplicates dropped)."""
    max_steps: int = Field(default=16, ge=2, le=128)
    """Solutions with more steps are not labelled; RLEIF's `maxSteps` should match it."""
    step_format: bool = True
    """Append the step-format instruction to the instruction. Turn it off (with RLEIF's `stepFormat`)
    when the student already answers in steps: it then solves the prompts as it was trained to, not
    an instruction it never saw."""


class AlignConfig(ApiModel):
    """What the align workload does."""

    co_teaching: CoTeaching = Field(default_factory=CoTeaching)
    """Co-teaching settings."""
    self_teaching: SelfTeaching = Field(default_factory=SelfTeaching)
    """Self-teaching settings."""
    judging: Judging = Field(default_factory=Judging)
    """Judging settings."""
    arena: Arena = Field(default_factory=Arena)
    """Arena Elo settings."""
    step_labels: StepLabels = Field(default_factory=StepLabels)
    """PRM data."""
    reliability: Reliability = Field(default_factory=Reliability)
    """Judge reliability thresholds (the `JudgeReliable` condition)."""
    max_instructions: int | None = Field(default=None, ge=1)
    """Use at most this many instructions per dataset."""
    concurrency: int = Field(default=64, ge=1, le=4096)
    """Requests in flight."""
    request_timeout_seconds: float = Field(default=120.0, gt=0.0, le=3600.0)
    """Timeout of one request."""
    max_retries: int = Field(default=6, ge=0, le=20)
    """Retries of one request (429, 5xx, timeouts, malformed replies) with exponential backoff."""
    max_failed_share: float = Field(default=0.1, ge=0.0, le=1.0)
    """The run fails (and can be retried, resuming from its journal) when more than this share of
    requests still fail after retries; below it, what a failed request was for is left out and
    counted (`requests.failed`)."""
    seed: int = 0
    """Random seed."""


class GateRule(ApiModel):
    """When a model replaces the one it started from, judged by an arena (a promotion gate)."""

    rule: Literal["eloGain", "winRate"] = "eloGain"
    """`eloGain`: the lower end of the new model's 95% bootstrap Elo interval lies more than
    `minEloGain` above the previous model's rating (the interval of the gain excludes 0 by default);
    `winRate`: the new model's win rate against the previous one is at least `minWinRate`."""
    min_elo_gain: float = Field(default=0.0, ge=0.0, le=1000.0)
    """Elo points the interval's lower end must clear (rule `eloGain`)."""
    min_win_rate: float = Field(default=0.55, ge=0.0, le=1.0)
    """Win rate to reach (rule `winRate`; a tie counts half)."""


class Gate(GateRule):
    """This AlignRound is a promotion gate: its student (the new model) against `previous`.

    Once it succeeded, its condition `Promoted` tells whether the student beat the model named
    `previous` (a teacher, usually fixed as the arena's reference) by the rule, with the figures; never
    when the round reports `JudgeReliable=False`. A TrainStage's new model is gated this way on its own,
    as a Curriculum gates each stage.
    """

    previous: str = Field(default="previous", min_length=1, max_length=40)
    """The teacher that serves the model the student must beat."""


class AlignRoundSpec(RunSettings):
    """An AlignRound lets teachers, the student and judges co-teach.

    It emits SFT data, preference pairs (one output per input dataset, for Stage-DPO), a battle log and Elo
    ratings.
    """

    rules = (
        Rule(
            cel="!has(self.promotion) || self.teachers.exists(t, t.name =="
            " (has(self.promotion.previous) ? self.promotion.previous : 'previous'))",
            message="`promotion.previous` must name one of the teachers",
            check=lambda m: m.promotion is None or m.promotion.previous in {t.name for t in m.teachers},
            field_path=".promotion.previous",
        ),
        Rule(
            cel="self.teachers.all(a, a.name != self.student.name)"
            " && self.judges.all(a, a.name != self.student.name)",
            message="the student's name must differ from every teacher's and judge's",
            check=lambda m: m.student.name not in {p.name for p in [*m.teachers, *m.judges]},
            field_path=".student.name",
        ),
        no_verifier_rule(("teachers",), single=("student",)),
    )

    datasets: list[DataRef] = Field(min_length=1, max_length=16)
    """Instruction sets; with several, the preference pairs are also written per set
    (`preferences-1` ... `preferences-N`)."""
    eval_set: DataRef | None = None
    """Arena evaluation prompts. For ratings that compare across rounds, give every round the same
    fixed set: a DataSlice's `eval-diverse` (k-means clusters of instruction embeddings) or `eval-hard`
    (highest judged difficulty) output, built once and held out of training (WizardArena). Without
    it, a random part of the datasets is held out (`arena.evalSize`). Rows of the datasets that ask
    one of its prompts are set aside (`rows.contaminated`). The `elo` output reports the bootstrap
    median and 95% interval per participant and names the set it was measured on."""
    anchor_set: DataRef | None = None
    """Anchor battles with known outcomes, judged every round (both orders, every judge) to measure
    the judges' drift (`align.reliability.maxAnchorDrift`): preference rows `{"prompt", "chosen",
    "rejected"}` where `chosen` is known to win, e.g. a human-labelled set kept fixed across rounds.
    `meta.chosenModel` / `meta.rejectedModel` (or `chosenFamily` / `rejectedFamily`) name the answers'
    models, for the self-preference measure. Anchor battles are logged (`stage: anchor`) and stay out
    of win rates, pairs, SFT data and Elo."""
    student: Participant
    """The model being aligned (usually a TrainStage's model, served)."""
    teachers: list[Participant] = Field(min_length=1, max_length=16)
    """Strong models that teach and battle the student."""
    judges: list[Participant] = Field(min_length=1, max_length=8)
    """Judges: models, or verifiers (`verifier: {type: arithmetic}`) that check answers against the
    question or the row's reference answer; several judges' agreement is reported."""
    align: AlignConfig = Field(default_factory=AlignConfig)
    """Co-teaching, self-teaching, judging and arena settings."""
    promotion: Gate | None = None
    """Make this round a promotion gate: its status gets the condition `Promoted`."""
