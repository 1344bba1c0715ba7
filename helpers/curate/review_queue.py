"""The review queue: one curated row at a time in ipywidgets, each decision logged at once.

:class:`ReviewQueue` shows the question, the reply (thinking in grey), the reference
and the verifier's verdict, with Accept / Reject (a reason and free text) / Edit /
Back / Skip buttons and keyboard shortcuts typed into a small *Keys* box (ipywidgets
has no key events of its own). Every button and key calls a plain method, so tests
drive the real class without a browser. Decisions, sampling and the estimate are in
:mod:`helpers.curate.review`; :func:`start_review` skips the queue in headless runs.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.jsonl import repair_tail
from ..core.rows import Row, row_id
from ..teacher.parsing import split_thinking
from .review import (
    BadShare,
    Decision,
    StrataKey,
    append_decision,
    bad_share_estimate,
    default_reviewer,
    headless_reason,
    load_decisions,
    load_reasons,
    make_decision,
    reason_code,
    reply_text,
)


def start_review(rows: Sequence[Row], log_path: str | Path, *, reviewer: str | None = None,
                 sample: Sequence[Row | str] | None = None, strata_key: StrataKey = None,
                 env: Mapping[str, str] | None = None, lang: str = "en") -> "ReviewQueue | None":
    """Show a :class:`ReviewQueue`, or, headless or with nothing to review, print why not and return ``None``."""
    items = rows if sample is None else sample
    why = headless_reason(env) or ("" if items else "no row to review (REVIEW_N=0?)")
    if why:
        ids, decided = [s if isinstance(s, str) else row_id(s) for s in items], load_decisions(log_path)
        done = sum(i in decided for i in ids)
        print(f"Human review skipped ({why}). {done} of {len(ids)} sampled rows have a decision in {log_path}.\n"
              "To review: open this notebook in Jupyter, run this cell (REVIEW=1 forces the queue), decide, "
              "then re-run the cells below it; decisions made earlier are applied either way.")
        return None
    queue = ReviewQueue(rows, log_path, reviewer=reviewer, sample=sample, strata_key=strata_key, lang=lang)
    from IPython.display import display

    display(queue.widget)
    return queue


# --------------------------------------------------------------------------- rendering a row


def _verdict_html(row: Row) -> str:
    verified = row.get("verified")
    if not isinstance(verified, dict):
        return "<i>not verified</i>"
    mark = {True: "<span style='color:#1a7f37'>✓ right</span>", False: "<span style='color:#cf222e'>✗ wrong</span>",
            None: "<span style='color:#9a6700'>not checked by a rule</span>"}[verified.get("correct")]
    read = f" · read {html.escape(str(verified.get('prediction')))}" if verified.get("prediction") is not None else ""
    detail = f" · {html.escape(str(verified['detail']))}" if verified.get("detail") else ""
    rate = f" · pass rate {row['pass_rate']:.2f}" if isinstance(row.get("pass_rate"), (int, float)) else ""
    return f"{mark}{read} ({html.escape(str(verified.get('method')))}){detail}{rate}"


def row_html(row: Row, decision: Decision | None = None, reasons: Mapping[str, str] | None = None) -> str:
    """One row for a reviewer: question, reply (thinking in grey; the edited reply if edited), reference, verdict."""
    esc, box = html.escape, "white-space:pre-wrap;max-height:22em;overflow:auto;padding:4px 8px;"
    edited = decision is not None and decision.get("decision") == "edit"
    parsed = split_thinking(decision["reply"] if edited else reply_text(row), expect_boxed=False)
    question = row.get("question") or next((m.get("content") for m in reversed(row.get("messages") or [])
                                            if m.get("role") == "user"), "")
    parts = [f"<div style='color:#666;font-size:0.9em'>{esc(row_id(row))} · task {esc(str(row.get('task')))}</div>",
             f"<b>Question</b><div style='{box}border-left:3px solid #0969da'>{esc(question or '')}</div>",
             "<b>Reply</b>" + (" <i>(edited)</i>" if edited else "")]
    if parsed.thinking:
        parts.append(f"<div style='{box}color:#777;border-left:3px solid #ccc'>{esc(parsed.thinking)}</div>")
    parts.append(f"<div style='{box}border-left:3px solid #1a7f37'>{esc(parsed.answer) or '<i>(no answer)</i>'}</div>")
    parts.append(f"<b>Reference:</b> {esc(str(row.get('reference')))} · <b>Verifier:</b> {_verdict_html(row)}")
    if decision is not None:
        reason = decision.get("reason")
        label = (reasons or {}).get(reason_code(reason) or "")
        why = f" · {esc(label)} ({esc(reason)})" if label else (f" · {esc(reason)}" if reason else "")
        parts.append(f"<div style='margin-top:4px'><b>Decided:</b> {esc(decision['decision'])}{why} by "
                     f"{esc(str(decision.get('reviewer')))} at {esc(str(decision.get('time')))}</div>")
    return "".join(parts)


# --------------------------------------------------------------------------- the queue


class ReviewQueue:
    """Review ``sample`` (default: all ``rows``) one row at a time; decisions go to ``log_path`` at once.

    On construction the log is read (a torn last line cut away) and the queue opens at
    the first row without a decision: restarting the kernel and building the queue again
    resumes the review. ``queue.widget`` is the ipywidgets view; every button and key
    calls one of the methods below, which tests call directly.
    """

    def __init__(self, rows: Sequence[Row], log_path: str | Path, *, reviewer: str | None = None,
                 sample: Sequence[Row | str] | None = None, strata_key: StrataKey = None, lang: str = "en") -> None:
        self.rows = list(rows)
        self.log_path = Path(log_path)
        self.reviewer = reviewer or default_reviewer()
        by_id: dict[str, Row] = {}
        for row in self.rows:
            by_id.setdefault(row_id(row), row)
        try:
            self.items = self.rows if sample is None else [by_id[s] if isinstance(s, str) else s for s in sample]
        except KeyError as exc:
            raise ValueError(f"sample id {exc.args[0]!r} is not a row of rows") from None
        self.ids = [row_id(r) for r in self.items]
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("the rows to review have duplicate ids (prompt_id#sample_index)")
        self.strata_key = strata_key
        self.reasons = load_reasons(lang)
        self.repaired = repair_tail(self.log_path)
        self.decisions = load_decisions(self.log_path)
        self.position = self.first_unreviewed()
        self.mode = "review"
        """``review``, ``reject`` (choosing a reason) or ``edit`` (editing the reply)."""
        self.message = f"resumed at row {self.position + 1}" if self.position else ""
        self._w: dict[str, Any] | None = None

    # ----------------------------------------------------------------- state

    @property
    def done(self) -> bool:
        return self.position >= len(self.items)

    @property
    def current(self) -> Row | None:
        return None if self.done else self.items[self.position]

    def decision_for(self, index: int | None = None) -> Decision | None:
        index = self.position if index is None else index
        return self.decisions.get(self.ids[index]) if 0 <= index < len(self.ids) else None

    def first_unreviewed(self, start: int = 0) -> int:
        """The first row without a decision at or after ``start``, else before it, else the end."""
        order = list(range(start, len(self.ids))) + list(range(min(start, len(self.ids))))
        return next((i for i in order if self.ids[i] not in self.decisions), len(self.ids))

    def counts(self) -> Counter[str]:
        """Decisions among the rows of this queue (any reviewer), by kind."""
        return Counter(self.decisions[i]["decision"] for i in self.ids if i in self.decisions)

    def estimate(self) -> BadShare:
        return bad_share_estimate(self.decisions, self.items, len(self.rows), strata_key=self.strata_key,
                                  population=self.rows if self.strata_key is not None else None)

    def progress_text(self) -> str:
        """``"12 / 50 reviewed, 2 rejected (est. bad share 4%–25%)"``."""
        counts = self.counts()
        text = f"{sum(counts.values())} / {len(self.items)} reviewed, {counts['reject']} rejected"
        text += f", {counts['edit']} edited" if counts["edit"] else ""
        if counts:
            est = self.estimate()
            text += f" (est. bad share {est.low:.0%}–{est.high:.0%})"
        return text

    # ----------------------------------------------------------------- actions

    def _record(self, kind: str, reason: str | None = None, reply: str | None = None) -> Decision:
        if self.done:
            raise IndexError("The queue is at its end: nothing to decide (go back() to change a decision).")
        decision = append_decision(self.log_path, make_decision(self.ids[self.position], kind, reviewer=self.reviewer,
                                                                reason=reason, reply=reply))
        self.decisions = load_decisions(self.log_path)  # also picks up what another reviewer decided
        self.decisions[decision["id"]] = decision
        self.message = f"{kind} {decision['id']}" + (f" ({reason})" if reason else "")
        self.position, self.mode = self.first_unreviewed(self.position + 1), "review"
        self.refresh()
        return decision

    def accept(self) -> Decision:
        return self._record("accept")

    def reject(self, reason: str = "other", text: str | None = None) -> Decision:
        """Reject with a reason code (or free text, filed under ``other``) and optional words."""
        if reason not in self.reasons:
            reason, text = "other", " ".join(x for x in (reason, text) if x)
        return self._record("reject", f"{reason}: {text.strip()}" if text and text.strip() else reason)

    def edit(self, text: str) -> Decision:
        """Replace the reply with ``text``; an unchanged reply is recorded as an accept."""
        if self.current is not None and text.strip() == reply_text(self.current).strip():
            return self._record("accept")
        return self._record("edit", reply=text)

    def skip(self) -> None:
        """Next row, no decision."""
        self.position, self.mode, self.message = min(self.position + 1, len(self.items)), "review", ""
        self.refresh()

    next = skip

    def back(self) -> None:
        self.position, self.mode, self.message = max(self.position - 1, 0), "review", ""
        self.refresh()

    def press(self, key: str) -> str:
        """One keyboard shortcut: a accept, r reject (then 1-6 picks the reason), e edit, n next, b back."""
        key = key.strip().lower()[-1:] if key.strip() else ""
        codes = list(self.reasons)
        if self.mode == "reject" and key.isdigit() and 1 <= int(key) <= len(codes):
            text = self._w["reason_text"].value if self._w else None
            return self.reject(codes[int(key) - 1], text)["decision"]
        actions = {"a": self.accept, "n": self.skip, "b": self.back}
        if key in actions:
            if self.done and key == "a":
                return "end"
            actions[key]()
            return {"a": "accept", "n": "next", "b": "back"}[key]
        if key in ("r", "e") and not self.done:
            self.mode = "reject" if key == "r" else "edit"
            self.message = ("reason: " + ", ".join(f"{i} {label}" for i, label in enumerate(self.reasons.values(), 1))
                            if key == "r" else "edit the reply, then Save")
            self.refresh()
            return self.mode
        return ""

    # ----------------------------------------------------------------- widgets

    @property
    def widget(self) -> Any:
        """The ipywidgets view (built on first use)."""
        if self._w is None:
            self._build()
            self.refresh()
        return self._w["root"]  # type: ignore[index]

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _build(self) -> None:
        import ipywidgets as w

        def button(description: str, style: str, tooltip: str, action: Callable[[], Any]) -> Any:
            b = w.Button(description=description, button_style=style, tooltip=tooltip, layout=w.Layout(width="auto"))
            b.on_click(lambda _: action())
            return b

        hidden = w.Layout(display="none", flex_flow="row wrap")  # wraps in a narrow window
        ui: dict[str, Any] = {"progress": w.HTML(), "row": w.HTML(), "message": w.HTML()}
        ui["reason"] = w.Dropdown(options=[(label, code) for code, label in self.reasons.items()],
                                  description="Reason", layout=w.Layout(width="auto"),
                                  style={"description_width": "initial"})
        ui["reason_text"] = w.Text(placeholder="what is wrong (optional)", layout=w.Layout(width="40%"))
        ui["reject_box"] = w.HBox([ui["reason"], ui["reason_text"],
                                   button("Reject", "danger", "reject with this reason",
                                          lambda: self.reject(ui["reason"].value, ui["reason_text"].value)),
                                   button("Cancel", "", "back to the buttons", lambda: self._set_mode("review"))],
                                  layout=hidden)
        ui["editor"] = w.Textarea(layout=w.Layout(width="100%", height="260px"))
        ui["edit_box"] = w.VBox([ui["editor"], w.HBox([
            button("Save edit", "warning", "replace the reply with this text", lambda: self.edit(ui["editor"].value)),
            button("Cancel", "", "back to the buttons", lambda: self._set_mode("review"))])],
            layout=w.Layout(display="none", width="100%"))
        ui["keys"] = w.Text(placeholder="click here, then type a / r / e / n / b (after r: 1-6)",
                            description="Keys", layout=w.Layout(width="auto"))
        ui["keys"].observe(self._on_key, names="value")
        buttons = w.HBox([
            button("Accept (a)", "success", "keep the row as it is", self.accept),
            button("Reject… (r)", "danger", "drop the row, with a reason", lambda: self.press("r")),
            button("Edit… (e)", "warning", "fix the reply", lambda: self.press("e")),
            button("◀ Back (b)", "", "previous row", self.back),
            button("Skip ▶ (n)", "", "next row, no decision", self.skip)],
            layout=w.Layout(flex_flow="row wrap"))  # narrow windows wrap instead of cutting labels
        ui["root"] = w.VBox([ui["progress"], ui["row"], buttons, ui["reject_box"], ui["edit_box"],
                             ui["keys"], ui["message"]])
        self._w = ui

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        self.refresh()

    def _on_key(self, change: Mapping[str, Any]) -> None:
        value = change.get("new") or ""
        if value and self._w is not None:
            self._w["keys"].value = ""  # fires again with "", which does nothing
            self.press(value[-1])

    def refresh(self) -> None:
        """Redraw the widgets (if built) from the queue's state."""
        if self._w is None:
            return
        ui = self._w
        ui["progress"].value = f"<b>{html.escape(self.progress_text())}</b> · reviewer {html.escape(self.reviewer)}"
        if self.done:
            ui["row"].value = (f"<p><b>All {len(self.items)} rows have been seen.</b> Back (b) to change a decision; "
                               "then re-run the cells below to apply the decisions.</p>")
        else:
            ui["row"].value = (f"<div style='color:#666'>row {self.position + 1} of {len(self.items)}</div>"
                               + row_html(self.current, self.decision_for(), self.reasons))  # type: ignore[arg-type]
        ui["reject_box"].layout.display = None if self.mode == "reject" else "none"
        ui["edit_box"].layout.display = None if self.mode == "edit" else "none"
        if self.mode == "edit" and self.current is not None:
            decision = self.decision_for()
            ui["editor"].value = decision["reply"] if decision and decision["decision"] == "edit" \
                else reply_text(self.current)
        if self.mode != "reject":
            ui["reason_text"].value = ""
        ui["message"].value = f"<small>{html.escape(self.message)}</small>" if self.message else ""
