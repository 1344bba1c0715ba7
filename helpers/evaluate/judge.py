"""Case E's judge-based evaluation: a judge model scores each answer 0-10 against the expected answer.

Exact metrics need an answer that can be checked; a judge also grades free text
(contract clauses, explanations). Judges are noisy and biased, so every number
here comes with what it hides:

* :func:`parse_score` reads a reply into a 0-10 score or ``None``, never a default;
  :func:`judge_answers` asks once per row and keeps unparseable and failed replies visible;
* :func:`score_summary`: mean score per model with a 95% t-interval;
* :func:`pairwise`: teacher wins / student wins / ties (margin 0.1 on the 0-1 scale),
  items without two scores counted apart, never as ties;
* :func:`judge_retention` and :func:`report`: retention from the judge next to
  retention from the task metric, each with :func:`helpers.evaluate.roi.deployment_verdict`;
* :func:`swap_check`: the same pair asked in both orders; a verdict that follows the
  position instead of the content flips;
* :func:`agreement_with_metric`: does "score >= 5" agree with the exact metric (Cohen's kappa)?

Prompts are ``data/prompts/judge_*.txt`` (``_zh`` for Chinese). The judge is a batch
chat function: the engine's :func:`~helpers.teacher.engine.batch_chat` (logged,
resumable, cached) by default, any fake in tests.
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.config import TeacherEndpoint
from ..core.stats import mean_ci
from ..teacher.client import reply_text
from ..teacher.engine import BatchChat, batch_chat
from ..teacher.prompts import load_exemplar, render
from .roi import deployment_verdict, quality_retention

log = logging.getLogger(__name__)

Message = dict[str, str]
Preference = Literal["first", "second", "tie"]

SCORE_MAX = 10.0
"""Judge scores run from 0 to this."""
DEFAULT_MARGIN = 0.1
"""Case E's tie margin, on the 0-1 scale (score / 10): 0.1 is one point out of ten."""
JUDGE_COLUMNS: tuple[str, ...] = ("id", "model", "question", "reference", "answer")
"""Columns :func:`judge_answers` needs (rename the per-item table's ``prompt_id`` / ``prediction``)."""
JUDGE_MAX_TOKENS = 1024
"""Room for a few sentences of reasoning (and a reasoning model's thinking) before the score."""

# --------------------------------------------------------------------------- parsing

_NUM = r"[-\u2212]?\d+(?:\.\d+)?"
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split())}
_WORD_RE = re.compile(r"\b(" + "|".join(_WORDS) + r")\b")
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN = r"[零〇一二两三四五六七八九十]+(?:点[零〇一二三四五六七八九])?"
_CN_LABELLED_RE = re.compile(r"(评分|得分|分数|打分|分值)(\s*:?\s*(?:为|是)?\s*)(" + _CN + ")")
_CN_GIVEN_RE = re.compile(r"(给|打|得)(\s*)(" + _CN + r")(?=\s*分(?![\u4e00-\u9fff]))")
_FULL_MARKS_RE = re.compile(r"满分\s*(?:为|是)?\s*(\d+)\s*分?")
_SEP = r"[\s*_`'\"#]*"
_SCALE = r"(?:\s*\(?\s*(?:/|out\s+of\b|of\b)\s*(?P<den>\d+)\)?|\s*(?P<pct>%))?"
_LABEL_RE = re.compile(
    r"(?<![a-z])(?:score|rating|grade|评分|得分|分数|打分|分值)"
    r"(?:\s*[(\[][^)\]\n]{0,15}[)\]])?" + _SEP + r"(?:[:=]|\bis\b|\bof\b|为|是)?" + _SEP
    + r"(?:(?:is|it|a|an)\s+)*" + _SEP + r"(?P<num>" + _NUM + r")(?!\.?\d)"
    + r"(?P<range>\s*(?:-|–|~|\bto\b|到|至)\s*\d)?" + r"[*_`'\"]*" + _SCALE)
