"""Run the whole course headless and write a one-page summary.

Notebooks are executed in order with **nbclient** (the engine under nbconvert
and nbmake). We do not need papermill's parameter injection: every notebook
reads its parameters from environment variables in its first cell, so the same
file is the lesson, the smoke test and the full run.

Each run gets its own folder ``<workspace>/runs/course-<timestamp>/`` with the
executed notebooks, a ``numbers.json`` that notebooks fill through
:func:`record`, and a ``summary.md``. The run stops at the first failing cell
and names the notebook and the cell.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.config import REPO_ROOT, get_settings
from ..teacher.server import SERVER_THREADS_ENV

RUN_DIR_ENV = "COURSE_RUN_DIR"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def numbers_path() -> Path:
    """Where :func:`record` writes: the current course run, or the workspace outputs."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        return Path(run_dir) / "numbers.json"
    return get_settings().outputs_dir / "numbers.json"


def record(chapter: str, **numbers: Any) -> dict[str, Any]:
    """Remember the key numbers of a chapter (rows generated, accuracy, ...) for the summary."""
    path = numbers_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.setdefault(chapter, {}).update(numbers)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
    return data[chapter]


def list_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Course notebooks in order (``NN_name.ipynb``), solutions excluded."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


@dataclass
class NotebookResult:
    name: str
    seconds: float
    ok: bool
    error: str = ""


@dataclass
class CourseRun:
    folder: Path
    results: list[NotebookResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def _failing_cell(nb: Any) -> str:
    """Describe the first cell whose output is an error."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                return f"cell {index} ({first_line[:80]!r}): {output.get('ename')}: {output.get('evalue')}"
    return "unknown cell"


def execute_notebook(path: Path, out_path: Path, timeout: int = 3600) -> NotebookResult:
    """Execute one notebook with nbclient, saving the executed copy even on failure."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    try:
        client.execute()
        ok, error = True, ""
    except CellExecutionError:
        ok, error = False, _failing_cell(nb)
    finally:
        nbformat.write(nb, out_path)
    return NotebookResult(path.name, time.perf_counter() - started, ok, error)


KEY_NUMBERS: list[tuple[str, str, tuple[str, ...]]] = [
    ("teacher samples generated", "02_generate_data", ("samples",)),
    ("teacher accuracy (few-shot, before verification)", "02_generate_data", ("teacher_accuracy",)),
    ("samples verified", "03_curate_dataset", ("verified",)),
    ("training rows kept", "03_curate_dataset", ("train_rows",)),
    ("training loss, first step", "04_lora_sft", ("loss_first",)),
    ("training loss, last step", "04_lora_sft", ("loss_last",)),
    ("{main}: base student accuracy", "06_evaluate", ("accuracy", "{main}", "base")),
    ("{main}: distilled student accuracy", "06_evaluate", ("accuracy", "{main}", "distilled")),
    ("{main}: teacher accuracy", "06_evaluate", ("accuracy", "{main}", "teacher")),
    ("{main}: retention by the judge", "06_evaluate", ("judge", "report", "retention (judge)")),
    ("{main}: judge agrees with the exact metric", "06_evaluate", ("judge", "agreement_with_metric", "agreement")),
    ("{main}: deployment verdict (task metric)", "06_evaluate", ("judge", "report", "verdict (task metric)")),
]
"""The headline of a run: (label, chapter, path into what the chapter recorded)."""


def key_numbers(numbers: dict[str, Any]) -> list[tuple[str, Any]]:
    """The :data:`KEY_NUMBERS` that a run recorded (chapters that did not run are skipped)."""
    found = []
    main = (numbers.get("06_evaluate") or {}).get("main_set", "word_problems")  # the task's own test set
    for label, chapter, path in KEY_NUMBERS:
        label = label.format(main=main.replace("_", " "))
        value: Any = numbers.get(chapter)
        for key in path:
            key = key.format(main=main)
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            found.append((label, round(value, 3) if isinstance(value, float) else value))
    return found


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else ("" if value is None else str(value))


def write_summary(run: CourseRun) -> Path:
    """A one-page markdown summary: timings per notebook and every recorded number."""
    numbers_file = run.folder / "numbers.json"
    numbers = json.loads(numbers_file.read_text(encoding="utf-8")) if numbers_file.is_file() else {}
    settings = get_settings()
    lines = [
        f"# Course run {run.folder.name}",
        "",
        f"- profile: **{settings.profile.name}**, task: **{settings.task}**, size: **{settings.size}**",
        f"- result: **{'all notebooks passed' if run.ok else 'FAILED'}**",
        f"- total time: {sum(r.seconds for r in run.results) / 60:.1f} min",
        "",
        "| notebook | time | result |",
        "|---|---|---|",
    ]
    for r in run.results:
        lines.append(f"| {r.name} | {r.seconds:.0f} s | {'ok' if r.ok else 'FAILED: ' + r.error} |")
    headline = key_numbers(numbers)
    if headline:
        lines += ["", "## Key numbers", "", "| | |", "|---|---|"]
        lines += [f"| {label} | {value} |" for label, value in headline]
        lines += ["", "Everything each chapter recorded follows."]
    for chapter, values in numbers.items():
        lines += ["", f"## {chapter}", ""]
        lines += [f"- {key}: {value}" for key, value in values.items() if key != "tables"]
        for name, table in (values.get("tables") or {}).items():  # {row: {column: value}}
            columns = list(dict.fromkeys(c for row in table.values() for c in row))
            lines += ["", f"**{name}**", "", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
            lines += [f"| {row} | " + " | ".join(_cell(cells.get(c)) for c in columns) + " |"
                      for row, cells in table.items()]
    path = run.folder / "summary.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_course(notebooks: list[Path] | None = None, *, timeout: int = 3600, start: str | None = None) -> CourseRun:
    """Execute the notebooks in order; stop at the first failure.

    ``start`` (e.g. ``"04"``) skips the notebooks before it: after a failure is
    fixed, the run goes on from the failed notebook, reusing what the earlier
    ones left in the workspace.
    """
    settings = get_settings()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run = CourseRun(settings.runs_dir / f"course-{stamp}")
    run.folder.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_DIR_ENV] = str(run.folder)  # inherited by every kernel
    # One notebook at a time and a kernel that mostly waits for the teacher:
    # the local teacher server may use every core (see helpers.teacher.server.server_threads).
    os.environ.setdefault(SERVER_THREADS_ENV, str(os.cpu_count() or 1))
    todo = notebooks or list_notebooks()
    if notebooks is None and settings.task_key != "math":  # another task runs the pipeline, 00-06
        from ..tasks.spec import load_task

        skip = ("01", "02") if load_task(settings.task).distilled else ()  # published data needs no teacher
        todo = [p for p in todo if p.name < "07" and p.name[:2] not in skip]
    if start:
        todo = [p for p in todo if p.name >= start]
        if not todo:
            raise ValueError(f"No notebook at or after {start!r} in {NOTEBOOKS_DIR}.")
    for path in todo:
        print(f"▶ {path.name} ...", flush=True)
        result = execute_notebook(path, run.folder / path.name, timeout=timeout)
        run.results.append(result)
        print(f"  {'done' if result.ok else 'FAILED'} in {result.seconds:.0f} s {result.error}", flush=True)
        if not result.ok:
            break
    summary = write_summary(run)
    print(f"Summary: {summary}")
    return run
