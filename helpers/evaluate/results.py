"""evalscope's output folders read back as the course's sample rows, scored and compared.

One scorer for everything: evalscope's own scores are kept for reference, but
every reply (students and teacher alike) is scored by
:func:`helpers.evaluate.metrics.score_row`. :func:`read_outputs` parses one output
folder, :func:`sample_rows` turns it into sample rows, and the tables compare
models, items fixed and broken, and lengths.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.jsonl import iter_jsonl, read_jsonl
from ..teacher.client import normalize_reply
from ..teacher.parsing import split_thinking
from .datasets import DATASETS, EvalDataset
from .metrics import item_table, metrics_table

Row = dict[str, Any]
_STOP_REASONS = {"max_tokens": "length", "model_length": "length", "length": "length"}

ITEM_EXTRAS: tuple[str, ...] = ("model", "dataset", "question", "latency_s", "think_words", "prompt_tokens",
                                "es_score")
"""Row fields kept next to :func:`helpers.evaluate.metrics.score_row`'s facts in the per-item table."""


def message_text(content: Any) -> str:
    """The text of an evalscope message: a string, or a list of parts (reasoning back in ``<think>`` tags)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "reasoning" and part.get("reasoning"):
            parts.append(f"<think>{part['reasoning']}</think>")
        elif part.get("type") == "text" and part.get("text"):
            parts.append(part["text"])
    return "\n\n".join(parts)


def _benchmark_of(stem: str, benchmarks: Sequence[str]) -> tuple[str, str]:
    for name in sorted(benchmarks, key=len, reverse=True):
        if stem.startswith(name + "_"):
            return name, stem[len(name) + 1:]
    name, _, subset = stem.partition("_")
    return name, subset


def _benchmarks(folder: Path) -> list[str]:
    config = folder / "configs" / "task_config.yaml"
    if not config.is_file():
        return []
    import yaml

    return list((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("datasets") or [])


def read_outputs(folder: str | Path) -> pd.DataFrame:
    """Parse one evalscope output folder into one row per (model, benchmark, subset, item).

    Columns: ``model_id``, ``benchmark``, ``subset``, ``index`` (position in the input
    file), ``prompt`` (the messages sent, as ``{role, content}`` text), ``raw`` (the
    reply text, with any ``<think>`` block evalscope split off put back),
    ``finish_reason`` (``stop`` / ``length`` ...), ``input_tokens``, ``output_tokens``,
    ``latency_s``, ``error``, and evalscope's own verdict: ``es_score``,
    ``es_prediction``, ``target``.
    """
    folder = Path(folder)
    benchmarks = _benchmarks(folder)
    lines: list[dict[str, Any]] = []
    for pred_file in sorted(folder.glob("predictions/*/*.jsonl")):
        model_id = pred_file.parent.name
        benchmark, subset = _benchmark_of(pred_file.stem, benchmarks)
        review_file = folder / "reviews" / model_id / pred_file.name
        reviews = {r["index"]: r for r in read_jsonl(review_file)} if review_file.is_file() else {}
        for pred in read_jsonl(pred_file):
            output = pred.get("model_output") or {}
            choices = output.get("choices") or [{}]
            message = choices[0].get("message") or {}
            usage = output.get("usage") or {}
            perf = output.get("perf_metrics") or message.get("perf_metrics") or {}
            sent = list(pred.get("messages") or [])
            if sent and sent[-1].get("role") == "assistant" and sent[-1].get("id") == message.get("id"):
                sent = sent[:-1]
            review = reviews.get(pred["index"], {})
            score = (review.get("sample_score") or {}).get("score") or {}
            main = score.get("main_score_name")
            value = score.get("value") or {}
            stop = choices[0].get("stop_reason")
            lines.append({
                "model_id": model_id, "benchmark": benchmark, "subset": subset, "index": pred["index"],
                "prompt": [{"role": m.get("role"), "content": message_text(m.get("content"))} for m in sent],
                "raw": message_text(message.get("content")),
                "finish_reason": _STOP_REASONS.get(stop, stop),
                "input_tokens": usage.get("input_tokens"), "output_tokens": usage.get("output_tokens"),
                "latency_s": perf.get("latency", output.get("time")),
                "error": output.get("error"),
                "es_score": value.get(main) if main else None,
                "es_prediction": score.get("extracted_prediction"),
                "target": review.get("target"),
            })
    table = pd.DataFrame(lines)
    if table.empty:
        raise FileNotFoundError(f"No evalscope predictions under {folder}/predictions/: did the run finish?")
    return table.sort_values(["model_id", "benchmark", "subset", "index"]).reset_index(drop=True)


def prompt_mismatches(outputs: pd.DataFrame, dataset: EvalDataset) -> list[str]:
    """Ids of the items whose prompt, as evalscope sent it, differs from the course's messages."""
    bad = []
    for _, out in outputs.iterrows():
        row = dataset.rows[int(out["index"])]
        wanted = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if out["prompt"] != wanted:
            bad.append(row["id"])
    return bad


def _think_words(reply: Mapping[str, Any] | None) -> int:
    return len(((reply or {}).get("thinking") or "").split())


def with_eval_fields(row: Mapping[str, Any], model: str, dataset: str) -> Row:
    """A sample row with the fields the per-item table needs: model, dataset, latency, thinking length.

    A reply whose ``<think>`` never closes counts as truncated even when the server
    said it stopped normally: its reasoning is cut off either way.
    """
    reply = row.get("reply") or None
    out = {**row, "model": model, "dataset": dataset,
           "latency_s": (reply or {}).get("latency_s"),
           "think_words": _think_words(reply),
           "prompt_tokens": ((reply or {}).get("usage") or {}).get("prompt_tokens")}
    if reply and out.get("status") == "ok" and split_thinking(reply.get("raw") or "").flags.unclosed_think:
        out["status"] = "truncated"
    return out