_TAG_RE = re.compile(r"<score>\s*(?P<num>" + _NUM + r")\s*(?:/\s*(?P<den>\d+))?\s*</score>")
_FALLBACK_RES = (
    re.compile(r"(?<![\d./])(?P<num>" + _NUM + r")\s*(?:/|out\s+of\b)\s*(?P<den>\d+)(?![\d/])"),
    re.compile(r"(?<![\d.])(?P<num>" + _NUM + r")\s*分(?!钟|之|制)"),
    re.compile(r"\*\*\s*(?P<num>" + _NUM + r")\s*\*\*"),
    re.compile(r"^\s*(?P<num>" + _NUM + r")\s*\.?\s*$"),
)
_SCALES = (5, 10, 100)


def strip_thinking(reply: str | None) -> str:
    """The reply without the judge's own ``<think>`` block (or what precedes a dangling ``</think>``)."""
    text = _THINK_RE.sub("", reply or "")
    if "</think>" in text.lower():
        text = re.split(r"</think>", text, flags=re.IGNORECASE)[-1]
    return text.strip()


def _cn_number(token: str) -> str:
    whole, _, decimal = token.partition("点")
    if "十" in whole:
        tens, _, ones = whole.partition("十")
        value = _CN_DIGITS.get(tens, 1) * 10 + _CN_DIGITS.get(ones, 0)
    else:
        value = int("".join(str(_CN_DIGITS[c]) for c in whole)) if whole else 0
    return f"{value}.{_CN_DIGITS[decimal]}" if decimal else str(value)


def _normalise(reply: str | None) -> str:
    """Thinking removed, full-width forms folded (``：８`` -> ``:8``), number words written as digits."""
    text = unicodedata.normalize("NFKC", strip_thinking(reply)).lower()
    text = _WORD_RE.sub(lambda m: str(_WORDS[m.group(1)]), text)
    text = _CN_LABELLED_RE.sub(lambda m: m.group(1) + m.group(2) + _cn_number(m.group(3)), text)
    return _CN_GIVEN_RE.sub(lambda m: m.group(1) + m.group(2) + _cn_number(m.group(3)), text)


def _on_scale(num: str, den: str | None, percent: bool, default_scale: int) -> float | None:
    """The 0-10 value of ``num`` out of ``den`` (or a percentage); ``None`` when off the scale."""
    scale = 100 if percent else int(den) if den else default_scale
    if scale not in _SCALES:
        return None
    value = float(num.replace("\u2212", "-")) * SCORE_MAX / scale
    return round(value, 4) if 0.0 <= value <= SCORE_MAX else None


def parse_score(reply: str | None) -> float | None:
    """A judge reply read as a 0-10 score, or ``None`` (missing, ambiguous or out of range; never a default).

    In order: a ``<score>`` tag; else the *last* number tied to a score label
    ("Score: 7", "score = 9 out of 10", "评分：8分", "得分: 7/10", "Rating (0-10): 8");
    else the last number that is clearly a score (``7/10``, ``8分``, ``**8.5**``, a
    bare number). ``80/100``, ``80%`` and "满分100分" scales become 8.0; a range
    ("7-8") and anything outside 0-10 ("11", "-1", "15/10") give ``None``. The
    judge's ``<think>`` block is ignored; number words ("seven", "八分") count.
    """
    text = _normalise(reply)
    if not text:
        return None
    full = _FULL_MARKS_RE.search(text)
    default_scale = int(full.group(1)) if full and int(full.group(1)) in _SCALES else 10
    text = _FULL_MARKS_RE.sub(" ", text)
    tag = _TAG_RE.search(text)
    if tag:
        return _on_scale(tag.group("num"), tag.group("den"), False, default_scale)
    labelled = list(_LABEL_RE.finditer(text))
    if labelled:
        last = labelled[-1]
        if last.group("range"):
            return None
        return _on_scale(last.group("num"), last.group("den"), bool(last.group("pct")), default_scale)
    found = []
    for pattern in _FALLBACK_RES:
        for m in pattern.finditer(text):
            den = m.groupdict().get("den")
            if den is None or int(den) in _SCALES:  # "3/4 fields" is not a score
                found.append((m.start(), m.group("num"), den))
    if not found:
        return None
    _, num, den = max(found, key=lambda f: f[0])
    return _on_scale(num, den, False, default_scale)


