"""Stage 5: align the reasoning to what a *small* student can learn (as in DistilQwen).

A chain of thought that suits a large teacher is not always a good lesson for a
1B student: a terse one skips the steps the student cannot do in its head, a
convoluted one (detours, re-checks, "wait, let me ...") teaches it to ramble.
Following the DistilQwen recipe, an LLM judge grades every chain of thought as

* ``too_terse``  -> the teacher *expands* it (adds the missing steps),
* ``right``      -> kept as it is,
* ``too_convoluted`` -> the teacher *shortens* it (long-to-short rewrite).

A rewritten chain is re-verified (its final answer must still be right, see
:func:`helpers.tasks.checks.answer_still_correct`) and graded again in the next round,
up to ``max_rounds`` judge calls per row. Rows never graded ``right`` are
dropped (``alignment_failed``); rows whose judge/rewriter calls all raised are
dropped as ``alignment_error``.

The judge and the rewriter are one callable that answers many chats at once
(the notebook passes the teacher engine's :func:`~helpers.teacher.engine.batch_chat`;
tests pass a scripted fake). The prompts are the files ``data/prompts/align_judge.txt``,
``align_expand.txt`` and ``align_shorten.txt``, loaded with
:func:`helpers.teacher.prompts.load_prompt` (``string.Template`` placeholders
``$question``, ``$thinking``, ``$answer``, ``$feedback``, ``$student``; a literal
dollar sign is written ``$$``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.rows import Row, answer_of, row_id, thinking_of, with_reply
from ..core.text import snippet, words
from ..tasks.checks import Check, answer_still_correct
from ..teacher.client import reply_text
from ..teacher.engine import BatchChat
from ..teacher.prompts import PROMPTS_DIR, PromptTemplate, load_prompt
from .funnel import StageBuilder, StageResult

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
class _RowState:
    """One row's progress through the rounds."""

    row: Row
    thinking: str
    answer: str
    history: list[dict[str, Any]] = field(default_factory=list)
    final: str | None = None
    errors: int = 0
    done: bool = False


def _messages(template: PromptTemplate, state: _RowState, student: str, feedback: str = "") -> list[dict[str, str]]:
    values = {"question": state.row.get("question") or "", "thinking": state.thinking, "answer": state.answer,
              "feedback": feedback or "no details given", "student": student}
    return [{"role": "user", "content": template.render(**{k: v for k, v in values.items() if k in template.variables})}]


def _ask(chat: BatchChat, chats: list[list[dict[str, str]]], what: str) -> list[tuple[str | None, str]]:
    """Send one round of calls; ``(text or None, error)`` per chat. All of them failing means the endpoint is down."""
    if not chats:
        return []
    results = [reply_text(item) for item in chat(chats)]
    if len(results) != len(chats):
        raise ValueError(f"the chat function returned {len(results)} replies for {len(chats)} chats")
    if all(text is None for text, _ in results):
        raise AlignmentAborted(f"every {what} call of this round failed; first error: {results[0][1]}")
    return results


