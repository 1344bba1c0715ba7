"""Base, distilled student and teacher side by side: a table, plain text for headless runs, a widget.

A *responder* is a model as a function ``question -> reply text``:
:class:`LocalChat` (a local model, greedy, the training prompt) or
:func:`teacher_responder` (the configured teacher API).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import Settings, TeacherEndpoint
from ..models.generation import generate_greedy
from ..models.loading import load_model, load_tokenizer
from ..tasks.checks import check_row
from ..tasks.math import math_messages
from ..teacher.client import chat
from ..teacher.parsing import BOXED_START, match_braces, split_thinking

Message = dict[str, str]

Responder = Callable[[str], str]
"""A model as a function: question -> reply text (``<think>`` included when it thinks)."""
Prompt = Callable[[str], list[Message]]
"""question -> the zero-shot chat (system + user): the task's student prompt (default: math)."""


@dataclass
class LocalChat:
    """A local model answering with greedy decoding and the training prompt.

    ``shots`` (few-shot user/assistant turns) turn the base student into the
    offline profile's *teacher*: the same model shown worked examples. ``prompt``
    builds the chat for a question (a task's ``student_messages``; default: math).
    """

    model: Any
    tokenizer: Any
    max_new_tokens: int = 256
    shots: list[Message] = field(default_factory=list)
    prompt: Prompt = math_messages

    @classmethod
    def load(cls, path: str | Path, settings: Settings | None = None, **kwargs: Any) -> "LocalChat":
        return cls(load_model(path, settings, for_inference=True), load_tokenizer(path), **kwargs)

    def messages(self, question: str) -> list[Message]:
        messages = list(self.prompt(question))
        return messages[:-1] + list(self.shots) + messages[-1:]

    def __call__(self, question: str) -> str:
        return generate_greedy(self.model, self.tokenizer, [self.messages(question)],
                               max_new_tokens=self.max_new_tokens)[0].text


def teacher_responder(endpoint: TeacherEndpoint, max_tokens: int = 2048, prompt: Prompt = math_messages) -> Responder:
    """The configured teacher API as a responder (its reasoning shown inside ``<think>``)."""
    def answer(question: str) -> str:
        reply = chat(endpoint, prompt(question), temperature=0.0, max_tokens=max_tokens)
        return f"<think>\n{reply.thinking}\n</think>\n\n{reply.answer}" if reply.thinking else reply.answer

    return answer


def grade(reply: str, reference: Any, check: Mapping[str, Any] | None = None) -> tuple[str | None, bool | None]:
    """The final answer read from a reply and whether it equals ``reference``, checked as ``check`` says.

    ``check`` is a task's check spec (a row's ``meta["check"]``); without one the reply is math.
    """
    parsed = split_thinking(reply, expect_boxed=False)
    row = {"reference": reference, "meta": {"check": dict(check)} if check else {},
           "reply": {"raw": reply, "thinking": parsed.thinking, "answer": parsed.answer}}
    result = check_row(row)
    return result.prediction, result.correct


def compare_answers(questions: Sequence[Mapping[str, Any] | str], responders: Mapping[str, Responder]) -> pd.DataFrame:
    """Every responder on every question: one row per (question, model).

    ``questions`` are strings or prompt rows (``question``, ``reference`` and the
    task's check spec in ``meta``). Columns: question, reference, model, answer
    (what was read), correct, seconds, reply.
    """
    rows = []
    for item in questions:
        question = item if isinstance(item, str) else item["question"]
        reference = None if isinstance(item, str) else item.get("reference")
        check = None if isinstance(item, str) else (item.get("meta") or {}).get("check")
        for name, respond in responders.items():
            started = time.perf_counter()
            try:
                reply = respond(question)
            except Exception as exc:  # one failing model (a teacher API) must not hide the others
                reply = f"[error: {type(exc).__name__}: {exc}]"
            prediction, correct = grade(reply, reference, check)
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


BOXED_STYLE = "border:1.5px solid currentColor;border-radius:3px;padding:0 0.3em;font-weight:bold"


def boxed_html(text: str) -> str:
    r"""``text`` as HTML (escaped) with each ``\boxed{...}`` drawn as a framed bold answer.

    ``"so \boxed{12}."`` -> ``"so <b class='boxed-answer' ...>12</b>."``: the widget shows the
    answer the way the model marked it instead of the raw LaTeX command. Nested braces are
    kept inside the box (``\boxed{\frac{1}{2}}`` shows ``\frac{1}{2}``, a box in a box is drawn too); a box that is never
    closed (a cut-off reply) stays as it was written.
    """
    import html

    out: list[str] = []
    pos = 0
    for match in BOXED_START.finditer(text):
        if match.start() < pos:  # inside a box already drawn
            continue
        if match.group(1) is None:  # "\boxed 5": the next token is the content
            token = re.match(r"[^\s$\\{}]+", text[match.end():])
            if token is None:
                continue
            content, end = token.group(0), match.end() + token.end()
        else:
            close = match_braces(text, match.end() - 1)
            if close is None:
                continue
            content, end = text[match.end():close].strip(), close + 1
        out.append(html.escape(text[pos:match.start()]))
        out.append(f"<b class='boxed-answer' style='{BOXED_STYLE}'>{boxed_html(content)}</b>")
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)


# Reply text wraps inside its column, long unbroken tokens (formulas, URLs) included, so a
# column never spills into its neighbour or makes the row scroll sideways.
_TEXT_STYLE = "white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.45"


def chat_view(responders: Mapping[str, Responder], question: str = "") -> Any:
    """An ipywidgets view: a text box, an Ask button, one column per model.

    Each column shows the reply (``<think>`` in grey, ``\\boxed{}`` drawn as a framed
    answer) and the answer read from it. Answers are computed one model after the
    other when Ask is pressed. The columns share the width of the output (no
    horizontal scrollbar) and the long text in them wraps.
    """
    import html

    import ipywidgets as widgets

    # width "auto" in a VBox: the full width less the widget margins (100% + margins scrolls sideways)
    box = widgets.Textarea(value=question, placeholder="Ask a math word problem…",
                           layout=widgets.Layout(width="auto", height="70px"))
    # width "auto": the default fixed button width cuts a longer label off ("Ask all mo…");
    # align_self: as wide as its label, not stretched across the VBox
    button = widgets.Button(description="Ask all models", button_style="primary",
                            layout=widgets.Layout(width="auto", min_width="148px", align_self="flex-start"))
    # flex 1 1 0 + min_width 0: equal columns that shrink to fit instead of overflowing the row
    columns = {name: widgets.HTML(value=f"<b>{html.escape(name)}</b>",
                                  layout=widgets.Layout(flex="1 1 0", min_width="0", border="1px solid #ddd",
                                                        padding="6px", overflow="hidden"))
               for name in responders}

    def render(name: str, reply: str, seconds: float) -> str:
        parsed = split_thinking(reply, expect_boxed=False)
        thinking = (f"<div style='color:#888;{_TEXT_STYLE}'>{boxed_html(parsed.thinking)}</div>"
                    if parsed.thinking else "")
        prediction, _ = grade(reply, None)
        return (f"<div style='{_TEXT_STYLE.replace('pre-wrap', 'normal')}'><b>{html.escape(name)}</b> "
                f"<small>({seconds:.1f} s, answer: {html.escape(str(prediction))})</small></div>"
                f"{thinking}<div style='{_TEXT_STYLE}'>{boxed_html(parsed.answer)}</div>")

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