_PREF_WORDS: dict[str, Preference] = {
    "a": "first", "first": "first", "answer a": "first", "回答a": "first", "答案a": "first", "1": "first",
    "b": "second", "second": "second", "answer b": "second", "回答b": "second", "答案b": "second", "2": "second",
    "tie": "tie", "a tie": "tie", "c": "tie", "equal": "tie", "both": "tie", "neither": "tie", "平局": "tie",
    "持平": "tie", "相当": "tie", "一样": "tie", "一样好": "tie",
}
_PREF_VALUE = r"(answer\s*a|answer\s*b|回答\s*a|回答\s*b|答案\s*a|答案\s*b|(?:a\s+)?tie|first|second|equal|both|" \
              r"neither|平局|持平|相当|一样好?|a|b|c|1|2)(?![a-z0-9])"
_PREF_TAG_RE = re.compile(r"<preference>\s*" + _PREF_VALUE + r"\s*</preference>|\[\[\s*" + _PREF_VALUE + r"\s*\]\]")
_PREF_LABEL_RE = re.compile(r"(?:preference|preferred|verdict|winner|better\s+answer|choice|decision|偏好|结论|判断|"
                            r"更好的回答)\s*(?:answer)?\s*[:=]" + _SEP + _PREF_VALUE)
_PREF_LOOSE: tuple[tuple[re.Pattern[str], Preference | None], ...] = (
    (re.compile(r"\b(?:answer|response)\s+(a|b)\s+is\s+(?:clearly\s+)?(?:better|more\s+\w+|preferred|superior)"), None),
    (re.compile(r"\bprefer\s+(?:answer\s+|response\s+)?(a|b)\b"), None),
    (re.compile(r"(?:回答|答案)\s*(a|b)\s*更好"), None),
    (re.compile(r"\b(?:it'?s\s+a\s+tie|equally\s+(?:good|bad|correct))\b|平局"), "tie"),
)


def parse_preference(reply: str | None) -> Preference | None:
    """A pairwise reply read as ``"first"`` (A), ``"second"`` (B), ``"tie"``, or ``None``.

    A ``<preference>`` tag or ``[[A]]``; else the last "Preference: ..." (or
    "Verdict:", "偏好：") line; else a reply that is only the verdict; else phrases
    such as "Answer B is better" or "平局" when they all point the same way.
    """
    text = unicodedata.normalize("NFKC", strip_thinking(reply)).lower()
    if not text:
        return None
    tag = _PREF_TAG_RE.search(text)
    if tag:
        return _PREF_WORDS[re.sub(r"\s+", " ", tag.group(1) or tag.group(2))]
    labelled = list(_PREF_LABEL_RE.finditer(text))
    if labelled:
        return _PREF_WORDS[re.sub(r"\s+", " ", labelled[-1].group(1))]
    bare = re.sub(r"\s+", " ", text.strip(" .!*`'\"\n"))
    if bare in _PREF_WORDS:
        return _PREF_WORDS[bare]
    loose: set[Preference] = set()
    for pattern, fixed in _PREF_LOOSE:
        for m in pattern.finditer(text):
            loose.add(fixed or _PREF_WORDS[m.group(1)])
    return loose.pop() if len(loose) == 1 else None


# --------------------------------------------------------------------------- prompts


def _suffix(lang: str) -> str:
    code = (lang or "en").lower()
    if code.startswith("zh"):
        return "_zh"
    if code.startswith("en"):
        return ""
    raise ValueError(f"judge prompts exist in English ('en') and Chinese ('zh'), not {lang!r}")


