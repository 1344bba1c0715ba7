"""The curation pipeline: stages that keep or drop rows, and the funnel they leave behind.

Every curation stage (verification, quality filters, deduplication,
decontamination, reasoning alignment, selection) is a plain function
``rows -> StageResult``. A :class:`StageResult` holds the rows that survived
*and* the rows that did not, each dropped row carrying a ``drop_reason`` (a
short machine-friendly label such as ``"refusal"``) and a ``drop_detail`` (a
human sentence such as ``"matches gsm8k-12#0 (Jaccard 0.91)"``). Nothing is
lost silently: a stage that returns fewer rows than it was given fails loudly.

:class:`Funnel` collects the results of consecutive stages and turns them into
the tables a notebook shows: rows in / kept / dropped per stage and per reason
(ready for a funnel chart), and a few example drops per reason so a learner can
judge whether a filter is too strict.

The module also holds the small row helpers every stage shares (reading the
thinking and answer of a sample row, normalising text, splitting words) so the
stage modules never copy them.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd
from tqdm.auto import tqdm

Row = dict[str, Any]
"""One sample row (see the data contract in the course README): a dict."""

Stage = Callable[[list[Row]], "StageResult"]
T = TypeVar("T")
R = TypeVar("R")
"""A curation stage: takes rows, returns a :class:`StageResult`."""

# --------------------------------------------------------------------------- row helpers


def row_id(row: Row) -> str:
    """A short, stable name for a sample row: ``"<prompt_id>#<sample_index>"``.

    Used in drop details ("duplicate of ...") and example tables.
    """
    prompt_id = row.get("prompt_id", row.get("id", "?"))
    index = row.get("sample_index")
    return f"{prompt_id}#{index}" if index is not None else str(prompt_id)


def question_key(row: Row) -> str:
    """What identifies the *question* of a row: its prompt id, else its question text.

    All samples of one prompt share this key (pass rates, splits and selection
    work per question, not per sample).
    """
    key = row.get("prompt_id", row.get("id"))
    return str(key) if key is not None else normalise_text(row.get("question") or "")


def reply_of(row: Row) -> dict[str, Any]:
    """The ``reply`` dict of a sample row, or an empty dict for failed requests."""
    reply = row.get("reply")
    return reply if isinstance(reply, dict) else {}


def thinking_of(row: Row) -> str:
    """The chain of thought of a sample row (``""`` when there is none)."""
    return reply_of(row).get("thinking") or ""


def answer_of(row: Row) -> str:
    """The answer part of a sample row, i.e. the reply after the thinking (``""`` if none)."""
    return reply_of(row).get("answer") or ""


def field_of(row: Row, key: str) -> Any:
    """``row[key]`` if the row has it, else ``row["meta"][key]`` (e.g. ``steps``), else ``None``."""
    return row[key] if key in row else (row.get("meta") or {}).get(key)


def natural_key(value: Any) -> tuple[int, Any]:
    """A sort key putting numbers first in numeric order (2 before 10), then text, then None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value)) if value is not None else (2, "")


def with_reply(row: Row, **changes: Any) -> Row:
    """A deep copy of ``row`` whose ``reply`` has ``changes`` applied (e.g. a rewritten thinking)."""
    new = copy.deepcopy(row)
    reply = dict(reply_of(new))
    reply.update(changes)
    new["reply"] = reply
    return new


# --------------------------------------------------------------------------- text helpers

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


# --------------------------------------------------------------------------- stage results


def mark_dropped(row: Row, stage: str, reason: str, detail: str = "") -> Row:
    """A copy of ``row`` labelled with why ``stage`` dropped it."""
    out = dict(row)
    out["drop_stage"] = stage
    out["drop_reason"] = reason
    out["drop_detail"] = detail
    return out