def _number(value: Any, kind: type = int) -> Any:
    """``value`` as an int (or ``kind``), 0 for a missing value (None or NaN)."""
    return kind(0) if value is None or pd.isna(value) else kind(value)


def sample_rows(outputs: pd.DataFrame, dataset: EvalDataset, model: str) -> list[Row]:
    """evalscope's per-item outputs as the course's sample rows (the schema :mod:`helpers.teacher.engine` writes).

    The reply is split into thinking and answer by :func:`helpers.teacher.client.normalize_reply`,
    exactly like a teacher reply, so one scorer serves students and teacher.
    """
    rows = []
    for _, out in outputs.iterrows():
        prompt = dataset.rows[int(out["index"])]
        error = out["error"] if isinstance(out["error"], (str, Mapping)) else None
        usage = {"prompt_tokens": _number(out["input_tokens"]), "completion_tokens": _number(out["output_tokens"])}
        reply = None if error else normalize_reply(out["raw"], None, out["finish_reason"], usage,
                                                   float(_number(out["latency_s"], float)), model).to_dict()
        status = "error" if error else ("truncated" if out["finish_reason"] == "length" else "ok")
        row = {"prompt_id": prompt["id"], "sample_index": 0, "status": status, "question": prompt["question"],
               "reference": prompt["reference"], "task": prompt["task"], "meta": prompt.get("meta") or {},
               "reply": reply, "error": str(error) if error else None, "es_score": out["es_score"]}
        rows.append(with_eval_fields(row, model, dataset.name))
    return rows


def item_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The per-item table: :func:`helpers.evaluate.metrics.score_row` facts plus model, dataset, latency, thinking length."""
    return item_table(list(rows), extra=ITEM_EXTRAS)


def metrics_by_model(items: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Accuracy, format compliance, thinking, truncation, tokens, thinking length and latency per dataset and model."""
    table = metrics_table(items, by=["dataset", "model"])
    extra = items.groupby(["dataset", "model"], dropna=False).agg(
        mean_think_words=("think_words", "mean"), mean_latency_s=("latency_s", "mean"))
    table = table.join(extra.round({"mean_think_words": 1, "mean_latency_s": 2}))
    if models is not None:
        order = [m for m in models if m in table.index.get_level_values("model")]
        present = list(dict.fromkeys(table.index.get_level_values("dataset")))
        datasets = [d for d in present if d not in DATASETS] + [d for d in DATASETS if d in present]
        table = table.reindex(pd.MultiIndex.from_product([datasets, order], names=["dataset", "model"])).dropna(
            how="all")
    return table


def fixed_broken(items: pd.DataFrame, before: str, after: str) -> pd.DataFrame:
    """Per item: was it right before and after distillation? ``change`` is fixed / broken / both right / both wrong."""
    cols = ["dataset", "prompt_id", "question", "reference", "prediction", "correct", "format_ok", "tokens"]
    a = items.loc[items["model"] == before, cols].set_index(["dataset", "prompt_id"])
    b = items.loc[items["model"] == after, cols].set_index(["dataset", "prompt_id"])
    joined = a.merge(b.drop(columns=["question", "reference"]), left_index=True, right_index=True,
                     suffixes=(f"_{before}", f"_{after}"))
    was, now = joined[f"correct_{before}"].astype(bool), joined[f"correct_{after}"].astype(bool)
    joined.insert(0, "change", np.select([~was & now, was & ~now, was & now], ["fixed", "broken", "both right"],
                                         "both wrong"))
    return joined.reset_index()


def change_counts(changes: pd.DataFrame) -> pd.DataFrame:
    """How many items distillation fixed and broke, per dataset (net = fixed - broken)."""
    order = ["fixed", "broken", "both right", "both wrong"]
    counts = pd.crosstab(changes["dataset"], changes["change"]).reindex(columns=order, fill_value=0)
    counts["net"] = counts["fixed"] - counts["broken"]
    return counts


def plot_comparison(table: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "format_ok", "truncated",
                                                                     "mean_tokens"), title: str = ""):
    """Grouped bar charts: one panel per metric, datasets on the x axis, one bar per model."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        wide = table[metric].unstack("model")  # unstack sorts: put datasets and models back in table order
        wide = wide.reindex(index=list(dict.fromkeys(table.index.get_level_values("dataset"))),
                            columns=list(dict.fromkeys(table.index.get_level_values("model"))))
        wide.plot.bar(ax=ax, rot=0, width=0.8)
        ax.set(title=metric, xlabel="")
        if metric in ("accuracy", "format_ok", "truncated", "think_rate"):
            ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def reply_token_lengths(train_path: str | Path, tokenizer_dir: str | Path) -> pd.Series:
    """Length in student tokens of every assistant reply of a training file (ms-swift ``messages`` JSONL).

    The evaluation's token limit must leave room for the longest of these, or the
    distilled student is cut off in the middle of the very reasoning it was taught.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    lengths = []
    for _, record in iter_jsonl(train_path):
        replies = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        lengths += [len(tokenizer.encode(r, add_special_tokens=False)) for r in replies]
    return pd.Series(lengths, name="reply tokens", dtype="int64")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.reset_index().to_json(orient="records"))


def write_summary(path: str | Path, **parts: Any) -> Path:
    """Save the run's summary as JSON: DataFrames become lists of records, paths strings."""
    data = {k: _records(v) if isinstance(v, pd.DataFrame) else v for k, v in parts.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return path

