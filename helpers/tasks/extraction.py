"""The extraction task: short English and Chinese texts with gold fields, answered in two sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ..core.config import REPO_ROOT
from ..core.jsonl import read_jsonl
from ..teacher.prompts import render, require_text

Message = dict[str, str]
Row = dict[str, Any]
EXTRACTION_PATH: Path = REPO_ROOT / "data" / "extraction" / "samples.jsonl"


EXTRACTION_FIELDS: tuple[str, ...] = ("person", "organisation", "date", "amount")
"""The JSON keys the extraction prompts ask for (same keys in every language)."""


def extraction_messages(text: str, lang: Literal["en", "zh"] = "en") -> list[Message]:
    """The chat for extracting :data:`EXTRACTION_FIELDS` from a short text.

    The reply is expected in two sections, ``Thinking process:`` / ``Final answer:``
    (``思考过程：`` / ``最终答案：`` for ``lang="zh"``), read back by
    :func:`helpers.teacher.parsing.parse_sections`.
    """
    text = require_text(text, "text")
    if lang not in ("en", "zh"):
        raise ValueError(f"lang must be 'en' or 'zh', got {lang!r}.")
    return [{"role": "user", "content": render(f"extraction_{lang}", text=text)}]



def load_extraction_samples(lang: Literal["en", "zh"] | None = None) -> list[dict[str, Any]]:
    """The extraction texts (``id``, ``lang``, ``text``, ``gold``), optionally one language."""
    if lang not in (None, "en", "zh"):
        raise ValueError(f"lang must be 'en', 'zh' or None, got {lang!r}.")
    rows = read_jsonl(EXTRACTION_PATH)
    return [r for r in rows if lang is None or r["lang"] == lang]


def extraction_rows(lang: Literal["en", "zh"] | None = None) -> list[Row]:
    """Prompt rows (task ``"extraction"``) for the sample texts.

    ``reference`` is ``None`` (the answer is a JSON object, not a number or label,
    so answer checking treats it as unverifiable); the gold fields are in
    ``meta["gold"]``.
    """
    return [
        {
            "id": s["id"],
            "messages": extraction_messages(s["text"], s["lang"]),
            "question": s["text"],
            "reference": None,
            "task": "extraction",
            "meta": {"lang": s["lang"], "gold": s["gold"]},
        }
        for s in load_extraction_samples(lang)
    ]

