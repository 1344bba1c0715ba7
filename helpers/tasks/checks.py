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

import json
import re
import threading
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from math_verify import parse, verify

from ..core.rows import Row, answer_of, reply_of, thinking_of
from ..core.text import normalise_text
from ..teacher.parsing import extract_boxed, parse_sections

LABEL_TASKS: frozenset[str] = frozenset({"classification"})
"""Tasks whose reference is a label (string match); every other task is math."""


_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


_ANSWER_TAG_RE = re.compile(r"</?answer>", re.IGNORECASE)


VERIFIERS = ("number", "label", "fields", "judge")
"""How a task's answers are checked: math-verify on a number, a label from a set, JSON fields, or an LLM judge."""
FORMATS = ("think", "sections")
"""Reply formats: ``<think>...</think>`` then the answer, or two marked sections (``【思考过程】`` / ``【最终答案】``)."""


@dataclass(frozen=True)
class Check:
    """The outcome of checking one answer.

    ``correct`` is ``None`` when the answer could not be checked (no reference, or a
    judge task). ``prediction`` is what was read from the answer (``None``: nothing
    found). ``format_ok`` says whether the answer has the shape the task asks for,
    and ``detail`` why not. ``fields`` (field verifier) is each field's outcome:
    ``tp`` right, ``fn`` missed, ``fp`` invented, ``wrong`` (an fp and an fn), ``tn`` rightly empty.
    """

    correct: bool | None
    prediction: str | None
    method: str
    detail: str = ""
    format_ok: bool | None = None
    fields: dict[str, str] | None = None

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


_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_EDGE = " \t\n\"'`。.,;；，:："


def parse_json_answer(text: str) -> tuple[dict[str, Any] | None, str]:
    """The JSON object in an answer (inside a code fence or between the outer braces), or ``None`` and why."""
    text = (text or "").strip()
    fenced = _FENCE_RE.search(text)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        return None, "no JSON object in the answer"
    try:
        value = json.loads(body[start:end + 1])
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg})"
    if not isinstance(value, dict):
        return None, "the JSON is not an object"
    return value, ""


def field_value(value: Any) -> str:
    """A field value as compared: NFKC, case-folded, without spaces and edge punctuation ('' for null)."""
    if value is None:
        return ""
    text = unicodedata.normalize("NFKC", str(value)).casefold().strip(_EDGE)
    return "" if text in ("null", "none", "n/a") else re.sub(r"\s+", "", text)


def _outcome(gold: str, predicted: str) -> str:
    if not gold:
        return "fp" if predicted else "tn"
    if not predicted:
        return "fn"
    return "tp" if predicted == gold else "wrong"


def verify_fields(reference: Mapping[str, Any] | str, answer: str, fields: Sequence[str]) -> Check:
    """Compare the answer's JSON object with the reference, field by field (exact after normalising)."""
    gold = json.loads(reference) if isinstance(reference, str) else dict(reference)
    predicted, problem = parse_json_answer(answer)
    if predicted is None:
        outcomes = {f: _outcome(field_value(gold.get(f)), "") for f in fields}
        return Check(False, None, "fields", problem, False, outcomes)
    outcomes = {f: _outcome(field_value(gold.get(f)), field_value(predicted.get(f))) for f in fields}
    wrong = [f"{f} ({predicted.get(f)!r}, reference {gold.get(f)!r})" for f in fields if outcomes[f] not in ("tp", "tn")]
    missing = [f for f in fields if f not in predicted]
    extra = [k for k in predicted if k not in fields]
    shape = "; ".join(x for x in (f"missing keys {missing}" if missing else "",
                                  f"unknown keys {extra}" if extra else "") if x)
    detail = "; ".join(x for x in (f"wrong: {', '.join(wrong)}" if wrong else "", shape) if x)
    return Check(not wrong, json.dumps(predicted, ensure_ascii=False), "fields", detail, not shape, outcomes)


def answer_text_for(verifier: str, reference: Any) -> str:
    """The answer part of a worked example whose answer is ``reference``."""
    if verifier == "number":
        return "<answer>\\boxed{" + str(reference) + "}</answer>"
    if verifier == "fields":
        return json.dumps(reference, ensure_ascii=False)
    return f"<answer>{reference}</answer>"


def check_spec_of(row: Row) -> dict[str, Any]:
    """How a row is checked: its ``meta["check"]`` (written by the task), else guessed from its task name."""
    spec = (row.get("meta") or {}).get("check")
    if isinstance(spec, Mapping):
        return dict(spec)
    return {"verifier": "label" if row.get("task") in LABEL_TASKS else "number", "format": "think"}


def reply_parts(row: Row, spec: Mapping[str, Any] | None = None) -> tuple[str, str, str]:
    """``(thinking, answer, problem)`` of a sample row in its task's reply format."""
    spec = check_spec_of(row) if spec is None else spec
    if spec.get("format") != "sections":
        return thinking_of(row), answer_of(row), ""
    reply = reply_of(row)
    raw = reply.get("raw") or reply.get("answer") or ""
    think_marker, answer_marker = (m.strip().rstrip(":：").strip() for m in spec["markers"])
    parsed = parse_sections(raw, {"thinking": (think_marker,), "answer": (answer_marker,)})
    thinking, answer = parsed.fields.get("thinking") or "", parsed.fields.get("answer") or ""
    missing = [m for m, v in ((think_marker, thinking), (answer_marker, answer)) if not v]
    return thinking, answer, f"no {' and no '.join(missing)} section" if missing else ""


def check_answer(reference: Any, answer: str, task: str | None = None, *,
                 label_tasks: Collection[str] = LABEL_TASKS, labels: Collection[str] | None = None,
                 spec: Mapping[str, Any] | None = None) -> Check:
    """Check ``answer`` against ``reference`` as ``spec`` says (else as the ``task`` name suggests)."""
    spec = dict(spec) if spec else {"verifier": "label" if task in label_tasks else "number"}
    verifier = spec.get("verifier", "number")
    labels = labels if labels is not None else spec.get("labels")
    if verifier == "judge":
        return Check(None, (answer or "").strip() or None, "judge", "checked by an LLM judge, not by a rule",
                     bool((answer or "").strip()))
    if reference is None or (isinstance(reference, str) and not reference.strip()):
        return Check(None, extract_prediction(answer), "none", "no reference to check against")
    if verifier == "fields":
        return verify_fields(reference, answer, spec.get("fields") or list(reference))
    if verifier == "label":
        check = verify_label(str(reference), answer, labels)
        known = check.prediction is not None and (not labels or normalise_text(check.prediction)
                                                  in {normalise_text(x) for x in labels})
        why = "" if known else ("no label in the answer" if check.prediction is None
                                else f"unknown label {check.prediction!r}")
        return replace(check, format_ok=known, detail=check.detail if known else why)
    check = verify_math(str(reference), answer)
    return replace(check, format_ok=extract_boxed(answer) is not None)


def check_row(row: Row, answer: str | None = None, *, label_tasks: Collection[str] = LABEL_TASKS,
              labels: Collection[str] | None = None) -> Check:
    """Check a sample row's answer (or a replacement ``answer``) the way its task says."""
    spec = check_spec_of(row)
    _, parsed, problem = reply_parts(row, spec)
    check = check_answer(row.get("reference"), parsed if answer is None else answer, spec=spec, labels=labels)
    if problem and answer is None:  # the reply is not in the task's format: a format failure, with its reason
        return replace(check, correct=False if check.correct is not None else None, format_ok=False,
                       detail="; ".join(x for x in (problem, check.detail) if x))
    return check


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