def _as_text(value: Any) -> str:
    """A cell as prompt text: dicts and lists as JSON, missing values as an empty string."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value).strip()


def _examples(kind: str, lang: str, shots: int) -> list[Message]:
    """``shots`` worked verdicts (``data/prompts/judge_examples.json``) as user/assistant turns, for a small judge."""
    if shots <= 0:
        return []
    found = load_exemplar("judge_examples")["zh" if _suffix(lang) else "en"][kind][:shots]
    turns: list[Message] = []
    for ex in found:
        ask = (judge_messages(ex["question"], ex["reference"], ex["answer"], lang) if kind == "score" else
               pair_messages(ex["question"], ex["reference"], ex["first"], ex["second"], lang))[-1]
        turns += [ask, {"role": "assistant", "content": ex["verdict"]}]
    return turns


def judge_messages(question: Any, reference: Any, answer: Any, lang: str = "en", shots: int = 0) -> list[Message]:
    """The chat asking for a 0-10 score of ``answer`` (``judge_system`` + ``judge_user``, ``_zh`` for Chinese).

    ``shots`` puts that many worked verdicts before the question: a small local judge
    learns the ``Score: N`` line from them (an API judge needs none).
    """
    suffix = _suffix(lang)
    return [{"role": "system", "content": render(f"judge_system{suffix}")}, *_examples("score", lang, shots),
            {"role": "user", "content": render(f"judge_user{suffix}", question=_as_text(question),
                                               reference=_as_text(reference), answer=_as_text(answer))}]


def pair_messages(question: Any, reference: Any, first: Any, second: Any, lang: str = "en",
                  shots: int = 0) -> list[Message]:
    """The chat asking which of two answers is better (``first`` is shown as A, ``second`` as B)."""
    suffix = _suffix(lang)
    return [{"role": "system", "content": render(f"judge_system{suffix}")}, *_examples("pair", lang, shots),
            {"role": "user", "content": render(f"judge_pair_user{suffix}", question=_as_text(question),
                                               reference=_as_text(reference), first=_as_text(first),
                                               second=_as_text(second))}]


def item_lang(text: Any) -> str:
    """``"zh"`` when the text has Chinese characters, else ``"en"``: the judge answers in the item's language."""
    return "zh" if re.search(r"[\u4e00-\u9fff]", _as_text(text)) else "en"


def judge_frame(items: pd.DataFrame, dataset: str, models: Sequence[str], n: int | None = None,
                max_chars: int = 600) -> pd.DataFrame:
    """The per-item table of notebook 06 as the judge's input: the first ``n`` items of ``dataset``, per model.

    ``answer`` is the extracted prediction (the reply's text where none was extracted),
    cut to ``max_chars``; an empty one is shown as ``(no answer)``. ``lang`` follows the
    question, ``correct`` (the task metric) is kept for :func:`agreement_with_metric`.
    """
    rows = items[(items["dataset"] == dataset) & items["model"].isin(models)]
    ids = list(dict.fromkeys(rows["prompt_id"]))[:n]
    rows = rows[rows["prompt_id"].isin(ids)]
    answers = [(_as_text(a)[:max_chars] or "(no answer)") for a in rows["prediction"]]
    return pd.DataFrame({"id": rows["prompt_id"].to_numpy(), "model": rows["model"].to_numpy(),
                         "question": rows["question"].to_numpy(), "reference": rows["reference"].to_numpy(),
                         "answer": answers, "lang": [item_lang(q) for q in rows["question"]],
                         "correct": rows["correct"].to_numpy()})


# --------------------------------------------------------------------------- asking


def _chat(chat: BatchChat | None, endpoint: TeacherEndpoint | None, log_path: str | Path | None,
          max_tokens: int | None = None) -> BatchChat:
    """The given batch chat function, or the engine's (every call logged to ``log_path``, resumable)."""
    if chat is not None:
        if not callable(chat):
            raise TypeError("chat must be a callable: list of chats -> list of replies")
        return chat
    if endpoint is None or log_path is None:
        raise ValueError("pass a batch chat function (chat=...), or the judge's endpoint and a log_path")
    return batch_chat(endpoint, log_path, temperature=0.0, max_tokens=max_tokens or JUDGE_MAX_TOKENS)


