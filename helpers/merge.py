r"""Merge the LoRA adapter into the student, prove the merge changed nothing, and chat side by side.

**Merge.** A LoRA checkpoint holds only the small update matrices; serving it
needs the base model *plus* peft. ``swift export --adapters <ckpt> --merge_lora
true`` adds ``B·A·alpha/r`` into the base weights and saves an ordinary model
folder next to the checkpoint: ms-swift 4.6 sets its ``output_dir`` to
``<ckpt>-merged`` when none is given (verified by running it, and in
``swift/arguments/export_args.py``).
:func:`merge_adapter` runs it with the same streaming as training, reuses a
finished merge, and checks that the folder is where swift said it wrote it.

**Equivalence.** Merging is arithmetic, so the merged model must behave like
base + adapter. :func:`check_equivalence` loads both (peft's ``PeftModel`` on
the base model, unmerged, and the merged folder), generates greedily for a
fixed list of questions and compares

* the generated token ids: they must be identical, except at a *near tie*
  (the adapter model's two candidate tokens within ``tolerance`` of each other,
  where rounding may pick either), and
* the logits along the adapter model's output (both models read the same
  tokens): the largest absolute difference must be within ``tolerance``.

Tolerances: ``1e-3`` in float32 (measured on the CPU profile: ~1e-4); ``1.0``
in bfloat16/float16, where the merged weights ``W + ΔW`` are rounded to
bfloat16 once more than the unmerged sum (a default, not a measurement: no GPU
was available when this was written). A failure
raises :class:`EquivalenceError` naming the question, which stops a notebook.

**Side by side.** :class:`LocalChat` answers a question with a local model
(greedy, the training prompt), :func:`teacher_responder` with the configured
teacher API, :func:`compare_answers` puts several models' replies and their
correctness in one table, :func:`format_side_by_side` prints it as plain text
(meaningful in a headless run), and :func:`chat_view` is the same comparison
as an ipywidgets view with a text box.

:func:`latest_merged_model` tells later notebooks (06) where the distilled
student is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Settings, TeacherEndpoint, get_settings
from .prompts import math_messages
from .train import (ConsolePrinter, default_output_dir, final_checkpoint, format_command, hub_env, run_swift,
                    swift_module_argv)

Message = dict[str, str]

# --------------------------------------------------------------------------- merge

MERGED_SUFFIX = "-merged"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class MergeError(RuntimeError):
    """The merge did not produce a usable model folder."""


def merged_dir(checkpoint: str | Path) -> Path:
    """Where ``swift export --merge_lora true`` writes: ``<checkpoint>-merged`` next to it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + MERGED_SUFFIX)


def is_merged_model(path: str | Path) -> bool:
    """A complete model folder: config, weights and tokenizer."""
    path = Path(path)
    return ((path / "config.json").is_file() and any((path / name).is_file() for name in WEIGHT_FILES)
            and (path / "tokenizer_config.json").is_file())


def merge_args(checkpoint: str | Path, *, overwrite: bool = False) -> list[str]:
    """The ``swift export`` arguments that merge a LoRA checkpoint.

    The base model, its type, template and dtype come from the checkpoint's
    ``args.json``, so the adapter alone is enough.
    """
    args = ["--adapters", str(checkpoint), "--merge_lora", "true"]
    if overwrite:
        args += ["--exist_ok", "true"]
    return args


def merge_command(checkpoint: str | Path, *, overwrite: bool = False) -> str:
    """The merge as a command to paste into a terminal."""
    return format_command("swift export", merge_args(checkpoint, overwrite=overwrite))


@dataclass
class MergeResult:
    """Where the merged model went and how long it took."""

    checkpoint: Path
    path: Path
    seconds: float
    reused: bool
    command: str
    console_log: Path | None = None

    def files(self) -> pd.DataFrame:
        """The merged folder's files and sizes."""
        return pd.DataFrame([{"file": p.name, "MB": round(p.stat().st_size / 1e6, 2)}
                             for p in sorted(self.path.iterdir()) if p.is_file()])


