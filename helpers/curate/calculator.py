"""A calculator for the teacher: recompute the arithmetic of a chain of thought.

Small teachers get the *plan* of a word problem right far more often than the
*arithmetic*: "Chloe runs 8 km a day for 9 days. 8 * 9 = 78." has the right
operation and the wrong product. GSM8K itself was written with a calculator in
the loop (its ``<<8*9=72>>`` annotations), and tool use is one of the "System 2"
aids a teacher may have that the student will not.

:func:`recompute` finds every ``a op b = c`` in a reasoning text, in order, and
replaces each wrong result by the right one. A corrected result is carried
forward: when a later equation uses the old, wrong value as an operand, it is
replaced by the corrected value too (that is what the teacher meant). The
boxed final answer follows the last equation.

:func:`calculator_stage` is a curation stage that applies it to every sample and
**drops nothing**: the verification that follows still decides whether the
repaired chain reaches the reference answer. Every change is recorded on the
row (``calculator``) and in a table, so a learner can see exactly what the tool
did. Rows with no equation, or with a division that does not come out even, are
left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import pandas as pd

from ..core.rows import Row, answer_of, reply_of, row_id, thinking_of, with_reply
from .funnel import StageBuilder, StageResult

_NUM = r"\d+(?:\.\d+)?"
_EQUATION_RE = re.compile(rf"(?<![\d.])({_NUM})\s*([+\-*/×x÷])\s*({_NUM})\s*=\s*({_NUM})(?![\d])")
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "×": lambda a, b: a * b,
        "x": lambda a, b: a * b, "/": lambda a, b: a / b if b else None, "÷": lambda a, b: a / b if b else None}


def _number(text: str) -> Fraction:
    return Fraction(text)


def _format(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else str(float(value))


@dataclass
class Recomputed:
    """What :func:`recompute` found and changed in one text."""

    text: str
    equations: int = 0
    fixes: list[str] = field(default_factory=list)
    """``"8 * 9 = 78 -> 72"`` for each changed equation."""
    last_result: str | None = None
    """The (corrected) result of the last equation, if any."""

    @property
    def changed(self) -> bool:
        return bool(self.fixes)


def _carry(prose: str, carried: dict[str, str]) -> str:
    """Replace wrong values stated earlier by their corrections in a stretch of prose."""
    for wrong, right in carried.items():
        prose = re.sub(rf"(?<![\d.]){re.escape(wrong)}(?![\d.])", right, prose)
    return prose


def recompute(text: str) -> Recomputed:
    """Recompute every ``a op b = c`` in ``text``, carrying corrections forward.

    Only text *after* a corrected equation is touched by the carry, so numbers
    restated from the question before it stay as they are.
    """
    carried: dict[str, str] = {}  # wrong value written earlier -> its corrected value
    out = Recomputed(text)
    pieces: list[str] = []
    last = 0
    for m in _EQUATION_RE.finditer(text):
        pieces.append(_carry(text[last:m.start()], carried))
        last = m.end()
        left, op, right, written = m.groups()
        left2, right2 = carried.get(left, left), carried.get(right, right)
        result = _OPS[op](_number(left2), _number(right2))
        out.equations += 1
        if result is None or result < 0 or (op in "/÷" and result.denominator != 1):
            out.last_result = written  # not grade-school arithmetic: leave it to verification
            pieces.append(m.group(0))
            continue
        correct = _format(result)
        out.last_result = correct
        if (left2, right2, correct) == (left, right, written):
            pieces.append(m.group(0))
            continue
        if correct != written:
            carried[written] = correct
        out.fixes.append(f"{left} {op} {right} = {written} -> {left2} {op} {right2} = {correct}")
        pieces.append(f"{left2} {op} {right2} = {correct}")
    pieces.append(_carry(text[last:], carried))
    out.text = "".join(pieces)
    return out


def repair_row(row: Row) -> tuple[Row, Recomputed]:
    """``row`` with its thinking recomputed and its boxed answer following the last equation."""
    thinking = thinking_of(row)
    fixed = recompute(thinking)
    if not fixed.changed:
        return row, fixed
    answer = answer_of(row)
    boxed = _BOXED_RE.findall(answer)
    new_answer = answer
    if fixed.last_result is not None and boxed:
        new_answer = _BOXED_RE.sub(lambda _: "\\boxed{" + fixed.last_result + "}", answer)
    raw = reply_of(row).get("raw") or ""
    new_raw = raw.replace(thinking, fixed.text).replace(answer, new_answer) if raw else raw
    new = with_reply(row, thinking=fixed.text, answer=new_answer, raw=new_raw)
    new["calculator"] = {"equations": fixed.equations, "fixes": fixed.fixes}
    return new, fixed


def calculator_stage(rows: Sequence[Row], *, stage: str = "calculator") -> StageResult:
    """Recompute the arithmetic of every sample; keeps every row (verification comes next).

    ``result.tables["fixes"]`` lists each changed row with its fixes.
    """
    builder = StageBuilder(stage, n_in=len(rows))
    fixes = []
    for row in rows:
        if not reply_of(row):
            builder.keep(row)
            continue
        new, found = repair_row(row)
        if found.changed:
            fixes.append({"row": row_id(row), "equations": found.equations, "fixes": "; ".join(found.fixes)})
        builder.keep(new)
    return builder.result(fixes=pd.DataFrame(fixes, columns=["row", "equations", "fixes"]))
