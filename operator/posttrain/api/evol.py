"""EvolJob: Evol-Instruct (in-depth and in-breadth), elimination, Evol-Answer, Auto Evol-Instruct.

References: Xu et al., 2023 (WizardLM: Evol-Instruct); Zeng et al., 2024 (Auto Evol-Instruct).
"""

from __future__ import annotations

from pydantic import Field

from posttrain.api.base import ApiModel, Rule
from posttrain.api.common import DataRef, Participant, RunSettings, unique_names_rule


class OperationWeights(ApiModel):
    """Relative weights of the evolution operations; one is drawn per instruction and round."""

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
    """Evol-Answer: answer, then rewrite the answer several times for logic, correctness and
    affinity, keeping the best."""

    enabled: bool = True
    """Generate answers for the evolved instructions."""
    passes: int = Field(default=1, ge=0, le=8)
    """Rewrites after the first answer (0 = answer only)."""


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
    """Name of the teacher that analyses trajectories and proposes methods; defaults to the first."""


class Rankings(ApiModel):
    """Training data for the instruction quality reward model (IRM): several evolved variants of each
    instruction, ranked by a strong model."""

    enabled: bool = False
    """Produce the `rankings` output."""
    variants: int = Field(default=4, ge=2, le=8)
    """Variants ranked per instruction (the parent is one of them)."""
    limit: int | None = Field(default=None, ge=1)
    """At most this many instructions are ranked."""


class EvolConfig(ApiModel):
    """What the evol workload does."""

    rules = (
        Rule(
            cel="self.operations.addConstraints + self.operations.deepen + self.operations.concretize"
            " + self.operations.increaseReasoning + self.operations.complicateInput"
            " + self.operations.breadth > 0.0",
            message="at least one weight in `operations` must be positive",
            check=lambda m: sum(m.operations.model_dump().values()) > 0,
            field_path=".operations",
        ),
    )

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
    """Teacher that judges equality and ranks; defaults to the last teacher."""
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

    rules = (unique_names_rule("teachers"),)

    dataset: DataRef
    """Seed instructions."""
    teachers: list[Participant] = Field(min_length=1, max_length=16)
    """Teacher models (served with vLLM, or external endpoints)."""
    evol: EvolConfig = Field(default_factory=EvolConfig)
    """Evolution settings."""
