r"""Fast thinking: the same right answers with shorter chains of thought (notebook 09).

DistilQwen's "fast thinking" models are distilled from *shortened* chains of
thought: the teacher's long reasoning is rewritten long-to-short, the rewrite is
checked, and the student learns to reach the answer with fewer tokens.

* **Input**: :func:`load_curated` reads notebook 03's export together with the
  full rows behind it and checks that both come from the same run.
* **Shorteners** (``row -> Proposal``): :func:`llm_shortener` is notebook 03's
  long-to-short rewrite (``align_shorten.txt``) asked for every row;
  :func:`rule_shortener` a transparent baseline that keeps only the sentences
  holding a calculation ``a op b = c``.
* **The stage** :func:`shorten_stage` keeps a proposal only when its answer still
  verifies, its arithmetic is right, it still reaches the reference number and it
  is shorter in *student* tokens; otherwise the row keeps its original reasoning,
  so both variants have the same rows.
* **Training**: :func:`export_variant` and :func:`variant_configs` give each
  variant identical settings (:func:`config_differences` proves it); the students
  are compared with :mod:`helpers.evaluate.quick`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import Settings, get_settings
from ..core.jsonl import count_lines, read_jsonl, write_jsonl
from ..core.rows import Row, answer_of, row_id, thinking_of, with_reply
from ..curate.align import DEFAULT_STUDENT, AlignmentAborted, parse_rewrite
from ..curate.calculator import recompute
from ..curate.export import file_name, to_messages, validate_jsonl
from ..curate.funnel import StageBuilder, StageResult
from ..tasks.checks import Check, answer_still_correct
from ..tasks.math import math_messages
from ..teacher.client import reply_text
from ..teacher.engine import BatchChat
from ..teacher.parsing import normalize_number
from ..teacher.prompts import PROMPTS_DIR, load_prompt
from ..train.config import TrainConfig, default_config

FEEDBACK_PROMPT = "fast_thinking_feedback"
"""The reviewer remark given to ``align_shorten.txt`` for every row (a prompt file, no variables)."""

STATUSES: dict[str, str] = {
    "shortened": "rewrite kept: verified and shorter",
    "call_failed": "the model call raised; original kept",
    "no_rewrite": "no usable rewrite (wrong format, or nothing to keep); original kept",
    "wrong_answer": "the rewrite's answer no longer verifies; original kept",
    "wrong_arithmetic": "a calculation in the rewrite is wrong; original kept",
    "misses_reference": "the rewritten reasoning never reaches the reference number; original kept",
    "not_shorter": "the rewrite is not shorter in student tokens; original kept",
}
"""What happened to a row in :func:`shorten_stage`, in the order the checks run."""

_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


# =========================================================================== lengths


def length_stats(lengths: Mapping[str, Sequence[int]], baseline: str | None = None) -> pd.DataFrame:
    """One line per named list of lengths: n, mean, median, p90, max, total.

    With ``baseline`` (one of the names), ``vs baseline`` is the total relative
    to that list's total (0.6 = 40% fewer tokens).
    """
    if baseline is not None and baseline not in lengths:
        raise KeyError(f"baseline {baseline!r} is not one of {list(lengths)}")
    records = []
    for name, values in lengths.items():
        series = pd.Series(list(values), dtype=float)
        records.append({"variant": name, "n": len(series), "mean": round(series.mean(), 1),
                        "median": series.median(), "p90": round(series.quantile(0.9), 1),
                        "max": series.max(), "total": int(series.sum()) if len(series) else 0})
    columns = ["variant", "n", "mean", "median", "p90", "max", "total"]
    table = pd.DataFrame(records, columns=columns).set_index("variant")
    if baseline is not None:
        base_total = table.loc[baseline, "total"]
        table[f"vs {baseline}"] = (table["total"] / base_total).round(3) if base_total else float("nan")
    return table


def plot_length_histograms(lengths: Mapping[str, Sequence[int]], *, ax: Any = None, bins: int = 20,
                           xlabel: str = "thinking length (student tokens)", title: str = "") -> Any:
    """Overlaid histograms on shared bins, one per named list of lengths (the first filled, the rest outlined).

    With no lengths at all the axes say "nothing to plot" instead of failing (a smoke-size run).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    values = [v for seq in lengths.values() for v in seq]
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    if not values:
        ax.text(0.5, 0.5, "nothing to plot", ha="center", va="center", transform=ax.transAxes)
        return ax
    edges = np.histogram_bin_edges(values, bins=bins)
    for i, (name, seq) in enumerate(lengths.items()):
        label = f"{name} (n={len(seq)}, mean {np.mean(seq):.0f})" if len(seq) else f"{name} (empty)"
        if i == 0:
            ax.hist(list(seq), bins=edges, alpha=0.45, label=label)
        else:
            ax.hist(list(seq), bins=edges, histtype="step", linewidth=2, label=label)
    ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return ax


