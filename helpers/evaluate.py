r"""Before and after: evaluate the base and the distilled student with evalscope (notebook 06).

The question of notebook 06 is simple: *did distillation help, where, and at what
price?* Answering it honestly takes a few rules, and this module enforces them:

* **Same items, same prompt, same settings for every model.** The evaluation sets
  are written once per run (:func:`prepare_datasets`) with the prompts of
  :mod:`helpers.prompts`: the system prompt and user template the student was
  trained with (``math_system`` + ``math_user``), zero-shot, greedy decoding and
  one token limit. :func:`prompt_mismatches` then checks, item by item, that the
  chat evalscope really sent is the one the course builds.
* **evalscope runs the models** (:func:`evaluate_model`). Word problems and GSM8K
  go through evalscope's ``gsm8k`` benchmark on local gsm8k-format files, the
  headline classification set through ``general_qa`` with chat messages. All
  prompts are zero-shot: evalscope rewrites assistant turns (see :func:`check_zero_shot`).
  Each (model, dataset) pair gets its own evalscope output folder
  ``<run>/evalscope/<model>-<dataset>/`` (``predictions/``, ``reviews/``,
  ``reports/``, ``configs/``), which ``evalscope service --outputs <run>/evalscope``
  (``evalscope app`` is its deprecated alias) shows in a dashboard.
* **One scorer for everything.** evalscope's own scores are kept for reference,
  but the course scores every reply (students and teacher alike) with
  :func:`helpers.metrics.score_row`: math-verify on the ``\boxed{}`` answer,
  label match for headlines. :func:`read_outputs` parses evalscope's files into
  one row per item, :func:`sample_rows` turns them into the course's sample rows.
* **Served, not loaded.** Both students are served by ``swift deploy``
  (:class:`helpers.server.LocalServer`) and evaluated with ``eval_type='openai_api'``.
  :func:`compare_backends` measures the alternative (``eval_type='llm_ckpt'``):
  unbatched it is slower; batched it is faster but evalscope 1.14 then reports
  the padded batch length as every item's output length and one stop reason
  for the whole batch, which breaks the token and truncation metrics.

evalscope runs in a child process (``python -m helpers.evaluate <spec.json>``) so
its logs and progress bars go to a log file instead of the notebook, and the
notebook kernel never holds a second copy of a model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .config import HUB_OFFLINE_VARS, Settings, TeacherEndpoint, get_settings, mask_secrets
from .merge import latest_merged_model as find_merged_model  # the distilled student of notebook 05
from .metrics import item_table, metrics_table
from .parsing import split_thinking
from .prompts import load_prompt, render
from .server import LocalServer, _die_with_parent, server_threads
from .tasks import (
    DatasetUnavailable,
    _read_jsonl,
    evalscope_gsm8k_path,
    gsm8k_rows,
    headline_rows,
    word_problem_rows,
    write_gsm8k_jsonl,
    write_jsonl,
)
from .teacher import normalize_reply

__all__ = [
    "change_counts",
    "check_zero_shot",
    "compare_backends",
    "dashboard_command",
    "DATASETS",
    "EvalDataset",
    "EvalError",
    "evalscope_prompt_template",
    "evaluate_model",
    "evaluate_teacher",
    "find_merged_model",
    "fixed_broken",
    "generation_config",
    "item_frame",
    "message_text",
    "metrics_by_model",
    "ModelEval",
    "new_run_dir",
    "plot_comparison",
    "prepare_datasets",
    "prompt_mismatches",
    "read_outputs",
    "reply_token_lengths",
    "sample_rows",
    "task_config",
    "teacher_prompt_rows",
    "with_eval_fields",
    "write_summary",
]

Row = dict[str, Any]
Backend = Literal["served", "checkpoint"]

DATASETS: dict[str, dict[str, str]] = {
    "word_problems": {"benchmark": "gsm8k", "subset": "default", "task": "word_problem",
                      "what": "held-out test split of the generated word problems (other templates than training)"},
    "gsm8k": {"benchmark": "gsm8k", "subset": "default", "task": "gsm8k",
              "what": "GSM8K test (real grade-school problems the student never trained on)"},
    "headlines": {"benchmark": "general_qa", "subset": "headlines", "task": "classification",
                  "what": "news-headline topics of notebook 01 (a skill distillation did not train)"},
}
"""The evaluation sets: evalscope benchmark, subset name, course task and a one-line description."""

ITEM_EXTRAS: tuple[str, ...] = ("model", "dataset", "question", "latency_s", "think_words", "prompt_tokens",
                                "es_score")
"""Row fields kept next to :func:`helpers.metrics.score_row`'s facts in the per-item table."""

