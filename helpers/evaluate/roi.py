"""Is the distilled student worth it? Quality kept, speed, cost per 1,000 calls, break-even.

Distillation is an investment: you pay once (teacher calls for the data, GPU hours
for training) to replace an expensive model with a cheap one. Four numbers decide
whether that pays off, and this module computes them from the per-item table of
notebook 06 (:func:`helpers.evaluate.results.item_frame`):

* **quality retention**: the student's accuracy over the teacher's, on the same items
  (:func:`retention_table`);
* **latency per answer**: seconds from request to full answer, under the run's
  concurrency (:func:`latency_table`);
* **cost per 1,000 calls** (:func:`cost_table`): an API teacher costs its token price
  (``data/prices.json``, per 1M tokens, via :class:`helpers.teacher.prices.PriceTable`) times
  the tokens each call really used; a self-hosted student costs the hourly price of its
  machine (``data/serving_prices.json``) times the seconds each answer keeps it busy;
* **break-even** (:func:`break_even`): how many calls, and how many months at a given
  monthly volume, until the saving per call has paid back the training cost.

Every price is an editable input: the files are small JSON tables, and each
function also takes plain numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import REPO_ROOT
from ..teacher.prices import PriceTable

SERVING_PRICES_PATH: Path = REPO_ROOT / "data" / "serving_prices.json"
"""Hourly machine prices for self-hosting the student."""


# --------------------------------------------------------------------------- prices


def load_serving_prices(path: str | Path | None = None) -> pd.DataFrame:
    """The machine price table: one row per machine name with ``usd_per_hour`` and a ``note``."""
    path = Path(path) if path is not None else SERVING_PRICES_PATH
    data = json.loads(path.read_text(encoding="utf-8"))
    machines = data.get("machines", []) if isinstance(data, Mapping) else data
    for i, entry in enumerate(machines):
        if not {"name", "usd_per_hour"} <= set(entry):
            raise ValueError(f"{path}: machines[{i}] needs 'name' and 'usd_per_hour'")
        if float(entry["usd_per_hour"]) < 0:
            raise ValueError(f"{path}: machines[{i}] has a negative price")
    return pd.DataFrame(machines).set_index("name")


def usd_per_hour(machine: str, prices: pd.DataFrame | None = None) -> float:
    """The hourly price of ``machine`` in the table (:func:`load_serving_prices`)."""
    prices = load_serving_prices() if prices is None else prices
    if machine not in prices.index:
        raise KeyError(f"No machine {machine!r} in the serving price table; choose one of {list(prices.index)} "
                       f"or add it to {SERVING_PRICES_PATH.name}.")
    return float(prices.loc[machine, "usd_per_hour"])


def api_cost_per_1k(model: str, prompt_tokens: float, completion_tokens: float,
                    prices: PriceTable | str | Path | None = None) -> float | None:
    """USD for 1,000 calls of an API model using these mean token counts per call (``None``: no price known)."""
    table = prices if isinstance(prices, PriceTable) else PriceTable.load(prices)
    return table.cost(model, round(prompt_tokens * 1000), round(completion_tokens * 1000))


def hosted_cost_per_1k(seconds_per_call: float, usd_per_hour_: float) -> float:
    """USD for 1,000 calls of a self-hosted model that is busy ``seconds_per_call`` per answer.

    Use the *throughput* (wall seconds / answers, with the batching the server does),
    not the latency of one answer: a server answering 8 requests at once is busy
    ``latency / 8`` per answer.
    """
    if seconds_per_call < 0 or usd_per_hour_ < 0:
        raise ValueError("seconds per call and the hourly price must not be negative")
    return 1000 * seconds_per_call * usd_per_hour_ / 3600


# --------------------------------------------------------------------------- quality and speed


def quality_retention(student_accuracy: float, teacher_accuracy: float) -> float:
    """Student accuracy over teacher accuracy (1.0: the student keeps all of the teacher's quality).

    ``nan`` when the teacher solved nothing (there is nothing to retain).
    """
    if teacher_accuracy is None or student_accuracy is None or pd.isna(teacher_accuracy) or teacher_accuracy <= 0:
        return float("nan")
    return float(student_accuracy) / float(teacher_accuracy)


def retention_table(metrics: pd.DataFrame, teacher: str, students: Sequence[str]) -> pd.DataFrame:
    """Per dataset: the teacher's accuracy, each student's accuracy and its retention (student / teacher).

    ``metrics`` is indexed by (dataset, model) with an ``accuracy`` column
    (:func:`helpers.evaluate.results.metrics_by_model`).
    """
    acc = metrics["accuracy"].unstack("model")
    if teacher not in acc.columns:
        raise KeyError(f"No teacher {teacher!r} in the metrics; models are {list(acc.columns)}.")
    table = pd.DataFrame({f"{teacher} accuracy": acc[teacher]})
    for student in students:
        table[f"{student} accuracy"] = acc[student]
        table[f"{student} retention"] = [quality_retention(s, t) for s, t in zip(acc[student], acc[teacher])]
    return table.round(3)


def latency_table(items: pd.DataFrame, by: str | Sequence[str] = "model") -> pd.DataFrame:
    """Seconds per answer (mean, median, 90th percentile) and tokens per call, per model.

    Reads the ``latency_s``, ``tokens`` (output) and ``prompt_tokens`` columns of the
    per-item table; failed requests (no latency) are left out.
    """
    keys = [by] if isinstance(by, str) else list(by)
    rows = items.dropna(subset=["latency_s"])
    rows = rows[rows["latency_s"] > 0]
    table = rows.groupby(keys).agg(
        n=("latency_s", "size"), mean_latency_s=("latency_s", "mean"),
        p50_latency_s=("latency_s", "median"), p90_latency_s=("latency_s", lambda s: s.quantile(0.9)),
        mean_prompt_tokens=("prompt_tokens", "mean"), mean_output_tokens=("tokens", "mean"))
    return table.round(2)


# --------------------------------------------------------------------------- cost


def cost_table(items: pd.DataFrame, runs: pd.DataFrame, *, teacher: str, teacher_price_model: str,
               students: Mapping[str, str], prices: PriceTable | str | Path | None = None,
               serving_prices: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cost per 1,000 calls of the teacher (token price of an API model) and of each student (machine hours).

    ``items`` is the per-item table, ``runs`` the wall seconds of each student and dataset
    (``model``, ``n``, ``seconds``); ``students`` maps a student's name to the machine
    it is served on (a name in ``data/serving_prices.json``). The teacher's token counts
    are measured here and priced as ``teacher_price_model`` in ``data/prices.json``.
    """
    lat = latency_table(items)
    busy = runs.groupby("model").agg(n=("n", "sum"), seconds=("seconds", "sum"))
    lines: list[dict[str, Any]] = []
    t = lat.loc[teacher]
    lines.append({"model": teacher, "priced as": f"API: {teacher_price_model} (data/prices.json)",
                  "mean_latency_s": t["mean_latency_s"], "mean_prompt_tokens": t["mean_prompt_tokens"],
                  "mean_output_tokens": t["mean_output_tokens"],
                  "s_per_call": float("nan"),  # an API is priced per token, not per second (and may be cached)
                  "usd_per_1k_calls": api_cost_per_1k(teacher_price_model, t["mean_prompt_tokens"],
                                                      t["mean_output_tokens"], prices)})
    for student, machine in students.items():
        s = lat.loc[student]
        per_call = busy.loc[student, "seconds"] / busy.loc[student, "n"]
        rate = usd_per_hour(machine, serving_prices)
        lines.append({"model": student, "priced as": f"self-hosted: {machine} (${rate:.2f}/h)",
                      "mean_latency_s": s["mean_latency_s"], "mean_prompt_tokens": s["mean_prompt_tokens"],
                      "mean_output_tokens": s["mean_output_tokens"], "s_per_call": round(per_call, 3),
                      "usd_per_1k_calls": hosted_cost_per_1k(per_call, rate)})
    table = pd.DataFrame(lines).set_index("model")
    table["usd_per_1k_calls"] = table["usd_per_1k_calls"].astype(float).round(4)
    return table


@dataclass(frozen=True)
class BreakEven:
    """When does a one-time training cost pay for itself?"""

    training_cost_usd: float
    monthly_calls: int
    teacher_usd_per_1k: float
    student_usd_per_1k: float

    @property
    def saving_per_1k(self) -> float:
        return self.teacher_usd_per_1k - self.student_usd_per_1k

    @property
    def monthly_saving_usd(self) -> float:
        return self.saving_per_1k * self.monthly_calls / 1000

    @property
    def calls(self) -> float:
        """Calls until the savings equal the training cost (``inf``: the student never pays off)."""
        if self.training_cost_usd <= 0:
            return 0.0
        return math.inf if self.saving_per_1k <= 0 else 1000 * self.training_cost_usd / self.saving_per_1k

    @property
    def months(self) -> float:
        if self.training_cost_usd <= 0:
            return 0.0
        if self.monthly_calls <= 0 or self.saving_per_1k <= 0:
            return math.inf
        return self.training_cost_usd / self.monthly_saving_usd

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "saving_per_1k": self.saving_per_1k, "monthly_saving_usd": self.monthly_saving_usd,
                "break_even_calls": self.calls, "break_even_months": self.months}

    def __str__(self) -> str:
        if self.months == 0:
            return "No training cost: the student pays off from the first call."
        if math.isinf(self.months):
            return (f"The student never pays off: it saves ${self.saving_per_1k:.4f} per 1,000 calls "
                    f"(teacher ${self.teacher_usd_per_1k:.4f}, student ${self.student_usd_per_1k:.4f}).")
        return (f"Break-even after {self.calls:,.0f} calls = {self.months:.1f} months at "
                f"{self.monthly_calls:,} calls/month (saving ${self.monthly_saving_usd:,.2f}/month on a "
                f"${self.training_cost_usd:,.2f} training cost).")


