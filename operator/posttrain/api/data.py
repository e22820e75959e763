"""DataSlice: data analysis, dedup, decontamination, weighted sampling and progressive slices."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from posttrain.api.base import ApiModel, Rule
from posttrain.api.common import DataRef, ModelRef, RunSettings

Attribute = Literal["turns", "length", "language", "category", "difficulty", "quality"]


def _all_attributes() -> list[Attribute]:
    return ["turns", "length", "language", "category", "difficulty", "quality"]


class CategoryRule(ApiModel):
    """A category assigned when any keyword (case-insensitive, whole word) appears in the instruction."""

    name: str = Field(min_length=1, max_length=63)
    """Category name (e.g. `coding`, `math`)."""
    keywords: list[str] = Field(min_length=1, max_length=512)
    """Words or phrases that select this category; the first matching rule wins."""


class DedupSettings(ApiModel):
    """Exact and near-duplicate removal; the first occurrence (in source and line order) is kept."""

    by: Literal["instruction", "conversation"] = "instruction"
    """The text compared: the `instruction` (first user message: the same prompt with another answer
    is a duplicate, as in Arena Learning) or the whole `conversation` (every message)."""
    exact: bool = True
    """Remove rows whose normalised text (case, whitespace, punctuation) is identical."""
    near: bool = True
    """Remove near-duplicates found with MinHash LSH."""
    threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    """Estimated Jaccard similarity at or above which two rows are near-duplicates."""
    num_perm: int = Field(default=128, ge=16, le=1024)
    """MinHash permutations."""
    shingle_size: int = Field(default=5, ge=1, le=32)
    """Word n-gram size of the shingles (a text with fewer words is one shingle)."""


class Decontamination(ApiModel):
    """Remove rows that overlap benchmark prompts."""

    benchmarks: list[DataRef] = Field(default_factory=list, max_length=32)
    """Benchmark prompt sets (JSONL with a `prompt`, `instruction` or `question` field, or chat rows)."""
    ngram: int = Field(default=13, ge=3, le=64)
    """Word n-gram length; a row whose user messages share any such n-gram with a benchmark prompt is
    removed (a prompt with fewer words is matched whole, as a contiguous run of words). Text is
    compared normalised: lower case, ASCII punctuation as spaces."""
    neighbours: int = Field(default=0, ge=0, le=64)
    """Embedding-neighbour decontamination beside the n-gram rule (Arena Learning: the top 5): for
    each benchmark prompt, its `neighbours` nearest instructions (cosine similarity of `data.embedding`
    vectors) at or above `minSimilarity` are removed, catching paraphrases the n-grams miss. 0: off."""
    min_similarity: float = Field(default=0.8, ge=0.0, le=1.0)
    """Cosine similarity from which an embedding neighbour of a benchmark prompt counts as a copy."""


class EvalSets(ApiModel):
    """Fixed arena evaluation sets, built once and held out of the training data (WizardArena, Arena Learning).

    A diverse set — the instructions' embeddings clustered by k-means, the prompts nearest to each centroid —
    and a hard set — the highest `difficulty` scores (a judge's, when the rows carry one). Outputs
    `eval-diverse` and `eval-hard`, chat rows; an AlignRound's `evalSet` reads one, so every round is rated on
    the same prompts and the Elo ratings of rounds compare.
    """

    diverse: int = Field(default=0, ge=0, le=100000)
    """Prompts in the diverse set (0: none)."""
    per_cluster: int = Field(default=2, ge=1, le=100)
    """Prompts taken per k-means cluster (the clusters are `diverse / perCluster`, rounded up)."""
    hard: int = Field(default=0, ge=0, le=100000)
    """Prompts in the hard set (0: none), chosen after the diverse set from the remaining rows."""


class TargetWeights(ApiModel):
    """Target shares of the values of one attribute."""

    rules = (
        Rule(
            cel="self.weights.exists(k, self.weights[k] > 0.0)",
            message="`weights` needs at least one positive weight",
            check=lambda m: any(w > 0 for w in m.weights.values()),
        ),
    )

    attribute: Attribute
    """The attribute. Values: category names (`general` for unmatched rows), language codes (`en`,
    `zh`, ... `und`), turns `1` ... `5` and `6+`, and for `length`, `difficulty` and `quality` the
    buckets `low`, `medium`, `high` (see `buckets`)."""
    weights: dict[str, Annotated[float, Field(ge=0.0)]] = Field(min_length=1, max_length=64)
    """Value -> relative weight; normalised to sum to 1. Rows whose value is not listed are dropped."""


class Sampling(ApiModel):
    """Resample the cleaned data to target weights (the natural mix of chat data is not the best).

    Without targets the sampling is uniform. When a combination of values has too few rows (and
    `replacement` is off), it is taken whole and the others grow in proportion to keep the total;
    the report shows the achieved shares against the targets.
    """

    rules = (
        Rule(
            cel="!has(self.targets) || self.targets.all(t, self.targets.filter(u, u.attribute == t.attribute).size() == 1)",
            message="each attribute may appear in `targets` only once",
            check=lambda m: len({t.attribute for t in m.targets}) == len(m.targets),
        ),
    )

    targets: list[TargetWeights] = Field(default_factory=list, max_length=4)
    """Target weights per attribute; several attributes are combined as a product."""
    total: int | None = Field(default=None, ge=1)
    """Rows in the result; defaults to the largest total that needs no replacement (all rows when
    there are no targets)."""
    replacement: bool = False
    """Allow sampling a row more than once when a value is short of rows (a repeated row gets the id
    suffix `-rN`)."""
    targets_from: DataRef | None = None
    """Target weights from a document: an AlignRound's `skill-gaps` output (`{attribute, weights}`,
    the weights that favour the categories the student lost on). They replace a target of the same
    attribute in `targets`; a Curriculum uses it to close each stage's skill gaps."""