API_KEY_ENV = "COURSE_EVAL_API_KEY"
"""How the API key reaches the evalscope child process (never written to a file)."""

_STOP_REASONS = {"max_tokens": "length", "model_length": "length", "length": "length"}


class EvalError(RuntimeError):
    """An evalscope run failed; the message carries the end of its log."""


# =========================================================================== datasets


@dataclass(frozen=True)
class EvalDataset:
    """One evaluation set as written to disk for evalscope, plus the course's prompt rows.

    ``rows`` are in file order: evalscope's item ``index`` ``i`` is ``rows[i]``.
    """

    name: str
    benchmark: str
    subset: str
    folder: Path
    rows: list[Row] = field(repr=False)

    @property
    def n(self) -> int:
        return len(self.rows)

    def dataset_args(self) -> dict[str, Any]:
        """The ``dataset_args[benchmark]`` entry of an evalscope ``TaskConfig``."""
        args: dict[str, Any] = {"local_path": str(self.folder), "subset_list": [self.subset], "few_shot_num": 0}
        if self.benchmark == "gsm8k":
            # The student's own prompt: the course system prompt + the math_user template.
            args.update(prompt_template=evalscope_prompt_template("math_user"), system_prompt=render("math_system"))
        else:
            args["metric_list"] = ["Rouge"]  # the chat carries its own system prompt; BLEU needs NLTK data
        return args

    @classmethod
    def load(cls, folder: str | Path) -> "EvalDataset":
        """Read a set back from the folder :func:`prepare_datasets` wrote."""
        folder = Path(folder)
        info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        return cls(info["name"], info["benchmark"], info["subset"], folder, _read_jsonl(folder / "items.jsonl"))


def evalscope_prompt_template(name: str = "math_user") -> str:
    """A course prompt file as an evalscope ``prompt_template``: ``{question}`` placeholder, braces doubled.

    evalscope fills templates with ``str.format``, so the literal ``\\boxed{}`` of the
    prompt must become ``\\boxed{{}}``. The text itself comes from ``data/prompts/``.
    """
    marker = "\x00QUESTION\x00"
    text = load_prompt(name).render(question=marker)
    return text.replace("{", "{{").replace("}", "}}").replace(marker, "{question}")


def check_zero_shot(messages: Sequence[Mapping[str, str]], what: str = "an evaluation prompt") -> list[dict[str, str]]:
    """Return ``messages`` as plain ``{role, content}`` dicts, refusing any assistant turn.

    Evaluation prompts are zero-shot on purpose, and evalscope 1.14 could not be trusted
    with worked examples anyway: it cuts the ``<think>`` block out of an assistant turn
    given as a string (the checkpoint backend then drops it from the prompt), and over
    the OpenAI API it re-joins the parts of an assistant turn with extra newlines. Only
    system and user turns reach the model exactly as written.
    """
    roles = [m["role"] for m in messages]
    if "assistant" in roles:
        raise ValueError(f"{what} must be zero-shot (system and user turns only), got roles {roles}: evalscope "
                         "rewrites assistant turns (worked examples) before the model sees them.")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _write_dataset(folder: Path, name: str, rows: list[Row]) -> EvalDataset:
    spec = DATASETS[name]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if spec["benchmark"] == "gsm8k":
        write_gsm8k_jsonl(rows, evalscope_gsm8k_path(folder))
    else:
        write_jsonl(({"messages": check_zero_shot(r["messages"]), "answer": r["reference"]} for r in rows),
                    folder / f"{spec['subset']}.jsonl")
    write_jsonl(rows, folder / "items.jsonl")
    (folder / "dataset.json").write_text(json.dumps({"name": name, **spec}, indent=2), encoding="utf-8")
    return EvalDataset(name, spec["benchmark"], spec["subset"], folder, rows)