@dataclass
class StageResult:
    """What one curation stage did: the kept rows, the dropped rows, and extra tables.

    ``dropped`` rows always carry ``drop_stage``, ``drop_reason`` and
    ``drop_detail``. ``tables`` holds stage-specific reports (e.g. per-question
    pass rates, the decontamination overlaps) as pandas DataFrames.
    """

    stage: str
    kept: list[Row]
    dropped: list[Row] = field(default_factory=list)
    n_in: int | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_in is None:
            self.n_in = len(self.kept) + len(self.dropped)
        if self.n_in != len(self.kept) + len(self.dropped):
            raise ValueError(
                f"Stage {self.stage!r} lost rows: {self.n_in} in, but {len(self.kept)} kept + "
                f"{len(self.dropped)} dropped. Every row must be kept or dropped with a reason."
            )
        for row in self.dropped:
            if not row.get("drop_reason"):
                raise ValueError(
                    f"Stage {self.stage!r} dropped row {row_id(row)} without a drop_reason."
                )

    @property
    def n_kept(self) -> int:
        return len(self.kept)

    @property
    def n_dropped(self) -> int:
        return len(self.dropped)

    @property
    def drop_counts(self) -> dict[str, int]:
        """Dropped rows per reason, most frequent first."""
        return dict(Counter(r["drop_reason"] for r in self.dropped).most_common())

    def summary(self) -> str:
        """One line, e.g. ``"filters: 100 in, 90 kept, 10 dropped (refusal 6, truncated 4)"``."""
        reasons = ", ".join(f"{k} {v}" for k, v in self.drop_counts.items())
        return (f"{self.stage}: {self.n_in} in, {self.n_kept} kept, {self.n_dropped} dropped"
                + (f" ({reasons})" if reasons else ""))

    def __repr__(self) -> str:
        return f"StageResult({self.summary()})"


class StageBuilder:
    """Collects keep/drop decisions inside a stage and builds the :class:`StageResult`.

    >>> b = StageBuilder("filters", n_in=2)
    >>> b.keep({"prompt_id": "a"}); b.drop({"prompt_id": "b"}, "refusal", "says 'I cannot'")
    >>> b.result().summary()
    'filters: 2 in, 1 kept, 1 dropped (refusal 1)'
    """

    def __init__(self, stage: str, n_in: int | None = None) -> None:
        self.stage = stage
        self.n_in = n_in
        self.kept: list[Row] = []
        self.dropped: list[Row] = []

    def keep(self, row: Row) -> None:
        self.kept.append(row)

    def drop(self, row: Row, reason: str, detail: str = "") -> None:
        self.dropped.append(mark_dropped(row, self.stage, reason, detail))

    def result(self, **tables: pd.DataFrame) -> StageResult:
        return StageResult(self.stage, self.kept, self.dropped, n_in=self.n_in, tables=tables)


# --------------------------------------------------------------------------- funnel


