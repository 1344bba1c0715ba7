"""Text as the course compares it: normalised words (a CJK character is one word) and one-line snippets.

The shared notion of "the same text" for exact dedup, label matching and n-gram overlap.
"""

from __future__ import annotations

import re
import unicodedata

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"


_WORD_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}_]+")
"""A word is a run of letters/digits; every CJK character counts as one word."""


def normalise_text(text: str) -> str:
    """Lower-case, Unicode-normalise (NFKC), drop punctuation and collapse spaces.

    ``"  Hello,   WORLD! "`` -> ``"hello world"``. The shared notion of "the same
    text" for exact dedup, label matching and n-gram overlap.
    """
    return " ".join(words(text))


def words(text: str) -> list[str]:
    """Normalised word tokens of ``text`` (Chinese: one token per character)."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return _WORD_RE.findall(text)


def snippet(text: str | None, limit: int = 120) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"

