"""Stage 2: quality filters that need no reference answer.

A correct final answer does not make a good training example. These filters
drop samples a student should not imitate, each with its own reason:

==================  ==========================================================
``no_reply``        the request failed, there is nothing to train on
``truncated``       the reply hit the token limit (status ``truncated`` or
                    ``finish_reason == "length"``): its reasoning is cut off
``refusal``         the teacher refused or added a disclaimer (English and
                    Chinese phrases of ``data/refusal_phrases.json``)
``broken_format``   no thinking (when required), no answer, or ``<think>``
                    tags left inside the answer (a failed split)
``empty_answer``    the answer has no content once tags and ``\\boxed`` are
                    removed (``<answer></answer>``, ``\\boxed{}``)
``too_short``       a chain of thought of a handful of words, or an answer
                    shorter than the configured minimum
``repeats_question`` the answer or the thinking merely repeats the question
``length_outlier``  thinking far longer than the rest (IQR or percentile rule
                    over the rows that passed, never below ``min_outlier_words``)
==================  ==========================================================

A row gets the first reason that applies, in the order above.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..core.config import REPO_ROOT
from ..core.rows import Row, answer_of, reply_of, thinking_of
from ..core.text import normalise_text, words
from .funnel import StageBuilder, StageResult

REFUSAL_PHRASES_PATH: Path = REPO_ROOT / "data" / "refusal_phrases.json"

_THINK_TAG_RE = re.compile(r"</?think>", re.IGNORECASE)
_MARKUP_RE = re.compile(r"</?answer>|\\boxed|\\fbox", re.IGNORECASE)


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the quality filters (the defaults suit short math reasoning)."""

    require_thinking: bool = True
    """Drop replies without a chain of thought (``broken_format``)."""
    min_thinking_words: int = 5
    """Fewer words of thinking than this is ``too_short`` (a CJK character is a word)."""
    min_answer_chars: int = 1
    """Fewer characters of answer content than this is ``too_short``."""
    refusal_scan_chars: int = 300
    """How much of the start of the thinking is searched for refusal phrases."""
    repeat_similarity: float = 0.9
    """Answer/thinking at least this similar to the question (difflib ratio) repeats it."""
    outlier_rule: Literal["iqr", "percentile"] | None = "iqr"
    """How long thinking is judged an outlier; ``None`` turns the check off."""
    iqr_k: float = 3.0
    """IQR rule: drop thinking longer than ``Q3 + iqr_k * (Q3 - Q1)`` words."""
    percentile: float = 99.0
    """Percentile rule: drop thinking longer than this percentile of lengths."""
    min_rows_for_outliers: int = 20
    """Skip the outlier rule below this many rows (statistics of 5 rows mean nothing)."""
    min_outlier_words: int = 64
    """The fence is never below this many words: the rule is for runaway chains of thought.
    Without a floor, a set of uniformly short chains (IQR of 2 words) would flag a normal
    two-step solution of 23 words, i.e. exactly the rarer, harder rows."""


def load_refusal_phrases(path: str | Path | None = None) -> list[str]:
    """All refusal phrases (every language) from the JSON file, normalised for matching."""
    path = Path(path) if path is not None else REFUSAL_PHRASES_PATH
    if not path.is_file():
        raise FileNotFoundError(f"Refusal phrase list not found: {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold an object {{language: [phrases]}}.")
    phrases: list[str] = []
    for language, items in data.items():
        if language.startswith("_"):
            continue
        if not isinstance(items, list) or not all(isinstance(p, str) and p.strip() for p in items):
            raise ValueError(f"{path}: {language!r} must be a list of non-empty strings.")
        phrases += [_match_form(p) for p in items]
    if not phrases:
        raise ValueError(f"{path} lists no refusal phrases.")
    return phrases


