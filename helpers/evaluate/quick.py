"""Quick, batched greedy evaluation of local students (base model, + LoRA adapter, or merged).

evalscope (notebook 06) is the course's real evaluation. Chapters that compare
several freshly trained students on a handful of held-out questions (08, 09)
need something lighter: load each model once, generate greedily for a batch of
questions at a time, score the replies with :mod:`helpers.evaluate.metrics` and count
output tokens with the student's tokenizer. :func:`comparison_table` and
:func:`plot_accuracy_vs_tokens` put the students side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import Settings
from ..core.rows import Row
from ..models.generation import generate_greedy, token_counter
from ..models.loading import load_model, load_tokenizer, load_with_adapter
from ..tasks.math import math_messages
from ..teacher.client import normalize_reply
from .metrics import item_table, metrics_table
from .results import with_eval_fields


@dataclass(frozen=True)
class Student:
    """A model to evaluate: a model folder, optionally with a LoRA checkpoint applied by peft (not merged)."""

    path: Path
    adapter: Path | None = None

    def load(self, settings: Settings | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` loaded for inference (the local server's dtype), eval mode."""
        model = (load_with_adapter(self.path, self.adapter, settings, for_inference=True)
                 if self.adapter is not None else load_model(self.path, settings, for_inference=True))
        return model, load_tokenizer(self.path)


def evaluate_students(students: Mapping[str, Student], prompts: Sequence[Row], *, max_new_tokens: int,
                      batch_size: int = 8, settings: Settings | None = None,
                      count_tokens: Callable[[str], int] | None = None, progress: bool = True) -> list[Row]:
    """Every student on every prompt row (``word_problem_rows(..., shots=0)``), greedy, with the training prompt.

    Models are loaded one at a time and freed after use. Returns the course's
    sample rows (:func:`helpers.evaluate.results.with_eval_fields`: ``model``,
    ``dataset="word_problems"``, ...) plus ``think_tokens``: the reply's thinking
    in the tokens of ``count_tokens`` (default: each model's own tokenizer).
    """
    if not prompts:
        raise ValueError("No prompts to evaluate on.")
    rows: list[Row] = []
    for label, student in students.items():
        model, tokenizer = student.load(settings)
        count = count_tokens or token_counter(tokenizer)
        try:
            replies = generate_greedy(model, tokenizer, [math_messages(p["question"]) for p in prompts],
                                      max_new_tokens=max_new_tokens, batch_size=batch_size,
                                      progress=progress, desc=label)
        finally:
            del model
        for prompt, reply in zip(prompts, replies):
            usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
            normalized = normalize_reply(reply.text, None, reply.finish_reason, usage, reply.seconds, label)
            row = {"prompt_id": prompt["id"], "sample_index": 0,
                   "status": "truncated" if reply.finish_reason == "length" else "ok",
                   "question": prompt["question"], "reference": prompt["reference"], "task": prompt["task"],
                   "meta": prompt.get("meta") or {}, "reply": normalized.to_dict(), "error": None}
            row = with_eval_fields(row, label, "word_problems")
            row["think_tokens"] = count(normalized.thinking or "")
            rows.append(row)
    return rows


def comparison_table(rows: Iterable[Row], models: Sequence[str] | None = None) -> pd.DataFrame:
    """Per model: accuracy, format, thinking rate, truncation, mean output and thinking tokens.

    The columns of :func:`helpers.evaluate.metrics.metrics_table` plus ``mean_think_tokens``
    (thinking length in student tokens, replies without thinking count 0) and
    ``seconds_per_reply``. ``models`` orders (and selects) the lines.
    """
    items = item_table(list(rows), extra=["model", "think_tokens", "latency_s"])
    if items.empty:
        raise ValueError("No evaluated rows.")
    table = metrics_table(items, by="model")
    extra = items.groupby("model").agg(mean_think_tokens=("think_tokens", "mean"),
                                       seconds_per_reply=("latency_s", "mean"))
    table = table.join(extra.round({"mean_think_tokens": 1, "seconds_per_reply": 2}))
    if models is not None:
        table = table.reindex([m for m in models if m in table.index])
    return table


def plot_accuracy_vs_tokens(table: pd.DataFrame, *, ax: Any = None, title: str = "") -> Any:
    """Accuracy (y) against mean output tokens (x), one labelled point per model: up and left is better."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4))
    for i, (name, line) in enumerate(table.iterrows()):
        ax.scatter(line["mean_tokens"], line["accuracy"], s=90, color=f"C{i}", zorder=3)
        ax.annotate(f"{name}\n{line['accuracy']:.0%}, {line['mean_tokens']:.0f} tok",
                    (line["mean_tokens"], line["accuracy"]), textcoords="offset points", xytext=(8, 4), fontsize=8)
    right = max(float(table["mean_tokens"].max()) * 1.35, 1.0)
    top = max(float(table["accuracy"].max()) * 1.3, 0.1)
    ax.set(xlim=(0, right), ylim=(-0.02, min(1.05, top)), xlabel="mean output tokens per reply (cost)",
           ylabel="accuracy", title=title or "Accuracy vs output tokens")
    ax.grid(alpha=0.3)
    return ax
