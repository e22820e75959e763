r"""The metric names each workload writes into its result document (`status.metrics`), in one place.

The trainer writes these names, the report and `kubectl get` read them and the README lists them;
all three import this catalogue, so a misspelt name is an import error instead of a silently empty
column.

Naming rule (one for every kind):

- A name is one or more segments joined by dots; each segment is lowerCamelCase (`[a-z][a-zA-Z0-9]*`).
- Related measures share their first segment, the group: `rows.in`, `rows.rejected`, `rows.out`
  (never `rowsRejected` or `rejectedRows`); `requests.sent`, `requests.failed`; `eval.loss`.
- A breakdown by a named item appends the item as the last segment and keeps the group's own name
  for the total: `eliminated` and `eliminated.<rule>`, `kept` and `kept.<teacher>`. In this catalogue
  such a segment is written `<item>`; the workload writes the item's own name there (a participant,
  a rule, an attribute value), as it is spelled in the spec or the data.
- `.start` appended to a measure is its value before training; the plain name is the value after.
- A measure that stands alone, with no related measures, is one segment (`studentWinRate`, `loss`).

A printer column of `kubectl get` reads a metric with `Metric.json_path()`: a dot inside the key is
escaped (`.status.metrics.rows\.out`), which kube-apiserver 1.36 accepts and prints; the bracket
form (`['rows.out']`) is accepted too but prints nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SEGMENT = re.compile(r"[a-z][a-zA-Z0-9]*|<[a-z][a-zA-Z0-9]*>")
"""One segment of a catalogue name: a lowerCamelCase word or an `<item>` placeholder."""


class Metric(str):
    """A metric name with its description and unit; it is the name itself wherever a `str` is used.

    A name with `<item>` segments is a family: `Metric.of(...)` fills them in, `Metric.matches(key)`
    tells whether a written key belongs to it.
    """

    description: str
    unit: str

    def __new__(cls, name: str, description: str, unit: str) -> Metric:
        """A metric; raises ValueError when the name breaks the naming rule."""
        for segment in name.split("."):
            if not SEGMENT.fullmatch(segment):
                raise ValueError(f"metric {name!r}: segment {segment!r} is not lowerCamelCase")
        metric = super().__new__(cls, name)
        metric.description = description
        metric.unit = unit
        return metric

    @property
    def placeholders(self) -> tuple[str, ...]:
        """The `<item>` segments, in order (empty for a plain name)."""
        return tuple(s[1:-1] for s in self.split(".") if s.startswith("<"))

    def of(self, *items: object) -> str:
        """The key written for these items, one per placeholder: `KEPT_BY_TEACHER.of("gpt")`."""
        if len(items) != len(self.placeholders):
            raise ValueError(f"{self}: {len(self.placeholders)} item(s) expected, got {len(items)}")
        values = iter(str(item) for item in items)
        return ".".join(next(values) if s.startswith("<") else s for s in self.split("."))

    def json_path(self, prefix: str = ".status.metrics") -> str:
        """The JSONPath of this (plain) metric below `prefix`, dots in the key escaped, for a printer column."""
        if self.placeholders:
            raise ValueError(f"{self}: a family has no single path")
        escaped = self.replace(".", "\\.")
        return f"{prefix}.{escaped}"

    def items(self, key: str) -> tuple[str, ...] | None:
        """The items a written key fills in (empty for a plain name), or None when it is not this metric.

        Every placeholder but the last matches one segment; the last matches the rest of the key, so
        an attribute value may contain dots: `Data.TARGET.items("target.lang.en.US") == ("lang", "en.US")`.
        """
        if not self.placeholders:
            return () if key == self else None
        pattern: list[str] = []
        filled = 0
        for segment in self.split("."):
            if segment.startswith("<"):
                filled += 1
                pattern.append("(.+)" if filled == len(self.placeholders) else "([^.]+)")
            else:
                pattern.append(re.escape(segment))
        match = re.fullmatch(r"\.".join(pattern), key)
        return match.groups() if match else None

    def matches(self, key: str) -> bool:
        """Whether a key written by a workload is this metric (or a member of this family)."""
        return self.items(key) is not None


class Catalogue:
    """The metrics of one workload: every `Metric` class attribute, its own and its bases'."""

    ALL: tuple[Metric, ...] = ()
    """Every metric, in definition order (a base class's first)."""
    HEADLINES: tuple[Metric, ...] = ()
    """The few metrics the end-of-run report shows first, in order."""

    def __init_subclass__(cls) -> None:
        found: dict[str, Metric] = {}
        for klass in reversed(cls.__mro__):
            found.update({str(v): v for v in vars(klass).values() if isinstance(v, Metric)})
        cls.ALL = tuple(found.values())