def merge_adapter(checkpoint: str | Path, *, settings: Settings | None = None, force: bool = False,
                  on_output: Callable[[str, bool], None] | None = None) -> MergeResult:
    """Merge ``checkpoint`` into its base model with ``swift export``; reuse a finished merge.

    ``force`` merges again over an existing folder. Raises :class:`MergeError`
    when swift fails or the merged folder is not where expected.
    """
    settings = settings or get_settings()
    checkpoint = Path(checkpoint)
    if not (checkpoint / "adapter_config.json").is_file():
        raise MergeError(f"{checkpoint} holds no LoRA adapter (no adapter_config.json); "
                         "pass a checkpoint-N folder of a LoRA run.")
    target = merged_dir(checkpoint)
    if is_merged_model(target) and not force:
        return MergeResult(checkpoint, target, 0.0, True, merge_command(checkpoint))
    overwrite = target.exists()  # a half-written folder of an interrupted merge, or force
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    log_path = settings.logs_dir / f"swift-export-{stamp}.log"
    argv = swift_module_argv("export", merge_args(checkpoint, overwrite=overwrite))
    run = run_swift(argv, env=hub_env(settings), log_path=log_path,
                    on_output=on_output or ConsolePrinter(log_path=log_path))
    if run.returncode != 0:
        raise MergeError(f"swift export exited with code {run.returncode}.\nFull log: {log_path}\n"
                         f"Last lines:\n{run.tail()}")
    announced = run.find(r"Successfully merged LoRA and saved in `(.+?)`")
    if announced is not None and Path(announced).resolve() != target.resolve():
        raise MergeError(f"swift wrote the merged model to {announced}, not to {target} as expected.")
    if not is_merged_model(target):
        raise MergeError(f"No complete model folder at {target} after the merge (see {log_path}).")
    return MergeResult(checkpoint, target, run.seconds, False, merge_command(checkpoint, overwrite=overwrite),
                       log_path)


def latest_merged_model(settings: Settings | None = None) -> Path | None:
    """The merged model of the newest *finished* training run of this profile, or None.

    That is ``<final checkpoint>-merged`` under ``runs/sft-<profile>/`` (notebook
    04 trains, notebook 05 merges). An older run's merge is never returned: after
    a new training run, the distilled model exists only once it is merged.
    """
    settings = settings or get_settings()
    try:
        checkpoint = final_checkpoint(default_output_dir(settings))
    except FileNotFoundError:
        return None
    target = merged_dir(checkpoint)
    return target if is_merged_model(target) else None


# --------------------------------------------------------------------------- loading and generating


def _torch_dtype(settings: Settings) -> Any:
    import torch

    return getattr(torch, settings.profile.torch_dtype)


def load_model(path: str | Path, settings: Settings | None = None, *, for_inference: bool = False) -> Any:
    """A causal LM on the profile's device, in eval mode.

    In the profile's dtype by default (what training used: the merge check compares
    like with like). ``for_inference=True`` loads it the way the local server runs
    models (:func:`helpers.server.serving_precision`: bfloat16 on CPUs that compute it
    natively), for evaluations and chats where only speed changes.
    """
    from transformers import AutoModelForCausalLM

    settings = settings or get_settings()
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(settings)}
    if for_inference:
        import torch

        from .server import serving_precision

        dtype, attention = serving_precision(settings)
        kwargs["dtype"] = getattr(torch, dtype)
        if attention:
            kwargs["attn_implementation"] = attention
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model.to(settings.profile.device).eval()


def load_with_adapter(base: str | Path, checkpoint: str | Path, settings: Settings | None = None, *,
                      for_inference: bool = False) -> Any:
    """The base model with the LoRA adapter applied by peft, *not* merged."""
    from peft import PeftModel

    model = load_model(base, settings, for_inference=for_inference)
    return PeftModel.from_pretrained(model, str(checkpoint)).eval()


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _encode(tokenizer: Any, messages: Sequence[Message], device: str) -> dict[str, Any]:
    encoded = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    return {k: v.to(device) for k, v in encoded.items()}


def greedy_ids(model: Any, tokenizer: Any, messages: Sequence[Message], max_new_tokens: int) -> tuple[Any, int]:
    """Greedy generation: the full token sequence (prompt + reply) and the prompt length."""
    import torch

    encoded = _encode(tokenizer, messages, str(model.device))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    return out[0], int(encoded["input_ids"].shape[1])


