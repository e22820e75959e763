"""Attributes of every row: the seed's "Data Analysis" (domain, difficulty, language, turns, lengths).

Inputs: a `Corpus` and the DataConfig (category rules or a classifier model, a tokenizer, bucket
edges). Output: `Attributes`, one numpy column per attribute, and the word hashes of each
instruction (reused by dedup).

- turns: user messages. chars: characters of all messages. tokens: of all messages, by the given
  tokenizer, else approximated as words x 1.3 (split on ASCII whitespace) + 1 per CJK character.
- language: the script with most letters (`zh`, `ja` when kana appear, `ko`, `ru`, `ar`, `hi`, `el`,
  `he`, `th`); Latin-script text by stop-word votes (`en`, `es`, `fr`, `de`, `pt`, `it`, `nl`; no
  votes: `en`); `und` without letters.
- category: the first keyword rule with a keyword in the instruction as whole words (case,
  punctuation and spacing ignored; a keyword with punctuation, like `c++`, by regex), else
  `general`; or the label a sequence-classification model predicts.
- difficulty (1–10, the scale Evol-Instruct's judge uses): a judged `meta.difficulty` when present;
  else a heuristic of the instruction: its length, explicit constraints, requests for reasoning,
  technical content (code, formulas) and extra turns.
- quality (1–10): a judged `meta.quality` when present; else 8 minus penalties for the quality
  signals: refusal (an answer with a refusal phrase under 80 words, as in Evol-Instruct's
  elimination), empty answer, garbled text (replacement or control characters), a very short
  instruction, a very brief answer, an unclosed code block.

Everything is computed on whole columns (Arrow compute kernels, numpy; keywords and stop words as
hash lookups of the instruction's words), in two threads; only a classifier model or a tokenizer
runs per batch.
References: Xu et al. 2023, "WizardLM: Empowering Large Language Models to Follow Complex Instructions"
(difficulty scale, elimination rules); the WizardLM-2 announcement (data analysis).
"""

from __future__ import annotations

import functools
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from posttrain.api.data import BucketEdges, CategoryRule

from posttrain_trainer.data import text
from posttrain_trainer.data.sources import ASSISTANT, USER, Corpus

BUCKETS = ["low", "medium", "high"]
TURNS = ["1", "2", "3", "4", "5", "6+"]
GENERAL = "general"
UNDETERMINED = "und"
TOKENS_PER_WORD = 1.3

CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]"
NON_LATIN_LETTER = r"[^\P{L}\p{Latin}]"
SCRIPTS = {
    "ja": r"[\p{Hiragana}\p{Katakana}]",
    "zh": r"\p{Han}",
    "ko": r"\p{Hangul}",
    "ru": r"\p{Cyrillic}",
    "ar": r"\p{Arabic}",
    "hi": r"\p{Devanagari}",
    "el": r"\p{Greek}",
    "he": r"\p{Hebrew}",
    "th": r"\p{Thai}",
}
STOP_WORDS = {
    "en": "the is are was and of to what how why with for you this that in a an be can your it which",
    "es": "el la los las es y de que en un una por para con qué cómo del se lo al",
    "fr": "le la les est et de des un une que qui pour avec dans du en quel comment pas",
    "de": "der die das ist und ein eine nicht mit für wie was den dem zu auf ich sie",
    "pt": "o a os as é e de que em um uma para com não como do da uma",
    "it": "il lo la gli le è e di che un una per con non come del della",
    "nl": "de het een is en van dat niet met voor hoe wat zijn",
}
LANGUAGES = sorted({*SCRIPTS, *STOP_WORDS, UNDETERMINED})