# --- shared by several kinds --------------------------------------------------------------------

ROWS_REJECTED = Metric("rows.rejected", "Input rows set aside as malformed.", "rows")
REQUESTS_SENT = Metric("requests.sent", "Requests to teachers answered.", "requests")
REQUESTS_FAILED = Metric("requests.failed", "Requests that failed after every retry.", "requests")
REQUESTS_RETRIED = Metric("requests.retried", "Retries of requests to teachers.", "requests")
REQUESTS_REPLAYED = Metric(
    "requests.replayed", "Replies taken from the journal of an earlier attempt.", "requests"
)
REQUESTS_SENT_BY = Metric("requests.sent.<participant>", "Requests answered, per participant.", "requests")
REQUESTS_FAILED_BY = Metric(
    "requests.failed.<participant>", "Requests failed after every retry, per participant.", "requests"
)
REQUESTS_RETRIED_BY = Metric("requests.retried.<participant>", "Retries, per participant.", "requests")
TOKENS_PROMPT_BY = Metric("tokens.prompt.<participant>", "Prompt tokens sent, per participant.", "tokens")
TOKENS_COMPLETION_BY = Metric(
    "tokens.completion.<participant>", "Completion tokens received, per participant.", "tokens"
)
CACHE_HITS = Metric(
    "cache.hits", "Replies taken from the model-call cache (paid for by an earlier run).", "requests"
)
CACHE_MISSES = Metric("cache.misses", "Calls not in the model-call cache, sent to the model.", "requests")
CACHE_CORRUPT = Metric(
    "cache.corrupt", "Cache entries found unreadable or not matching their digest, fetched again.", "entries"
)
CACHE_EVICTED = Metric(
    "cache.evicted", "Cache entries evicted at the end of the run (size limit).", "entries"
)
REQUESTS_OVER_BUDGET = Metric(
    "requests.overBudget",
    "Requests not sent because the budget was spent (asked again by a larger one).",
    "requests",
)
BUDGET_EXHAUSTED = Metric(
    "budget.exhausted", "1 when the run stopped at its budget, with partial outputs.", "flag"
)
USAGE_GPU_HOURS = Metric(
    "usage.gpuHours",
    "GPU-hours of the run: its GPUs and its served participants' times its wall time.",
    "GPU-hours",
)
USAGE_WALL_SECONDS = Metric(
    "usage.wallSeconds", "Wall time of the run from its start, over every attempt.", "seconds"
)


class ModelCalls(Catalogue):
    """Metrics of every workload that asks models (EvolJob, AlignRound): requests, tokens, cache, budget."""

    REQUESTS_SENT = REQUESTS_SENT
    REQUESTS_FAILED = REQUESTS_FAILED
    REQUESTS_RETRIED = REQUESTS_RETRIED
    REQUESTS_REPLAYED = REQUESTS_REPLAYED
    REQUESTS_SENT_BY = REQUESTS_SENT_BY
    REQUESTS_FAILED_BY = REQUESTS_FAILED_BY
    REQUESTS_RETRIED_BY = REQUESTS_RETRIED_BY
    TOKENS_PROMPT_BY = TOKENS_PROMPT_BY
    TOKENS_COMPLETION_BY = TOKENS_COMPLETION_BY
    CACHE_HITS = CACHE_HITS
    CACHE_MISSES = CACHE_MISSES
    CACHE_CORRUPT = CACHE_CORRUPT
    CACHE_EVICTED = CACHE_EVICTED
    REQUESTS_OVER_BUDGET = REQUESTS_OVER_BUDGET
    BUDGET_EXHAUSTED = BUDGET_EXHAUSTED
    USAGE_GPU_HOURS = USAGE_GPU_HOURS
    USAGE_WALL_SECONDS = USAGE_WALL_SECONDS


