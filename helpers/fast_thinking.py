r"""Fast thinking: the same right answers with shorter chains of thought (notebook 09).

Every reasoning token costs time and money at inference. DistilQwen's
"fast thinking" models are distilled from *shortened* chains of thought: the
teacher's long reasoning is rewritten long-to-short, the rewrite is checked,
and the student learns to reach the answer with fewer tokens. This module holds
the pieces of that experiment:

* **Lengths** in the *student's* tokens (:func:`token_counter`,
  :func:`length_stats`, :func:`plot_length_histograms`): what the student must
  learn to write, and later what it does write.
* **Input**: :func:`load_curated` reads notebook 03's export
  (``datasets/distill/train.jsonl`` and ``val.jsonl``, where
  :func:`helpers.train.default_config` looks for it) together with the full
  rows behind it (``datasets/curation/kept.jsonl``: questions, references,
  thinking), and checks that both come from the same run.
* **Shorteners**, each ``row -> Proposal``: :func:`llm_shortener` is the
  long-to-short rewrite of notebook 03 (:mod:`helpers.align`: the prompt
  ``align_shorten.txt``, parsed by :func:`helpers.align.parse_rewrite`), asked
  for every row with the reviewer remark ``fast_thinking_feedback.txt`` instead
  of a judge's verdict. :func:`rule_shortener` is a transparent, rule-based
  *baseline*: keep only the sentences that hold a calculation ``a op b = c``.
* **The stage** :func:`shorten_stage`: every proposal is re-checked and kept
  only when the answer still verifies against the reference
  (:func:`helpers.verify.answer_still_correct`), the reasoning's arithmetic is
  right (:func:`helpers.calculator.recompute` finds nothing to fix), the
  reasoning still reaches the reference number, and the thinking is strictly
  shorter in student tokens. Otherwise the row keeps its original reasoning
  (nothing is dropped: both variants have the same rows), and the reason is
  recorded. Model calls can be cached in an append-only JSONL, so an
  interrupted run resumes where it stopped.
* **Export and training**: :func:`export_variant` writes a variant with
  :mod:`helpers.export` using notebook 03's train/validation split;
  :func:`variant_configs` builds one :class:`helpers.train.TrainConfig` per
  variant from :func:`helpers.train.default_config` with identical settings
  (:func:`config_differences` proves it).
* **Evaluation**: :func:`evaluate_students` asks base and fine-tuned students
  (a model folder, or a base model plus a LoRA checkpoint applied with peft,
  not merged) the same held-out questions, greedy, in batches, and returns the
  course's sample rows; :func:`comparison_table` scores them with
  :mod:`helpers.metrics` and adds the thinking length in student tokens;
  :func:`plot_accuracy_vs_tokens` draws accuracy against mean output tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from .align import DEFAULT_STUDENT, AlignmentAborted, parse_rewrite
from .calculator import recompute
from .config import Settings, get_settings
from .curate import (Row, StageBuilder, StageResult, answer_of, map_with_progress, row_id, thinking_of,
                     with_reply)
from .export import file_name, to_messages, validate_jsonl, write_jsonl
from .parsing import normalize_number
from .prompts import PROMPTS_DIR, load_prompt, math_messages
from .train import TrainConfig, count_rows, default_config
from .verify import Check, answer_still_correct
# Re-exported: notebook 09 evaluates its students with the shared quick evaluation.
from .quick_eval import (Generated, Student, comparison_table, evaluate_students,  # noqa: F401
                         generate_greedy, plot_accuracy_vs_tokens, token_counter)

Chat = Callable[[list[dict[str, str]]], str]
"""Sends chat messages to a model and returns the reply text (as in :mod:`helpers.align`)."""

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


def _read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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
        "train": Counter(_record_key(r["messages"]) for r in _read_records(train_path))}
    if val_path.is_file():
        validate_jsonl(val_path)
        available["val"] = Counter(_record_key(r["messages"]) for r in _read_records(val_path))
    rows = _read_records(kept_path)
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
"""``row -> Proposal``; may raise when a model call fails (counted as ``call_failed``)."""


def shorten_prompt(row: Row, *, student: str = DEFAULT_STUDENT, prompts_dir: Path = PROMPTS_DIR) -> str:
    """The long-to-short request for one row: ``align_shorten.txt`` filled in, with the fast-thinking remark."""
    template = load_prompt("align_shorten", prompts_dir)
    values = {"question": row.get("question") or "", "thinking": thinking_of(row), "answer": answer_of(row),
              "feedback": load_prompt(FEEDBACK_PROMPT, prompts_dir).render(), "student": student}
    return template.render(**{k: v for k, v in values.items() if k in template.variables})


def llm_shortener(chat: Chat, *, student: str = DEFAULT_STUDENT, prompts_dir: Path = PROMPTS_DIR) -> Shortener:
    """Notebook 03's long-to-short rewrite, asked for every row.

    The prompt is ``align_shorten.txt`` (the rewrite :mod:`helpers.align` uses
    for chains its judge finds too convoluted), with ``fast_thinking_feedback.txt``
    as the reviewer's remark; the reply is read by
    :func:`helpers.align.parse_rewrite` (``<reasoning>...</reasoning>`` then the answer).
    """
    if not callable(chat):
        raise TypeError("chat must be a callable messages -> str")
    for name in ("align_shorten", FEEDBACK_PROMPT):  # a missing prompt file fails now, not at the first row
        load_prompt(name, prompts_dir)

    def shorten(row: Row) -> Proposal:
        raw = chat([{"role": "user", "content": shorten_prompt(row, student=student, prompts_dir=prompts_dir)}])
        if not isinstance(raw, str):
            raise TypeError(f"chat returned {type(raw).__name__}, expected str")
        parsed = parse_rewrite(raw)
        if parsed is None:
            return Proposal(None, None, raw, "not in the <reasoning>/<answer> format")
        return Proposal(parsed[0], parsed[1], raw)

    return shorten


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


def _cache_key(source: str, row: Row) -> str:
    payload = json.dumps([source, row.get("question"), thinking_of(row), answer_of(row)], ensure_ascii=False)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()


class ProposalCache:
    """Append-only JSONL of proposals (the expensive model calls), keyed by source and row content.

    Re-running a stage reuses every cached proposal and only calls the model for
    the rest; the checks always run again. A torn last line is ignored. Failed
    calls are not cached, so they are retried.
    """

    def __init__(self, path: str | Path) -> None:
        from .generate import repair_jsonl_tail

        self.path = Path(path)
        self._lock = threading.Lock()
        self._items: dict[str, Proposal] = {}
        if self.path.is_file():
            repair_jsonl_tail(self.path)  # a line torn by a kill is cut away; appends start clean
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self._items[record["key"]] = Proposal(**record["proposal"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Proposal | None:
        return self._items.get(key)

    def put(self, key: str, proposal: Proposal) -> None:
        with self._lock:
            self._items[key] = proposal
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "proposal": asdict(proposal)}, ensure_ascii=False) + "\n")
                f.flush()


def shorten_stage(rows: Sequence[Row], shortener: Shortener, *, source: str,
                  count_tokens: Callable[[str], int],
                  verify: Callable[[Row, str], Check] = answer_still_correct, max_workers: int = 1,
                  fail_fast_errors: int = 10, cache_path: str | Path | None = None,
                  stage: str | None = None, progress: bool = True) -> StageResult:
    """Propose a shorter reasoning for every row; keep it only if it passes :func:`check_proposal`.

    Nothing is dropped: a row whose proposal fails keeps its original thinking,
    so a variant built from the result has exactly the rows of the input. Every
    output row gets ``fast = {source, status, detail, rewritten, tokens_before,
    tokens_after, original_thinking, raw}``. ``result.tables["outcomes"]`` has one
    line per row, ``result.tables["counts"]`` the rows per status.

    ``max_workers > 1`` calls ``shortener`` from that many threads (an API
    teacher). After ``fail_fast_errors`` failed calls in a row,
    :class:`helpers.align.AlignmentAborted` is raised: the endpoint is down.
    ``cache_path`` keeps proposals in an append-only JSONL (see :class:`ProposalCache`).
    """
    if not callable(shortener):
        raise TypeError("shortener must be a callable row -> Proposal")
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers}")
    cache = ProposalCache(cache_path) if cache_path is not None else None
    lock = threading.Lock()
    state = {"errors_in_a_row": 0}

    def propose(row: Row) -> tuple[Proposal | None, str]:
        key = _cache_key(source, row)
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            return cached, ""
        try:
            proposal = shortener(row)
        except Exception as exc:  # noqa: BLE001 - any client error is one failed call
            with lock:
                state["errors_in_a_row"] += 1
                if state["errors_in_a_row"] >= fail_fast_errors:
                    raise AlignmentAborted(f"{state['errors_in_a_row']} shortener calls in a row failed; last "
                                           f"error: {type(exc).__name__}: {exc}") from exc
            return None, f"{type(exc).__name__}: {exc}"
        with lock:
            state["errors_in_a_row"] = 0
        if not isinstance(proposal, Proposal):
            raise TypeError(f"shortener returned {type(proposal).__name__}, expected a Proposal")
        if cache is not None:
            cache.put(key, proposal)
        return proposal, ""

    proposals = map_with_progress(propose, rows, max_workers=max_workers, desc=f"shorten ({source})",
                                  progress=progress)

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

    Built with :func:`helpers.train.default_config` (the profile's recipe) plus
    ``overrides``. No validation set (the variants' validation replies differ, so
    their losses could not be compared anyway) and, unless overridden, one
    checkpoint at the very end: a run of a few minutes needs no resume points.
    Raises ``ValueError`` when the training files have different row counts.
    """
    settings = settings or get_settings()
    if not train_files:
        raise ValueError("No training files given.")
    n_rows = {name: count_rows(path) for name, path in train_files.items()}
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



__all__ = [
    "CuratedSet", "FEEDBACK_PROMPT", "Generated", "Proposal", "ProposalCache", "STATUSES", "Student",
    "apply_rewrites", "calculation_sentences", "check_proposal", "comparison_table", "config_differences",
    "evaluate_students", "export_variant", "generate_greedy", "length_stats", "llm_shortener", "load_curated",
    "plot_accuracy_vs_tokens", "plot_length_histograms", "reaches_reference", "rule_shortener", "shorten_prompt",
    "shorten_stage", "status_counts", "token_counter", "variant_configs", "zero_shot_prompt",
]