def question_messages(question: str) -> list[Message]:
    """The zero-shot training prompt (system + user) for a question: what the student learned."""
    return math_messages(question)


# --------------------------------------------------------------------------- equivalence

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
                   max_new_tokens: int = 48, tolerance: float = 1e-3) -> PromptCheck:
    """Greedy outputs and logits of two already loaded models for one question."""
    import torch

    messages = question_messages(question)
    seq_a, n_prompt = greedy_ids(adapter_model, tokenizer, messages, max_new_tokens)
    seq_m, _ = greedy_ids(merged_model, tokenizer, messages, max_new_tokens)
    new_a, new_m = seq_a[n_prompt:].tolist(), seq_m[n_prompt:].tolist()
    with torch.no_grad():
        inputs = seq_a.unsqueeze(0)
        logits_a = adapter_model(input_ids=inputs).logits[0, n_prompt - 1:-1].float()
        logits_m = merged_model(input_ids=inputs).logits[0, n_prompt - 1:-1].float()
    max_diff = float((logits_a - logits_m).abs().max()) if len(new_a) else 0.0
    identical = new_a == new_m
    first = tie_gap = None
    if not identical:
        first = next((i for i, (a, m) in enumerate(zip(new_a, new_m)) if a != m), min(len(new_a), len(new_m)))
        if first < len(new_a) and first < len(new_m):
            row = logits_a[first]
            tie_gap = float(row[new_a[first]] - row[new_m[first]])
    ok = max_diff <= tolerance and (identical or (tie_gap is not None and abs(tie_gap) <= tolerance))
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
    return PromptCheck(question, decode(new_a), decode(new_m), len(new_a), identical, max_diff, first, tie_gap, ok)


def check_equivalence(base: str | Path, checkpoint: str | Path, merged: str | Path, questions: Sequence[str], *,
                      settings: Settings | None = None, max_new_tokens: int = 48,
                      tolerance: float | None = None, raise_on_failure: bool = True) -> EquivalenceReport:
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
                                 tolerance=tolerance) for q in questions]
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


# --------------------------------------------------------------------------- side-by-side chat

Responder = Callable[[str], str]
"""A model as a function: question -> reply text (``<think>`` included when it thinks)."""


@dataclass
class LocalChat:
    """A local model answering with greedy decoding and the training prompt.

    ``shots`` (few-shot user/assistant turns) turn the base student into the
    offline profile's *teacher*: the same model shown worked examples.
    """

    model: Any
    tokenizer: Any
    max_new_tokens: int = 256
    shots: list[Message] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path, settings: Settings | None = None, **kwargs: Any) -> "LocalChat":
        return cls(load_model(path, settings, for_inference=True), load_tokenizer(path), **kwargs)

    def messages(self, question: str) -> list[Message]:
        return math_messages(question, shots=self.shots)

    def __call__(self, question: str) -> str:
        seq, n_prompt = greedy_ids(self.model, self.tokenizer, self.messages(question), self.max_new_tokens)
        return self.tokenizer.decode(seq[n_prompt:], skip_special_tokens=True).strip()


def teacher_responder(endpoint: TeacherEndpoint, max_tokens: int = 2048) -> Responder:
    """The configured teacher API as a responder (its reasoning shown inside ``<think>``)."""
    from .teacher import chat

    def answer(question: str) -> str:
        reply = chat(endpoint, math_messages(question), temperature=0.0, max_tokens=max_tokens)
        return f"<think>\n{reply.thinking}\n</think>\n\n{reply.answer}" if reply.thinking else reply.answer

    return answer


def grade(reply: str, reference: str | None) -> tuple[str | None, bool | None]:
    """The final answer read from a reply (outside ``<think>``) and whether it equals ``reference``."""
    from .parsing import split_thinking
    from .verify import extract_prediction, verify_math

    answer = split_thinking(reply, expect_boxed=False).answer
    if reference is None:
        return extract_prediction(answer), None
    check = verify_math(str(reference), answer)
    return check.prediction, check.correct


