"""Task data from a hub dataset, and published distilled data that skips the teacher.

``data.source: hub`` names a dataset (``data.dataset``, a ModelScope id) and which of
its fields hold the input, the reference and, for a published *distilled* dataset such
as case A's MathR, the teacher's thinking and answer. A local copy is used first
(``data.file`` beside the task file, or ``$COURSE_DATA_DIR/<name>.jsonl``); the gpu
profile may download; offline, a clear error says where to put the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from ..core.config import get_settings
from ..core.jsonl import iter_jsonl, write_jsonl
from .gsm8k import DatasetUnavailable

Row = dict[str, Any]


class Task(Protocol):
    """What this module reads of a :class:`helpers.tasks.spec.Task` (which imports this module, not the reverse)."""

    name: str
    path: Path
    folder: Path
    data: dict[str, Any]

    def prompt_rows(self, split: str, n: int | None = None) -> list[Row]: ...
DATA_DIR_ENV = "COURSE_DATA_DIR"


def _local_copy(task: Task, split: str) -> Path | None:
    name = str(task.data["dataset"]).rsplit("/", 1)[-1]
    candidates = []
    if task.data.get("file"):
        candidates.append(task.folder / str(task.data["file"]).format(split=split))
    if os.environ.get(DATA_DIR_ENV):
        candidates += [Path(os.environ[DATA_DIR_ENV]) / f"{name}-{split}.jsonl", Path(os.environ[DATA_DIR_ENV]) / f"{name}.jsonl"]
    candidates.append(get_settings(apply_env=False).datasets_dir / "hub" / f"{name}-{split}.jsonl")
    return next((p for p in candidates if p.is_file()), None)


def _download(task: Task, split: str) -> Path:
    """gpu profile: fetch one split with ModelScope and keep it in the workspace."""
    name = str(task.data["dataset"])
    hub_split = (task.data.get("hub_split") or {}).get(split, split)
    target = get_settings(apply_env=False).datasets_dir / "hub" / f"{name.rsplit('/', 1)[-1]}-{split}.jsonl"
    try:
        from modelscope.msdatasets import MsDataset

        dataset = MsDataset.load(name, subset_name=task.data.get("subset") or "default", split=hub_split)
        records = [dict(r) for r in dataset]
    except Exception as exc:  # network, hub or package problem: say what to do instead
        raise DatasetUnavailable(f"Could not download {name} ({hub_split}) from ModelScope: {exc}. Put a JSONL copy "
                                 f"in ${DATA_DIR_ENV} (or data.file beside {task.path.name}).") from exc
    return write_jsonl(records, target)


def hub_items(task: Task, split: str) -> list[Row]:
    """The rows of one split of a hub task, with its fields mapped as the task file says."""
    path = _local_copy(task, split)
    if path is None:
        if get_settings(apply_env=False).profile.hub_offline:
            raise DatasetUnavailable(
                f"{task.path}: no local copy of {task.data['dataset']} ({split}) and the offline profile cannot "
                f"download it. Put the split as JSONL in ${DATA_DIR_ENV}/{str(task.data['dataset']).rsplit('/', 1)[-1]}"
                f"-{split}.jsonl, or use COURSE_PROFILE=gpu to download it from ModelScope.")
        path = _download(task, split)
    d = task.data
    rows = []
    for lineno, raw in iter_jsonl(path):
        text = raw.get(d.get("input", "input"))
        if not isinstance(text, str) or not text.strip():
            raise DatasetUnavailable(f"{path}:{lineno}: no text in the field {d.get('input', 'input')!r} (data.input).")
        meta = {}
        for part in ("thinking", "answer"):
            if d.get(part):
                meta[f"teacher_{part}"] = raw.get(d[part]) or ""
        rows.append({"id": str(raw.get(d.get("id", "id")) or f"{task.name}-{split}-{lineno:05d}"), "input": text,
                     "reference": raw.get(d.get("reference", "reference")), "split": split, "meta": meta})
    return rows


def distilled_samples(task: Task, split: str = "train", n: int | None = None) -> list[Row]:
    """Sample rows (as the teacher engine writes them) from a published distilled dataset: no teacher call.

    Needs ``data.thinking`` and ``data.answer``: the fields holding the teacher's reasoning and answer.
    """
    if not (task.data.get("thinking") and task.data.get("answer")):
        raise ValueError(f"{task.path}: a distilled dataset needs data.thinking and data.answer (the teacher's fields).")
    rows = []
    for prompt in task.prompt_rows(split, n):
        thinking, answer = prompt["meta"].pop("teacher_thinking"), prompt["meta"].pop("teacher_answer")
        raw = task.assistant_text(thinking, answer)
        rows.append({"prompt_id": prompt["id"], "sample_index": 0, "request_key": None, "model": task.data["dataset"],
                     "params": {}, "status": "ok", "question": prompt["question"], "reference": prompt["reference"],
                     "task": prompt["task"], "meta": prompt["meta"],
                     "reply": {"thinking": thinking or None, "answer": answer, "raw": raw, "finish_reason": "stop",
                               "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                               "latency_s": 0.0},
                     "error": None, "attempts": 0, "cached": True})
    return rows
