"""The curation pipeline's bookkeeping: stages keep or drop rows, and the funnel they leave behind.

Every curation stage (verification, filters, dedup, decontamination, alignment,
selection) is a function ``rows -> StageResult``. A :class:`StageResult` holds the
rows that survived *and* the rows that did not, each dropped row carrying a
``drop_reason`` (``"refusal"``) and a ``drop_detail`` (``"matches gsm8k-12#0
(Jaccard 0.91)"``). Nothing is lost silently: a stage that returns fewer rows
than it was given fails loudly. :class:`Funnel` turns consecutive results into
the tables and the chart a notebook shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..core.rows import Row, answer_of, row_id, thinking_of
from ..core.text import snippet


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

