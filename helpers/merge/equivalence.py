"""Prove the merge changed nothing: base + adapter and the merged model must generate alike.

Merging is arithmetic, so :func:`check_equivalence` loads both (peft's
``PeftModel`` on the base, unmerged, and the merged folder), generates greedily
for fixed questions and compares the tokens and the logits along the reply.
float32 must match to the last bits: identical tokens (except at a *near tie*) and
logits within ``tolerance``. bfloat16 rounds the merged weights, so its criterion is
statistical and measured (bench/README.md): the next-token choices along the reply
agree, and the mean and largest logit differences stay under calibrated bounds.
A failure raises :class:`EquivalenceError` naming the question, which stops a notebook.
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

DEFAULT_TOLERANCE: dict[str, float] = {"float32": 1e-3, "bfloat16": 4.0, "float16": 4.0}
"""Largest allowed absolute logit difference between base+adapter and the merged model, by dtype
(bfloat16: measured up to 1.7 on CPU, bounded at 4; float16 has more mantissa bits, same bound)."""

LOW_PRECISION: dict[str, tuple[float, float]] = {"bfloat16": (0.3, 0.9), "float16": (0.3, 0.9)}
"""For rounded dtypes: (largest mean |Δlogit|, smallest share of positions whose next-token choice
agrees). Measured on CPU bfloat16: mean 0.12-0.15, agreement 0.92-1.00."""


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
    mean_logit_diff: float = 0.0
    agreement: float = 1.0
    """Share of the reply's positions where both models pick the same next token (same input)."""
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
            "max |Δlogit|": f"{c.max_logit_diff:.2e}", "mean |Δlogit|": f"{c.mean_logit_diff:.2e}",
            "agreement": round(c.agreement, 3), "first diff": c.first_difference,
            "ok": c.ok, "reply (merged)": _clip(c.merged_reply, width)} for c in self.checks])

    def summary(self) -> dict[str, Any]:
        return {"prompts": len(self.checks), "identical": sum(c.identical for c in self.checks),
                "max_logit_diff": float(max((c.max_logit_diff for c in self.checks), default=0.0)),
                "tolerance": self.tolerance, "dtype": self.dtype, "ok": self.ok}


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def compare_models(adapter_model: Any, merged_model: Any, tokenizer: Any, question: str, *,
                   max_new_tokens: int = 48, tolerance: float = 1e-3, dtype: str = "float32",
                   prompt: Callable[[str], list[dict[str, str]]] = math_messages) -> PromptCheck:
    """Greedy outputs and logits of two already loaded models for one question (asked with ``prompt``).

    ``dtype`` picks the criterion: exact for float32, :data:`LOW_PRECISION` for rounded dtypes.
    """
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
    mean_diff = float((logits_a - logits_m).abs().mean())
    agreement = float((logits_a.argmax(-1) == logits_m.argmax(-1)).float().mean())
    identical = new_a == new_m
    first = tie_gap = None
    if not identical:
        first = next((i for i, (a, m) in enumerate(zip(new_a, new_m)) if a != m), min(len(new_a), len(new_m)))
        if first < len(new_a) and first < len(new_m):
            row = logits_a[first]
            tie_gap = float(row[new_a[first]] - row[new_m[first]])
    if dtype in LOW_PRECISION:
        max_mean, min_agreement = LOW_PRECISION[dtype]
        ok = max_diff <= tolerance and mean_diff <= max_mean and agreement >= min_agreement
    else:
        ok = max_diff <= tolerance and (identical or (tie_gap is not None and abs(tie_gap) <= tolerance))
    return PromptCheck(question, adapter.text, merged.text, len(new_a), identical, max_diff, mean_diff, agreement,
                       first, tie_gap, ok)


def stored_dtype(folder: str | Path) -> str | None:
    """The dtype a model folder's weights were saved in (its config.json), or ``None``."""
    import json

    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text(encoding="utf-8"))
    return data.get("dtype") or data.get("torch_dtype")


def check_equivalence(base: str | Path, checkpoint: str | Path, merged: str | Path, questions: Sequence[str], *,
                      settings: Settings | None = None, max_new_tokens: int = 48,
                      tolerance: float | None = None, dtype: str | None = None, raise_on_failure: bool = True,
                      prompt: Callable[[str], list[dict[str, str]]] = math_messages) -> EquivalenceReport:
    """Compare base + adapter (peft, unmerged) with the merged model on ``questions``.

    Loads both in ``dtype`` (the profile's); the criterion is the low-precision one when
    either that or the merged folder's saved dtype is rounded (bfloat16, float16).
    Raises :class:`EquivalenceError` naming the first question that differs
    (unless ``raise_on_failure=False``; the report then says which failed).
    """
    settings = settings or get_settings()
    if not questions:
        raise ValueError("check_equivalence needs at least one question.")
    dtype = dtype or settings.profile.torch_dtype
    criterion = stored_dtype(merged) if stored_dtype(merged) in LOW_PRECISION else dtype  # rounded once saved
    tolerance = DEFAULT_TOLERANCE.get(criterion, 4.0) if tolerance is None else tolerance
    started = time.perf_counter()
    tokenizer = load_tokenizer(merged)
    adapter_model = load_with_adapter(base, checkpoint, settings, dtype=dtype)
    merged_model = load_model(merged, settings, dtype=dtype)
    try:
        checks = [compare_models(adapter_model, merged_model, tokenizer, q, max_new_tokens=max_new_tokens,
                                 tolerance=tolerance, dtype=criterion, prompt=prompt) for q in questions]
    finally:
        del adapter_model, merged_model
    report = EquivalenceReport(checks, tolerance, criterion, time.perf_counter() - started)
    if raise_on_failure and not report.ok:
        bad = report.failures[0]
        where = (f"the replies differ from token {bad.first_difference} (logit gap {bad.tie_gap})"
                 if not bad.identical else "the replies match but the logits do not")
        raise EquivalenceError(
            f"The merged model does not match base + adapter on {len(report.failures)} of {len(checks)} "
            f"question(s). First: {bad.question!r}: {where}; max |Δlogit| {bad.max_logit_diff:.3g}, mean "
            f"{bad.mean_logit_diff:.3g}, next-token agreement {bad.agreement:.2f} "
            f"(tolerance {tolerance:g}, {dtype}).\n  base+adapter: {bad.adapter_reply!r}\n"
            f"  merged:       {bad.merged_reply!r}\nDo not use this merged folder: merge again with force=True.")
    return report

