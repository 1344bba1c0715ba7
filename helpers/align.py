"""Stage 5: align the reasoning to what a *small* student can learn (as in DistilQwen).

A chain of thought that suits a large teacher is not always a good lesson for a
1B student: a terse one skips the steps the student cannot do in its head, a
convoluted one (detours, re-checks, "wait, let me ...") teaches it to ramble.
Following the DistilQwen recipe, an LLM judge grades every chain of thought as

* ``too_terse``  -> the teacher *expands* it (adds the missing steps),
* ``right``      -> kept as it is,
* ``too_convoluted`` -> the teacher *shortens* it (long-to-short rewrite).

A rewritten chain is re-verified (its final answer must still be right, see
:func:`helpers.verify.answer_still_correct`) and graded again in the next round,
up to ``max_rounds`` judge calls per row. Rows never graded ``right`` are
dropped (``alignment_failed``); rows whose judge/rewriter calls all raised are
dropped as ``alignment_error``.

The judge and the rewriter are one callable ``chat(messages) -> str`` (the
notebook passes a function that calls the configured teacher; tests pass a
scripted fake). The prompts are the files ``data/prompts/align_judge.txt``,
``align_expand.txt`` and ``align_shorten.txt``, loaded with
:func:`helpers.prompts.load_prompt` (``string.Template`` placeholders
``$question``, ``$thinking``, ``$answer``, ``$feedback``, ``$student``; a literal
dollar sign is written ``$$``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .curate import (Row, StageBuilder, StageResult, answer_of, map_with_progress, row_id, snippet, thinking_of,
                     with_reply, words)
from .prompts import PROMPTS_DIR, PromptTemplate, load_prompt
from .verify import Check, answer_still_correct

Chat = Callable[[list[dict[str, str]]], str]
"""Sends chat messages to a model and returns the reply text."""

VERDICTS: tuple[str, ...] = ("too_terse", "right", "too_convoluted")
DEFAULT_STUDENT = "a small language model (around 1B parameters)"

_SYNONYMS: dict[str, str] = {
    "too_terse": "too_terse", "terse": "too_terse", "too_short": "too_terse",
    "too_brief": "too_terse",
    "right": "right", "just_right": "right", "about_right": "right", "good": "right",
    "appropriate": "right", "ok": "right",
    "too_convoluted": "too_convoluted", "convoluted": "too_convoluted",
    "too_long": "too_convoluted", "too_verbose": "too_convoluted", "verbose": "too_convoluted",
}
_VERDICT_KEYS = ("verdict", "label", "grade", "rating", "category")
_THINK_BLOCK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_REASONING_RE = re.compile(r"<reasoning>(.*)</reasoning>", re.DOTALL | re.IGNORECASE)
_KEY_LINE_RE = re.compile(rf"(?:{'|'.join(_VERDICT_KEYS)})\s*[:=]\s*[\"'*`]*([A-Za-z_ -]+)",
                          re.IGNORECASE)
_LOOSE_RE = re.compile(r"\btoo[ _-](?:terse|convoluted)\b", re.IGNORECASE)


class AlignmentAborted(RuntimeError):
    """Raised when the judge/rewriter keeps failing: the endpoint is most likely down."""


def _strip_own_thinking(text: str) -> str:
    """Drop an inline ``<think>`` block a reasoning model put before its reply."""
    text = _THINK_BLOCK_RE.sub("", text or "")
    if "</think>" in text.lower():  # an opening tag the server already removed
        text = re.split(r"</think>", text, flags=re.IGNORECASE)[-1]
    return text.strip()


def _canonical(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    key = re.sub(r"[\s\-]+", "_", value.strip().strip(".!\"'`*").lower())
    return _SYNONYMS.get(key)


def parse_verdict(text: str) -> tuple[str | None, str]:
    """Read the judge's verdict: ``(label or None, reason)``.

    Accepts a JSON object (``{"verdict": "right", "reason": ...}``, also inside a
    code fence or after some prose), a ``Verdict: too_terse`` line, a bare label,
    or prose naming exactly one of ``too terse`` / ``too convoluted``. Anything
    else gives ``(None, why)``; the caller counts that as a failed round.
    """
    body = _strip_own_thinking(text)
    if not body:
        return None, "empty judge reply"
    start, end = body.find("{"), body.rfind("}")
    if 0 <= start < end:
        try:
            data = json.loads(body[start:end + 1])
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            for key in _VERDICT_KEYS:
                label = _canonical(data.get(key))
                if label:
                    return label, str(data.get("reason") or data.get("explanation") or "")
    match = _KEY_LINE_RE.search(body)
    if match and _canonical(match.group(1)):
        return _canonical(match.group(1)), ""
    label = _canonical(body)
    if label:
        return label, ""
    loose = {_canonical(m.group(0)) for m in _LOOSE_RE.finditer(body)}
    if len(loose) == 1:
        return loose.pop(), ""
    return None, f"unparseable verdict: {snippet(body, 80)!r}"


def parse_rewrite(text: str) -> tuple[str, str] | None:
    """Split a rewrite reply into ``(thinking, answer)``; ``None`` if not in the asked format."""
    body = _strip_own_thinking(text)
    match = _REASONING_RE.search(body)
    if not match:
        return None
    thinking, answer = match.group(1).strip(), body[match.end():].strip()
    return (thinking, answer) if thinking and answer else None


@dataclass
class _Aligner:
    """Runs the judge / rewrite loop for one row at a time (shared by the worker threads)."""

    chat: Chat
    max_rounds: int
    student: str
    verify: Callable[[Row, str], Check]
    fail_fast_errors: int
    judge: PromptTemplate
    rewrites: dict[str, PromptTemplate]

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._consecutive_errors = 0

    def _call(self, messages: list[dict[str, str]]) -> tuple[str | None, str]:
        """Call the model; an exception becomes ``(None, message)`` unless the endpoint looks dead."""
        try:
            reply = self.chat(messages)
        except Exception as exc:  # noqa: BLE001 - any client error is one failed round
            with self._lock:
                self._consecutive_errors += 1
                if self._consecutive_errors >= self.fail_fast_errors:
                    raise AlignmentAborted(
                        f"{self._consecutive_errors} chat calls in a row failed; last error: "
                        f"{type(exc).__name__}: {exc}") from exc
            return None, f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._consecutive_errors = 0
        if not isinstance(reply, str):
            return None, f"chat returned {type(reply).__name__}, expected str"
        return reply, ""

    def _fill(self, template: PromptTemplate, question: str, thinking: str, answer: str,
              feedback: str = "") -> list[dict[str, str]]:
        values = {"question": question, "thinking": thinking, "answer": answer,
                  "feedback": feedback or "no details given", "student": self.student}
        content = template.render(**{k: v for k, v in values.items() if k in template.variables})
        return [{"role": "user", "content": content}]

    def run(self, row: Row) -> tuple[Row, str | None, str]:
        """Align one row: ``(row with align info, drop reason or None, drop detail)``."""
        question = row.get("question") or ""
        thinking, answer = thinking_of(row), answer_of(row)
        history: list[dict[str, Any]] = []
        final: str | None = None
        errors = 0
        for round_no in range(1, self.max_rounds + 1):
            entry: dict[str, Any] = {"round": round_no, "verdict": None, "reason": "",
                                     "action": None, "ok": False, "note": "",
                                     "thinking_words": len(words(thinking))}
            history.append(entry)
            reply, error = self._call(self._fill(self.judge, question, thinking, answer))
            if reply is None:
                errors += 1
                entry["note"] = f"judge call failed: {error}"
                continue
            verdict, reason = parse_verdict(reply)
            entry.update(verdict=verdict, reason=reason)
            if verdict is None:
                entry["note"] = reason
                continue
            final = verdict
            if verdict == "right":
                entry.update(action="accept", ok=True)
                break
            if round_no == self.max_rounds:
                entry["note"] = "no rounds left to rewrite"
                break
            entry["action"] = "expand" if verdict == "too_terse" else "shorten"
            reply, error = self._call(self._fill(self.rewrites[verdict], question, thinking,
                                                 answer, reason))
            if reply is None:
                errors += 1
                entry["note"] = f"rewrite call failed: {error}"
                continue
            parsed = parse_rewrite(reply)
            if parsed is None:
                entry["note"] = f"rewrite not in the <reasoning>/<answer> format: {snippet(reply, 80)!r}"
                continue
            check = self.verify(row, parsed[1])
            if not check.correct:
                entry["note"] = f"rewrite rejected, answer no longer verifies ({check.detail})"
                continue
            thinking, answer = parsed
            entry.update(ok=True, note="rewritten; graded again next round")

        accepted = bool(history) and history[-1]["action"] == "accept"
        rewritten = thinking != thinking_of(row) or answer != answer_of(row)
        out = with_reply(row, thinking=thinking, answer=answer) if rewritten else dict(row)
        out["align"] = {"rounds": len(history), "verdict": final, "rewritten": rewritten,
                        "original_thinking": thinking_of(row) if rewritten else None,
                        "original_answer": answer_of(row) if rewritten else None,
                        "history": history}
        if accepted:
            return out, None, ""
        if errors == len(history):
            return out, "alignment_error", history[-1]["note"]
        last = final or "no parseable verdict"
        return out, "alignment_failed", f"still {last} after {len(history)} round(s)"


def align_stage(rows: Sequence[Row], chat: Chat, *, max_rounds: int = 3,
                student: str = DEFAULT_STUDENT,
                verify: Callable[[Row, str], Check] | None = None, max_workers: int = 1,
                fail_fast_errors: int = 10, prompts_dir: Path = PROMPTS_DIR,
                stage: str = "align", progress: bool = True) -> StageResult:
    """Judge, rewrite and re-judge every row's chain of thought, at most ``max_rounds`` rounds.

    Every output row gets ``align = {rounds, verdict, rewritten, original_thinking,
    original_answer, history}``; rewritten rows have their ``reply.thinking`` and
    ``reply.answer`` replaced (``reply.raw`` stays the teacher's original text).
    ``verify(row, new_answer) -> Check`` decides if a rewrite keeps a right
    answer (default :func:`helpers.verify.answer_still_correct`).
    ``max_workers > 1`` calls ``chat`` from that many threads. After
    ``fail_fast_errors`` chat exceptions in a row, :class:`AlignmentAborted` is
    raised instead of dropping every row. ``result.tables["rounds"]`` summarises
    rounds and verdicts per row.
    """
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    if not callable(chat):
        raise TypeError("chat must be a callable messages -> str")
    aligner = _Aligner(chat=chat, max_rounds=max_rounds, student=student,
                       verify=verify or answer_still_correct, fail_fast_errors=fail_fast_errors,
                       judge=load_prompt("align_judge", prompts_dir),
                       rewrites={"too_terse": load_prompt("align_expand", prompts_dir),
                                 "too_convoluted": load_prompt("align_shorten", prompts_dir)})
    outcomes = map_with_progress(aligner.run, rows, max_workers=max_workers, desc="align reasoning",
                                 progress=progress)

    builder = StageBuilder(stage, n_in=len(rows))
    records = []
    for row, reason, detail in outcomes:
        if reason is None:
            builder.keep(row)
        else:
            builder.drop(row, reason, detail)
        info = row["align"]
        records.append({"row": row_id(row), "rounds": info["rounds"], "verdicts":
                        " -> ".join(str(h["verdict"]) for h in info["history"]),
                        "rewritten": info["rewritten"], "kept": reason is None})
    return builder.result(rounds=pd.DataFrame(
        records, columns=["row", "rounds", "verdicts", "rewritten", "kept"]))


def merge_aligned(rows: Sequence[Row], aligned: StageResult, *, drop_failed: bool,
                  stage: str = "align") -> StageResult:
    """Fold the result of aligning a *sample* of ``rows`` back into all of them.

    Judging and rewriting every row costs one to three teacher calls per row, so
    a notebook may align only a sample (``aligned = align_stage(sample, chat)``).
    This builds the stage result for the whole set, in the order of ``rows``:

    * rows that passed alignment replace their originals (rewritten or not),
      with ``align["passed"] = True``;
    * rows that failed are dropped with their alignment reason when
      ``drop_failed`` (a judge you trust), else kept exactly as the teacher
      wrote them (a judge whose verdicts are noise must not delete data); their
      ``align`` record keeps the verdicts, with ``passed=False`` and
      ``rewritten=False`` because no rewrite was applied;
    * rows outside the sample pass through unchanged (no ``align`` field).

    ``result.tables`` holds the alignment tables plus ``outcome``: one line per
    sampled row saying what happened to it.
    """
    positions = {row_id(row): i for i, row in enumerate(rows)}
    if len(positions) != len(rows):
        raise ValueError("merge_aligned needs unique row ids (prompt_id#sample_index) in rows.")
    passed = {row_id(r): r for r in aligned.kept}
    failed = {row_id(r): r for r in aligned.dropped}
    unknown = sorted((passed.keys() | failed.keys()) - positions.keys())
    if unknown:
        raise ValueError(f"Aligned rows {unknown[:5]} are not among the rows to merge into.")

    builder = StageBuilder(stage, n_in=len(rows))
    outcome = []
    for row in rows:
        key = row_id(row)
        if key in passed:
            new = {**passed[key], "align": {**passed[key]["align"], "passed": True}}
            builder.keep(new)
            what = "rewritten, replaces the original" if new["align"]["rewritten"] else "kept as written"
        elif key in failed:
            bad = failed[key]
            info = {**bad["align"], "passed": False, "rewritten": False,
                    "original_thinking": None, "original_answer": None}
            if drop_failed:
                builder.drop({**row, "align": info}, bad["drop_reason"], bad["drop_detail"])
                what = f"dropped ({bad['drop_reason']})"
            else:
                builder.keep({**row, "align": info})
                what = f"original kept ({bad['drop_reason']} ignored)"
        else:
            builder.keep(row)
            continue
        outcome.append({"row": key, "verdict": (passed.get(key) or failed[key])["align"]["verdict"],
                        "outcome": what})
    tables = dict(aligned.tables)
    tables["outcome"] = pd.DataFrame(outcome, columns=["row", "verdict", "outcome"])
    return builder.result(**tables)