# --- DataSlice (workload `data`) ----------------------------------------------------------------


class Data(Catalogue):
    """Metrics of a DataSlice run (`posttrain-trainer data`)."""

    ROWS_IN = Metric("rows.in", "Rows read from every source.", "rows")
    ROWS_REJECTED = ROWS_REJECTED
    ROWS_SHORT = Metric("rows.short", "Rows dropped as shorter than the minimum length.", "rows")
    ROWS_DUPLICATES_EXACT = Metric("rows.duplicates.exact", "Rows dropped as exact duplicates.", "rows")
    ROWS_DUPLICATES_NEAR = Metric(
        "rows.duplicates.near", "Rows dropped as near duplicates (MinHash).", "rows"
    )
    ROWS_CONTAMINATED = Metric("rows.contaminated", "Rows dropped as overlapping an evaluation set.", "rows")
    ROWS_UNWEIGHTED = Metric(
        "rows.unweighted", "Clean rows left out because their attribute value has no target weight.", "rows"
    )
    ROWS_OUT = Metric("rows.out", "Rows in the sampled dataset.", "rows")
    TARGET = Metric(
        "target.<attribute>.<value>", "Target share of an attribute value after sampling.", "fraction"
    )
    SHARE = Metric("share.<attribute>.<value>", "Achieved share of an attribute value.", "fraction")
    SLICES = Metric("slices", "Progressive slices cut from the dataset.", "slices")
    ROWS_CONTAMINATED_NEIGHBOURS = Metric(
        "rows.contaminated.neighbours", "Rows dropped as embedding neighbours of a benchmark prompt.", "rows"
    )
    ROWS_EVAL_DIVERSE = Metric("rows.eval.diverse", "Prompts in the diverse arena evaluation set.", "rows")
    ROWS_EVAL_HARD = Metric("rows.eval.hard", "Prompts in the hard arena evaluation set.", "rows")

    HEADLINES = (ROWS_IN, ROWS_OUT, ROWS_DUPLICATES_EXACT, ROWS_DUPLICATES_NEAR, ROWS_CONTAMINATED)


# --- EvolJob (workload `evol`) ------------------------------------------------------------------