def align_stage(rows: Sequence[Row], chat: BatchChat, *, max_rounds: int = 3, student: str = DEFAULT_STUDENT,
                verify: Callable[[Row, str], Check] | None = None, prompts_dir: Path = PROMPTS_DIR,
                stage: str = "align") -> StageResult:
    """Judge, rewrite and re-judge every row's chain of thought, at most ``max_rounds`` rounds.

    ``chat`` takes a list of chats and returns one reply each (the teacher engine's
    :func:`~helpers.teacher.engine.batch_chat`, or any function for a test): a
    round sends every row's judge call at once, then every rewrite at once.
    Every output row gets ``align = {rounds, verdict, rewritten, original_thinking,
    original_answer, history}``; rewritten rows have ``reply.thinking`` and
    ``reply.answer`` replaced (``reply.raw`` stays the teacher's text).
    ``verify(row, new_answer) -> Check`` decides if a rewrite keeps a right answer
    (default :func:`helpers.tasks.checks.answer_still_correct`). A round in which
    every call fails raises :class:`AlignmentAborted` instead of dropping every row.
    """
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    if not callable(chat):
        raise TypeError("chat must be a callable: list of chats -> list of replies")
    verify = verify or answer_still_correct
    judge = load_prompt("align_judge", prompts_dir)
    rewrites = {"too_terse": load_prompt("align_expand", prompts_dir),
                "too_convoluted": load_prompt("align_shorten", prompts_dir)}
    states = [_RowState(row, thinking_of(row), answer_of(row)) for row in rows]
    for round_no in range(1, max_rounds + 1):
        active = [st for st in states if not st.done]
        if not active:
            break
        for st in active:
            st.history.append({"round": round_no, "verdict": None, "reason": "", "action": None, "ok": False,
                               "note": "", "thinking_words": len(words(st.thinking))})
        to_rewrite: list[tuple[_RowState, str, str]] = []
        for st, (reply, error) in zip(active, _ask(chat, [_messages(judge, st, student) for st in active], "judge")):
            entry = st.history[-1]
            if reply is None:
                st.errors += 1
                entry["note"] = f"judge call failed: {error}"
                continue
            verdict, reason = parse_verdict(reply)
            entry.update(verdict=verdict, reason=reason)
            if verdict is None:
                entry["note"] = reason
                continue
            st.final = verdict
            if verdict == "right":
                entry.update(action="accept", ok=True)
                st.done = True
            elif round_no == max_rounds:
                entry["note"] = "no rounds left to rewrite"
                st.done = True
            else:
                entry["action"] = "expand" if verdict == "too_terse" else "shorten"
                to_rewrite.append((st, verdict, reason))
        chats = [_messages(rewrites[verdict], st, student, reason) for st, verdict, reason in to_rewrite]
        for (st, _, _), (reply, error) in zip(to_rewrite, _ask(chat, chats, "rewrite")):
            entry = st.history[-1]
            if reply is None:
                st.errors += 1
                entry["note"] = f"rewrite call failed: {error}"
                continue
            parsed = parse_rewrite(reply)
            if parsed is None:
                entry["note"] = f"rewrite not in the <reasoning>/<answer> format: {snippet(reply, 80)!r}"
                continue
            check = verify(st.row, parsed[1])
            if not check.correct:
                entry["note"] = f"rewrite rejected, answer no longer verifies ({check.detail})"
                continue
            st.thinking, st.answer = parsed
            entry.update(ok=True, note="rewritten; graded again next round")

    builder = StageBuilder(stage, n_in=len(rows))
    records = []
    for st in states:
        row, reason, detail = _outcome(st)
        if reason is None:
            builder.keep(row)
        else:
            builder.drop(row, reason, detail)
        records.append({"row": row_id(row), "rounds": len(st.history), "verdicts":
                        " -> ".join(str(h["verdict"]) for h in st.history),
                        "rewritten": row["align"]["rewritten"], "kept": reason is None})
    return builder.result(rounds=pd.DataFrame(records, columns=["row", "rounds", "verdicts", "rewritten", "kept"]))


def _outcome(st: _RowState) -> tuple[Row, str | None, str]:
    """The row with its ``align`` record, and the drop reason (``None``: kept)."""
    row = st.row
    rewritten = st.thinking != thinking_of(row) or st.answer != answer_of(row)
    out = with_reply(row, thinking=st.thinking, answer=st.answer) if rewritten else dict(row)
    out["align"] = {"rounds": len(st.history), "verdict": st.final, "rewritten": rewritten,
                    "original_thinking": thinking_of(row) if rewritten else None,
                    "original_answer": answer_of(row) if rewritten else None, "history": st.history}
    if st.history and st.history[-1]["action"] == "accept":
        return out, None, ""
    if st.errors == len(st.history):
        return out, "alignment_error", st.history[-1]["note"]
    return out, "alignment_failed", f"still {st.final or 'no parseable verdict'} after {len(st.history)} round(s)"


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
