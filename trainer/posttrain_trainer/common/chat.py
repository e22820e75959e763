"""The chat schema every workload reads and writes, importers, and the WizardLM-2 (Vicuna) format.

Schema of a chat row (JSONL):

    {"id": "<stable id>",
     "messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...],
     "meta": {...}}            # free-form: source, category, difficulty, lineage, ...

A preference row: {"id", "prompt": [messages up to the last user turn], "chosen": "...",
"rejected": "...", "meta": {...}}. A ranking row (IRM): {"id", "instructions": [best ... worst],
"meta"}. A step row (PRM): {"id", "prompt": "...", "steps": ["...", ...], "labels": [1, 0, ...]}.

Importers accept ShareGPT (`conversations` with `from`/`value`), Alpaca (`instruction`, `input`,
`output`) and OpenAI messages (`messages` with `role`/`content`); `normalize` raises `RowError` with a
reason for anything else, so callers count and set aside malformed rows instead of failing.
"""

from __future__ import annotations

import hashlib
import json
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
    if fmt in ("chat", "openai"):
        raw = row.get("messages")
        if not isinstance(raw, list) or not raw:
            raise RowError("`messages` is not a non-empty list")
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise RowError(f"messages[{i}] has no valid role")
            messages.append({"role": m["role"], "content": _text(m.get("content"), f"messages[{i}].content")})
    elif fmt == "sharegpt":
        raw = row.get("conversations")
        if not isinstance(raw, list) or not raw:
            raise RowError("`conversations` is not a non-empty list")
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or str(m.get("from", "")).lower() not in SHAREGPT_ROLES:
                raise RowError(f"conversations[{i}] has no valid `from`")
            role = SHAREGPT_ROLES[str(m["from"]).lower()]
            messages.append({"role": role, "content": _text(m.get("value"), f"conversations[{i}].value")})
    elif fmt == "alpaca":
        instruction = _text(row.get("instruction"), "`instruction`")
        extra = row.get("input") or ""
        prompt = instruction + ("\n\n" + _text(extra, "`input`") if extra else "")
        messages = [{"role": "user", "content": prompt}]
        if row.get("output"):
            messages.append({"role": "assistant", "content": _text(row["output"], "`output`")})
    else:
        raise RowError(f"format {fmt!r} is not a chat format")
    messages = _check(messages)
    identifier = row.get("id") if isinstance(row.get("id"), str) and row.get("id") else row_id(messages)
    return {"id": identifier, "messages": messages, "meta": meta}


def instruction(row: Row) -> str:
    """The first user message of a chat row."""
    for message in row["messages"]:
        if message["role"] == "user":
            return str(message["content"])
    return ""


def answer(row: Row) -> str:
    """The first assistant message of a chat row, or ''."""
    for message in row["messages"]:
        if message["role"] == "assistant":
            return str(message["content"])
    return ""