class Evol(ModelCalls):
    """Metrics of an EvolJob run (`posttrain-trainer evol`)."""

    SEEDS = Metric("seeds", "Usable seed instructions.", "instructions")
    ROWS_OUT = Metric("rows.out", "Rows in the evolved dataset.", "rows")
    ROWS_RANKINGS = Metric("rows.rankings", "IRM ranking rows written.", "rows")
    ROWS_REJECTED = ROWS_REJECTED
    ATTEMPTS = Metric("attempts", "Evolution attempts.", "attempts")
    KEPT = Metric("kept", "Evolved instructions kept.", "instructions")
    KEPT_BY_TEACHER = Metric("kept.<teacher>", "Evolved instructions kept, per teacher.", "instructions")
    ELIMINATED = Metric("eliminated", "Evolved instructions eliminated.", "instructions")
    ELIMINATED_BY_RULE = Metric(
        "eliminated.<rule>", "Evolved instructions eliminated, per elimination rule.", "instructions"
    )
    FAILED = Metric("failed", "Evolution attempts whose request failed.", "attempts")
    YIELD = Metric("yield", "Kept / (kept + eliminated).", "fraction")
    YIELD_BY_OPERATION = Metric("yield.<operation>", "Kept / attempts, per evolving operation.", "fraction")
    EVOLUTIONS_BY_TEACHER = Metric("evolutions.<teacher>", "Evolutions judged, per teacher.", "instructions")
    JUDGE_UNPARSED = Metric("judge.unparsed", "Elimination verdicts that could not be parsed.", "verdicts")
    DIFFICULTY_UNPARSED = Metric(
        "difficulty.unparsed", "Difficulty scores that could not be parsed.", "scores"
    )
    DIFFICULTY_SEEDS = Metric("difficulty.seeds", "Mean difficulty of the seed instructions.", "score")
    DIFFICULTY_ROUND = Metric(
        "difficulty.round.<round>", "Mean difficulty after an evolution round.", "score"
    )
    DIFFICULTY_FINAL = Metric("difficulty.final", "Mean difficulty after the last round.", "score")
    RANKINGS_SKIPPED = Metric("rankings.skipped", "Lineages too short for a ranking.", "lineages")
    RANKINGS_UNPARSED = Metric("rankings.unparsed", "Rankings that could not be parsed.", "rankings")
    ANSWER_REWRITES = Metric("answer.rewrites", "Answer rewrites (Evol-Answer).", "answers")
    ANSWER_IMPROVED = Metric("answer.improved", "Answers replaced by a better rewrite.", "answers")
    ANSWER_UNPARSED_REWRITES = Metric(
        "answer.unparsedRewrites", "Rewrites that could not be parsed.", "answers"
    )
    ANSWER_UNPARSED_SCORES = Metric(
        "answer.unparsedScores", "Answer scores that could not be parsed.", "scores"
    )
    AUTO_FAILURE_RATE_INITIAL = Metric(
        "auto.failureRate.initial", "Auto Evol: failure rate of the initial method.", "fraction"
    )
    AUTO_FAILURE_RATE_FINAL = Metric(
        "auto.failureRate.final", "Auto Evol: failure rate of the optimised method.", "fraction"
    )
    AUTO_UNPARSED = Metric(
        "auto.unparsed", "Auto Evol: optimiser replies that could not be parsed.", "replies"
    )

    HEADLINES = (KEPT, ELIMINATED, YIELD)


# --- AlignRound (workload `align`) --------------------------------------------------------------


class Align(ModelCalls):
    """Metrics of an AlignRound run (`posttrain-trainer align`)."""

    BATTLES = Metric("battles", "Judged battles (co-teaching and arena).", "battles")
    BATTLES_CO_TEACHING = Metric("battles.coTeaching", "Co-teaching battles.", "battles")
    BATTLES_ARENA = Metric("battles.arena", "Arena battles on held-out instructions.", "battles")
    BATTLES_KEPT = Metric("battles.kept", "Battles whose verdict was kept.", "battles")
    BATTLES_INCONSISTENT = Metric(
        "battles.inconsistent", "Judge verdicts that disagreed when the answers were swapped.", "verdicts"
    )
    BATTLES_IDENTICAL_ANSWERS = Metric(
        "battles.identicalAnswers", "Battles skipped because both answers were identical.", "battles"
    )
    VERDICTS_UNPARSED = Metric("verdicts.unparsed", "Judge verdicts that could not be parsed.", "verdicts")
    ROWS_SFT = Metric("rows.sft", "SFT rows written (winning and revised answers).", "rows")
    ROWS_SFT_REVISED = Metric("rows.sftRevised", "SFT rows whose answer the student revised.", "rows")
    ROWS_PREFERENCES = Metric("rows.preferences", "Preference pairs written.", "rows")
    ROWS_SELF_TEACHING = Metric("rows.selfTeaching", "Preference pairs from self-teaching.", "rows")
    ROWS_SFT_SELF_TEACHING = Metric(
        "rows.sftSelfTeaching", "SFT rows where the student's best candidate beat the reference.", "rows"
    )
    REVISIONS_REJECTED = Metric(
        "revisions.rejected",
        "Revised answers judged worse than the teacher's by more than the margin.",
        "rows",
    )
    ROWS_STEP_LABELS = Metric("rows.stepLabels", "Step-label rows written (for a PRM).", "rows")
    ROWS_REJECTED = ROWS_REJECTED
    ROWS_CONTAMINATED = Metric(
        "rows.contaminated",
        "Training instructions set aside because `evalSet` holds the same prompt.",
        "rows",
    )
    STUDENT_WIN_RATE = Metric(
        "studentWinRate", "Share of the student's battles it won (ties count half).", "fraction"
    )
    JUDGE_AGREEMENT = Metric("judgeAgreement", "Agreement between judges on the same battles.", "fraction")
    RELIABILITY_SWAP_PAIRS = Metric(
        "reliability.swapPairs", "(battle, judge) pairs with both orders' verdicts readable.", "pairs"
    )
    RELIABILITY_POSITION_FLIPS = Metric(
        "reliability.positionFlips",
        "Share of (battle, judge) verdict pairs whose winner changed when the answers swapped places.",
        "fraction",
    )
    RELIABILITY_POSITION_FLIPS_BY = Metric(
        "reliability.positionFlips.<judge>", "Share of one judge's verdict pairs that flipped.", "fraction"
    )
    RELIABILITY_SELF_PREFERENCE = Metric(
        "reliability.selfPreference",
        "Largest mean outcome a judge gave its own model family above the reference outcome.",
        "outcome",
    )
    RELIABILITY_SELF_PREFERENCE_BY = Metric(
        "reliability.selfPreference.<judge>",
        "One judge's mean outcome for its own family above the reference outcome.",
        "outcome",
    )
    RELIABILITY_ANCHORS = Metric("reliability.anchors", "Anchor battles judged (known outcomes).", "battles")
    RELIABILITY_ANCHOR_DRIFT = Metric(
        "reliability.anchorDrift",
        "Share of anchor verdicts (battle, judge) that differ from the known outcome.",
        "fraction",
    )
    RELIABILITY_ANCHOR_DRIFT_BY = Metric(
        "reliability.anchorDrift.<judge>", "Share of one judge's anchor verdicts that differ.", "fraction"
    )
    ELO = Metric(
        "elo.<participant>", "Arena Elo rating: median of the bootstrap fits (Bradley-Terry).", "Elo"
    )
    ELO_LOW = Metric("eloLow.<participant>", "Lower end of the 95% bootstrap interval of the Elo.", "Elo")
    ELO_HIGH = Metric("eloHigh.<participant>", "Upper end of the 95% bootstrap interval of the Elo.", "Elo")

    HEADLINES = (STUDENT_WIN_RATE, BATTLES, ROWS_SFT, ROWS_PREFERENCES)