def prepare_datasets(data_dir: str | Path, *, word_problems: int, gsm8k: int, headlines: int,
                     seed: int = 0) -> dict[str, EvalDataset]:
    """Write the evaluation sets under ``data_dir`` and return them by name.

    * ``word_problems``: the first n TEST problems (balanced over 1/2/3 steps), zero-shot;
    * ``gsm8k``: the first n GSM8K test problems, zero-shot (skipped with a warning
      when there is no local copy and the profile may not download);
    * ``headlines``: the first n test headlines with the classification prompt of notebook 01
      (its system prompt and user template), zero-shot like the math sets.

    A count of 0 leaves a set out. Every model sees exactly these items.
    """
    data_dir = Path(data_dir)
    sets: dict[str, EvalDataset] = {}
    if word_problems:
        rows = word_problem_rows("test", word_problems, seed=seed, shots=0)
        sets["word_problems"] = _write_dataset(data_dir / "word_problems", "word_problems", rows)
    if gsm8k:
        try:
            rows = gsm8k_rows("test", gsm8k, shots=0)
        except DatasetUnavailable as exc:
            warnings.warn(f"GSM8K left out of the evaluation: {exc}", stacklevel=2)
        else:
            sets["gsm8k"] = _write_dataset(data_dir / "gsm8k", "gsm8k", rows)
    if headlines:
        rows = headline_rows("test", exemplar=False)[:headlines]
        sets["headlines"] = _write_dataset(data_dir / "headlines", "headlines", rows)
    return sets


# =========================================================================== evalscope task configs


