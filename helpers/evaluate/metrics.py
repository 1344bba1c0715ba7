"""Score model replies: accuracy, format compliance, length, truncation, and each task's own measures.

One table shape for every place the course compares replies (prompt styles in
notebook 01, the teacher's yield in 02, before/after in 06): one row per group with

* ``n``: replies scored; ``accuracy``: share whose answer is right (a number checked by
  math-verify, a label, or every JSON field; see :mod:`helpers.tasks.checks`)
* ``format_ok``: share with the answer shape the task asks for (a ``\\boxed{}``, a known
  label, the two sections with a JSON object of the right keys)
* ``think_rate``, ``truncated``, ``mean_tokens``: thinking written, cut off, tokens per reply
* ``macro_f1`` (label tasks) and ``micro_f1`` (field tasks), when the task has them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from ..tasks.checks import check_row, check_spec_of, reply_parts

Row = Mapping[str, Any]

_FACTS = ("prompt_id", "sample_index", "task", "steps", "reference", "prediction", "correct", "format_ok",
          "format_problem", "has_thinking", "truncated", "tokens", "verifier", "fields")


def score_row(row: Row) -> dict[str, Any]:
    """Per-reply facts used by :func:`metrics_table` (also handy as a per-item table)."""
    reply = row.get("reply") or {}
    usage = reply.get("usage") or {}
    spec = check_spec_of(row)  # type: ignore[arg-type]
    thinking, _, _ = reply_parts(row, spec) if reply else ("", "", "")  # type: ignore[arg-type]
    if row.get("status") == "error" or not reply:
        correct, prediction, format_ok, problem, fields = False, None, False, "no reply", None
    else:
        check = check_row(row)  # type: ignore[arg-type]
        correct, prediction, fields = bool(check.correct), check.prediction, check.fields
        format_ok = bool(check.format_ok)
        problem = "" if format_ok else (check.detail or "not in the asked format")
    reference = row.get("reference")
    return {
        "prompt_id": row.get("prompt_id"),
        "sample_index": row.get("sample_index", 0),
        "task": row.get("task"),
        "steps": (row.get("meta") or {}).get("steps"),
        "reference": reference if not isinstance(reference, Mapping) else dict(reference),
        "prediction": prediction,
        "correct": correct,
        "format_ok": format_ok,
        "format_problem": problem,
        "has_thinking": bool((thinking or "").strip()),
        "truncated": row.get("status") == "truncated" or reply.get("finish_reason") == "length",
        "tokens": int(usage.get("completion_tokens") or 0),
        "verifier": spec.get("verifier"),
        "fields": fields,
    }


def item_table(rows: Iterable[Row], extra: Sequence[str] = ()) -> pd.DataFrame:
    """One line per reply with the facts :func:`score_row` extracts, plus the ``extra`` row fields."""
    return pd.DataFrame([{**score_row(r), **{k: r.get(k) for k in extra}} for r in rows])


def macro_f1(references: Sequence[Any], predictions: Sequence[Any], labels: Sequence[str] | None = None) -> float:
    """The mean over labels of each label's F1 (a label never predicted nor present is left out)."""
    labels = list(labels) if labels else sorted({str(x) for x in references if x is not None})
    scores = []
    for label in labels:
        tp = sum(r == label and p == label for r, p in zip(references, predictions))
        fp = sum(r != label and p == label for r, p in zip(references, predictions))
        fn = sum(r == label and p != label for r, p in zip(references, predictions))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else float("nan")


def field_counts(outcomes: Iterable[Mapping[str, str] | None], field: str | None = None) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` over replies' field outcomes (``wrong`` counts as one fp and one fn)."""
    tp = fp = fn = 0
    for fields in outcomes:
        for name, outcome in (fields or {}).items():
            if field is not None and name != field:
                continue
            tp += outcome == "tp"
            fp += outcome in ("fp", "wrong")
            fn += outcome in ("fn", "wrong")
    return tp, fp, fn


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def field_f1_table(items: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """Per field (rows) and group (columns): the F1 of the extracted values, plus the micro average."""
    rows = {}
    for group, part in items.groupby(by, dropna=False, sort=False):
        names = sorted({f for fields in part["fields"] if isinstance(fields, Mapping) for f in fields})
        column = {f: _f1(*field_counts(part["fields"], f)) for f in names}
        column["micro_f1"] = _f1(*field_counts(part["fields"]))
        rows[group] = column
    return pd.DataFrame(rows).round(3)


def confusion_table(items: pd.DataFrame, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """References (rows) against predictions (columns); answers that are no label count as ``(none)``."""
    labels = list(labels) if labels else sorted({str(x) for x in items["reference"].dropna()})
    predicted = items["prediction"].where(items["prediction"].isin(labels), "(none)")
    table = pd.crosstab(items["reference"], predicted).reindex(index=labels, columns=labels + ["(none)"],
                                                               fill_value=0)
    table.index.name, table.columns.name = "reference", "predicted"
    return table


def metrics_table(rows: Iterable[Row] | pd.DataFrame, by: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Aggregate replies into accuracy / format / length / truncation (and F1 where the task has one) per group."""
    keys = [by] if isinstance(by, str) else list(by or [])
    items = rows if isinstance(rows, pd.DataFrame) else item_table(rows, extra=[k for k in keys if k not in _FACTS])
    columns = ["n", "accuracy", "format_ok", "think_rate", "truncated", "mean_tokens"]
    if items.empty:
        return pd.DataFrame(columns=columns)
    agg = {"n": ("correct", "size"), "accuracy": ("correct", "mean"), "format_ok": ("format_ok", "mean"),
           "think_rate": ("has_thinking", "mean"), "truncated": ("truncated", "mean"),
           "mean_tokens": ("tokens", "mean")}
    grouped = items.assign(_all="all").groupby(keys or ["_all"], dropna=False)
    table = grouped.agg(**agg)
    verifiers = set(items.get("verifier", pd.Series(dtype=object)).dropna())
    if "label" in verifiers:
        table["macro_f1"] = grouped.apply(lambda g: macro_f1(list(g["reference"]), list(g["prediction"]))
                                          if (g["verifier"] == "label").all() else float("nan"), include_groups=False)
    if "fields" in verifiers:
        table["micro_f1"] = grouped.apply(lambda g: _f1(*field_counts(g["fields"]))
                                          if (g["verifier"] == "fields").all() else float("nan"), include_groups=False)
    if not keys:
        table.index.name = None
    return table.round({c: 3 for c in table.columns if c not in ("n", "mean_tokens")} | {"mean_tokens": 1})