def break_even(training_cost_usd: float, teacher_usd_per_1k: float, student_usd_per_1k: float,
               monthly_calls: int) -> BreakEven:
    """The break-even point of replacing the teacher by the student (see :class:`BreakEven`)."""
    if training_cost_usd < 0 or monthly_calls < 0:
        raise ValueError("the training cost and the monthly calls must not be negative")
    return BreakEven(float(training_cost_usd), int(monthly_calls), float(teacher_usd_per_1k),
                     float(student_usd_per_1k))


def plot_break_even(result: BreakEven, months: int | None = None):
    """Cumulative cost over time: teacher calls vs training + student calls, break-even marked."""
    import matplotlib.pyplot as plt
    import numpy as np

    if months is None:
        months = 12 if math.isinf(result.months) else max(3, math.ceil(result.months * 2))
    x = np.linspace(0, months, 200)
    calls_k = result.monthly_calls / 1000 * x
    teacher = result.teacher_usd_per_1k * calls_k
    student = result.training_cost_usd + result.student_usd_per_1k * calls_k
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(x, teacher, label="teacher API")
    ax.plot(x, student, label="training + distilled student")
    if not math.isinf(result.months) and result.months <= months:
        ax.axvline(result.months, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"break-even: {result.months:.1f} months", (result.months, result.training_cost_usd),
                    textcoords="offset points", xytext=(6, 10), fontsize=9)
    ax.set(xlabel=f"months at {result.monthly_calls:,} calls/month", ylabel="cumulative cost (USD)",
           title="Break-even of distillation")
    ax.legend()
    fig.tight_layout()
    return fig