# =========================================================================== notebook 03's export


def zero_shot_prompt(row: Row) -> list[dict[str, str]]:
    """The prompt notebook 03 exports with: system prompt + the bare question (no examples)."""
    return math_messages(row["question"])


@dataclass
class CuratedSet:
    """Notebook 03's training data: the full rows and, for each, the split it was exported to."""

    rows: list[Row]
    splits: list[str]
    """``"train"`` or ``"val"`` for each row, in the order of ``rows``."""
    distill_dir: Path

    def count(self, split: str) -> int:
        return sum(s == split for s in self.splits)


def _record_key(messages: Sequence[Mapping[str, str]]) -> str:
    return json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)


def load_curated(settings: Settings | None = None, *, distill_dir: str | Path | None = None,
                 kept_path: str | Path | None = None,
                 build_prompt: Callable[[Row], list[dict[str, str]]] = zero_shot_prompt) -> CuratedSet:
    """The rows notebook 03 exported, with the train/validation split it used.

    Reads ``<datasets>/distill/train.jsonl`` (+ ``val.jsonl``) and
    ``<datasets>/curation/kept.jsonl`` and pairs every kept row with an exported
    record (same prompt, same assistant reply). Raises ``FileNotFoundError``
    naming notebook 03 when a file is missing, ``ValueError`` when the two do not
    describe the same rows (written by different runs).
    """
    settings = settings or get_settings()
    distill_dir = Path(distill_dir or settings.datasets_dir / "distill")
    kept_path = Path(kept_path or settings.datasets_dir / "curation" / "kept.jsonl")
    train_path, val_path = distill_dir / file_name("messages", "train"), distill_dir / file_name("messages", "val")
    missing = [str(p) for p in (train_path, kept_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{' and '.join(missing)} not found: run notebook 03 first "
                                "(03_curate_dataset exports the training set and keeps the curated rows).")
    validate_jsonl(train_path)
    available: dict[str, Counter[str]] = {
        "train": Counter(_record_key(r["messages"]) for r in read_jsonl(train_path))}
    if val_path.is_file():
        validate_jsonl(val_path)
        available["val"] = Counter(_record_key(r["messages"]) for r in read_jsonl(val_path))
    rows = read_jsonl(kept_path)
    if not rows:
        raise ValueError(f"{kept_path} holds no rows: run notebook 03 first.")
    splits, unmatched = [], []
    for row in rows:
        key = _record_key(to_messages(row, build_prompt)["messages"])
        split = next((s for s, counts in available.items() if counts[key] > 0), None)
        if split is None:
            unmatched.append(row_id(row))
            continue
        available[split][key] -= 1
        splits.append(split)
    left = sum(sum(c.values()) for c in available.values())
    if unmatched or left:
        raise ValueError(f"{kept_path.name} and {distill_dir.name}/*.jsonl do not hold the same rows "
                         f"({len(unmatched)} kept row(s) not exported, e.g. {unmatched[:3]}; {left} exported "
                         "record(s) without a kept row): they come from different runs. Run notebook 03 again.")
    return CuratedSet(rows, splits, distill_dir)


# =========================================================================== shorteners


@dataclass(frozen=True)
class Proposal:
    """A shortener's suggestion for one row: new thinking and answer, or ``None`` with a note."""

    thinking: str | None
    answer: str | None
    raw: str = ""
    """The model's reply as it came (empty for rule-based shorteners)."""
    note: str = ""


Shortener = Callable[[Row], Proposal]
"""``row -> Proposal``; may raise when a model call fails (counted as ``call_failed``). A shortener
that also has ``batch(rows) -> [Proposal or exception]`` gets all rows at once (:class:`LLMShortener`)."""


def shorten_prompt(row: Row, *, student: str = DEFAULT_STUDENT, prompts_dir: Path = PROMPTS_DIR) -> str:
    """The long-to-short request for one row: ``align_shorten.txt`` filled in, with the fast-thinking remark."""
    template = load_prompt("align_shorten", prompts_dir)
    values = {"question": row.get("question") or "", "thinking": thinking_of(row), "answer": answer_of(row),
              "feedback": load_prompt(FEEDBACK_PROMPT, prompts_dir).render(), "student": student}
    return template.render(**{k: v for k, v in values.items() if k in template.variables})


@dataclass
class LLMShortener:
    """Notebook 03's long-to-short rewrite, asked for every row (see :func:`llm_shortener`)."""

    chat: BatchChat
    student: str = DEFAULT_STUDENT
    prompts_dir: Path = PROMPTS_DIR

    def _proposal(self, item: Any) -> Proposal | BaseException:
        if isinstance(item, BaseException):
            return item
        raw, error = reply_text(item)
        if raw is None:
            return RuntimeError(error)
        parsed = parse_rewrite(raw)
        if parsed is None:
            return Proposal(None, None, raw, "not in the <reasoning>/<answer> format")
        return Proposal(parsed[0], parsed[1], raw)

    def batch(self, rows: Sequence[Row]) -> list[Proposal | BaseException]:
        """Every row's rewrite in one batch of teacher calls."""
        chats = [[{"role": "user", "content": shorten_prompt(r, student=self.student, prompts_dir=self.prompts_dir)}]
                 for r in rows]
        return [self._proposal(item) for item in self.chat(chats)] if chats else []

    def __call__(self, row: Row) -> Proposal:
        proposal = self.batch([row])[0]
        if isinstance(proposal, BaseException):
            raise proposal
        return proposal


def llm_shortener(chat: BatchChat, *, student: str = DEFAULT_STUDENT, prompts_dir: Path = PROMPTS_DIR) -> LLMShortener:
    """Notebook 03's long-to-short rewrite as a shortener, asked for every row.

    The prompt is ``align_shorten.txt`` (the rewrite :mod:`helpers.curate.align` uses
    for chains its judge finds too convoluted), with ``fast_thinking_feedback.txt``
    as the reviewer's remark; the reply is read by
    :func:`helpers.curate.align.parse_rewrite`. ``chat`` answers many chats at once
    (the engine's :func:`~helpers.teacher.engine.batch_chat`, or a fake), so
    :func:`shorten_stage` sends all rows in one batch.
    """
    if not callable(chat):
        raise TypeError("chat must be a callable: list of chats -> list of replies")
    for name in ("align_shorten", FEEDBACK_PROMPT):  # a missing prompt file fails now, not at the first row
        load_prompt(name, prompts_dir)
    return LLMShortener(chat, student, prompts_dir)


def calculation_sentences(text: str) -> list[str]:
    """The sentences (or lines) of ``text`` that hold at least one calculation ``a op b = c``."""
    pieces = [p.strip() for p in _SENTENCE_RE.split(text or "") if p and p.strip()]
    return [p for p in pieces if recompute(p).equations > 0]


def rule_shortener(row: Row) -> Proposal:
    """Baseline, no model: keep only the sentences with a calculation, one per line; the answer is unchanged.

    ``"Nina shares 78 crayons with 2 friends. 78 / 2 = 39. Each friend gets 50
    more. 39 + 50 = 89."`` becomes ``"78 / 2 = 39.\\n39 + 50 = 89."``. Rows
    without any calculation get no proposal.
    """
    kept = calculation_sentences(thinking_of(row))
    if not kept:
        return Proposal(None, None, "", "no calculation in the reasoning to keep")
    return Proposal("\n".join(kept), answer_of(row))


# =========================================================================== checks


def reaches_reference(thinking: str, reference: Any) -> bool | None:
    """Does a number in the reasoning equal the reference? ``None`` when the reference is not a number."""
    target = normalize_number(reference)
    if target is None:
        return None
    return any(normalize_number(n) == target for n in _NUMBER_RE.findall(thinking or ""))


def check_proposal(row: Row, proposal: Proposal, *, count_tokens: Callable[[str], int],
                   verify: Callable[[Row, str], Check] = answer_still_correct) -> tuple[str, str]:
    """``(status, detail)`` for a proposal, the checks in the order of :data:`STATUSES`."""
    if proposal.thinking is None or proposal.answer is None:
        return "no_rewrite", proposal.note or "no proposal"
    check = verify(row, proposal.answer)
    if not check.correct:
        return "wrong_answer", check.detail or "the answer does not verify"
    arithmetic = recompute(proposal.thinking)
    if arithmetic.changed:
        return "wrong_arithmetic", "; ".join(arithmetic.fixes)
    if reaches_reference(proposal.thinking, row.get("reference")) is False:
        return "misses_reference", f"no {row.get('reference')} in the reasoning"
    before, after = count_tokens(thinking_of(row)), count_tokens(proposal.thinking)
    if after >= before:
        return "not_shorter", f"{after} tokens, the original has {before}"
    return "shortened", f"{before} -> {after} tokens"


# =========================================================================== the stage


def _propose_all(rows: Sequence[Row], shortener: Shortener) -> list[tuple[Proposal | None, str]]:
    """Every row's proposal: in one batch when the shortener offers ``batch(rows)``, else row by row."""
    batch = getattr(shortener, "batch", None)
    if callable(batch):
        results: list[Any] = list(batch(rows))
        if len(results) != len(rows):
            raise ValueError(f"the shortener returned {len(results)} proposals for {len(rows)} rows")
    else:
        results = []
        for row in rows:
            try:
                results.append(shortener(row))
            except Exception as exc:  # noqa: BLE001 - any failure is one failed call
                results.append(exc)
    out: list[tuple[Proposal | None, str]] = []
    for result in results:
        if isinstance(result, BaseException):
            out.append((None, f"{type(result).__name__}: {result}"))
        elif isinstance(result, Proposal):
            out.append((result, ""))
        else:
            raise TypeError(f"shortener returned {type(result).__name__}, expected a Proposal")
    if out and all(p is None for p, _ in out):
        raise AlignmentAborted(f"every shortener call failed; first error: {out[0][1]}")
    return out


def shorten_stage(rows: Sequence[Row], shortener: Shortener, *, source: str,
                  count_tokens: Callable[[str], int],
                  verify: Callable[[Row, str], Check] = answer_still_correct,
                  stage: str | None = None) -> StageResult:
    """Propose a shorter reasoning for every row; keep it only if it passes :func:`check_proposal`.

    Nothing is dropped: a row whose proposal fails keeps its original thinking,
    so a variant built from the result has exactly the rows of the input. Every
    output row gets ``fast = {source, status, detail, rewritten, tokens_before,
    tokens_after, original_thinking, raw}``. ``result.tables["outcomes"]`` has one
    line per row, ``result.tables["counts"]`` the rows per status. When every
    call fails, :class:`helpers.curate.align.AlignmentAborted` is raised: the
    endpoint is down.
    """
    if not callable(shortener):
        raise TypeError("shortener must be a callable row -> Proposal")
    proposals = _propose_all(rows, shortener)
    builder = StageBuilder(stage or f"shorten_{source}", n_in=len(rows))
    records = []
    for row, (proposal, error) in zip(rows, proposals):
        if proposal is None:
            status, detail = "call_failed", error
        else:
            status, detail = check_proposal(row, proposal, count_tokens=count_tokens, verify=verify)
        rewritten = status == "shortened"
        out = with_reply(row, thinking=proposal.thinking, answer=proposal.answer) if rewritten else dict(row)
        before = count_tokens(thinking_of(row))
        info = {"source": source, "status": status, "detail": detail, "rewritten": rewritten,
                "tokens_before": before, "tokens_after": count_tokens(thinking_of(out)),
                "original_thinking": thinking_of(row) if rewritten else None,
                "raw": proposal.raw if proposal is not None else ""}
        out["fast"] = info
        builder.keep(out)
        records.append({"row": row_id(row), "status": status, "tokens_before": before,
                        "tokens_after": info["tokens_after"], "detail": detail})
    outcomes = pd.DataFrame(records, columns=["row", "status", "tokens_before", "tokens_after", "detail"])
    return builder.result(outcomes=outcomes, counts=status_counts(outcomes))


def apply_rewrites(rows: Sequence[Row], result: StageResult) -> list[Row]:
    """``rows`` with the rows of a :func:`shorten_stage` result (run on a sample of them) put in their place.

    Rows outside the sample stay as they are, so the variant keeps every row.
    """
    done = {row_id(r): r for r in result.kept}
    unknown = sorted(done.keys() - {row_id(r) for r in rows})
    if unknown:
        raise ValueError(f"Shortened rows {unknown[:5]} are not among the rows to apply them to.")
    return [done.get(row_id(r), r) for r in rows]


def status_counts(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Rows per status (every status listed, in check order) with what it means."""
    counts = outcomes["status"].value_counts() if len(outcomes) else pd.Series(dtype=int)
    return pd.DataFrame([{"status": s, "rows": int(counts.get(s, 0)), "meaning": m} for s, m in STATUSES.items()])


# =========================================================================== export and training


def export_variant(rows: Sequence[Row], splits: Sequence[str], out_dir: str | Path, *,
                   build_prompt: Callable[[Row], list[dict[str, str]]] = zero_shot_prompt) -> dict[str, Path]:
    """Write ``rows`` as ms-swift ``messages`` JSONL, each row to its given split; validate every file.

    Older ``*.jsonl`` files in ``out_dir`` are removed first, so a split that is
    empty this time leaves no stale file behind. Returns ``{split: path}``.
    """
    if len(rows) != len(splits):
        raise ValueError(f"{len(rows)} rows but {len(splits)} split labels")
    unknown = sorted(set(splits) - {"train", "val"})
    if unknown:
        raise ValueError(f"splits must be 'train' or 'val', got {unknown}")
    if "train" not in splits:
        raise ValueError("No training row to export.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.jsonl"):
        old.unlink()
    files = {}
    for split in ("train", "val"):
        part = [r for r, s in zip(rows, splits) if s == split]
        if part:
            path = write_jsonl((to_messages(r, build_prompt) for r in part), out_dir / file_name("messages", split))
            validate_jsonl(path)
            files[split] = path
    return files


def variant_configs(train_files: Mapping[str, str | Path], settings: Settings | None = None, *,
                    output_root: str | Path, **overrides: Any) -> dict[str, TrainConfig]:
    """One training config per variant, identical except for the data and the output folder.

    Built with :func:`helpers.train.config.default_config` (the profile's recipe) plus
    ``overrides``. No validation set (the variants' validation replies differ, so
    their losses could not be compared anyway) and, unless overridden, one
    checkpoint at the very end: a run of a few minutes needs no resume points.
    Raises ``ValueError`` when the training files have different row counts.
    """
    settings = settings or get_settings()
    if not train_files:
        raise ValueError("No training files given.")
    n_rows = {name: count_lines(path) for name, path in train_files.items()}
    if len(set(n_rows.values())) != 1:
        raise ValueError(f"The variants must have the same rows to compare them, got {n_rows}")
    configs = {}
    for name, path in train_files.items():
        config = default_config(settings, train_file=path, output_dir=Path(output_root) / name,
                                **{"val_dataset": (), "swanlab_exp_name": f"fast-thinking-{name}", **overrides})
        if "save_steps" not in overrides:
            config = config.with_overrides(save_steps=config.total_steps(n_rows[name]))
        configs[name] = config
    return configs


def config_differences(configs: Mapping[str, TrainConfig]) -> pd.DataFrame:
    """The settings that differ between configs (one column per config): should be data and output only."""
    names = list(configs)
    rows = []
    for f in fields(TrainConfig):
        values = [getattr(configs[n], f.name) for n in names]
        if any(v != values[0] for v in values[1:]):
            rows.append({"setting": f.name, **{n: v for n, v in zip(names, values)}})
    return pd.DataFrame(rows, columns=["setting", *names])