def _match_form(text: str) -> str:
    """Lower-case NFKC text with curly quotes made straight and spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.lower().split())


def find_refusal(text: str, phrases: Sequence[str]) -> str | None:
    """The first refusal phrase found in ``text`` (phrases as returned by :func:`load_refusal_phrases`)."""
    haystack = _match_form(text)
    return next((p for p in phrases if p in haystack), None)


def answer_content(answer: str) -> str:
    """The answer with ``<answer>`` tags and ``\\boxed`` removed, normalised."""
    return normalise_text(_MARKUP_RE.sub(" ", answer))


def repeats(text: str, question: str, similarity: float = 0.9) -> bool:
    """Does ``text`` merely restate ``question`` (near-identical, or the question plus <= 3 words)?"""
    t, q = normalise_text(text), normalise_text(question)
    if not t or not q:
        return False
    if t == q or (q in t and len(t.split()) - len(q.split()) <= 3):
        return True
    matcher = difflib.SequenceMatcher(None, t, q, autojunk=False)
    return matcher.real_quick_ratio() >= similarity and matcher.ratio() >= similarity


def check_quality(row: Row, config: FilterConfig, phrases: Sequence[str]) -> tuple[str, str] | None:
    """The first quality problem of one row as ``(reason, detail)``, or ``None`` if it is fine."""
    reply = reply_of(row)
    if row.get("status") == "error" or not reply:
        return "no_reply", row.get("error") or "the request returned no reply"
    if row.get("status") == "truncated" or reply.get("finish_reason") == "length":
        return "truncated", f"status {row.get('status')!r}, finish_reason {reply.get('finish_reason')!r}"
    thinking, answer = thinking_of(row), answer_of(row)
    phrase = find_refusal(answer, phrases) or find_refusal(thinking[: config.refusal_scan_chars], phrases)
    if phrase:
        return "refusal", f"contains {phrase!r}"
    if config.require_thinking and not thinking.strip():
        return "broken_format", "no thinking"
    if not answer.strip():
        return "broken_format", "no answer after the thinking"
    if _THINK_TAG_RE.search(answer):
        return "broken_format", "<think> tag left inside the answer"
    content = answer_content(answer)
    if not content:
        return "empty_answer", f"answer has no content: {answer.strip()[:60]!r}"
    n_words = len(words(thinking))
    if thinking.strip() and n_words < config.min_thinking_words:
        return "too_short", f"thinking has {n_words} words (< {config.min_thinking_words})"
    if len(content) < config.min_answer_chars:
        return "too_short", f"answer content has {len(content)} chars (< {config.min_answer_chars})"
    question = row.get("question") or ""
    if repeats(answer_content(answer), question, config.repeat_similarity):
        return "repeats_question", "the answer restates the question"
    if repeats(thinking, question, config.repeat_similarity):
        return "repeats_question", "the thinking only restates the question"
    return None


def length_fence(lengths: Sequence[int], config: FilterConfig) -> tuple[float, str] | None:
    """The thinking length above which a row is an outlier, with how it was computed.

    The fence is at least ``config.min_outlier_words``.

    ``None`` when the rule is off or there are fewer than
    ``config.min_rows_for_outliers`` lengths.
    """
    if config.outlier_rule is None or len(lengths) < config.min_rows_for_outliers:
        return None
    values = np.asarray(lengths, dtype=float)
    if config.outlier_rule == "iqr":
        q1, q3 = np.percentile(values, [25, 75])
        fence = q3 + config.iqr_k * (q3 - q1)
        how = f"Q3 {q3:.0f} + {config.iqr_k:g} x IQR {q3 - q1:.0f}"
    elif config.outlier_rule == "percentile":
        fence = np.percentile(values, config.percentile)
        how = f"{config.percentile:g}th percentile"
    else:
        raise ValueError(f"outlier_rule must be 'iqr', 'percentile' or None, got {config.outlier_rule!r}")
    if fence < config.min_outlier_words:
        return float(config.min_outlier_words), f"floor min_outlier_words; {how} = {fence:.0f}"
    return float(fence), how


def quality_filter(rows: Sequence[Row], config: FilterConfig | None = None, *,
                   phrases: Sequence[str] | None = None, stage: str = "filters") -> StageResult:
    """Apply every quality filter; dropped rows say which rule fired and why.

    ``result.tables["lengths"]`` lists the thinking length (words) of every row
    that reached the outlier rule, with the fence used.
    """
    config = config or FilterConfig()
    phrases = list(phrases) if phrases is not None else load_refusal_phrases()
    builder = StageBuilder(stage, n_in=len(rows))
    survivors: list[Row] = []
    for row in rows:
        problem = check_quality(row, config, phrases)
        if problem:
            builder.drop(row, *problem)
        else:
            survivors.append(row)

    lengths = [len(words(thinking_of(row))) for row in survivors]
    fence = length_fence(lengths, config)
    for row, length in zip(survivors, lengths):
        if fence is not None and length > fence[0]:
            builder.drop(row, "length_outlier",
                         f"thinking has {length} words > {fence[0]:.0f} ({fence[1]})")
        else:
            builder.keep(row)
    table = pd.DataFrame({"thinking_words": lengths,
                          "fence": [fence[0] if fence else None] * len(lengths)})
    return builder.result(lengths=table)