def compare_answers(questions: Sequence[Mapping[str, Any] | str], responders: Mapping[str, Responder]) -> pd.DataFrame:
    """Every responder on every question: one row per (question, model).

    ``questions`` are strings or dicts with ``question`` and ``reference``.
    Columns: question, reference, model, answer (final number read), correct,
    seconds, reply.
    """
    rows = []
    for item in questions:
        question = item if isinstance(item, str) else item["question"]
        reference = None if isinstance(item, str) else item.get("reference")
        for name, respond in responders.items():
            started = time.perf_counter()
            try:
                reply = respond(question)
            except Exception as exc:  # one failing model (a teacher API) must not hide the others
                reply = f"[error: {type(exc).__name__}: {exc}]"
            prediction, correct = grade(reply, reference)
            rows.append({"question": question, "reference": reference, "model": name, "answer": prediction,
                         "correct": correct, "seconds": round(time.perf_counter() - started, 1), "reply": reply})
    return pd.DataFrame(rows, columns=["question", "reference", "model", "answer", "correct", "seconds", "reply"])


def format_side_by_side(table: pd.DataFrame, width: int = 100, max_reply_chars: int = 600) -> str:
    """The comparison as plain text: each question, then each model's reply and verdict."""
    import textwrap

    out: list[str] = []
    for question, group in table.groupby("question", sort=False):
        reference = group["reference"].iloc[0]
        out.append("=" * width)
        out.append(textwrap.fill(f"Q: {question}", width) + (f"\n(reference: {reference})" if reference else ""))
        for _, row in group.iterrows():
            verdict = {True: "correct", False: "wrong", None: "not checked"}[row["correct"]]
            out.append(f"-- {row['model']} · answer {row['answer']} · {verdict} · {row['seconds']} s")
            reply = row["reply"] if len(row["reply"]) <= max_reply_chars else row["reply"][:max_reply_chars] + " …"
            out.extend(textwrap.fill(line, width, initial_indent="   ", subsequent_indent="   ") or ""
                       for line in reply.splitlines())
    return "\n".join(out)


def chat_view(responders: Mapping[str, Responder], question: str = "") -> Any:
    """An ipywidgets view: a text box, an Ask button, one column per model.

    Each column shows the reply (``<think>`` in grey) and the answer read from
    it. Answers are computed one model after the other when Ask is pressed.
    """
    import html

    import ipywidgets as widgets

    box = widgets.Textarea(value=question, placeholder="Ask a math word problem…",
                           layout=widgets.Layout(width="100%", height="70px"))
    button = widgets.Button(description="Ask all models", button_style="primary")
    columns = {name: widgets.HTML(value=f"<b>{html.escape(name)}</b>",
                                  layout=widgets.Layout(width=f"{100 // max(len(responders), 1) - 1}%",
                                                        border="1px solid #ddd", padding="6px"))
               for name in responders}

    def render(name: str, reply: str, seconds: float) -> str:
        from .parsing import split_thinking

        parsed = split_thinking(reply, expect_boxed=False)
        thinking = (f"<div style='color:#888;white-space:pre-wrap'>{html.escape(parsed.thinking)}</div>"
                    if parsed.thinking else "")
        prediction, _ = grade(reply, None)
        return (f"<b>{html.escape(name)}</b> <small>({seconds:.1f} s, answer: {html.escape(str(prediction))})</small>"
                f"{thinking}<div style='white-space:pre-wrap'>{html.escape(parsed.answer)}</div>")

    def ask(_: Any = None) -> None:
        text = box.value.strip()
        if not text:
            return
        button.disabled = True
        try:
            for name, respond in responders.items():
                columns[name].value = f"<b>{html.escape(name)}</b><br><i>thinking…</i>"
                started = time.perf_counter()
                try:
                    reply = respond(text)
                except Exception as exc:
                    reply = f"[error: {type(exc).__name__}: {exc}]"
                columns[name].value = render(name, reply, time.perf_counter() - started)
        finally:
            button.disabled = False

    button.on_click(ask)
    if question:
        ask()
    return widgets.VBox([box, button, widgets.HBox(list(columns.values()))])


__all__ = [
    "EquivalenceError", "EquivalenceReport", "LocalChat", "MergeError", "MergeResult", "PromptCheck",
    "chat_view", "check_equivalence", "compare_answers", "compare_models",
    "format_side_by_side", "grade", "latest_merged_model", "load_model", "load_tokenizer",
    "load_with_adapter", "merge_adapter", "merge_args", "merge_command", "merged_dir", "teacher_responder",
]