def generation_config(eval_type: str, max_tokens: int, *, timeout_s: float = 900.0) -> dict[str, Any]:
    """Greedy decoding with one token limit, in the form each evalscope backend takes."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if eval_type == "llm_ckpt":
        return {"max_tokens": max_tokens, "do_sample": False}
    return {"max_tokens": max_tokens, "temperature": 0.0, "timeout": timeout_s}


def task_config(model: str | Path | TeacherEndpoint, label: str, dataset: EvalDataset, work_dir: str | Path, *,
                max_tokens: int, batch_size: int = 8, settings: Settings | None = None) -> dict[str, Any]:
    """The evalscope ``TaskConfig`` arguments for one model on one dataset (the API key left out).

    ``model`` is a model folder (``eval_type='llm_ckpt'``, loaded by evalscope) or an
    endpoint (``eval_type='openai_api'``, e.g. a ``swift deploy`` server). Outputs land
    directly in ``work_dir`` (no timestamp sub-folder).
    """
    settings = settings or get_settings()
    if isinstance(model, TeacherEndpoint):
        eval_type = "openai_api"
        source: dict[str, Any] = {"model": model.model, "api_url": model.base_url}
    else:
        eval_type = "llm_ckpt"
        device = "cpu" if settings.profile.device == "cpu" else "auto"
        source = {"model": str(model),
                  "model_args": {"precision": f"torch.{settings.profile.torch_dtype}", "device_map": device}}
    return {
        **source,
        "model_id": label,
        "eval_type": eval_type,
        "datasets": [dataset.benchmark],
        "dataset_args": {dataset.benchmark: dataset.dataset_args()},
        "generation_config": generation_config(eval_type, max_tokens),
        "eval_batch_size": batch_size,
        "work_dir": str(work_dir),
        "no_timestamp": True,
        "seed": 0,
    }


def _child_env(settings: Settings, api_key: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if settings.profile.hub_offline:
        env.update(HUB_OFFLINE_VARS)
    env.setdefault("OMP_NUM_THREADS", str(server_threads()))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop(API_KEY_ENV, None)
    if api_key:
        env[API_KEY_ENV] = api_key
    return env


def run_tasks(configs: Sequence[Mapping[str, Any]], log_path: str | Path, *, api_key: str | None = None,
              settings: Settings | None = None) -> list[float]:
    """Run evalscope tasks one after another in a child process; return the seconds of each.

    The specification (without the key) is saved next to the log, so every run can be
    repeated with ``python -m helpers.evaluate <spec.json>``.
    """
    settings = settings or get_settings()
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path = log_path.with_suffix(".spec.json")
    timing_path = log_path.with_suffix(".timing.json")
    timing_path.unlink(missing_ok=True)
    for config in configs:
        shutil.rmtree(config["work_dir"], ignore_errors=True)
    spec_path.write_text(json.dumps({"tasks": list(configs), "timing": str(timing_path)}, indent=2),
                         encoding="utf-8")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run([sys.executable, "-m", "helpers.evaluate", str(spec_path)], stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=_child_env(settings, api_key), check=False,
                              preexec_fn=_die_with_parent)  # never outlives the notebook kernel
    if proc.returncode != 0 or not timing_path.is_file():
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
        raise EvalError(f"evalscope exited with code {proc.returncode}. Log ({log_path}):\n{mask_secrets(tail)}")
    return [float(s) for s in json.loads(timing_path.read_text(encoding="utf-8"))]


def _run_spec(spec_path: str) -> None:  # pragma: no cover - runs in the child process
    """Child-process entry point: run every task of a spec file with evalscope."""
    from evalscope import TaskConfig, run_task

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    seconds: list[float] = []
    for config in spec["tasks"]:
        config = dict(config)
        if config.get("eval_type") == "openai_api":
            config["api_key"] = os.environ.get(API_KEY_ENV) or "EMPTY"
        started = time.perf_counter()
        run_task(TaskConfig(**config))
        seconds.append(round(time.perf_counter() - started, 2))
        print(f"[course] {config['model_id']} on {config['datasets']} done in {seconds[-1]:.1f} s", flush=True)
    Path(spec["timing"]).write_text(json.dumps(seconds), encoding="utf-8")


# =========================================================================== running models


@dataclass
class ModelEval:
    """Where one model's evalscope outputs are and how long they took."""

    label: str
    model: str
    backend: str
    folders: dict[str, Path]
    seconds: dict[str, float]
    setup_s: float = 0.0
    """Model-server start-up (served) or 0 (checkpoint: loading is inside each task's seconds)."""
    log_path: Path | None = None

    def runs(self, datasets: Mapping[str, EvalDataset]) -> pd.DataFrame:
        """One line per dataset: items, wall seconds and seconds per item (throughput)."""
        return pd.DataFrame([{"model": self.label, "dataset": name, "n": datasets[name].n, "seconds": s,
                              "s_per_item": round(s / max(datasets[name].n, 1), 3)}
                             for name, s in self.seconds.items()])

    def rows(self, datasets: Mapping[str, EvalDataset]) -> list[Row]:
        """Course sample rows of every dataset (see :func:`sample_rows`)."""
        out: list[Row] = []
        for name, folder in self.folders.items():
            out += sample_rows(read_outputs(folder), datasets[name], self.label)
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["folders"] = {k: str(v) for k, v in self.folders.items()}
        data["log_path"] = str(self.log_path) if self.log_path else None
        return data


