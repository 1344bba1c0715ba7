"""Prove the merge changed nothing: base + adapter and the merged model must generate alike.

Merging is arithmetic, so :func:`check_equivalence` loads both (peft's
``PeftModel`` on the base, unmerged, and the merged folder), generates greedily
for fixed questions and compares the generated tokens (identical, except at a
*near tie* within ``tolerance``) and the logits along the reply (largest absolute
difference within ``tolerance``). A failure raises :class:`EquivalenceError`
naming the question, which stops a notebook.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import Settings, get_settings
from ..models.generation import generate_greedy
from ..models.loading import load_model, load_tokenizer, load_with_adapter
from ..tasks.math import math_messages

DEFAULT_TOLERANCE: dict[str, float] = {"float32": 1e-3, "bfloat16": 1.0, "float16": 1.0}
"""Largest allowed absolute logit difference between base+adapter and the merged model, by dtype."""


class EquivalenceError(AssertionError):
    """The merged model does not behave like base + adapter; the message names the question."""


@dataclass
class PromptCheck:
    """The comparison for one question."""

    question: str
    adapter_reply: str
    merged_reply: str
    new_tokens: int
    identical: bool
    """Same greedy token ids from both models."""
    max_logit_diff: float
    """Largest |logit difference| along the adapter model's reply (same input to both)."""
    first_difference: int | None = None
    """Index of the first differing generated token, if any."""
    tie_gap: float | None = None
    """At that index: the adapter model's logit gap between its token and the merged model's."""
    ok: bool = False


@dataclass
class EquivalenceReport:
    """All questions' checks; ``ok`` when every one passed."""

    checks: list[PromptCheck]
    tolerance: float
    dtype: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[PromptCheck]:
        return [c for c in self.checks if not c.ok]

    def table(self, width: int = 60) -> pd.DataFrame:
        return pd.DataFrame([{
            "question": _clip(c.question, width), "new tokens": c.new_tokens, "identical": c.identical,
            "max |Δlogit|": f"{c.max_logit_diff:.2e}", "first diff": c.first_difference,
            "ok": c.ok, "reply (merged)": _clip(c.merged_reply, width)} for c in self.checks])

    def summary(self) -> dict[str, Any]:
        return {"prompts": len(self.checks), "identical": sum(c.identical for c in self.checks),
                "max_logit_diff": float(max((c.max_logit_diff for c in self.checks), default=0.0)),
                "tolerance": self.tolerance, "dtype": self.dtype, "ok": self.ok}


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def compare_models(adapter_model: Any, merged_model: Any, tokenizer: Any, question: str, *,
                   max_new_tokens: int = 48, tolerance: float = 1e-3,
                   prompt: Callable[[str], list[dict[str, str]]] = math_messages) -> PromptCheck:
    """Greedy outputs and logits of two already loaded models for one question (asked with ``prompt``)."""
    import torch

    chat = [prompt(question)]
    adapter = generate_greedy(adapter_model, tokenizer, chat, max_new_tokens=max_new_tokens)[0]
    merged = generate_greedy(merged_model, tokenizer, chat, max_new_tokens=max_new_tokens)[0]
    new_a, new_m = list(adapter.ids), list(merged.ids)
    n_prompt = adapter.prompt_tokens
    with torch.no_grad():  # both models read the adapter model's reply; the last row predicts its end
        inputs = torch.tensor([list(adapter.prompt_ids) + new_a], device=adapter_model.device)
        logits_a = adapter_model(input_ids=inputs).logits[0, n_prompt - 1:].float()
        logits_m = merged_model(input_ids=inputs).logits[0, n_prompt - 1:].float()
    max_diff = float((logits_a - logits_m).abs().max())
    identical = new_a == new_m
    first = tie_gap = None
    if not identical:
        first = next((i for i, (a, m) in enumerate(zip(new_a, new_m)) if a != m), min(len(new_a), len(new_m)))
        if first < len(new_a) and first < len(new_m):
            row = logits_a[first]
            tie_gap = float(row[new_a[first]] - row[new_m[first]])
    ok = max_diff <= tolerance and (identical or (tie_gap is not None and abs(tie_gap) <= tolerance))
    return PromptCheck(question, adapter.text, merged.text, len(new_a), identical, max_diff, first, tie_gap, ok)


def check_equivalence(base: str | Path, checkpoint: str | Path, merged: str | Path, questions: Sequence[str], *,
                      settings: Settings | None = None, max_new_tokens: int = 48,
                      tolerance: float | None = None, raise_on_failure: bool = True,
                      prompt: Callable[[str], list[dict[str, str]]] = math_messages) -> EquivalenceReport:
    """Compare base + adapter (peft, unmerged) with the merged model on ``questions``.

    Raises :class:`EquivalenceError` naming the first question that differs
    (unless ``raise_on_failure=False``; the report then says which failed).
    """
    settings = settings or get_settings()
    if not questions:
        raise ValueError("check_equivalence needs at least one question.")
    dtype = settings.profile.torch_dtype
    tolerance = DEFAULT_TOLERANCE.get(dtype, 1.0) if tolerance is None else tolerance
    started = time.perf_counter()
    tokenizer = load_tokenizer(merged)
    adapter_model = load_with_adapter(base, checkpoint, settings)
    merged_model = load_model(merged, settings)
    try:
        checks = [compare_models(adapter_model, merged_model, tokenizer, q, max_new_tokens=max_new_tokens,
                                 tolerance=tolerance, prompt=prompt) for q in questions]
    finally:
        del adapter_model, merged_model
    report = EquivalenceReport(checks, tolerance, dtype, time.perf_counter() - started)
    if raise_on_failure and not report.ok:
        bad = report.failures[0]
        where = (f"the replies differ from token {bad.first_difference} (logit gap {bad.tie_gap})"
                 if not bad.identical else "the replies match but the logits do not")
        raise EquivalenceError(
            f"The merged model does not match base + adapter on {len(report.failures)} of {len(checks)} "
            f"question(s). First: {bad.question!r}: {where}; max |Δlogit| {bad.max_logit_diff:.3g} "
            f"(tolerance {tolerance:g}, {dtype}).\n  base+adapter: {bad.adapter_reply!r}\n"
            f"  merged:       {bad.merged_reply!r}\nDo not use this merged folder: merge again with force=True.")
    return report