# Cues of a harder instruction, as words or phrases of the normalised text (hyphens read as spaces).
CONSTRAINTS = (
    "must should at least at most exactly without only no more than no fewer than ensure make sure each "
    "every include includes including avoid limit limited within constraint constraints require "
    "requires required format word words sentence sentences"
)
CONSTRAINT_PHRASES = [
    "at least",
    "at most",
    "no more than",
    "no fewer than",
    "make sure",
]
REASONING = (
    "explain why prove derive justify analyse analyze compare evaluate optimise optimize design "
    "implement reasoning calculate solve steps tradeoff tradeoffs"
)
REASONING_PHRASES = ["step by step", "trade off", "trade offs"]
TECHNICAL = (
    r"```|`[^`\n]+`|\$[^$\n]+\$|\\frac|\\sum|\d\s*[-+*/^=<>]\s*\d|[a-z]\s*[=<>]\s*-?\d|"
    r"\b(?:def|class|function|return|select|import|const|var|int|void)\b"
)
REFUSAL = (
    r"(?i)\b(?:sorry|i cannot|i can't|i can not|i am unable|i'm unable|as an ai|i won't|i will not|"
    r"i am not able|i'm not able)\b"
)
REFUSAL_WORDS = 80
"""Evol-Instruct's elimination: a refusal is an answer containing "sorry" under 80 words."""
SIGNALS = ("refusal", "empty_answer", "garbled", "short_instruction", "brief_answer", "unclosed_code")
PENALTIES = {
    "refusal": 4.0,
    "empty_answer": 4.0,
    "garbled": 3.0,
    "short_instruction": 2.0,
    "brief_answer": 1.0,
    "unclosed_code": 2.0,
}
QUALITY_BASE = 8.0


@dataclass
class Categorical:
    """Codes into ordered labels; the label order is the attribute's order (slicing, reports)."""

    codes: np.ndarray
    labels: list[str]

    def take(self, rows: np.ndarray) -> Categorical:
        """The values of the given rows."""
        return Categorical(self.codes[rows], self.labels)

    def values(self) -> list[str]:
        """The label of each row."""
        names = np.array(self.labels, dtype=object)
        return names[self.codes].tolist()  # type: ignore[no-any-return]

    def counts(self) -> dict[str, int]:
        """Rows per label, in label order, labels without rows left out."""
        counted = np.bincount(self.codes, minlength=len(self.labels))
        return {label: int(c) for label, c in zip(self.labels, counted, strict=True) if c}


