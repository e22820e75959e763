"""Elimination: the rules that mark an evolution as failed (Evol-Instruct), as pure functions.

An evolved instruction is dropped when

1. `noInformationGain`: it brings nothing new over its parent — identical after normalising case
   and spaces, or a judge says the two are equal;
2. `refusal`: its answer contains "sorry" and has fewer than `refusalMaxWords` words;
3. `stopwordsOnly`: its answer is only punctuation and stop words (an empty answer included);
4. `templateLeak`: it copies words of the prompt template ("given prompt", "rewritten prompt", ...).

Besides those, `empty`: the evolver's reply held no instruction at all.

The cheap rules are checked first and the first failing rule is the one recorded, so each failed
evolution counts under exactly one rule; the judge (rule 1) is only asked when the others pass.
Auto Evol-Instruct adds its failure signals for scoring methods (`auto_failure`): answers that only
acknowledge ("Understood", "Sure", thanks ending in a question) or ask for more input.

References: Xu et al., 2023 (WizardLM), section 3.3; Zeng et al., 2024 (Auto Evol-Instruct).
"""

from __future__ import annotations

import re

from posttrain.api.evol import Elimination

from posttrain_trainer.evol.prompts import copies_template

RULES = ("empty", "templateLeak", "refusal", "stopwordsOnly", "noInformationGain")
"""Rule names in the order they are checked (the metric is `eliminated.<rule>`)."""

_STOP_WORD_TEXT = """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves yes ok okay oh well also
"""
STOP_WORDS = frozenset(_STOP_WORD_TEXT.split())
"""English function words: an answer made only of these (and punctuation) says nothing."""

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words(text: str) -> list[str]:
    """The words of a text (letters and digits), lower-cased."""
    return [w.lower() for w in _WORD.findall(text)]


def normalise(text: str) -> str:
    """Lower case, single spaces: the form two instructions are compared in."""
    return " ".join(text.lower().split())


def is_refusal(answer: str, max_words: int = 80) -> bool:
    """Rule 2: contains "sorry" and is shorter than `max_words` words."""
    return "sorry" in answer.lower() and len(answer.split()) < max_words


def is_stopwords_only(answer: str) -> bool:
    """Rule 3: no word outside the stop words (an answer of punctuation only, or nothing, included)."""
    return all(word in STOP_WORDS for word in words(answer))


def same_instruction(parent: str, child: str) -> bool:
    """Rule 1 without a judge: the two are equal after normalising case and spaces."""
    return normalise(parent) == normalise(child)


def check_without_judge(
    settings: Elimination, parent: str, child: str | None, answer: str | None
) -> str | None:
    """The first rule (in `RULES` order) that fails without asking a judge, or None.

    Args:
        settings: which rules are on.
        parent: the instruction that was evolved.
        child: the evolved instruction, None if the reply held none.
        answer: the answer to the evolved instruction, None when answers are not generated (rules
            2 and 3 are then skipped).
    """
    if child is None:
        return "empty"
    if settings.template_leak and copies_template(child):
        return "templateLeak"
    if answer is not None:
        if settings.refusal and is_refusal(answer, settings.refusal_max_words):
            return "refusal"
        if settings.stopwords_only and is_stopwords_only(answer):
            return "stopwordsOnly"
    if settings.no_information_gain and same_instruction(parent, child):
        return "noInformationGain"
    return None


_ACKNOWLEDGE = re.compile(
    r"^\W*(understood|sure|of course|certainly|got it|thank you|thanks|okay|ok)\b", re.I
)
_ASKS_INPUT = re.compile(
    r"please\s+(provide|share|specify|give|send|clarify)|could\s+you\s+(provide|share|specify|clarify)", re.I
)


def auto_failure(original: str, evolved: str | None, answer: str | None) -> str | None:
    """Why an evolution made with an Auto Evol-Instruct method failed, or None if it did not.

    Signals: no final instruction (`empty`), the scaffold copied (`templateLeak`), unchanged
    (`noInformationGain`), an answer that only acknowledges — it starts with "Understood", "Sure",
    "Thank you", ... and ends in a question — or asks for more input (`insufficient`), and the answer
    rules (`refusal`, `stopwordsOnly`).
    """
    if evolved is None:
        return "empty"
    if copies_template(evolved):
        return "templateLeak"
    if same_instruction(original, evolved):
        return "noInformationGain"
    if answer is not None:
        stripped = answer.strip()
        if _ASKS_INPUT.search(stripped) or (_ACKNOWLEDGE.match(stripped) and stripped.endswith("?")):
            return "insufficient"
        if is_refusal(stripped):
            return "refusal"
        if is_stopwords_only(stripped):
            return "stopwordsOnly"
    return None
