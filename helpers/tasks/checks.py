"""Is an answer right? The checks every stage shares: curation keeps, evaluation scores.

* **math** (word problems, GSM8K): reference and prediction are parsed with
  `math-verify <https://github.com/huggingface/Math-Verify>`_ and compared
  symbolically, so ``\\boxed{0.5}``, ``\\frac{1}{2}`` and ``1/2`` all match ``"1/2"``.
  The prediction comes from the *answer* text (never the thinking): the
  ``\\boxed{}`` content, else the last number.
* **label** (classification): the predicted label must equal the reference
  after normalisation (case, spaces, punctuation).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection
from dataclasses import asdict, dataclass

from math_verify import parse, verify

from ..core.rows import Row, answer_of
from ..core.text import normalise_text
from ..teacher.parsing import extract_boxed

LABEL_TASKS: frozenset[str] = frozenset({"classification"})
"""Tasks whose reference is a label (string match); every other task is math."""


_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


_ANSWER_TAG_RE = re.compile(r"</?answer>", re.IGNORECASE)


@dataclass(frozen=True)
class Check:
    """The outcome of checking one answer.

    ``correct`` is ``None`` when the answer could not be checked (no reference).
    ``prediction`` is what was read from the answer (``None``: nothing found).
    """

    correct: bool | None
    prediction: str | None
    method: str
    """``"math"``, ``"label"`` or ``"none"`` (unverifiable)."""
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def last_number(text: str) -> str | None:
    """The last number in ``text`` (``"1,200"``, ``"-3.5"``, ``"3/4"``), commas removed."""
    numbers = _NUMBER_RE.findall(text or "")
    return numbers[-1].replace(",", "") if numbers else None


def extract_prediction(answer: str) -> str | None:
    """What a reader takes as the final answer: the last ``\\boxed{}`` content, else the last number.

    An empty or unclosed last box gives ``None`` (no final answer), not a number
    picked from elsewhere in the text.
    """
    boxed = extract_boxed(answer)
    if boxed is not None:
        return boxed or None
    if re.search(r"\\(?:boxed|fbox)", answer or ""):
        return None
    return last_number(answer)


def _timeouts() -> dict[str, int | None]:
    """math-verify's timeouts use ``signal.alarm``, which only works in the main thread."""
    main = threading.current_thread() is threading.main_thread()
    return {"parsing_timeout": 5 if main else None}


def _parse(text: str) -> list:
    parsed = parse(text, **_timeouts())
    if not parsed and text and "$" not in text:  # bare LaTeX such as "\frac{1}{2}"
        parsed = parse(f"${text}$", **_timeouts())
    return parsed


def verify_math(reference: str, answer: str) -> Check:
    """Is the final answer in ``answer`` mathematically equal to ``reference``?

    The prediction is :func:`extract_prediction` of the answer (``\\boxed{}``
    content, else the last number), parsed by math-verify. The gold answer is
    passed to ``verify`` first, as math-verify requires (it is not symmetric).
    """
    gold = _parse(str(reference))
    if not gold:
        return Check(False, None, "math", f"could not parse the reference {reference!r}")
    shown = extract_prediction(answer)
    if shown is None:
        return Check(False, None, "math", "no \\boxed{} answer and no number in the answer")
    predicted = _parse(f"\\boxed{{{shown}}}")
    if not predicted:
        return Check(False, shown, "math", f"could not parse the prediction {shown!r}")
    main = threading.current_thread() is threading.main_thread()
    correct = bool(verify(gold, predicted, timeout_seconds=5 if main else None))
    detail = "" if correct else f"predicted {shown!r}, reference {reference!r}"
    return Check(correct, shown, "math", detail)


def predicted_label(answer: str, labels: Collection[str] | None = None) -> str | None:
    """The label an answer gives: its ``\\boxed{}`` content, else the whole answer text.

    When ``labels`` (the allowed label set) is given and the answer text is not
    itself a label, the last label mentioned in the text is taken.
    """
    boxed = extract_boxed(answer)
    if boxed is not None:
        return boxed or None
    text = _ANSWER_TAG_RE.sub(" ", answer or "").strip()
    if not text:
        return None
    if labels:
        norm = normalise_text(text)
        if norm not in {normalise_text(label) for label in labels}:
            hits = [(m.start(), label) for label in labels
                    for m in re.finditer(rf"\b{re.escape(normalise_text(label))}\b", norm)]
            if hits:
                return max(hits)[1]
    return text


def verify_label(reference: str, answer: str, labels: Collection[str] | None = None) -> Check:
    """Does the answer's label equal ``reference`` up to case, spaces and punctuation?"""
    label = predicted_label(answer, labels)
    if label is None:
        return Check(False, None, "label", "empty answer")
    correct = normalise_text(label) == normalise_text(str(reference))
    detail = "" if correct else f"predicted {label!r}, reference {reference!r}"
    return Check(correct, label, "label", detail)


def check_answer(reference: str | None, answer: str, task: str | None, *,
                 label_tasks: Collection[str] = LABEL_TASKS,
                 labels: Collection[str] | None = None) -> Check:
    """Check ``answer`` against ``reference`` with the method the ``task`` calls for."""
    if reference is None or str(reference).strip() == "":
        return Check(None, extract_prediction(answer), "none", "no reference to check against")
    if task in label_tasks:
        return verify_label(str(reference), answer, labels)
    return verify_math(str(reference), answer)


def check_row(row: Row, answer: str | None = None, *, label_tasks: Collection[str] = LABEL_TASKS,
              labels: Collection[str] | None = None) -> Check:
    """Check a sample row's answer (or a replacement ``answer``) against the row's reference."""
    return check_answer(row.get("reference"), answer_of(row) if answer is None else answer,
                        row.get("task"), label_tasks=label_tasks, labels=labels)


def answer_still_correct(row: Row, new_answer: str, *,
                         label_tasks: Collection[str] = LABEL_TASKS) -> Check:
    """After a rewrite: is ``new_answer`` still right?

    With a reference, it is checked against the reference. Without one, it must
    give the same final answer as the row's original answer.
    """
    if row.get("reference") not in (None, ""):
        return check_row(row, new_answer, label_tasks=label_tasks)
    original = extract_prediction(answer_of(row))
    if original is None:
        return Check(None, extract_prediction(new_answer), "none",
                     "no reference and no original answer to compare with")
    if row.get("task") in label_tasks:
        return verify_label(predicted_label(answer_of(row)) or original, new_answer)
    return verify_math(original, new_answer)