@dataclass
class Attributes:
    """One entry per row for each attribute."""

    category: Categorical
    language: Categorical
    turns: np.ndarray
    chars: np.ndarray
    tokens: np.ndarray
    instruction_tokens: np.ndarray
    difficulty: np.ndarray
    difficulty_judged: np.ndarray
    quality: np.ndarray
    quality_judged: np.ndarray
    signals: dict[str, np.ndarray]
    edges: BucketEdges = field(default_factory=BucketEdges)

    def __len__(self) -> int:
        return len(self.turns)

    def categorical(self, attribute: str) -> Categorical:
        """The attribute as values (buckets for the numeric ones, `1`..`5`, `6+` for turns)."""
        if attribute == "category":
            return self.category
        if attribute == "language":
            return self.language
        if attribute == "turns":
            return Categorical(np.minimum(self.turns, len(TURNS)) - 1, TURNS)
        numbers = {"length": self.tokens, "difficulty": self.difficulty, "quality": self.quality}[attribute]
        edges = getattr(self.edges, attribute)
        return Categorical(np.digitize(numbers, edges).astype(np.int64), BUCKETS)

    def take(self, rows: np.ndarray) -> Attributes:
        """The attributes of the given rows, in that order."""
        return replace(
            self,
            category=self.category.take(rows),
            language=self.language.take(rows),
            turns=self.turns[rows],
            chars=self.chars[rows],
            tokens=self.tokens[rows],
            instruction_tokens=self.instruction_tokens[rows],
            difficulty=self.difficulty[rows],
            difficulty_judged=self.difficulty_judged[rows],
            quality=self.quality[rows],
            quality_judged=self.quality_judged[rows],
            signals={name: flags[rows] for name, flags in self.signals.items()},
        )

    @staticmethod
    def concat(parts: list[Attributes], edges: BucketEdges) -> Attributes:
        """The rows of all parts, in order (each part's labels must be the same)."""
        if not parts:
            return Attributes(
                category=Categorical(np.empty(0, np.int64), [GENERAL]),
                language=Categorical(np.empty(0, np.int64), LANGUAGES),
                turns=np.empty(0, np.int64),
                chars=np.empty(0, np.int64),
                tokens=np.empty(0, np.int64),
                instruction_tokens=np.empty(0, np.int64),
                difficulty=np.empty(0),
                difficulty_judged=np.empty(0, bool),
                quality=np.empty(0),
                quality_judged=np.empty(0, bool),
                signals={name: np.empty(0, bool) for name in SIGNALS},
                edges=edges,
            )

        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(part, name) for part in parts])

        def categories(name: str) -> Categorical:
            values: list[Categorical] = [getattr(part, name) for part in parts]
            if any(value.labels != values[0].labels for value in values):
                raise ValueError(f"the parts label {name} differently")
            return Categorical(np.concatenate([value.codes for value in values]), values[0].labels)

        return Attributes(
            category=categories("category"),
            language=categories("language"),
            turns=joined("turns"),
            chars=joined("chars"),
            tokens=joined("tokens"),
            instruction_tokens=joined("instruction_tokens"),
            difficulty=joined("difficulty"),
            difficulty_judged=joined("difficulty_judged"),
            quality=joined("quality"),
            quality_judged=joined("quality_judged"),
            signals={name: np.concatenate([part.signals[name] for part in parts]) for name in SIGNALS},
            edges=edges,
        )

    def metas(self) -> list[dict[str, Any]]:
        """The attributes of each row as its `meta` entries."""
        columns: dict[str, list[Any]] = {
            "category": self.category.values(),
            "language": self.language.values(),
            "turns": self.turns.tolist(),
            "chars": self.chars.tolist(),
            "tokens": self.tokens.tolist(),
            "instruction_tokens": self.instruction_tokens.tolist(),
            "difficulty": np.round(self.difficulty, 2).tolist(),
            "quality": np.round(self.quality, 2).tolist(),
            "length_bucket": self.categorical("length").values(),
            "difficulty_bucket": self.categorical("difficulty").values(),
            "quality_bucket": self.categorical("quality").values(),
        }
        names = list(columns)
        out = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        flagged = np.zeros(len(self), dtype=bool)
        for flags in self.signals.values():
            flagged |= flags
        for row in np.flatnonzero(flagged).tolist():
            out[row]["quality_signals"] = [name for name in SIGNALS if self.signals[name][row]]
        return out


