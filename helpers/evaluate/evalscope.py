"""Run evalscope on a model: served by ``swift deploy`` (the course's choice) or loaded from its folder.

evalscope runs in a child process (``python -m helpers.evaluate.evalscope
<spec.json>``) so its logs and progress bars go to a log file, the notebook kernel
never holds a second copy of a model, and every run can be repeated from its spec.
Each (model, dataset) pair gets its own output folder
``<run>/evalscope/<model>-<dataset>/``, which ``evalscope service`` shows in a
dashboard. :func:`evaluate_teacher` asks the teacher the same items through the
course's batch engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ..core.config import HUB_OFFLINE_VARS, Settings, TeacherEndpoint, get_settings, mask_secrets
from ..core.swift import die_with_parent
from ..teacher.engine import GenerationConfig, generate
from ..teacher.samples import load_samples
from ..teacher.server import LocalServer, server_threads
from .datasets import EvalDataset, teacher_prompt_rows
from .results import read_outputs, sample_rows, with_eval_fields

Row = dict[str, Any]
Backend = Literal["served", "checkpoint"]

API_KEY_ENV = "COURSE_EVAL_API_KEY"
"""How the API key reaches the evalscope child process (never written to a file)."""


class EvalError(RuntimeError):
    """An evalscope run failed; the message carries the end of its log."""


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
    repeated with ``python -m helpers.evaluate.evalscope <spec.json>``.
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
        proc = subprocess.run([sys.executable, "-m", "helpers.evaluate.evalscope", str(spec_path)], stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=_child_env(settings, api_key), check=False,
                              preexec_fn=die_with_parent)  # never outlives the notebook kernel
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


def evaluate_teacher(endpoint: TeacherEndpoint, datasets: Mapping[str, EvalDataset], out_dir: str | Path, *,
                     label: str = "teacher", shots: int = 0, max_tokens: int, concurrency: int | None = None,
                     cache_dir: str | Path | None = None, progress: bool = True) -> tuple[list[Row], pd.DataFrame]:
    """Ask the teacher the evaluated items with the course's generation engine (greedy, one sample each).

    Returns the sample rows (with :func:`with_eval_fields`) and a runs table like
    :meth:`ModelEval.runs` (wall seconds of each dataset, for throughput).
    """
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


def dashboard_command(run_dir: str | Path, port: int = 9000) -> str:
    """The shell command that opens evalscope's dashboard on this run's outputs (evalscope 1.14).

    ``evalscope app --outputs DIR`` still works but is deprecated in favour of ``evalscope service``.
    """
    return f"evalscope service --outputs {Path(run_dir) / 'evalscope'} --host 127.0.0.1 --port {port}"



if __name__ == "__main__":  # pragma: no cover - the evalscope child process
    _run_spec(sys.argv[1])