def case_table(metrics: pd.DataFrame, costs: pd.DataFrame, dataset: str,
               models: Sequence[str] = ("teacher", "distilled", "base")) -> pd.DataFrame:
    """Case E's table for one evaluation set: models side by side, one line per measure.

    Quality (accuracy, and micro- or macro-F1 where the task has them), format
    compliance, mean latency and cost per 1,000 calls, as the published case reports it.
    """
    part = metrics.xs(dataset, level="dataset")
    lines = {"accuracy": part["accuracy"]}
    for column in ("micro_f1", "macro_f1"):
        if column in part and part[column].notna().any():
            lines[column.replace("_", "-").replace("micro-f1", "extraction F1 (micro)")
                  .replace("macro-f1", "macro-F1")] = part[column]
    lines["format compliance"] = part["format_ok"]
    lines["latency (s)"] = costs["mean_latency_s"] if "mean_latency_s" in costs else part.get("mean_latency_s")
    lines["USD per 1,000 calls"] = costs["usd_per_1k_calls"]
    table = pd.DataFrame(lines).T
    return table[[m for m in models if m in table.columns]]


def deployment_verdict(retention: float, break_even_months: float, *, min_retention: float = 0.9,
                       max_months: float = 3.0, teacher_quality: float | None = None,
                       min_teacher_quality: float = 0.5) -> str:
    """Case E's rule: deploy the student when it keeps over 90% of the teacher's quality and pays back within 3 months.

    ``teacher_quality`` (0-1, e.g. the teacher's accuracy) guards the rule: retention against a
    teacher below ``min_teacher_quality`` measures the teacher's weakness, not the student's
    strength (0.10 / 0.067 = "retention 1.49"), so no verdict is given then.
    """
    keeps = not pd.isna(retention) and retention > min_retention
    pays = not pd.isna(break_even_months) and break_even_months < max_months
    numbers = (f"retention {retention:.2f} ({'>' if keeps else 'not >'} {min_retention}), break-even "
               f"{break_even_months:.1f} months ({'<' if pays else 'not <'} {max_months})")
    if teacher_quality is not None and not (teacher_quality >= min_teacher_quality):
        return (f"NO VERDICT: the teacher reaches only {teacher_quality:.2f} here (needs {min_teacher_quality}); "
                f"retention against a teacher this weak says nothing ({numbers}). Use a stronger teacher.")
    if keeps and pays:
        return f"DEPLOY the student: {numbers}."
    return f"KEEP the teacher: {numbers}."
