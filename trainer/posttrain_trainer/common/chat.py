"""The chat schema every workload reads and writes, importers, and the WizardLM-2 (Vicuna) format.

Schema of a chat row (JSONL):

    {"id": "<stable id>",
     "messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...],
     "meta": {...}}            # free-form: source, category, difficulty, lineage, ...

A preference row: {"id", "prompt": [messages up to the last user turn], "chosen": "...",
"rejected": "...", "meta": {...}}. A ranking row (IRM): {"id", "instructions": [best ... worst],
"meta"}. A step row (PRM): {"id", "prompt": "...", "steps": ["...", ...], "labels": [1, 0, ...],
"meta"}. Rows a workload writes carry their lineage in `meta.lineage` (`posttrain.api.lineage`).

Importers accept ShareGPT (`conversations` with `from`/`value`), Alpaca (`instruction`, `input`,
`output`) and OpenAI messages (`messages` with `role`/`content`); `normalize` raises `RowError` with a
reason for anything else, so callers count and set aside malformed rows instead of failing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

Message = dict[str, str]
Row = dict[str, Any]

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)
"""The system prompt of the WizardLM-2 announcement."""

# The Vicuna format as a chat template: the system prompt and each turn joined by one space, every
# answer closed by the eos token, `USER:` right after it; generation markers let the trainer put the
# loss on the assistant's answers only.
VICUNA_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = '" + VICUNA_SYSTEM.replace("'", "\\'") + "' -%}{%- set turns = messages -%}"
    "{%- endif -%}"
    "{{ system }}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.first or loop.previtem['role'] != 'assistant' -%}{{ ' ' }}{%- endif -%}"
    "{{ 'USER: ' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ ' ASSISTANT: ' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ ' ASSISTANT:' }}{%- endif -%}"
)


def format_vicuna(messages: list[Message], eos: str = "</s>", add_generation_prompt: bool = False) -> str:
    """The Vicuna text of a conversation (the same string the template renders).

    `... USER: Hi ASSISTANT: Hello.</s>USER: Who are you? ASSISTANT: I am WizardLM.</s>`
    """
    system = VICUNA_SYSTEM
    turns = messages
    if messages and messages[0]["role"] == "system":
        system, turns = messages[0]["content"], messages[1:]
    text = system
    for index, message in enumerate(turns):
        if message["role"] == "user":
            after_answer = index > 0 and turns[index - 1]["role"] == "assistant"
            text += ("" if after_answer else " ") + "USER: " + message["content"]
        elif message["role"] == "assistant":
            text += " ASSISTANT: " + message["content"] + eos
    if add_generation_prompt:
        text += " ASSISTANT:"
    return text


class RowError(ValueError):
    """A malformed row; the message is the reason recorded in the rejects file."""


SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "system": "system",
}


def detect_format(row: Row) -> str:
    """`chat`, `sharegpt`, `alpaca` or `openai` from the row's keys; raises RowError if none fits.

    A key whose value is null counts as absent: exports of mixed datasets (pandas, Arrow) write null
    for the columns a row does not have.
    """
    if row.get("messages") is not None:
        return "chat" if "id" in row and "meta" in row else "openai"
    if row.get("conversations") is not None:
        return "sharegpt"
    if row.get("instruction") is not None:
        return "alpaca"
    keys = sorted(key for key, value in row.items() if value is not None)
    raise RowError(f"unknown row format (keys: {', '.join(keys) or 'none'})")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"{what} is not a string")
    return value


def _check(messages: list[Message]) -> list[Message]:
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise RowError("no non-empty user message")
    return messages


def row_id(messages: list[Message]) -> str:
    """A stable id from the content."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def normalize(row: Any, fmt: str = "auto") -> Row:
    """A row of any supported format as a chat row; raises RowError with the reason if malformed."""
    if not isinstance(row, dict):
        raise RowError("not a JSON object")
    if fmt == "auto":
        fmt = detect_format(row)
    meta = dict(row.get("meta") or {}) if isinstance(row.get("meta"), dict) else {}
    reader = _MESSAGE_READERS.get(fmt)
    if reader is None:
        raise RowError(f"format {fmt!r} is not a chat format")
    messages = _check(reader(row))
    identifier = row.get("id") if isinstance(row.get("id"), str) and row.get("id") else row_id(messages)
    return {"id": identifier, "messages": messages, "meta": meta}


def _chat_messages(row: dict[str, Any]) -> list[Message]:
    return _listed_messages(row, "messages", "role", "content", _chat_role)


def _sharegpt_messages(row: dict[str, Any]) -> list[Message]:
    return _listed_messages(row, "conversations", "`from`", "value", _sharegpt_role)


def _chat_role(message: dict[str, Any]) -> str | None:
    role = message.get("role")
    return role if role in ("system", "user", "assistant") else None


def _sharegpt_role(message: dict[str, Any]) -> str | None:
    return SHAREGPT_ROLES.get(str(message.get("from", "")).lower())


def _listed_messages(
    row: dict[str, Any],
    key: str,
    role_field: str,
    content_field: str,
    role_of: Callable[[dict[str, Any]], str | None],
) -> list[Message]:
    """The messages of a row that lists them under `key`; `role_of` gives a message's role, or None."""
    raw = row.get(key)
    if not isinstance(raw, list) or not raw:
        raise RowError(f"`{key}` is not a non-empty list")
    messages: list[Message] = []
    for i, m in enumerate(raw):
        role = role_of(m) if isinstance(m, dict) else None
        if role is None:
            raise RowError(f"{key}[{i}] has no valid {role_field}")
        messages.append({"role": role, "content": _text(m.get(content_field), f"{key}[{i}].{content_field}")})
    return messages


def _alpaca_messages(row: dict[str, Any]) -> list[Message]:
    instruction = _text(row.get("instruction"), "`instruction`")
    extra = row.get("input") or ""
    prompt = instruction + ("\n\n" + _text(extra, "`input`") if extra else "")
    messages: list[Message] = [{"role": "user", "content": prompt}]
    if row.get("output"):
        messages.append({"role": "assistant", "content": _text(row["output"], "`output`")})
    return messages


_MESSAGE_READERS: dict[str, Callable[[dict[str, Any]], list[Message]]] = {
    "chat": _chat_messages,
    "openai": _chat_messages,
    "sharegpt": _sharegpt_messages,
    "alpaca": _alpaca_messages,
}
"""Row format (what `detect_format` names) -> the reader of its messages."""


def instruction(row: Row) -> str:
    """The first user message of a chat row."""
    for message in row["messages"]:
        if message["role"] == "user":
            return str(message["content"])
    return ""


def prompt_key(text: str) -> str:
    """A prompt as held-out checks compare it: case and runs of whitespace do not count.

    A training row whose first user turn has the same key as an evaluation problem would teach the answer
    the evaluation asks for, so the TrainStage and the AlignRound set it aside.
    """
    return " ".join(text.split()).casefold()


def answer(row: Row) -> str:
    """The first assistant message of a chat row, or ''."""
    for message in row["messages"]:
        if message["role"] == "assistant":
            return str(message["content"])
    return ""
