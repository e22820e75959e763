"""EvolJob: Evol-Instruct (in-depth and in-breadth), elimination, Evol-Answer, Auto Evol-Instruct.

References: Xu et al., 2023 (WizardLM: Evol-Instruct); Zeng et al., 2024 (Auto Evol-Instruct).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from posttrain.api.base import ApiModel, Rule
from posttrain.api.common import DataRef, Participant, RunSettings, no_verifier_rule, unique_names_rule

_OPERATIONS = ("addConstraints", "deepen", "concretize", "increaseReasoning", "complicateInput", "breadth")


class OperationWeights(ApiModel):
    """Relative weights of the evolution operations; one is drawn per instruction and round."""

    rules = (
        Rule(
            # Unset weights default to 1 (the API server applies no defaults).
            cel=" + ".join(f"(has(self.{op}) ? self.{op} : 1.0)" for op in _OPERATIONS)
            + " + (has(self.downward) ? self.downward : 0.0) > 0.0",
            message="at least one operation weight must be positive",
            check=lambda m: sum(m.model_dump().values()) > 0,
        ),
    )

    add_constraints: float = Field(default=1.0, ge=0.0)
    """In-depth: add one more constraint or requirement."""
    deepen: float = Field(default=1.0, ge=0.0)
    """In-depth: increase the depth and breadth of the inquiry."""
    concretize: float = Field(default=1.0, ge=0.0)
    """In-depth: replace general concepts with more specific ones."""
    increase_reasoning: float = Field(default=1.0, ge=0.0)
    """In-depth: explicitly ask for multiple-step reasoning."""
    complicate_input: float = Field(default=1.0, ge=0.0)
    """In-depth: add input data (code, a table, a formula), guided by in-context examples."""
    breadth: float = Field(default=1.0, ge=0.0)
    """In-breadth: a new, rarer instruction of the same domain, length and difficulty."""
    downward: float = Field(default=0.0, ge=0.0)
    """Downward evolution (WizardMath): an easier instruction of the same kind. Off in the rounds by
    default (Evol-Instruct makes data harder); the IRM rankings use it regardless (`rankings.downward`)."""


class Elimination(ApiModel):
    """Rules that mark an evolution as failed (Evol-Instruct's elimination)."""

    no_information_gain: bool = True
    """Ask the judge whether the evolved instruction equals its parent; equal means failed."""
    refusal: bool = True
    """The answer contains "sorry" and is shorter than `refusalMaxWords` words."""
    refusal_max_words: int = Field(default=80, ge=1)
    """Word count under which an answer containing "sorry" is a refusal."""
    stopwords_only: bool = True
    """The answer consists only of punctuation and stop words."""
    template_leak: bool = True
    """The instruction copies words of the prompt template ("given prompt", "rewritten prompt")."""
    recycle_failed: bool = True
    """Failed instructions' parents go back into the pool for the next round."""


class EvolAnswer(ApiModel):
    """Evol-Answer: answer, then rewrite the answer several times, keeping the best.

    The rewrites aim at logic, correctness and affinity.
    """

    enabled: bool = True
    """Generate answers for the evolved instructions (they are also what elimination rules 2 and 3
    look at)."""
    passes: int = Field(default=1, ge=0, le=8)
    """Rewrites after the first answer (0 = answer only). Each pass critiques the latest answer for
    logic, correctness and helpfulness and rewrites it; the judge scores every version 1-10 and the
    best is kept (the earliest on ties; a version whose score cannot be read ranks last)."""
    keep_seed_answers: bool = True
    """Seeds that already have an answer keep it; the others are answered like evolved instructions."""


class AutoEvol(ApiModel):
    """Auto Evol-Instruct: optimise the evolving method itself before evolving the whole set."""

    enabled: bool = False
    """Run the optimisation loop first."""
    steps: int = Field(default=10, ge=1, le=12)
    """Optimisation steps (quality degrades after about 12)."""
    batch_size: int = Field(default=8, ge=1, le=512)
    """Instructions evolved per step to expose the method's problems."""
    candidates: int = Field(default=3, ge=1, le=16)
    """Optimised methods proposed per step (m)."""
    dev_set_size: int = Field(default=16, ge=1, le=4096)
    """Instructions used to score each candidate method by its failure rate."""
    optimizer: str | None = Field(default=None, max_length=40)
    """Name of the teacher that analyses trajectories and proposes methods; defaults to the first.
    A proposed method replaces the current one only when its failure rate on the development set is
    strictly lower. Once chosen, the method evolves every instruction (operation `auto`) and the
    operation weights are not used."""


class Rankings(ApiModel):
    """Training data for the instruction quality reward model (IRM).

    Several evolved variants of each instruction, ranked by a strong model.
    """

    enabled: bool = False
    """Produce the `rankings` output."""
    variants: int = Field(default=4, ge=2, le=8)
    """Sibling evolutions ranked per instruction (WizardMath: 4 to 8, 2 to 4 from each of two models).
    Duplicates are asked again, up to twice this many requests; fewer than 2 distinct siblings skip the
    instruction (`rankings.skipped`)."""
    downward: int = Field(default=1, ge=0, le=8)
    """How many of the siblings are downward (easier) evolutions; the others are drawn from the
    operation weights (the in-depth and in-breadth ones)."""
    teachers: list[str] = Field(default_factory=list, max_length=16)
    """Teachers that make the siblings, in turn (sibling i by teacher i mod n); empty: every teacher
    of the EvolJob."""
    limit: int | None = Field(default=None, ge=1)
    """At most this many instructions are ranked."""


class EvolConfig(ApiModel):
    """What the evol workload does."""

    rounds: int = Field(default=4, ge=0, le=16)
    """Evolution rounds (M); 0 only answers (and ranks) the seeds."""
    operations: OperationWeights = Field(default_factory=OperationWeights)
    """Operation weights."""
    elimination: Elimination = Field(default_factory=Elimination)
    """Elimination rules."""
    answer: EvolAnswer = Field(default_factory=EvolAnswer)
    """Evol-Answer."""
    auto: AutoEvol = Field(default_factory=AutoEvol)
    """Auto Evol-Instruct."""
    rankings: Rankings = Field(default_factory=Rankings)
    """IRM ranking data."""
    evolver: str | None = Field(default=None, max_length=40)
    """Teacher that rewrites instructions; defaults to the first teacher."""
    answerer: str | None = Field(default=None, max_length=40)
    """Teacher that answers; defaults to the evolver."""
    judge: str | None = Field(default=None, max_length=40)
    """Teacher that judges equality, scores answers and difficulty, and ranks; defaults to the last
    teacher."""
    routing: Literal["fixed", "round-robin", "category"] = "fixed"
    """How instructions are spread over teachers: `fixed` (the evolver evolves every instruction),
    `round-robin` (seed i and its evolutions go to teacher i mod n), `category` (by the seed row's
    `meta.category` through `categoryTeachers`; other categories go to the evolver). The routed
    teacher also answers unless `answerer` is set."""
    category_teachers: dict[str, str] = Field(default_factory=dict, max_length=256)
    """Category -> teacher name, for `category` routing."""
    difficulty: bool = False
    """Let the judge rate the difficulty (1-10) of the seeds and of every kept evolution; reported as
    `difficulty.seeds`, `difficulty.round.<r>` and `difficulty.final` metrics."""
    max_failed_share: float = Field(default=0.1, ge=0.0, le=1.0)
    """The run fails (and can be retried, resuming from its journal) when more than this share of
    requests still fail after retries."""
    max_instructions: int | None = Field(default=None, ge=1)
    """Evolve at most this many seeds."""
    concurrency: int = Field(default=64, ge=1, le=4096)
    """Requests in flight across all teachers."""
    request_timeout_seconds: float = Field(default=120.0, gt=0.0, le=3600.0)
    """Timeout of one request."""
    max_retries: int = Field(default=6, ge=0, le=20)
    """Retries of one request (429, 5xx, timeouts, malformed replies) with exponential backoff."""
    seed: int = 0
    """Random seed for operation draws."""


class EvolJobSpec(RunSettings):
    """An EvolJob evolves a dataset's instructions and answers with teacher LLMs."""

    rules = (
        unique_names_rule("teachers"),
        no_verifier_rule(("teachers",)),
        Rule(
            cel="!has(self.evol) || ("
            + " && ".join(
                f"(!has(self.evol.{path}) || self.teachers.exists(t, t.name == self.evol.{path}))"
                for path in ("evolver", "answerer", "judge")
            )
            + " && (!has(self.evol.auto) || !has(self.evol.auto.optimizer)"
            " || self.teachers.exists(t, t.name == self.evol.auto.optimizer))"
            " && (!has(self.evol.categoryTeachers) || self.evol.categoryTeachers.all(c,"
            " self.teachers.exists(t, t.name == self.evol.categoryTeachers[c])))"
            " && (!has(self.evol.rankings) || !has(self.evol.rankings.teachers)"
            " || self.evol.rankings.teachers.all(r, self.teachers.exists(t, t.name == r))))",
            message="`evol.evolver`, `evol.answerer`, `evol.judge`, `evol.auto.optimizer`, the values of"
            " `evol.categoryTeachers` and `evol.rankings.teachers` must name teachers",
            check=lambda m: _names_teachers(m),
            field_path=".evol",
        ),
    )

    dataset: DataRef
    """Seed instructions."""
    teachers: list[Participant] = Field(min_length=1, max_length=16)
    """Teacher models (served with vLLM, or external endpoints); the teacher named by `evol.judge`
    (the first by default) also judges equality, scores answers and ranks variants."""
    evol: EvolConfig = Field(default_factory=EvolConfig)
    """Evolution settings."""


def _names_teachers(spec: EvolJobSpec) -> bool:
    names = {t.name for t in spec.teachers}
    evol = spec.evol
    named = [
        evol.evolver,
        evol.answerer,
        evol.judge,
        evol.auto.optimizer,
        *evol.category_teachers.values(),
        *evol.rankings.teachers,
    ]
    return all(name is None or name in names for name in named)
