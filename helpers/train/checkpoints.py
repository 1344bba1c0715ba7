"""Runs and checkpoints in ms-swift's output layout: find, describe, prune.

``swift sft --output_dir OUT`` never overwrites; each run gets its own folder ::

    OUT/
      course_plugins.py          # only with think_loss="ignore" (registers the loss scale)
      swanlog/                   # SwanLab's local logs (swanlab watch OUT/swanlog)
      v0-20261122-074803/        # one folder per run: v<index>-<start time>
        args.json                # every argument of the run, defaults included
        logging.jsonl            # one JSON line per logging step (+ eval lines, + a final summary)
        checkpoint-6/            # LoRA adapter + optimizer/scheduler/RNG state to resume from
        last-checkpoint -> checkpoint-6   # link, updated once a checkpoint is fully written
        checkpoint-6-merged/     # written by `swift export --merge_lora true` (notebook 05)
      v1-20261122-080112/        # the next run, e.g. a resume

These helpers find the newest run, the newest *complete* checkpoint to resume
from, the checkpoint of the last *finished* run (the one to merge), and delete old runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .runlog import final_record

_VERSION_RE = re.compile(r"^v(\d+)-(\d{8}-\d{6})$")
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
LAST_CHECKPOINT_LINK = "last-checkpoint"


def list_runs(output_dir: str | Path) -> list[Path]:
    """The ``v<N>-<timestamp>`` run folders of an output folder, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    runs = [(int(m.group(1)), m.group(2), p) for p in folder.iterdir()
            if p.is_dir() and (m := _VERSION_RE.match(p.name))]
    return [p for *_, p in sorted(runs)]


def latest_run(output_dir: str | Path) -> Path | None:
    """The newest run folder, or None."""
    runs = list_runs(output_dir)
    return runs[-1] if runs else None


def is_complete_checkpoint(path: Path) -> bool:
    """A checkpoint folder with its weights and the trainer state (written last)."""
    has_weights = (path / "adapter_config.json").is_file() or (path / "config.json").is_file()
    return has_weights and (path / "trainer_state.json").is_file()


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete ``checkpoint-N`` folders of one run, by step (merged copies excluded)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and not p.is_symlink() and (m := _CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found) if is_complete_checkpoint(p)]


def latest_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint to resume from or to merge.

    ``path`` is a run folder (``v0-...``): its ``last-checkpoint`` link (swift
    moves it once a checkpoint is fully written), else its highest complete
    ``checkpoint-N``. ``path`` is an output folder: the same for the newest run
    that has a checkpoint.
    """
    path = Path(path)
    if _VERSION_RE.match(path.name):
        link = path / LAST_CHECKPOINT_LINK
        if link.is_symlink() and link.resolve().is_dir() and is_complete_checkpoint(link.resolve()):
            return path / os.readlink(link)
        found = checkpoints(path)
        return found[-1] if found else None
    for run in reversed(list_runs(path)):
        found = latest_checkpoint(run)
        if found is not None:
            return found
    return None


def final_checkpoint(output_dir: str | Path) -> Path:
    """The last checkpoint of the newest run that *finished* (its final record exists).

    Raises ``FileNotFoundError`` that says to run notebook 04 when there is none.
    """
    for run in reversed(list_runs(output_dir)):
        final = final_record(run)
        if final and final.get("last_model_checkpoint"):
            path = Path(final["last_model_checkpoint"])
            if not path.is_absolute():
                path = run / path.name
            if is_complete_checkpoint(path):
                return path
    raise FileNotFoundError(f"No finished training run with a checkpoint in {output_dir}: "
                            "run notebook 04 (04_lora_sft) first.")


def prune_runs(output_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest run folders (checkpoints and merged models included).

    Every run keeps ~60 MB of checkpoints (offline) and a merge adds a full
    model copy, so repeated runs fill a disk. ``keep <= 0`` deletes nothing.
    Returns the folders removed.
    """
    import shutil

    runs = list_runs(output_dir)
    if keep <= 0 or len(runs) <= keep:
        return []
    removed = runs[:-keep]
    for run in removed:
        shutil.rmtree(run)
    return removed


def describe_layout(output_dir: str | Path, last_runs: int | None = 2, max_entries: int = 60) -> pd.DataFrame:
    """The files and folders of an output folder, two levels deep, with sizes (for a notebook).

    Only the ``last_runs`` newest run folders are listed (all with ``None``).
    """
    root = Path(output_dir)
    runs = list_runs(root)
    hidden = set(runs[:-last_runs] if last_runs else [])
    rows: list[dict[str, Any]] = []

    def size(p: Path) -> int:
        if p.is_file():
            return p.stat().st_size
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())

    if hidden:
        rows.append({"path": f"({len(hidden)} older run folder(s) not shown)", "kind": "", "MB": None})
    for first in sorted(root.iterdir()) if root.is_dir() else []:
        if first in hidden:
            continue
        children = sorted(first.iterdir()) if first.is_dir() and not first.is_symlink() else []
        rows.append({"path": first.name + ("/" if first.is_dir() else ""), "kind": _kind(first),
                     "MB": round(size(first) / 1e6, 2)})
        if _VERSION_RE.match(first.name):
            for child in children:
                rows.append({"path": f"{first.name}/{child.name}" + ("/" if child.is_dir() and not child.is_symlink() else ""),
                             "kind": _kind(child), "MB": round(size(child) / 1e6, 2) if not child.is_symlink() else 0.0})
    return pd.DataFrame(rows[:max_entries], columns=["path", "kind", "MB"])


def _kind(path: Path) -> str:
    if path.is_symlink():
        return f"link -> {os.readlink(path)}"
    if _VERSION_RE.match(path.name):
        return "run"
    if path.name.endswith("-merged"):
        return "merged model"
    if _CHECKPOINT_RE.match(path.name):
        return "checkpoint"
    return "folder" if path.is_dir() else "file"