def _bools(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _ints(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)


def keyword_pattern(keywords: list[str]) -> str:
    """An RE2 pattern matching any keyword as a whole word.

    Unicode letters and digits are word characters; runs of spaces in a keyword match any whitespace.
    """
    escaped = []
    for keyword in keywords:
        parts = [re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", part) for part in keyword.split()]
        if parts:
            escaped.append(r"\s+".join(parts))
    return r"(?:^|[^\p{L}\p{N}_])(?:" + "|".join(escaped) + r")(?:[^\p{L}\p{N}_]|$)"


def _plain_words(keyword: str) -> list[str] | None:
    """The words of a keyword made of letters and digits only (None if it has punctuation)."""
    parts = keyword.lower().split()
    return parts if parts and all(part.isalnum() for part in parts) else None


def categorise(
    instructions: pa.Array, rules: list[CategoryRule], words: text.Hashes | None = None
) -> Categorical:
    """The first rule with a keyword in the instruction, as a whole word (case-insensitive), else `general`.

    Keywords of letters and digits are looked up as word (or phrase) hashes of the normalised instruction, all
    at once; keywords with punctuation (`c++`) go through a regex.
    """
    labels: list[str] = []
    for rule in rules:
        if rule.name not in labels:
            labels.append(rule.name)
    if GENERAL not in labels:
        labels.append(GENERAL)
    n = len(instructions)
    words = words if words is not None else text.words(instructions)
    best = np.full(n, len(rules), dtype=np.int64)  # the first matching rule; len(rules): none
    phrases: list[str] = []
    phrase_rule: list[int] = []
    for number, rule in enumerate(rules):
        punctuated = []
        for keyword in rule.keywords:
            parts = _plain_words(keyword)
            if parts is None:
                punctuated.append(keyword)
            else:
                phrases.append(" ".join(parts))
                phrase_rule.append(number)
        if punctuated:
            matched = _bools(
                pc.match_substring_regex(instructions, keyword_pattern(punctuated), ignore_case=True)
            )
            best[matched] = np.minimum(best[matched], number)
    if phrases:
        # Phrases are numbered in rule order, so a phrase in two rules counts for the first.
        rows, found = text.PhraseTable.build(phrases).hits(words)
        np.minimum.at(best, rows, np.array(phrase_rule, dtype=np.int64)[found])
    names = [rule.name for rule in rules] + [GENERAL]
    lookup = np.array([labels.index(name) for name in names], dtype=np.int64)
    return Categorical(lookup[best], labels)


@functools.lru_cache(maxsize=2)
def _classifier(model_path: Path) -> tuple[Any, Any]:
    """A sequence-classification model and its tokenizer, loaded once for all blocks."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


@functools.lru_cache(maxsize=2)
def _tokenizer(path: Path) -> Any:
    """A tokenizer, loaded once for all blocks."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def classify(instructions: pa.Array, model_path: Path, batch_size: int = 32) -> Categorical:
    """The label a sequence-classification model gives each instruction (its `id2label` order)."""
    import torch

    tokenizer, model = _classifier(model_path)
    labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    texts = instructions.to_pylist()
    codes = np.zeros(len(texts), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            codes[start : start + batch_size] = model(**batch).logits.argmax(-1).numpy()
    return Categorical(codes, labels)


def _stop_word_table() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sorted hashes of all stop words, and a bit per language for each."""
    names = list(STOP_WORDS)
    bits: dict[int, int] = {}
    for index, name in enumerate(names):
        words = STOP_WORDS[name].split()
        hashes = text.words(pa.array(words)).values
        for value in hashes.tolist():
            bits[value] = bits.get(value, 0) | (1 << index)
    keys = np.array(sorted(bits), dtype=np.uint64)
    return keys, np.array([bits[k] for k in keys.tolist()], dtype=np.int64), names


STOP_WORD_TABLE = _stop_word_table()
STOP_WORD_SET = text.HashSet(STOP_WORD_TABLE[0])


def detect_language(instructions: pa.Array, words: text.Hashes) -> Categorical:
    """The language of each instruction: by script, and by stop words for Latin script."""
    n = len(instructions)
    codes = np.full(n, LANGUAGES.index("en"), dtype=np.int64)
    _, bits, names = STOP_WORD_TABLE
    position = STOP_WORD_SET.index(words.values)
    hits = np.flatnonzero(position >= 0)
    owner = np.searchsorted(words.offsets, hits, side="right") - 1
    languages = bits[position[hits]]
    votes = np.zeros((n, len(names)), dtype=np.int64)
    for index, _ in enumerate(names):
        votes[:, index] = np.bincount(owner, weights=(languages >> index) & 1, minlength=n)
    # Ties go to the first language listed (English).
    voted = votes.max(axis=1) > 0
    best = np.array([LANGUAGES.index(name) for name in names])[votes.argmax(axis=1)]
    codes[voted] = best[voted]
    unvoted = np.flatnonzero(~voted)
    codes[unvoted[~_regex_on(instructions, unvoted, r"\p{L}")[unvoted]]] = LANGUAGES.index(UNDETERMINED)

    # Counting letters per script is slow; only rows with a non-Latin letter need it, and those have
    # a byte of 0xCD or more (the UTF-8 lead bytes from U+0340 on; Latin letters end at U+024F).
    # Only non-ASCII rows can: Arrow finds them in one fast pass, the bytes of those are scanned.
    non_ascii = np.flatnonzero(~_bools(pc.string_is_ascii(instructions)))
    highest = text.byte_profile(instructions.take(pa.array(non_ascii))).highest
    maybe = non_ascii[highest >= 0xCD]
    mixed = maybe[_regex_on(instructions, maybe, NON_LATIN_LETTER)[maybe]]
    letters = _ints(pc.count_substring_regex(instructions.take(pa.array(mixed)), r"\p{L}"))
    non_latin = _ints(pc.count_substring_regex(instructions.take(pa.array(mixed)), NON_LATIN_LETTER))
    foreign = mixed[non_latin * 2 > letters]
    if len(foreign):
        subset = instructions.take(pa.array(foreign))
        counts = np.stack([_ints(pc.count_substring_regex(subset, p)) for p in SCRIPTS.values()], axis=1)
        scripts = list(SCRIPTS)
        # Japanese mixes kana with Han characters: kana anywhere decides for Japanese.
        han_and_kana = counts[:, scripts.index("zh")] + counts[:, scripts.index("ja")]
        counts[:, scripts.index("ja")] = np.where(counts[:, scripts.index("ja")] > 0, han_and_kana, 0)
        chosen = np.array([LANGUAGES.index(s) for s in scripts])[counts.argmax(axis=1)]
        codes[foreign] = np.where(counts.max(axis=1) > 0, chosen, codes[foreign])
    return Categorical(codes, LANGUAGES)


def _regex_on(texts: pa.Array, rows: np.ndarray, pattern: str, count: bool = False) -> np.ndarray:
    """A regex match (or count) on the given rows only; 0/False elsewhere."""
    out = np.zeros(len(texts), dtype=np.int64 if count else bool)
    if len(rows):
        subset = texts.take(pa.array(rows))
        if count:
            out[rows] = _ints(pc.count_substring_regex(subset, pattern))
        else:
            out[rows] = _bools(pc.match_substring_regex(subset, pattern))
    return out


def message_tokens(
    contents: pa.Array, words: np.ndarray, profile: text.ByteProfile, tokenizer_path: Path | None
) -> np.ndarray:
    """Tokens of each message: by the tokenizer, or its `words` x 1.3 + CJK characters."""
    if tokenizer_path is not None:
        tokenizer = _tokenizer(tokenizer_path)
        texts = contents.to_pylist()
        counts = np.zeros(len(texts), dtype=np.float64)
        for start in range(0, len(texts), 4096):
            encoded = tokenizer(texts[start : start + 4096], add_special_tokens=False)["input_ids"]
            counts[start : start + 4096] = [len(ids) for ids in encoded]
        return counts
    # CJK characters are U+3000 and up: their UTF-8 lead byte is 0xE3 or more.
    cjk = _regex_on(contents, np.flatnonzero(profile.highest >= 0xE3), CJK, count=True)
    approximate: np.ndarray = words * TOKENS_PER_WORD + cjk
    return approximate


@dataclass
class DifficultyCues:
    """What the difficulty heuristic reads from each instruction."""

    constraints: np.ndarray
    """Explicit constraints or requirements (must, at least, exactly, format, ...)."""
    reasoning: np.ndarray
    """Requests for reasoning (step by step, explain, prove, compare, ...)."""
    technical: np.ndarray
    """Code, formulas or equations."""


def _phrases(words: str, phrases: list[str]) -> list[str]:
    """Single words (those not part of a listed phrase) and the phrases."""
    inside = {w for phrase in phrases for w in phrase.split()}
    return [w for w in words.split() if w not in inside] + phrases


CONSTRAINT_TABLE = text.PhraseTable.build(_phrases(CONSTRAINTS, CONSTRAINT_PHRASES))
REASONING_TABLE = text.PhraseTable.build(_phrases(REASONING, REASONING_PHRASES))


def technical_content(instructions: pa.Array) -> np.ndarray:
    """Whether each instruction holds code, a formula or an equation."""
    return _bools(pc.match_substring_regex(instructions, TECHNICAL, ignore_case=True))


def difficulty_cues(instructions: pa.Array, words: text.Hashes) -> DifficultyCues:
    """Count the cues of the difficulty heuristic in each instruction (`words`: its word hashes)."""
    n = len(instructions)
    return DifficultyCues(
        constraints=np.bincount(CONSTRAINT_TABLE.hits(words)[0], minlength=n).astype(np.int64),
        reasoning=np.bincount(REASONING_TABLE.hits(words)[0], minlength=n).astype(np.int64),
        technical=technical_content(instructions),
    )


def heuristic_difficulty(
    cues: DifficultyCues, instruction_tokens: np.ndarray, turns: np.ndarray
) -> np.ndarray:
    """A 1–10 difficulty of each instruction.

    It grows with the instruction's length, constraints, reasoning asked, technical content and extra turns (a
    short plain question scores about 2, an evolved one 6 to 8).
    """
    score = (
        1.0
        + np.minimum(4.0, 1.2 * np.log2(1.0 + instruction_tokens / 8.0))
        + np.minimum(2.0, 0.5 * cues.constraints)
        + np.minimum(2.0, 0.75 * cues.reasoning)
        + cues.technical.astype(np.float64)
        + np.minimum(1.0, 0.5 * (turns - 1))
    )
    clipped: np.ndarray = np.clip(score, 1.0, 10.0)
    return clipped


def quality_signals(
    corpus: Corpus,
    profile: text.ByteProfile,
    first_answer: np.ndarray,
    instruction_words: np.ndarray,
    answer_words: np.ndarray,
) -> dict[str, np.ndarray]:
    """The quality signals of each row (see the module docstring).

    They come from each message's byte profile and each row's first assistant message (`first_answer`, -1 for
    none).
    """
    n = len(corpus)
    garbled_messages = np.flatnonzero(profile.control | profile.replacement)
    garbled = np.bincount(corpus.message_rows()[garbled_messages], minlength=n) > 0
    has_answer = first_answer >= 0
    answer = np.maximum(first_answer, 0)
    refusal = np.zeros(n, dtype=bool)
    candidates = np.flatnonzero(has_answer & (answer_words < REFUSAL_WORDS) & (answer_words > 0))
    refusal[candidates] = _regex_on(corpus.contents, answer[candidates], REFUSAL)[answer[candidates]]
    fenced = np.flatnonzero(has_answer & profile.backtick[answer])
    fences = np.zeros(n, dtype=np.int64)
    if len(fenced):
        fences[fenced] = _ints(pc.count_substring(corpus.contents.take(pa.array(answer[fenced])), "```"))
    return {
        "refusal": refusal,
        "empty_answer": has_answer & (answer_words == 0),
        "garbled": garbled,
        "short_instruction": instruction_words < 3,
        "brief_answer": has_answer & (answer_words > 0) & (answer_words < 3),
        "unclosed_code": fences % 2 == 1,
    }


def _judged(scores: np.ndarray) -> np.ndarray:
    finite: np.ndarray = np.isfinite(scores)
    return finite


@dataclass
class _MessageColumns:
    chars: np.ndarray
    words: np.ndarray
    tokens: np.ndarray
    profile: text.ByteProfile
    technical: np.ndarray


def _message_columns(
    contents: pa.Array, instructions: pa.Array, tokenizer_path: Path | None
) -> _MessageColumns:
    """Per message: characters, words, tokens and the byte profile; per instruction: technical content.

    Technical content is a regex: here it balances the two threads.
    """
    profile = text.byte_profile(contents)
    words = text.word_counts(contents)
    return _MessageColumns(
        chars=_ints(pc.utf8_length(contents)),
        words=words,
        tokens=message_tokens(contents, words, profile, tokenizer_path),
        profile=profile,
        technical=technical_content(instructions),
    )


@dataclass
class _InstructionColumns:
    words: text.Hashes
    category: Categorical
    language: Categorical
    constraints: np.ndarray
    reasoning: np.ndarray


def _cue_counts(words: text.Hashes) -> tuple[np.ndarray, np.ndarray]:
    """Constraint and reasoning cues counted in each instruction."""
    n = len(words)
    return (
        np.bincount(CONSTRAINT_TABLE.hits(words)[0], minlength=n).astype(np.int64),
        np.bincount(REASONING_TABLE.hits(words)[0], minlength=n).astype(np.int64),
    )


def _instruction_columns(
    instructions: pa.Array, rules: list[CategoryRule], classifier_path: Path | None, pool: ThreadPoolExecutor
) -> _InstructionColumns:
    """Per instruction: word hashes, category, language and the counted difficulty cues.

    The cues are counted by whichever of the pool's threads is free first, once the words are known.
    """
    words = text.words(instructions)
    cues = pool.submit(_cue_counts, words)
    if classifier_path is not None:
        category = classify(instructions, classifier_path)
    else:
        category = categorise(instructions, rules, words)
    language = detect_language(instructions, words)
    constraints, reasoning = cues.result()
    return _InstructionColumns(words, category, language, constraints, reasoning)


def analyse(
    corpus: Corpus,
    rules: list[CategoryRule],
    edges: BucketEdges,
    tokenizer_path: Path | None = None,
    classifier_path: Path | None = None,
) -> tuple[Attributes, text.Hashes]:
    """Every attribute of every row, and the word hashes of each instruction."""
    n = len(corpus)
    rows = corpus.message_rows()
    first_user = corpus.first(USER)
    first_answer = corpus.first(ASSISTANT)
    has_answer = first_answer >= 0
    instructions = text.large_strings(corpus.contents.take(pa.array(first_user)))
    # The message columns and the instruction columns are independent, and numpy and Arrow release
    # the GIL: two threads use two cores. The cue counts, a third task, even out the two sides.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = pool.submit(_message_columns, corpus.contents, instructions, tokenizer_path)
        of_instructions = _instruction_columns(instructions, rules, classifier_path, pool)
        messages = pending.result()

    tokens = np.rint(text.segment_sum(messages.tokens, corpus.offsets)).astype(np.int64)
    chars = text.segment_sum(messages.chars, corpus.offsets)
    turns = np.bincount(rows[corpus.roles == USER], minlength=n).astype(np.int64)
    instruction_tokens = np.rint(messages.tokens[first_user]).astype(np.int64)
    instruction_words = messages.words[first_user]
    answer_words = np.where(has_answer, messages.words[np.maximum(first_answer, 0)], 0)

    judged_difficulty = corpus.meta.numeric(corpus.meta_chunk, corpus.meta_index, "difficulty")
    difficulty = np.where(
        _judged(judged_difficulty),
        np.clip(judged_difficulty, 1.0, 10.0),
        heuristic_difficulty(
            DifficultyCues(of_instructions.constraints, of_instructions.reasoning, messages.technical),
            instruction_tokens,
            turns,
        ),
    )
    signals = quality_signals(corpus, messages.profile, first_answer, instruction_words, answer_words)
    penalty = np.zeros(n)
    for name, flags in signals.items():
        penalty += PENALTIES[name] * flags
    judged_quality = corpus.meta.numeric(corpus.meta_chunk, corpus.meta_index, "quality")
    quality = np.where(
        _judged(judged_quality),
        np.clip(judged_quality, 1.0, 10.0),
        np.clip(QUALITY_BASE - penalty, 1.0, 10.0),
    )
    attributes = Attributes(
        category=of_instructions.category,
        language=of_instructions.language,
        turns=turns,
        chars=chars,
        tokens=tokens,
        instruction_tokens=instruction_tokens,
        difficulty=difficulty,
        difficulty_judged=_judged(judged_difficulty),
        quality=quality,
        quality_judged=_judged(judged_quality),
        signals=signals,
        edges=edges,
    )
    return attributes, of_instructions.words