# --- training, shared by TrainStage and RewardModel ---------------------------------------------


class Training(Catalogue):
    """Metrics every training run writes (TrainStage and RewardModel)."""

    ROWS_USED = Metric("rows.used", "Training rows used.", "rows")
    ROWS_REJECTED = ROWS_REJECTED
    LOSS = Metric("loss", "Last logged training loss.", "loss")
    STEPS = Metric("steps", "Optimizer steps taken.", "steps")
    RESUMED_FROM_STEP = Metric("resumedFromStep", "Step of the checkpoint resumed from (0: none).", "step")
    WORLD_SIZE = Metric("worldSize", "Training processes (GPUs).", "processes")
    BUDGET_EXHAUSTED = BUDGET_EXHAUSTED
    USAGE_GPU_HOURS = USAGE_GPU_HOURS
    USAGE_WALL_SECONDS = USAGE_WALL_SECONDS


class Train(Training):
    """Metrics of a TrainStage run (`posttrain-trainer train`): sft, dpo or rleif."""

    EXACT_MATCH = Metric("eval.exactMatch", "sft: held-out exact match after training.", "fraction")
    EXACT_MATCH_START = Metric(
        "eval.exactMatch.start", "sft: held-out exact match before training.", "fraction"
    )
    PREFERENCE_ACCURACY = Metric(
        "eval.preferenceAccuracy", "dpo: held-out pairs the model prefers correctly, after.", "fraction"
    )
    PREFERENCE_ACCURACY_START = Metric(
        "eval.preferenceAccuracy.start", "dpo: the same, before training.", "fraction"
    )
    TASK_ACCURACY = Metric(
        "eval.taskAccuracy",
        "Share of `evaluation.tasks` problems answered right, after training.",
        "fraction",
    )
    TASK_ACCURACY_START = Metric("eval.taskAccuracy.start", "The same, before training.", "fraction")
    ROWS_CONTAMINATED = Metric(
        "rows.contaminated",
        "Training rows set aside because their first user turn is one of `evaluation.tasks`' problems.",
        "rows",
    )
    REWARD_MARGIN = Metric("eval.rewardMargin", "dpo: mean held-out implicit reward margin.", "reward")
    REWARD_ACCURACY = Metric(
        "eval.rewardAccuracy", "dpo: held-out pairs with a positive implicit reward margin.", "fraction"
    )
    REWARD_MEAN_START = Metric(
        "reward.mean.start", "rleif: mean reward over the first logged steps.", "reward"
    )
    REWARD_MEAN_END = Metric("reward.mean.end", "rleif: mean reward over the last logged steps.", "reward")
    EVAL_REWARD = Metric(
        "eval.reward", "rleif: mean reward of greedy answers to the held-out prompts, after.", "reward"
    )
    EVAL_REWARD_START = Metric("eval.reward.start", "rleif: the same, before training.", "reward")
    KL = Metric("kl", "rleif: last logged KL divergence from the reference policy.", "nats")
    REWARD_IRM = Metric(
        "reward.irm",
        "rleif: instruction score r_I; logged per step (mean) and per completion beside its advantage.",
        "reward",
    )
    REWARD_PRM = Metric(
        "reward.prm",
        "rleif: answer score r_A from the PRM's step scores; logged per step and per completion.",
        "reward",
    )
    REWARD_TRUNCATED = Metric(
        "reward.truncated",
        "rleif: share of completions cut off (maxNewTokens or the PRM's context), logged per step.",
        "fraction",
    )

    HEADLINES = (Training.LOSS, EXACT_MATCH, PREFERENCE_ACCURACY, REWARD_MARGIN, REWARD_MEAN_END, KL)


