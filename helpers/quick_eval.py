"""Quick, batched greedy evaluation of local students (base model, + LoRA adapter, or merged).

evalscope (notebook 06) is the course's real evaluation. Chapters that compare
several freshly trained students on a handful of held-out questions (08, 09)
need something lighter: load each model once, generate greedily for a batch of
questions at a time, score the replies with :mod:`helpers.metrics` and count
output tokens with the student's tokenizer. :func:`comparison_table` and
:func:`plot_accuracy_vs_tokens` put the students side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from .config import Settings
from .curate import Row
from .prompts import math_messages


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """``text -> number of tokens`` with ``tokenizer`` (no special tokens): lengths as the student sees them."""
    if not hasattr(tokenizer, "encode"):
        raise TypeError("tokenizer must have an encode(text) method (e.g. a transformers tokenizer)")
    return lambda text: len(tokenizer.encode(text or "", add_special_tokens=False))


@dataclass(frozen=True)
class Student:
    """A model to evaluate: a model folder, optionally with a LoRA checkpoint applied by peft (not merged)."""

    path: Path
    adapter: Path | None = None

    def load(self, settings: Settings | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` loaded for inference (the local server's dtype), eval mode."""
        from .merge import load_model, load_tokenizer, load_with_adapter

        model = (load_with_adapter(self.path, self.adapter, settings, for_inference=True)
                 if self.adapter is not None else load_model(self.path, settings, for_inference=True))
        return model, load_tokenizer(self.path)


@dataclass(frozen=True)
class Generated:
    """One greedy reply: its text, its length in tokens (end-of-text excluded) and why it stopped."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """``"stop"`` (end-of-text token) or ``"length"`` (``max_new_tokens`` reached)."""
    seconds: float
    """The batch's wall time divided by its size: the generation time each reply cost."""


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {i for i in ids if i is not None}


def generate_greedy(model: Any, tokenizer: Any, questions: Sequence[str], *, max_new_tokens: int,
                    batch_size: int = 8, progress: bool = False, desc: str = "generate") -> list[Generated]:
    """Greedy replies to ``questions`` with the training prompt, ``batch_size`` at a time.

    Batches are left-padded (a decoder continues from the right end); on a CPU a
    batch of 8 costs far less than 8 single generations. Greedy decoding gives
    the same text as one at a time up to float rounding.
    """
    import torch

    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = _stop_ids(model, tokenizer)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out: list[Generated] = []
    try:
        starts = range(0, len(questions), batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress):
            batch = list(questions[start:start + batch_size])
            texts = [tokenizer.apply_chat_template(math_messages(q), add_generation_prompt=True, tokenize=False)
                     for q in batch]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = {k: v.to(model.device) for k, v in encoded.items()}
            started = time.perf_counter()
            with torch.no_grad():
                sequences = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                           pad_token_id=pad_id)
            seconds = (time.perf_counter() - started) / len(batch)
            width = encoded["input_ids"].shape[1]
            for i, sequence in enumerate(sequences):
                new = sequence[width:].tolist()
                end = next((j for j, t in enumerate(new) if t in stop), None)
                ids = new if end is None else new[:end]
                out.append(Generated(tokenizer.decode(ids, skip_special_tokens=True).strip(),
                                     int(encoded["attention_mask"][i].sum()), len(ids),
                                     "length" if end is None else "stop", round(seconds, 3)))
    finally:
        tokenizer.padding_side = side
    return out


def evaluate_students(students: Mapping[str, Student], prompts: Sequence[Row], *, max_new_tokens: int,
                      batch_size: int = 8, settings: Settings | None = None,
                      count_tokens: Callable[[str], int] | None = None, progress: bool = True) -> list[Row]:
    """Every student on every prompt row (``helpers.tasks.word_problem_rows(..., shots=0)``), greedy.

    Models are loaded one at a time and freed after use. Returns the course's
    sample rows (:func:`helpers.evaluate.with_eval_fields`: ``model``,
    ``dataset="word_problems"``, ...) plus ``think_tokens``: the reply's thinking
    in the tokens of ``count_tokens`` (default: each model's own tokenizer).
    """
    from .evaluate import with_eval_fields
    from .teacher import normalize_reply

    if not prompts:
        raise ValueError("No prompts to evaluate on.")
    rows: list[Row] = []
    for label, student in students.items():
        model, tokenizer = student.load(settings)
        count = count_tokens or token_counter(tokenizer)
        try:
            replies = generate_greedy(model, tokenizer, [p["question"] for p in prompts],
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

    The columns of :func:`helpers.metrics.metrics_table` plus ``mean_think_tokens``
    (thinking length in student tokens, replies without thinking count 0) and
    ``seconds_per_reply``. ``models`` orders (and selects) the lines.
    """
    from .metrics import item_table, metrics_table

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