class Slicing(ApiModel):
    """Cut the result into progressive slices, one output per slice (`slice-1` ... `slice-K`)."""

    rules = (
        Rule(
            cel="!has(self.strategy) || self.strategy != 'attribute' || has(self.attribute)",
            message="`attribute` is required when `strategy` is `attribute`",
            check=lambda m: m.strategy != "attribute" or m.attribute is not None,
        ),
    )

    count: int = Field(default=1, ge=1, le=64)
    """Number of slices."""
    strategy: Literal["random", "difficulty", "attribute"] = "random"
    """`random` (equal shards), `difficulty` (equal shards by ascending difficulty score: a
    curriculum), `attribute` (whole groups of the attribute's values, in order — buckets low to high,
    turns ascending, categories in rule order then `general`, languages alphabetically — balanced
    in size; needs at least `count` distinct values). Rows keep the dataset's order in each slice."""
    attribute: Attribute | None = None
    """The attribute for the `attribute` strategy."""


def _edges_rule(name: str) -> Rule:
    return Rule(
        cel=f"!has(self.{name}) || self.{name}[0] < self.{name}[1]",
        message=f"`{name}` needs two ascending edges",
        check=lambda m: getattr(m, name)[0] < getattr(m, name)[1],
    )


class BucketEdges(ApiModel):
    """Where the `low`, `medium` and `high` buckets of the numeric attributes start.

    Below the first edge is `low`, from the second edge on `high`.
    """

    rules = (_edges_rule("length"), _edges_rule("difficulty"), _edges_rule("quality"))

    length: list[float] = Field(default_factory=lambda: [256.0, 1024.0], min_length=2, max_length=2)
    """Tokens of the whole conversation."""
    difficulty: list[float] = Field(default_factory=lambda: [4.0, 7.0], min_length=2, max_length=2)
    """Difficulty score (1–10, the judge's scale)."""
    quality: list[float] = Field(default_factory=lambda: [4.0, 7.0], min_length=2, max_length=2)
    """Quality score (1–10, the judge's scale)."""


class DataConfig(ApiModel):
    """What the data workload does.

    Every row gets its attributes in `meta`: `category`, `language`, `turns`, `chars`, `tokens`,
    `instruction_tokens`, `difficulty` and `quality` (scores 1–10) and their buckets
    (`length_bucket`, `difficulty_bucket`, `quality_bucket`), plus `source` and `line`. A numeric
    `meta.difficulty` or `meta.quality` already in the data (a judge's 1–10 score, e.g. from an
    EvolJob) is kept instead of the heuristic.
    """

    attributes: list[Attribute] = Field(
        default_factory=_all_attributes,
        max_length=6,
    )
    """Attributes to report and plot (every attribute is computed; sampling and slicing may use any)."""
    categories: list[CategoryRule] = Field(default_factory=list, max_length=64)
    """Keyword rules for the `category` attribute; unmatched rows are `general`."""
    classifier: ModelRef | None = None
    """A sequence-classification model (Hugging Face folder) whose labels (`id2label`) are the
    categories; when set it assigns `category` instead of the keyword rules."""
    tokenizer: ModelRef | None = None
    """Tokenizer for token lengths; without it, tokens are approximated as words x 1.3 (words split on
    ASCII whitespace) plus one per CJK character."""
    buckets: BucketEdges = Field(default_factory=BucketEdges)
    """Bucket edges of `length`, `difficulty` and `quality`."""
    min_instruction_tokens: int = Field(default=0, ge=0)
    """Drop instructions shorter than this (Arena Learning used 10)."""
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    """Duplicate removal."""
    decontamination: Decontamination = Field(default_factory=Decontamination)
    """Benchmark decontamination."""
    embedding: ModelRef | None = None
    """An encoder (Hugging Face folder; mean-pooled last hidden states) for the instruction embeddings
    of the eval sets' clusters and of neighbour decontamination; without it, hashed word uni- and
    bigram TF-IDF vectors (no model) are used."""
    eval_sets: EvalSets = Field(default_factory=EvalSets)
    """Fixed arena evaluation sets (outputs `eval-diverse`, `eval-hard`)."""
    sampling: Sampling = Field(default_factory=Sampling)
    """Weighted sampling."""
    slicing: Slicing = Field(default_factory=Slicing)
    """Progressive slices."""
    max_reject_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    """Fail when more than this share of input rows is malformed (they are set aside either way)."""
    seed: int = 0
    """Random seed; the same seed gives the same result."""


class DataSliceSpec(RunSettings):
    """A DataSlice reads source data, analyses, cleans and re-weights it, and cuts it into slices."""

    sources: list[DataRef] = Field(min_length=1, max_length=64)
    """Source datasets (ShareGPT, Alpaca, OpenAI messages or chat rows)."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Analysis, cleaning, sampling and slicing."""
