"""Score model replies: accuracy, format compliance, length, truncation.

One table shape for every place the course compares replies (prompt styles in
notebook 01, the teacher's yield in notebook 02, before/after in notebook 06):
one row per group, columns

* ``n``: replies scored
* ``accuracy``: share whose final answer matches the reference (math-verify for
  numbers, normalised match for labels; see :mod:`helpers.tasks.checks`)
* ``format_ok``: share with an extractable final answer (a ``\\boxed{}`` for
  math, an answer for labels) - a model can be right by luck without it
* ``think_rate``: share that wrote a chain of thought
* ``truncated``: share cut off by the token limit
* ``mean_tokens``: mean completion tokens (what each answer costs)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from ..tasks.checks import check_row
from ..teacher.parsing import extract_boxed

Row = Mapping[str, Any]


_FACTS = ("prompt_id", "sample_index", "task", "steps", "reference", "prediction", "correct", "format_ok",
          "has_thinking", "truncated", "tokens")


def score_row(row: Row) -> dict[str, Any]:
    """Per-reply facts used by :func:`metrics_table` (also handy as a per-item table)."""
    reply = row.get("reply") or {}
    answer = reply.get("answer") or ""
    task = row.get("task")
    usage = reply.get("usage") or {}
    if row.get("status") == "error" or not reply:
        correct, prediction, has_answer = False, None, False
    else:
        check = check_row(row) if row.get("reference") is not None else None
        correct = bool(check and check.correct)
        prediction = check.prediction if check else None
        has_answer = extract_boxed(answer) is not None if task != "classification" else bool(answer.strip())
    return {
        "prompt_id": row.get("prompt_id"),
        "sample_index": row.get("sample_index", 0),
        "task": task,
        "steps": (row.get("meta") or {}).get("steps"),
        "reference": row.get("reference"),
        "prediction": prediction,
        "correct": correct,
        "format_ok": has_answer,
        "has_thinking": bool((reply.get("thinking") or "").strip()),
        "truncated": row.get("status") == "truncated" or reply.get("finish_reason") == "length",
        "tokens": int(usage.get("completion_tokens") or 0),
    }


def item_table(rows: Iterable[Row], extra: Sequence[str] = ()) -> pd.DataFrame:
    """One line per reply with the facts :func:`score_row` extracts, plus the ``extra`` row fields."""
    return pd.DataFrame([{**score_row(r), **{k: r.get(k) for k in extra}} for r in rows])


def metrics_table(rows: Iterable[Row] | pd.DataFrame, by: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Aggregate replies into accuracy / format / length / truncation per group."""
    keys = [by] if isinstance(by, str) else list(by or [])
    items = rows if isinstance(rows, pd.DataFrame) else item_table(rows, extra=[k for k in keys if k not in _FACTS])
    if items.empty:
        return pd.DataFrame(columns=["n", "accuracy", "format_ok", "think_rate", "truncated", "mean_tokens"])
    grouped = items.groupby(keys, dropna=False) if keys else None
    agg = {"n": ("correct", "size"), "accuracy": ("correct", "mean"), "format_ok": ("format_ok", "mean"),
           "think_rate": ("has_thinking", "mean"), "truncated": ("truncated", "mean"),
           "mean_tokens": ("tokens", "mean")}
    if grouped is None:
        table = items.assign(_all="all").groupby("_all").agg(**agg)
        table.index.name = None
    else:
        table = grouped.agg(**agg)
    return table.round({"accuracy": 3, "format_ok": 3, "think_rate": 3, "truncated": 3, "mean_tokens": 1})
