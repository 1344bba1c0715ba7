r"""Reading a teacher's reply back into fields: thinking, answer, boxed result, format problems.

Teachers rarely follow a format perfectly, so every function here is tolerant and
*says* what was wrong instead of raising:

* :func:`extract_boxed` - the content of the last ``\boxed{...}`` (nested braces handled).
* :func:`split_thinking` - inline ``<think>...</think>`` and ``<answer>...</answer>`` tags,
  tolerant of a missing opening tag or an unclosed one.
* :func:`parse_sections` - section markers such as ``Thinking process:`` / ``Final answer:``
  (and ``思考过程：`` / ``最终答案：``), for structured-output prompts.
* :func:`normalize_number` - ``"1,234"``, ``"$5.00"``, ``"5.0"`` -> a canonical string.

Format problems are reported in a :class:`FormatFlags` object whose ``ok`` is true
only when nothing the caller expected is missing. All functions are pure.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# --------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class FormatFlags:
    """What is wrong with a reply's format; ``ok`` when nothing is.

    Only the problems the caller asked to check are ever set (a classification
    prompt does not expect ``\\boxed{}``, so ``missing_boxed`` stays false there).
    """

    empty: bool = False
    """The reply is blank."""
    missing_think: bool = False
    """No thinking found (no ``<think>`` block / no thinking section)."""
    unclosed_think: bool = False
    """``<think>`` opened but never closed: the reply is probably cut off."""
    missing_answer: bool = False
    """Nothing left after the thinking (or no answer section / ``<answer>`` tag when required)."""
    unclosed_answer: bool = False
    """``<answer>`` opened but never closed."""
    missing_boxed: bool = False
    """The answer has no complete ``\\boxed{...}``."""

    @property
    def problems(self) -> tuple[str, ...]:
        """Names of the problems that are set, e.g. ``("missing_think", "missing_boxed")``."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name))

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        return ", ".join(self.problems) if self.problems else "ok"


# --------------------------------------------------------------------------- boxed

BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")


