"""Stage 1: keep the teacher samples whose answer matches the reference (rejection sampling).

Every row is checked the way its task says (:mod:`helpers.tasks.checks`; a reply in
sections gets its thinking and answer read from them, a right JSON answer keeps exactly the
task's keys) and gets its question's
**pass rate** over its samples: a question the teacher solves 1 time in 8 is hard
(valuable, but its correct samples may be lucky), one it solves 8/8 is easy.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence

import pandas as pd

from ..core.rows import Row, question_key, reply_of, with_reply
from ..tasks.checks import LABEL_TASKS, check_row, check_spec_of, parse_json_answer, reply_parts
from .funnel import StageBuilder, StageResult


def pass_rate_table(rows: Iterable[Row]) -> pd.DataFrame:
    """Per question: samples checked, samples correct and the pass rate.

    Reads the ``verified`` field :func:`verify_stage` adds; rows whose request
    failed (no reply) are not counted as attempts.
    """
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if isinstance(row.get("verified"), dict) and row["verified"].get("correct") is not None:
            groups[question_key(row)].append(row)
    records = []
    for key, group in groups.items():
        first = group[0]
        n_correct = sum(bool(r["verified"]["correct"]) for r in group)
        records.append({
            "prompt_id": key, "question": first.get("question"), "task": first.get("task"),
            "steps": (first.get("meta") or {}).get("steps"), "n_samples": len(group),
            "n_correct": n_correct, "pass_rate": n_correct / len(group),
        })
    return pd.DataFrame(records, columns=["prompt_id", "question", "task", "steps", "n_samples",
                                          "n_correct", "pass_rate"])


def verify_stage(rows: Sequence[Row], *, label_tasks: Collection[str] = LABEL_TASKS,
                 labels: Collection[str] | None = None,
                 keep_unverifiable: bool = False, stage: str = "verify") -> StageResult:
    """Rejection sampling: keep the samples whose answer matches the reference.

    Every row gets ``verified`` (``correct``, ``prediction``, ``method``,
    ``detail``) and its question's ``pass_rate``, ``n_correct`` and
    ``n_samples``. Drop reasons:

    * ``request_failed``: the request errored, there is no reply to check;
    * ``no_reference``: the prompt has no reference (kept instead when
      ``keep_unverifiable=True``, e.g. open-ended tasks);
    * ``no_answer``: no final answer could be read from the answer text;
    * ``wrong_answer``: the final answer does not match the reference.

    The per-question table is in ``result.tables["pass_rates"]``.
    """
    checked: list[Row] = []
    for row in rows:
        out = dict(row)
        if row.get("status") == "error" or not reply_of(row):
            out["verified"] = None
        else:
            out["verified"] = check_row(row, labels=labels).as_dict()
            spec = check_spec_of(row)
            thinking, answer, _ = reply_parts(row, spec)
            if spec.get("verifier") == "fields" and out["verified"]["correct"]:
                # a right answer keeps exactly the task's keys, in order (a small teacher adds junk keys)
                parsed, _ = parse_json_answer(answer)
                answer = json.dumps({f: (parsed or {}).get(f) for f in spec["fields"]}, ensure_ascii=False)
            if spec.get("format") == "sections" or spec.get("verifier") == "fields":
                out = with_reply(out, thinking=thinking or None, answer=answer)  # later stages read these
        checked.append(out)

    table = pass_rate_table(checked)
    by_question = table.set_index("prompt_id").to_dict("index") if len(table) else {}

    builder = StageBuilder(stage, n_in=len(checked))
    for row in checked:
        stats = by_question.get(question_key(row), {})
        row["n_samples"] = int(stats.get("n_samples", 0))
        row["n_correct"] = int(stats.get("n_correct", 0))
        row["pass_rate"] = float(stats["pass_rate"]) if stats else None
        result = row["verified"]
        if result is None and row.get("status") == "truncated":
            builder.drop(row, "truncated", "the reply hit the token limit before any answer (raise TEACHER_MAX_TOKENS)")
        elif result is None:
            builder.drop(row, "request_failed", row.get("error") or f"status {row.get('status')!r}, no reply")
        elif result["correct"] is None:
            if keep_unverifiable:
                builder.keep(row)
            else:
                builder.drop(row, "no_reference", result["detail"])
        elif result["correct"]:
            builder.keep(row)
        elif result["prediction"] is None:
            builder.drop(row, "no_answer", result["detail"])
        else:
            builder.drop(row, "wrong_answer", result["detail"])
    return builder.result(pass_rates=table)