def _ask(chat: BatchChat, chats: list[list[Message]]) -> list[tuple[str | None, str]]:
    """``(reply text or None, error)`` per chat, in order."""
    if not chats:
        return []
    replies = [reply_text(item) for item in chat(chats)]
    if len(replies) != len(chats):
        raise ValueError(f"the chat function returned {len(replies)} replies for {len(chats)} chats")
    failed = sum(text is None for text, _ in replies)
    if failed:
        log.warning("%d of %d judge calls failed; first error: %s", failed, len(chats),
                    next(err for text, err in replies if text is None))
    return replies


def _check_columns(items: pd.DataFrame, needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in items.columns]
    if missing:
        raise KeyError(f"the items need columns {list(needed)}; missing {missing} (rename, e.g. "
                       "items.rename(columns={'prompt_id': 'id', 'prediction': 'answer'}))")


def _langs(items: pd.DataFrame, lang: str) -> list[str]:
    return list(items["lang"]) if "lang" in items.columns else [lang] * len(items)


def judge_answers(items: pd.DataFrame, chat: BatchChat | None = None, *, lang: str = "en",
                  endpoint: TeacherEndpoint | None = None, log_path: str | Path | None = None,
                  shots: int = 0, max_tokens: int | None = None) -> pd.DataFrame:
    """Ask the judge once per row for a 0-10 score of ``answer`` against ``reference``.

    ``items`` has the columns :data:`JUDGE_COLUMNS`; every row goes out in one batch.
    ``chat`` is a batch chat function; without one, the engine's
    :func:`~helpers.teacher.engine.batch_chat` on ``endpoint`` logs to ``log_path``
    (a rerun asks nothing twice), ``max_tokens`` per reply. A ``lang`` column overrides
    ``lang`` per row; ``shots`` as in :func:`judge_messages`. Returns a copy with ``judge_score`` (float, NaN
    when unscored), ``judge_parsed`` (bool), ``judge_reply`` (the raw text, missing when
    the call failed) and ``judge_error``: an unparseable reply stays visible, unscored.
    """
    _check_columns(items, JUDGE_COLUMNS)
    ask = _chat(chat, endpoint, log_path, max_tokens)
    chats = [judge_messages(q, r, a, lg, shots) for q, r, a, lg in
             zip(items["question"], items["reference"], items["answer"], _langs(items, lang))]
    out = items.copy()
    scores, replies, errors = [], [], []
    for text, error in _ask(ask, chats):
        score = parse_score(text) if text is not None else None
        scores.append(float("nan") if score is None else score)
        replies.append(text)
        errors.append(error if text is None else "" if score is not None else "unparseable score")
    out["judge_score"] = pd.Series(scores, index=out.index, dtype=float)
    out["judge_parsed"] = out["judge_score"].notna()
    out["judge_reply"] = replies
    out["judge_error"] = errors
    return out


# --------------------------------------------------------------------------- summaries