class Funnel:
    """The record of a curation run: one :class:`StageResult` per stage, in order.

    ``funnel.table()`` is the funnel (stage, in, kept, dropped and one column per
    drop reason); ``funnel.examples()`` shows a few dropped rows per reason;
    ``funnel.plot()`` draws the funnel as a horizontal bar chart.
    """

    def __init__(self, results: Iterable[StageResult] = ()) -> None:
        self.results: list[StageResult] = list(results)

    def add(self, result: StageResult) -> StageResult:
        if self.results and result.n_in != self.results[-1].n_kept:
            raise ValueError(
                f"Stage {result.stage!r} received {result.n_in} rows but the previous stage "
                f"{self.results[-1].stage!r} kept {self.results[-1].n_kept}: rows went missing "
                "between stages."
            )
        self.results.append(result)
        return result

    def __getitem__(self, stage: str) -> StageResult:
        for result in self.results:
            if result.stage == stage:
                return result
        raise KeyError(f"No stage {stage!r}; stages: {[r.stage for r in self.results]}")

    @property
    def dropped(self) -> list[Row]:
        """Every dropped row of every stage."""
        return [row for result in self.results for row in result.dropped]

    def table(self) -> pd.DataFrame:
        """One row per stage: ``stage, in, kept, dropped`` then a count column per drop reason."""
        reasons: list[str] = []
        for result in self.results:
            reasons += [r for r in result.drop_counts if r not in reasons]
        records = []
        for result in self.results:
            counts = result.drop_counts
            records.append({"stage": result.stage, "in": result.n_in, "kept": result.n_kept,
                            "dropped": result.n_dropped,
                            **{reason: counts.get(reason, 0) for reason in reasons}})
        return pd.DataFrame(records, columns=["stage", "in", "kept", "dropped", *reasons])

    def reasons(self) -> pd.DataFrame:
        """Long format: ``stage, reason, count`` (handy for grouped bar charts)."""
        records = [{"stage": r.stage, "reason": reason, "count": count}
                   for r in self.results for reason, count in r.drop_counts.items()]
        return pd.DataFrame(records, columns=["stage", "reason", "count"])

    def examples(self, per_reason: int = 2, width: int = 100) -> pd.DataFrame:
        """Up to ``per_reason`` dropped rows for each (stage, reason), shortened for display."""
        records = []
        for result in self.results:
            seen: Counter[str] = Counter()
            for row in result.dropped:
                reason = row["drop_reason"]
                if seen[reason] >= per_reason:
                    continue
                seen[reason] += 1
                records.append({
                    "stage": result.stage, "reason": reason, "row": row_id(row),
                    "detail": snippet(row.get("drop_detail"), width),
                    "question": snippet(row.get("question"), width),
                    "thinking": snippet(thinking_of(row), width),
                    "answer": snippet(answer_of(row), width),
                })
        return pd.DataFrame(records, columns=["stage", "reason", "row", "detail", "question",
                                              "thinking", "answer"])

    def plot(self, ax: Any = None, title: str = "Curation funnel") -> Any:
        """A horizontal bar per stage (rows kept), the first bar being the input size."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 0.5 * (len(self.results) + 1) + 1))
        if not self.results:
            raise ValueError("The funnel is empty: run at least one stage first.")
        labels = ["input"] + [r.stage for r in self.results]
        values = [self.results[0].n_in] + [r.n_kept for r in self.results]
        bars = ax.barh(labels[::-1], values[::-1], color="tab:blue")
        ax.bar_label(bars, padding=3)
        ax.set_xlabel("rows")
        ax.set_title(title)
        return ax


def map_with_progress(work: Callable[[T], R], items: Sequence[T], *, max_workers: int = 1,
                      desc: str = "", progress: bool = True) -> list[R]:
    """``[work(item) for item in items]`` in order, on ``max_workers`` threads, with a progress bar.

    For stages that call a model once per row (the alignment judge, the
    long-to-short rewriter): the calls wait on the network, so threads overlap
    them. An exception in ``work`` stops the map and propagates (after the bar is closed).
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers}")
    bar = tqdm(total=len(items), desc=desc, disable=not progress)

    def one(item: T) -> R:
        try:
            return work(item)
        finally:
            bar.update(1)

    try:
        if max_workers > 1:
            with ThreadPoolExecutor(max_workers=max_workers) as pool:
                return list(pool.map(one, items))
        return [one(item) for item in items]
    finally:
        bar.close()


def run_pipeline(rows: Sequence[Row], stages: Sequence[tuple[str, Stage] | Stage],
                 funnel: Funnel | None = None, verbose: bool = True) -> tuple[list[Row], Funnel]:
    """Run stages one after the other, each on the previous stage's kept rows.

    ``stages`` are functions ``rows -> StageResult`` (use ``functools.partial`` or
    a lambda to fix their options), optionally paired with a display name that
    overrides the stage name. Returns the final rows and the :class:`Funnel`.
    """
    funnel = funnel if funnel is not None else Funnel()
    current = list(rows)
    for item in stages:
        name, stage = item if isinstance(item, tuple) else (None, item)
        result = stage(current)
        if not isinstance(result, StageResult):
            raise TypeError(f"Stage {name or stage!r} returned {type(result).__name__}, "
                            "expected a StageResult.")
        if result.n_in != len(current):
            raise ValueError(f"Stage {result.stage!r} reports {result.n_in} rows in, "
                             f"but was given {len(current)}.")
        if name:
            result.stage = name
            for row in result.dropped:
                row["drop_stage"] = name
        funnel.add(result)
        if verbose:
            print(result.summary())
        current = result.kept
    return current, funnel