def match_braces(text: str, open_index: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_index``; ``None`` if unclosed.

    LaTeX escapes (``\\{``, ``\\}``) do not count as grouping braces.
    """
    depth = 0
    i = open_index
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def extract_boxed(text: str | None) -> str | None:
    r"""Content of the LAST ``\boxed{...}`` (or ``\fbox{...}``) in ``text``.

    Nested braces are handled (``\boxed{\frac{1}{2}}`` -> ``\frac{1}{2}``); a box
    inside a box counts as part of the outer one. The short form ``\boxed 5``
    is accepted too. Returns ``None`` when there is no box, or when the last box
    is never closed (a cut-off reply has no final answer, even if an earlier
    box exists). An empty box gives ``""``.
    """
    if not text:
        return None
    result: str | None = None
    pos = 0
    while True:
        match = BOXED_START.search(text, pos)
        if match is None:
            return result
        if match.group(1) is None:  # "\boxed 5": the next token is the content
            token = re.match(r"[^\s$\\{}]+", text[match.end():])
            if token is None:
                pos = match.end()
                continue
            result = token.group(0)
            pos = match.end() + token.end()
            continue
        close = match_braces(text, match.end() - 1)
        if close is None:
            return None
        result = text[match.end():close].strip()
        pos = close + 1


# --------------------------------------------------------------------------- tags


def _tag(name: str, closing: bool) -> re.Pattern[str]:
    slash = r"/\s*" if closing else ""
    return re.compile(rf"<\s*{slash}{name}\s*>", re.IGNORECASE)


_THINK_OPEN, _THINK_CLOSE = _tag("think", False), _tag("think", True)
_ANSWER_OPEN, _ANSWER_CLOSE = _tag("answer", False), _tag("answer", True)


@dataclass(frozen=True)
class ParsedReply:
    """A reply split into its parts.

    ``answer`` is the reply with the thinking removed (tags like ``<answer>``
    kept, as the sample-row contract says); ``final`` is the inside of the
    ``<answer>`` tags when there are some, else the same as ``answer``;
    ``boxed`` is :func:`extract_boxed` of ``final``.
    """

    thinking: str | None
    answer: str
    final: str
    boxed: str | None
    flags: FormatFlags = field(default_factory=FormatFlags)


def split_thinking(text: str | None, *, expect_think: bool = True, expect_boxed: bool = True,
                   expect_answer_tag: bool = False) -> ParsedReply:
    """Split an inline ``<think>...</think>`` block (and ``<answer>`` tags) out of ``text``.

    Tolerant by design:

    * tags are case-insensitive and may contain spaces (``< Think >``);
    * a closing ``</think>`` without an opening tag means everything before it
      is thinking (chat templates that put ``<think>`` in the prompt do this);
    * an unclosed ``<think>`` means everything after it is thinking and there is
      no answer (flagged ``unclosed_think`` + ``missing_answer``);
    * ``<answer>`` without ``</answer>`` takes the rest of the text (``unclosed_answer``).

    The ``expect_*`` switches choose which absences count as problems.
    """
    text = text or ""
    if not text.strip():
        return ParsedReply(None, "", "", None, FormatFlags(
            empty=True, missing_think=expect_think, missing_answer=True,
            missing_boxed=expect_boxed))

    thinking: str | None = None
    unclosed_think = False
    answer = text
    open_match = _THINK_OPEN.search(text)
    close_match = _THINK_CLOSE.search(text, open_match.end() if open_match else 0)
    if open_match and close_match:
        thinking = text[open_match.end():close_match.start()]
        answer = text[:open_match.start()] + text[close_match.end():]
    elif open_match:
        thinking = text[open_match.end():]
        answer = text[:open_match.start()]
        unclosed_think = True
    elif close_match:
        thinking = text[:close_match.start()]
        answer = text[close_match.end():]
    thinking = thinking.strip() if thinking is not None else None
    answer = answer.strip()

    final = answer
    unclosed_answer = False
    has_answer_tag = False
    a_open = _ANSWER_OPEN.search(answer)
    if a_open:
        has_answer_tag = True
        a_close = _ANSWER_CLOSE.search(answer, a_open.end())
        if a_close:
            final = answer[a_open.end():a_close.start()].strip()
        else:
            final = answer[a_open.end():].strip()
            unclosed_answer = True

    boxed = extract_boxed(final)
    flags = FormatFlags(
        missing_think=expect_think and not thinking,
        unclosed_think=unclosed_think,
        missing_answer=not final or (expect_answer_tag and not has_answer_tag),
        unclosed_answer=unclosed_answer,
        missing_boxed=expect_boxed and boxed is None,
    )
    return ParsedReply(thinking or None, answer, final, boxed, flags)


# --------------------------------------------------------------------------- section markers

DEFAULT_SECTION_MARKERS: Mapping[str, Sequence[str]] = {
    "thinking": ("Thinking process", "思考过程"),
    "answer": ("Final answer", "最终答案"),
}
"""Field name -> the marker words that start that field (English and Chinese)."""

_MD = r"(?:\*\*|__|\*|_)?"


def _marker_pattern(marker: str) -> re.Pattern[str]:
    """A marker followed by an ASCII or full-width colon, or alone on a heading line.

    Optional markdown around it: ``**Final answer:**``, ``**Final answer**:``,
    ``## 最终答案``, ``Final  Answer：``; a bracketed marker (``【最终答案】``) needs no colon.
    """
    words = r"\s+".join(re.escape(w) for w in marker.split())
    colon = r"[:：]?" if marker.rstrip()[-1:] in "】]）)>" else r"[:：]"  # a bracketed marker needs no colon
    inline = rf"(?:#{{1,6}}\s*)?{_MD}\s*{words}\s*{_MD}\s*{colon}\s*{_MD}"
    heading = rf"^[ \t]*(?:#{{1,6}}[ \t]*|>[ \t]*)?{_MD}[ \t]*{words}[ \t]*{_MD}[ \t]*[:：]?[ \t]*$"
    return re.compile(rf"{heading}|{inline}", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Sections:
    """Fields parsed from a reply with section markers."""

    fields: dict[str, str | None]
    missing: tuple[str, ...]
    flags: FormatFlags

    @property
    def thinking(self) -> str | None:
        return self.fields.get("thinking")

    @property
    def answer(self) -> str | None:
        return self.fields.get("answer")


def parse_sections(text: str | None, markers: Mapping[str, Sequence[str]] = DEFAULT_SECTION_MARKERS,
                   *, required: Sequence[str] | None = None) -> Sections:
    """Cut ``text`` at its section markers and return one string per field.

    ``markers`` maps a field name to the marker words announcing it (any
    language; the defaults are ``Thinking process`` / ``思考过程`` for
    ``thinking`` and ``Final answer`` / ``最终答案`` for ``answer``). A field
    runs from its marker to the next chosen marker. The FIRST occurrence starts
    ``thinking``; every other field uses its LAST occurrence, so a reasoning
    that mentions "the final answer: ..." on the way is overruled by the real
    final section. ``required`` (default: every field) lists the fields whose
    absence is reported in ``missing`` and in the flags.
    """
    text = text or ""
    required = tuple(markers) if required is None else tuple(required)
    chosen: dict[str, re.Match[str]] = {}
    for name, words in markers.items():
        found = [m for w in words for m in _marker_pattern(w).finditer(text)]
        if not found:
            continue
        found.sort(key=lambda m: m.start())
        chosen[name] = found[0] if name == "thinking" else found[-1]

    ordered = sorted(chosen.items(), key=lambda item: item[1].start())
    values: dict[str, str | None] = {name: None for name in markers}
    for i, (name, match) in enumerate(ordered):
        end = ordered[i + 1][1].start() if i + 1 < len(ordered) else len(text)
        if end < match.end():  # overlapping markers: keep the field empty
            end = match.end()
        content = text[match.end():end].strip()
        values[name] = content or None

    missing = tuple(name for name in required if not values.get(name))
    flags = FormatFlags(
        empty=not text.strip(),
        missing_think="thinking" in missing,
        missing_answer="answer" in missing or any(n not in ("thinking", "answer") for n in missing),
    )
    return Sections(values, missing, flags)


# --------------------------------------------------------------------------- numbers

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])|(?<![\w.])[-+]?\.\d+")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox|operatorname)\s*\{([^{}]*)\}")
_LATEX_FRAC = re.compile(r"\\d?t?frac\s*\{\s*([-+]?\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_SIMPLE_FRACTION = re.compile(r"^\s*([-+]?\d+)\s*/\s*(\d+)\s*$")


def _canonical(value: Fraction) -> str:
    """Integers as ``"5"``, terminating decimals as ``"2.5"``, others as ``"1/3"``."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for prime in (2, 5):
        while den % prime == 0:
            den //= prime
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def normalize_number(s: object) -> str | None:
    r"""A canonical string for a numeric answer, or ``None`` when there is no single number.

    ``"1,234"`` -> ``"1234"``; ``"$5.00"`` -> ``"5"``; ``"5.50"`` -> ``"5.5"``;
    ``"\frac{1}{2}"`` and ``"1/2"`` -> ``"0.5"``; ``"８ apples"`` -> ``"8"``;
    ``"−3"`` (unicode minus) -> ``"-3"``. A ``\boxed{}`` is unwrapped first.
    Text with several numbers (``"3 + 5 = 8"``) is ambiguous and gives ``None``.
    """
    if s is None:
        return None
    if isinstance(s, bool):
        return None
    if isinstance(s, int):
        return str(s)
    if isinstance(s, float):
        s = repr(s)
    text = unicodedata.normalize("NFKC", str(s)).replace("\u2212", "-")
    boxed = extract_boxed(text)
    if boxed is not None:
        text = boxed
    text = _LATEX_TEXT.sub(r" \1 ", text)
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    text = re.sub(r"\\[,;:! ]|\\\$|\\%|\$|%|\\left|\\right|\\cdot", " ", text)
    text = text.strip().rstrip(".")
    fraction = _SIMPLE_FRACTION.match(text)
    try:
        if fraction:
            if int(fraction.group(2)) == 0:
                return None
            return _canonical(Fraction(int(fraction.group(1)), int(fraction.group(2))))
        numbers = _NUMBER.findall(text)
        if len(numbers) != 1:
            return None
        return _canonical(Fraction(Decimal(numbers[0].replace(",", "").lstrip("+"))))
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None