def new_run_dir(settings: Settings | None = None, prefix: str = "eval") -> Path:
    """A fresh ``<workspace>/outputs/<prefix>-<UTC timestamp>/`` folder for one evaluation run."""
    settings = settings or get_settings()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = settings.outputs_dir / f"{prefix}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def evaluate_model(model: str | Path | TeacherEndpoint, label: str, datasets: Mapping[str, EvalDataset],
                   run_dir: str | Path, *, max_tokens: int, backend: Backend = "served", batch_size: int = 8,
                   settings: Settings | None = None) -> ModelEval:
    """Evaluate one model on every dataset with evalscope.

    ``model`` may be a model folder or an already running endpoint. A folder is served
    with ``swift deploy`` for the duration of the call (``backend="served"``, the
    course's choice) or loaded by evalscope itself (``backend="checkpoint"``).
    Outputs go to ``<run_dir>/evalscope/<label>-<dataset>/``.
    """
    settings = settings or get_settings()
    run_dir = Path(run_dir)
    server: LocalServer | None = None
    setup_s = 0.0
    target: str | Path | TeacherEndpoint = model
    if not isinstance(model, TeacherEndpoint) and backend == "served":
        started = time.perf_counter()
        server = LocalServer(model, settings=settings, served_model_name=label, max_batch_size=batch_size).start()
        setup_s = round(time.perf_counter() - started, 2)
        target = server.endpoint
    elif not isinstance(model, TeacherEndpoint) and backend != "checkpoint":
        raise ValueError(f"backend must be 'served' or 'checkpoint', got {backend!r}")
    try:
        folders = {name: run_dir / "evalscope" / f"{label}-{name}" for name in datasets}
        configs = [task_config(target, label, ds, folders[name], max_tokens=max_tokens, batch_size=batch_size,
                               settings=settings) for name, ds in datasets.items()]
        api_key = target.api_key.reveal() if isinstance(target, TeacherEndpoint) else None
        log_path = run_dir / "logs" / f"evalscope-{label}.log"
        seconds = run_tasks(configs, log_path, api_key=api_key, settings=settings)
    finally:
        if server is not None:
            server.stop()
    described = str(model.base_url if isinstance(model, TeacherEndpoint) else model)
    return ModelEval(label, described, "served" if isinstance(target, TeacherEndpoint) else "checkpoint",
                     folders, dict(zip(datasets, seconds)), setup_s, log_path)


def compare_backends(model_path: str | Path, dataset: EvalDataset, run_dir: str | Path, *, max_tokens: int,
                     batch_size: int = 4, settings: Settings | None = None) -> pd.DataFrame:
    """Time the same items three ways: checkpoint one by one, checkpoint batched, served by ``swift deploy``.

    Returns one line per backend with the set-up and evaluation seconds, the output
    tokens and stop reasons evalscope reported, and whether the reply texts equal
    the unbatched checkpoint's (greedy decoding should give the same text).
    """
    settings = settings or get_settings()
    run_dir = Path(run_dir)
    runs = {
        "checkpoint, one by one": ("checkpoint", 1),
        f"checkpoint, batches of {batch_size}": ("checkpoint", batch_size),
        f"served, {batch_size} concurrent": ("served", batch_size),
    }
    lines, reference = [], None
    for i, (name, (backend, size)) in enumerate(runs.items()):
        result = evaluate_model(model_path, f"backend{i}", {dataset.name: dataset}, run_dir / "backends",
                                max_tokens=max_tokens, backend=backend, batch_size=size,  # type: ignore[arg-type]
                                settings=settings)
        out = read_outputs(result.folders[dataset.name])
        if reference is None:
            reference = out
        lines.append({
            "backend": name,
            "setup_s": result.setup_s,
            "eval_s": result.seconds[dataset.name],
            "total_s": round(result.setup_s + result.seconds[dataset.name], 1),
            "items": len(out),
            "output_tokens": out["output_tokens"].tolist(),
            "finish": out["finish_reason"].tolist(),
            "same_text": bool((out["raw"].to_numpy() == reference["raw"].to_numpy()).all()),
        })
    return pd.DataFrame(lines).set_index("backend")


# =========================================================================== reading evalscope outputs


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
        reviews = {r["index"]: r for r in _read_jsonl(review_file)} if review_file.is_file() else {}
        for pred in _read_jsonl(pred_file):
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
    """evalscope's per-item outputs as the course's sample rows (the schema :mod:`helpers.generate` writes).

    The reply is split into thinking and answer by :func:`helpers.teacher.normalize_reply`,
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
    """The per-item table: :func:`helpers.metrics.score_row` facts plus model, dataset, latency, thinking length."""
    return item_table(list(rows), extra=ITEM_EXTRAS)


# =========================================================================== metrics and comparisons


def metrics_by_model(items: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Accuracy, format compliance, thinking, truncation, tokens, thinking length and latency per dataset and model."""
    table = metrics_table(items, by=["dataset", "model"])
    extra = items.groupby(["dataset", "model"], dropna=False).agg(
        mean_think_words=("think_words", "mean"), mean_latency_s=("latency_s", "mean"))
    table = table.join(extra.round({"mean_think_words": 1, "mean_latency_s": 2}))
    if models is not None:
        order = [m for m in models if m in table.index.get_level_values("model")]
        datasets = [d for d in DATASETS if d in table.index.get_level_values("dataset")]
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


