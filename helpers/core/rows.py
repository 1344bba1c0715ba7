"""The sample row, the course's one record type, and the accessors every stage shares.

A row is a plain dict (what the teacher engine writes, one per JSONL line):
``prompt_id``, ``sample_index``, ``status``, ``question``, ``reference``, ``task``,
``meta`` and ``reply`` (``thinking``, ``answer``, ``raw``, ``finish_reason``, ``usage``).
"""

from __future__ import annotations

import copy
from typing import Any

from .text import normalise_text

Row = dict[str, Any]
"""One sample row: a dict."""


def row_id(row: Row) -> str:
    """A short, stable name for a sample row: ``"<prompt_id>#<sample_index>"``.

    Used in drop details ("duplicate of ...") and example tables.
    """
    prompt_id = row.get("prompt_id", row.get("id", "?"))
    index = row.get("sample_index")
    return f"{prompt_id}#{index}" if index is not None else str(prompt_id)


def question_key(row: Row) -> str:
    """What identifies the *question* of a row: its prompt id, else its question text.

    All samples of one prompt share this key (pass rates, splits and selection
    work per question, not per sample).
    """
    key = row.get("prompt_id", row.get("id"))
    return str(key) if key is not None else normalise_text(row.get("question") or "")


def reply_of(row: Row) -> dict[str, Any]:
    """The ``reply`` dict of a sample row, or an empty dict for failed requests."""
    reply = row.get("reply")
    return reply if isinstance(reply, dict) else {}


def thinking_of(row: Row) -> str:
    """The chain of thought of a sample row (``""`` when there is none)."""
    return reply_of(row).get("thinking") or ""


def answer_of(row: Row) -> str:
    """The answer part of a sample row, i.e. the reply after the thinking (``""`` if none)."""
    return reply_of(row).get("answer") or ""


def field_of(row: Row, key: str) -> Any:
    """``row[key]`` if the row has it, else ``row["meta"][key]`` (e.g. ``steps``), else ``None``."""
    return row[key] if key in row else (row.get("meta") or {}).get(key)


def natural_key(value: Any) -> tuple[int, Any]:
    """A sort key putting numbers first in numeric order (2 before 10), then text, then None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value)) if value is not None else (2, "")


def with_reply(row: Row, **changes: Any) -> Row:
    """A deep copy of ``row`` whose ``reply`` has ``changes`` applied (e.g. a rewritten thinking)."""
    new = copy.deepcopy(row)
    reply = dict(reply_of(new))
    reply.update(changes)
    new["reply"] = reply
    return new

