"""DataSlice: data analysis, dedup, decontamination, weighted sampling and progressive slices."""

from __future__ import annotations

from typing import Literal

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
    """Exact and near-duplicate removal."""

    exact: bool = True
    """Remove rows whose normalised text (case, whitespace, punctuation) is identical."""
    near: bool = True
    """Remove near-duplicates found with MinHash LSH."""
    threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    """Estimated Jaccard similarity at or above which two rows are near-duplicates."""
    num_perm: int = Field(default=128, ge=16, le=1024)
    """MinHash permutations."""
    shingle_size: int = Field(default=5, ge=1, le=32)
    """Word n-gram size of the shingles."""


class Decontamination(ApiModel):
    """Remove rows that overlap benchmark prompts."""

    benchmarks: list[DataRef] = Field(default_factory=list, max_length=32)
    """Benchmark prompt sets (JSONL with a `prompt`, `instruction` or `question` field, or chat rows)."""
    ngram: int = Field(default=13, ge=3, le=64)
    """Word n-gram length; a row sharing any such n-gram with a benchmark prompt is removed (shorter
    prompts are matched whole)."""


class TargetWeights(ApiModel):
    """Target shares of the values of one attribute."""

    attribute: Attribute
    """The attribute (for `difficulty` and `length` the values are buckets: `low`, `medium`, `high`)."""
    weights: dict[str, float]
    """Value -> relative weight; normalised to sum to 1. Values not listed are dropped."""


class Sampling(ApiModel):
    """Resample the cleaned data to target weights (the natural mix of chat data is not the best)."""

    targets: list[TargetWeights] = Field(default_factory=list, max_length=4)
    """Target weights per attribute; several attributes are combined as a product."""
    total: int | None = Field(default=None, ge=1)
    """Rows in the result; defaults to the largest total that needs no replacement."""
    replacement: bool = False
    """Allow sampling a row more than once when a value is short of rows."""


class Slicing(ApiModel):
    """Cut the result into progressive slices, one output per slice (`slice-1` ... `slice-K`)."""

    rules = (
        Rule(
            cel="self.strategy != 'attribute' || has(self.attribute)",
            message="`attribute` is required when `strategy` is `attribute`",
            check=lambda m: m.strategy != "attribute" or m.attribute is not None,
        ),
    )

    count: int = Field(default=1, ge=1, le=64)
    """Number of slices."""
    strategy: Literal["random", "difficulty", "attribute"] = "random"
    """`random` (equal shards), `difficulty` (ascending: a curriculum), `attribute` (grouped by the
    attribute's values, in order)."""
    attribute: Attribute | None = None
    """The attribute for the `attribute` strategy."""


class DataConfig(ApiModel):
    """What the data workload does."""

    attributes: list[Attribute] = Field(
        default_factory=_all_attributes,
        max_length=6,
    )
    """Attributes to analyse and report."""
    categories: list[CategoryRule] = Field(default_factory=list, max_length=64)
    """Keyword rules for the `category` attribute; unmatched rows are `general`."""
    tokenizer: ModelRef | None = None
    """Tokenizer for token lengths; without it, tokens are approximated as words x 1.3."""
    min_instruction_tokens: int = Field(default=0, ge=0)
    """Drop instructions shorter than this (Arena Learning used 10)."""
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    """Duplicate removal."""
    decontamination: Decontamination = Field(default_factory=Decontamination)
    """Benchmark decontamination."""
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