class Reward(Training):
    """Metrics of a RewardModel run (`posttrain-trainer reward`): irm or prm."""

    PAIRS = Metric("pairs", "irm: (better, worse) training pairs from the rankings.", "pairs")
    LABELLED_STEPS = Metric("labelledSteps", "prm: labelled solution steps trained on.", "steps")
    ACCURACY = Metric(
        "eval.accuracy", "Held-out accuracy after training (irm: pairs, prm: steps).", "fraction"
    )
    ACCURACY_START = Metric("eval.accuracy.start", "The same, before training.", "fraction")
    EVAL_LOSS = Metric("eval.loss", "Held-out loss after training.", "loss")
    EVAL_LOSS_START = Metric("eval.loss.start", "Held-out loss before training.", "loss")

    HEADLINES = (Training.LOSS, ACCURACY, EVAL_LOSS)


# --- Curriculum (no workload: the operator writes these from its gates) -------------------------


class Progression(Catalogue):
    """Metrics of a Curriculum, from its promotion gates (written by the operator, not a workload)."""

    ELO = Metric(
        "elo",
        "The current model's Elo on the base student's scale: the reference rating plus every promoted"
        " stage's gain.",
        "Elo",
    )
    ELO_GAIN = Metric("eloGain", "The last gate's Elo gain of the new model over the previous one.", "Elo")
    ELO_GAIN_LOW = Metric("eloGain.low", "Lower end of the last gain's 95% bootstrap interval.", "Elo")
    ELO_GAIN_HIGH = Metric("eloGain.high", "Upper end of the last gain's 95% bootstrap interval.", "Elo")
    WIN_RATE = Metric(
        "winRate", "The last gate's win rate of the new model against the previous one.", "fraction"
    )
    STAGES_PROMOTED = Metric("stagesPromoted", "Stages whose model was promoted.", "stages")

    HEADLINES = (ELO, STAGES_PROMOTED, WIN_RATE)


def find(catalogue: Iterable[Metric], key: str) -> Metric | None:
    """The catalogue entry a written key belongs to (a plain name before a family), or None."""
    entries = sorted(catalogue, key=lambda metric: len(metric.placeholders))
    return next((metric for metric in entries if metric.matches(key)), None)


def unknown(catalogue: Iterable[Metric], keys: Iterable[str]) -> list[str]:
    """The keys that no entry of the catalogue names."""
    entries = tuple(catalogue)
    return [key for key in keys if find(entries, key) is None]