def score_summary(scored: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per model: rows ``n``, ``parsed``, ``unparseable`` (a reply without a score), ``failed`` (no reply),
    and the ``mean_score`` (0-10) of the parsed ones with its t-interval ``ci_low``-``ci_high``.

    The interval is Student's t over the parsed scores (not bootstrapped, not clipped to
    0-10); unscored rows are left out of the mean, never counted as a middle score.
    """
    lines = []
    for model, part in scored.groupby("model", sort=False):
        failed = int(part["judge_reply"].isna().sum())
        parsed = int(part["judge_parsed"].sum())
        mean, low, high = mean_ci(part["judge_score"], confidence)
        lines.append({"model": model, "n": len(part), "parsed": parsed, "unparseable": len(part) - parsed - failed,
                      "failed": failed, "mean_score": mean, "ci_low": low, "ci_high": high})
    columns = ["model", "n", "parsed", "unparseable", "failed", "mean_score", "ci_low", "ci_high"]
    return pd.DataFrame(lines, columns=columns).set_index("model")


def paired_scores(scored: pd.DataFrame, teacher: str, student: str, margin: float = DEFAULT_MARGIN) -> pd.DataFrame:
    """Per item: both judge scores, ``diff`` = (student - teacher) / 10, and the ``outcome``.

    ``outcome`` is ``teacher`` / ``student`` (that model's score is higher by more than
    ``margin`` on the 0-1 scale), ``tie`` (``|diff| <= margin``: with the default 0.1 and
    whole-number scores a one-point gap is a tie, two points a win) or ``unscored`` (a
    score is missing: unparseable, failed, or the model has no row for the item).
    """
    frames = {}
    for model in (teacher, student):
        part = scored.loc[scored["model"] == model, ["id", "judge_score"]]
        if part.empty:
            raise KeyError(f"no rows of model {model!r}; models are {sorted(scored['model'].unique())}")
        if part["id"].duplicated().any():
            raise ValueError(f"model {model!r} has several rows for one id: make ids unique (e.g. dataset/id)")
        frames[model] = part.set_index("id")["judge_score"]
    table = pd.DataFrame({"teacher_score": frames[teacher], "student_score": frames[student]})
    table.index.name = "id"
    table["diff"] = (table["student_score"] - table["teacher_score"]) / SCORE_MAX
    outcome = np.where(table["diff"] > margin + 1e-9, "student",
                       np.where(table["diff"] < -margin - 1e-9, "teacher", "tie"))
    table["outcome"] = np.where(table["diff"].isna(), "unscored", outcome)
    return table.reset_index()


def pairwise(scored: pd.DataFrame, teacher: str, student: str, margin: float = DEFAULT_MARGIN) -> dict[str, Any]:
    """Case E's head-to-head: teacher wins, student wins, ties, and unscored items (never ties).

    ``margin`` is on the 0-1 scale (score / 10): 0.1 is one point out of ten; see :func:`paired_scores`.
    """
    counts = paired_scores(scored, teacher, student, margin)["outcome"].value_counts()
    return {"teacher": teacher, "student": student, "margin": margin, "items": int(counts.sum()),
            "teacher_wins": int(counts.get("teacher", 0)), "student_wins": int(counts.get("student", 0)),
            "ties": int(counts.get("tie", 0)), "unscored": int(counts.get("unscored", 0))}


def judge_retention(scored: pd.DataFrame, teacher: str, student: str) -> float:
    """Mean student score over mean teacher score, on the items where both were scored (NaN: nothing to compare)."""
    both = paired_scores(scored, teacher, student).dropna(subset=["teacher_score", "student_score"])
    if both.empty:
        return float("nan")
    return quality_retention(both["student_score"].mean(), both["teacher_score"].mean())


def _over_ten(score: float) -> float:
    return float("nan") if pd.isna(score) else float(score) / SCORE_MAX


def _judge_verdict(retention: float, months: float, teacher_quality: float, both: int, kappa: float | None,
                   min_pairs: int, min_kappa: float) -> str:
    if both < min_pairs:
        return f"NO VERDICT: only {both} items have a judge score for both models (needs {min_pairs})."
    if kappa is not None and not pd.isna(kappa) and kappa < min_kappa:
        return (f"NO VERDICT: the judge agrees with the exact metric no better than chance (kappa {kappa:.2f} < "
                f"{min_kappa}); use a stronger judge (JUDGE_BASE_URL).")
    return deployment_verdict(retention, months, teacher_quality=teacher_quality)


def report(scored: pd.DataFrame, teacher: str, student: str, *, metric_retention: float,
           break_even_months: float, metric_teacher_quality: float | None = None,
           judge_kappa: float | None = None, min_pairs: int = 5, min_kappa: float = 0.2,
           margin: float = DEFAULT_MARGIN, confidence: float = 0.95) -> pd.DataFrame:
    """Case E's ROI table: mean judge scores with intervals, wins and ties, retention two ways, and verdicts.

    ``metric_retention`` is the task metric's retention (:func:`helpers.evaluate.roi.retention_table`),
    ``break_even_months`` :attr:`helpers.evaluate.roi.BreakEven.months`. Each retention gets
    its own :func:`~helpers.evaluate.roi.deployment_verdict`: when they disagree, the judge
    and the metric do not measure the same quality, and that is worth a look before deciding.
    Each verdict is withheld when the teacher is too weak to compare with: its mean judge
    score over 10, and ``metric_teacher_quality`` (its task metric), see ``teacher_quality`` there.
    The judge's verdict is also withheld with fewer than ``min_pairs`` items scored for both
    models, or when ``judge_kappa`` (its :func:`agreement_with_metric`) is below ``min_kappa``.
    """
    summary = score_summary(scored, confidence)
    pairs = pairwise(scored, teacher, student, margin)
    judged = judge_retention(scored, teacher, student)
    both = int(paired_scores(scored, teacher, student)[["teacher_score", "student_score"]].notna().all(axis=1).sum())
    lines: list[tuple[str, Any, str]] = []
    for model in (teacher, student):
        s = summary.loc[model]
        lines.append((f"{model} mean judge score", round(float(s["mean_score"]), 2),
                      f"{confidence:.0%} t-interval [{s['ci_low']:.2f}, {s['ci_high']:.2f}]; {s['parsed']} of "
                      f"{s['n']} scored ({s['unparseable']} unparseable, {s['failed']} failed)"))
    note = f"margin {margin} on the 0-1 scale, {pairs['items']} items"
    lines += [("teacher wins", pairs["teacher_wins"], note), ("student wins", pairs["student_wins"], note),
              ("ties", pairs["ties"], note),
              ("unscored pairs", pairs["unscored"], "a score missing: not counted as a tie"),
              ("retention (judge)", round(judged, 3), f"mean {student} / mean {teacher} score over {both} items"),
              ("retention (task metric)", round(float(metric_retention), 3), "given"),
              ("break-even months", round(float(break_even_months), 2), "given"),
              ("verdict (judge)", _judge_verdict(judged, break_even_months, _over_ten(summary.loc[teacher, "mean_score"]),
                                                 both, judge_kappa, min_pairs, min_kappa), "retention from the judge"),
              ("verdict (task metric)", deployment_verdict(metric_retention, break_even_months,
                                                           teacher_quality=metric_teacher_quality),
               "retention from the task metric")]
    return pd.DataFrame(lines, columns=["measure", "value", "detail"]).set_index("measure")


# --------------------------------------------------------------------------- judge checks


@dataclass
class SwapCheck:
    """The order-swap bias check: each pair asked as (teacher, student) and as (student, teacher)."""

    n: int
    """Items with an answer from both models."""
    unparseable: int
    """Items where either order got no verdict (an unparseable reply or a failed call)."""
    flips: int
    """Items whose preferred answer (or tie) changed with the order."""
    reversals: int
    """Flips from one model to the other (not via a tie)."""
    first_slot_rate: float
    """Share of the non-tie verdicts that picked the answer shown first (0.5: no position bias)."""
    table: pd.DataFrame = field(repr=False)

    @property
    def parsed(self) -> int:
        return self.n - self.unparseable

    @property
    def flip_rate(self) -> float:
        return self.flips / self.parsed if self.parsed else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "parsed": self.parsed, "unparseable": self.unparseable, "flips": self.flips,
                "flip_rate": self.flip_rate, "reversals": self.reversals, "first_slot_rate": self.first_slot_rate}

    def __str__(self) -> str:
        return (f"{self.flips} of {self.parsed} verdicts flip when the answers swap places ({self.flip_rate:.0%}); "
                f"first slot preferred in {self.first_slot_rate:.0%} of the wins; {self.unparseable} of {self.n} "
                "items without a verdict in both orders.")


def swap_check(items: pd.DataFrame, teacher: str, student: str, chat: BatchChat | None = None, *, lang: str = "en",
               endpoint: TeacherEndpoint | None = None, log_path: str | Path | None = None,
               shots: int = 0, max_tokens: int | None = None) -> SwapCheck:
    """Ask every (teacher, student) pair in both orders and count the verdicts that follow the position.

    ``items`` is the frame :func:`judge_answers` takes; ``chat``/``endpoint``/``log_path``
    as there. A consistent judge prefers the same answer (or a tie) both times; a judge
    that always picks A flips on every item. Items lacking a verdict are counted apart.
    """
    _check_columns(items, JUDGE_COLUMNS)
    ask = _chat(chat, endpoint, log_path, max_tokens)
    items = items.assign(lang=_langs(items, lang))
    rows = {m: items[items["model"] == m].drop_duplicates("id").set_index("id") for m in (teacher, student)}
    ids = [i for i in rows[teacher].index if i in rows[student].index]
    chats = []
    for i in ids:
        t, s = rows[teacher].loc[i], rows[student].loc[i]
        chats.append(pair_messages(t["question"], t["reference"], t["answer"], s["answer"], t["lang"], shots))
        chats.append(pair_messages(t["question"], t["reference"], s["answer"], t["answer"], t["lang"], shots))
    replies = _ask(ask, chats)
    names = {("tf", "first"): "teacher", ("tf", "second"): "student", ("sf", "first"): "student",
             ("sf", "second"): "teacher"}
    lines, slots, flips, reversals = [], [], 0, 0
    for k, i in enumerate(ids):
        (reply_tf, err_tf), (reply_sf, err_sf) = replies[2 * k], replies[2 * k + 1]
        p_tf, p_sf = parse_preference(reply_tf), parse_preference(reply_sf)
        slots += [p for p in (p_tf, p_sf) if p in ("first", "second")]
        won_tf = None if p_tf is None else "tie" if p_tf == "tie" else names[("tf", p_tf)]
        won_sf = None if p_sf is None else "tie" if p_sf == "tie" else names[("sf", p_sf)]
        parsed = won_tf is not None and won_sf is not None
        flips += parsed and won_tf != won_sf
        reversals += parsed and won_tf != won_sf and "tie" not in (won_tf, won_sf)
        lines.append({"id": i, "teacher_first": won_tf, "student_first": won_sf,
                      "flip": parsed and won_tf != won_sf, "parsed": parsed,
                      "reply_teacher_first": reply_tf, "reply_student_first": reply_sf,
                      "error": "; ".join(e for e in (err_tf, err_sf) if e)})
    table = pd.DataFrame(lines, columns=["id", "teacher_first", "student_first", "flip", "parsed",
                                         "reply_teacher_first", "reply_student_first", "error"])
    first_rate = slots.count("first") / len(slots) if slots else float("nan")
    return SwapCheck(n=len(ids), unparseable=len(ids) - int(table["parsed"].sum()), flips=flips,
                     reversals=reversals, first_slot_rate=first_rate, table=table)


def agreement_with_metric(scored: pd.DataFrame, correct_column: str = "correct",
                          threshold: float = 5.0) -> dict[str, Any]:
    """How often "judge score >= ``threshold``" agrees with the exact metric's right/wrong, and Cohen's kappa.

    Only rows with a judge score and a known ``correct`` value count. Where the task
    has no exact metric (no such column, or no values) the numbers are NaN and
    ``reason`` says why; kappa is NaN when either side says the same thing for every row.
    """
    empty = {"n": 0, "agreement": float("nan"), "kappa": float("nan"), "judge_pass_rate": float("nan"),
             "metric_correct_rate": float("nan"), "threshold": threshold, "reason": ""}
    if correct_column not in scored.columns:
        return {**empty, "reason": f"no exact metric: the frame has no {correct_column!r} column"}
    rows = scored[scored["judge_score"].notna() & scored[correct_column].notna()]
    if rows.empty:
        return {**empty, "reason": f"no row has both a judge score and a {correct_column!r} value"}
    judge = (rows["judge_score"] >= threshold).to_numpy()
    metric = rows[correct_column].astype(bool).to_numpy()
    agree = float((judge == metric).mean())
    pj, pm = float(judge.mean()), float(metric.mean())
    expected = pj * pm + (1 - pj) * (1 - pm)
    kappa = (agree - expected) / (1 - expected) if expected < 1 else float("nan")
    reason = "" if expected < 1 else "kappa undefined: judge and metric give the same single answer for every row"
    return {**empty, "n": len(rows), "agreement": agree, "kappa": kappa, "judge_pass_rate": pj,
            "metric_correct_rate": pm, "reason": reason}