# =========================================================================== teacher on the same items


def teacher_prompt_rows(dataset: EvalDataset, *, shots: int = 0, seed: int = 0) -> list[Row]:
    """The teacher's prompts for exactly the items of ``dataset`` (same ids, same order).

    ``shots`` worked examples go before each question (the offline teacher is the small
    model made stronger by examples; an API teacher needs none): math questions get
    ``shots`` solved problems, headlines (with any ``shots > 0``) the one worked example
    of notebook 01.
    """
    if dataset.name == "word_problems":
        rows = word_problem_rows("test", dataset.n, seed=seed, shots=shots)
    elif dataset.name == "gsm8k":
        rows = gsm8k_rows("test", dataset.n, shots=shots, seed=seed)
    elif dataset.name == "headlines":
        rows = headline_rows("test", exemplar=shots > 0)[:dataset.n]
    else:
        rows = list(dataset.rows)
    if [r["id"] for r in rows] != [r["id"] for r in dataset.rows]:
        raise ValueError(f"The teacher's {dataset.name} items are not the evaluated ones.")
    return rows


def evaluate_teacher(endpoint: TeacherEndpoint, datasets: Mapping[str, EvalDataset], out_dir: str | Path, *,
                     label: str = "teacher", shots: int = 0, max_tokens: int, concurrency: int | None = None,
                     cache_dir: str | Path | None = None, progress: bool = True) -> tuple[list[Row], pd.DataFrame]:
    """Ask the teacher the evaluated items with the course's generation engine (greedy, one sample each).

    Returns the sample rows (with :func:`with_eval_fields`) and a runs table like
    :meth:`ModelEval.runs` (wall seconds of each dataset, for throughput).
    """
    from .generate import GenerationConfig, generate, load_samples

    out_dir = Path(out_dir)
    config = GenerationConfig(endpoint=endpoint, n_samples=1, temperatures=[0.0], max_tokens=max_tokens,
                              concurrency=concurrency, cache_dir=cache_dir, progress=progress)
    rows: list[Row] = []
    runs = []
    for name, dataset in datasets.items():
        path = out_dir / f"{name}.jsonl"
        path.unlink(missing_ok=True)
        summary = generate(teacher_prompt_rows(dataset, shots=shots), path, config)
        rows += [with_eval_fields(r, label, name) for r in load_samples(path, statuses=None)]
        runs.append({"model": label, "dataset": name, "n": dataset.n, "seconds": summary.elapsed_s,
                     "s_per_item": round(summary.elapsed_s / max(dataset.n, 1), 3), "cached": summary.cached})
    return rows, pd.DataFrame(runs)


# =========================================================================== models and outputs


def reply_token_lengths(train_path: str | Path, tokenizer_dir: str | Path) -> pd.Series:
    """Length in student tokens of every assistant reply of a training file (ms-swift ``messages`` JSONL).

    The evaluation's token limit must leave room for the longest of these, or the
    distilled student is cut off in the middle of the very reasoning it was taught.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    lengths = []
    for line in Path(train_path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            replies = [m["content"] for m in json.loads(line)["messages"] if m["role"] == "assistant"]
            lengths += [len(tokenizer.encode(r, add_special_tokens=False)) for r in replies]
    return pd.Series(lengths, name="reply tokens", dtype="int64")


def dashboard_command(run_dir: str | Path, port: int = 9000) -> str:
    """The shell command that opens evalscope's dashboard on this run's outputs (evalscope 1.14).

    ``evalscope app --outputs DIR`` still works but is deprecated in favour of ``evalscope service``.
    """
    return f"evalscope service --outputs {Path(run_dir) / 'evalscope'} --host 127.0.0.1 --port {port}"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.reset_index().to_json(orient="records"))


def write_summary(path: str | Path, **parts: Any) -> Path:
    """Save the run's summary as JSON: DataFrames become lists of records, paths strings."""
    data = {k: _records(v) if isinstance(v, pd.DataFrame) else v for k, v in parts.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return path


if __name__ == "__main__":  # pragma: no cover - the evalscope child process
    _run_spec(sys.argv[1])
