"""Skip-ahead checkpoints: put a shipped curated dataset (and a distilled student) where the notebooks look.

A group that is behind in a workshop, or a learner who wants chapter 04 today,
should not have to wait for the teacher of notebooks 02-03. :func:`seed_workspace`
copies ``data/checkpoints/<task>/`` (``train.jsonl``, ``val.jsonl``, optional
``kept.jsonl`` and ``card.md``) to exactly where notebook 03's export puts its
files, with a dataset card that says it was seeded and from which run:

* ``"04"``: the dataset only (notebooks 04 and 09 can start);
* ``"05"``: plus a smoke-size LoRA training, as notebook 04 would leave it;
* ``"06"``: plus the merge, so :func:`helpers.merge.adapter.latest_merged_model` finds the student.

A learner's own dataset is never replaced silently: seeding refuses when
different files are there, and ``force=True`` moves them to
``datasets/before-seed-<time>/`` first. :func:`refresh_checkpoint` is the way
back: it copies the current workspace's export into ``data/checkpoints/<task>/``
with ``provenance.json`` (date, commit, run, row counts, sha256).
CLI: ``python -m helpers seed 04|05|06 [--force]`` and ``python -m helpers seed --refresh``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.config import REPO_ROOT, Settings, get_settings
from ..core.jsonl import read_jsonl
from ..curate.export import validate_jsonl

CHECKPOINTS_DIR: Path = REPO_ROOT / "data" / "checkpoints"
"""Shipped checkpoints, one folder per task key (``math``, ``headlines``, ...)."""

PROVENANCE_FILE = "provenance.json"
CARD_FILE = "card.md"
"""The dataset card of the run the checkpoint was exported from (its ``README.md``)."""

REFRESH_COMMAND = "python -m helpers seed --refresh"
SEED_MARKER = "<!-- seeded by helpers.course.seed: not written by notebook 03 -->"
"""First line of a seeded dataset card; :func:`refresh_checkpoint` refuses to copy a seeded dataset back."""

STAGES: dict[str, str] = {
    "04": "the curated dataset of notebook 03",
    "05": "the dataset and a smoke-size training run (notebook 04)",
    "06": "the dataset, a smoke-size training run and its merge (notebooks 04-05)",
}

DATA_FILES: dict[str, tuple[str, ...]] = {
    "train.jsonl": ("distill", "train.jsonl"),
    "val.jsonl": ("distill", "val.jsonl"),
    "kept.jsonl": ("curation", "kept.jsonl"),
}
"""Checkpoint file -> where notebook 03 writes it under ``<task>/datasets/``; only train.jsonl is required."""


class SeedError(RuntimeError):
    """Seeding (or refreshing) would overwrite work, or the checkpoint is missing or broken."""


# --------------------------------------------------------------------------- small helpers


def sha256_of(path: str | Path) -> str:
    """The file's sha256 in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalize_stage(at: str | int) -> str:
    """``"4"``, ``4``, ``"04"`` or ``"04_lora_sft"`` -> ``"04"``; anything else is a ``ValueError``."""
    text = str(at).strip()
    digits = text[: len(text) - len(text.lstrip("0123456789"))]
    stage = digits.zfill(2) if digits else ""
    if stage not in STAGES:
        choices = ", ".join(f"{k} ({v})" for k, v in STAGES.items())
        raise ValueError(f"Cannot seed the workspace for notebook {at!r}: choose one of {choices}. "
                         "Notebooks 00-03 need nothing seeded; 07 and 08 start from scratch; 09 needs 04's.")
    return stage


def checkpoint_dir(settings: Settings | None = None, source: str | Path | None = None) -> Path:
    """``source``, or ``data/checkpoints/<task key>/`` of the active task."""
    settings = settings or get_settings()
    return Path(source).expanduser() if source else CHECKPOINTS_DIR / settings.task_key


def read_provenance(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's ``provenance.json`` ({} when there is none)."""
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SeedError(f"{path} is not valid JSON ({exc}); regenerate it: {REFRESH_COMMAND}") from None
    return data if isinstance(data, dict) else {}


def _copy(src: Path, dst: Path) -> None:
    """Copy so that a reader sees the old file or the new one, never half of it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _shown(path: Path, workspace: Path | None = None) -> str:
    """A path relative to the repository (or the workspace) when it is inside: no machine's folders in a card."""
    for root, prefix in ((REPO_ROOT, ""), (workspace, "<workspace>/")):
        if root is not None:
            try:
                return prefix + str(Path(path).resolve().relative_to(Path(root).resolve()))
            except ValueError:
                continue
    return str(path)


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------- the checkpoint


def checkpoint_files(folder: Path) -> dict[str, Path]:
    """The checkpoint's data files that exist, validated; a ``SeedError`` names what is wrong and the fix."""
    if not (folder / "train.jsonl").is_file():
        where = "" if folder.is_dir() else " (the folder does not exist)"
        raise SeedError(
            f"No skip-ahead checkpoint at {folder}{where}: it needs train.jsonl (and usually val.jsonl). "
            f"Make one from a workspace where notebooks 02-03 ran: {REFRESH_COMMAND} "
            "(see data/checkpoints/README.md), or run notebooks 02-03 yourself.")
    files = {name: folder / name for name in DATA_FILES if (folder / name).is_file()}
    for name in ("train.jsonl", "val.jsonl"):
        if name in files:
            try:
                validate_jsonl(files[name], "messages")
            except ValueError as exc:  # DatasetFormatError lists every bad line
                raise SeedError(f"The checkpoint file {files[name]} is not a valid training file: {exc}\n"
                                f"Regenerate it: {REFRESH_COMMAND}") from None
    return files


def _targets(settings: Settings) -> dict[str, Path]:
    return {name: settings.datasets_dir.joinpath(*parts) for name, parts in DATA_FILES.items()}


def _existing_work(settings: Settings, files: dict[str, Path]) -> list[Path]:
    """Files in the workspace that seeding would replace and that differ from the checkpoint."""
    distill = settings.datasets_dir / "distill"
    candidates = sorted(distill.glob("*.jsonl")) if distill.is_dir() else []
    kept = _targets(settings)["kept.jsonl"]
    if kept.is_file():
        candidates.append(kept)
    by_target = {target: files.get(name) for name, target in _targets(settings).items()}
    return [path for path in candidates
            if by_target.get(path) is None or sha256_of(path) != sha256_of(by_target[path])]


def _move_aside(settings: Settings) -> Path:
    """Move the workspace's dataset files (distill/, curation/kept.jsonl) to ``before-seed-<time>/``."""
    backup = settings.datasets_dir / f"before-seed-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    distill = settings.datasets_dir / "distill"
    for path in [*(distill.iterdir() if distill.is_dir() else []), _targets(settings)["kept.jsonl"]]:
        if path.is_file():
            dst = backup / path.relative_to(settings.datasets_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            path.replace(dst)
    return backup


def _demote(markdown: str) -> str:
    """Headings two levels down, so an embedded card's ``# title`` sits under our ``## ...`` heading."""
    return "\n".join("##" + line if line.startswith("#") else line for line in markdown.splitlines())


def seeded_card(folder: Path, files: dict[str, Path], provenance: dict[str, Any], stage: str) -> str:
    """The ``README.md`` of a seeded dataset: what was seeded, when, from which run, and the original card."""
    rows = {name: validate_jsonl(path)["rows"] for name, path in files.items() if name != "kept.jsonl"}
    run = provenance.get("run") or {}
    lines = [
        SEED_MARKER,
        "# Distillation dataset (seeded from a skip-ahead checkpoint)", "",
        f"This folder was **seeded** by `python -m helpers seed {stage}` on {_stamp()}; notebook 03 did not "
        "write it. It is a copy of a dataset that notebook 03 exported in an earlier run, so notebook "
        f"{stage} can start without notebooks 02-03. Run 02-03 yourself to make your own "
        "(seeding refuses to overwrite it; `--force` keeps a copy in `datasets/before-seed-<time>/`).", "",
        "## Where it comes from", "",
        f"- **Checkpoint:** `{_shown(folder)}`",
        f"- **Exported:** {provenance.get('card_created') or 'unknown'} (refreshed into the checkpoint "
        f"{provenance.get('created') or 'at an unknown date'}, commit {provenance.get('commit') or 'unknown'})",
        f"- **Run:** {run.get('folder') or 'unknown'}; profile {provenance.get('profile') or 'unknown'}",
        "- **Rows:** " + ", ".join(f"{name}: {n}" for name, n in rows.items()),
    ]
    for name, path in files.items():
        lines.append(f"- `{name}` sha256 `{sha256_of(path)}`")
    if (folder / CARD_FILE).is_file():
        lines += ["", "## The original dataset card", "",
                  _demote((folder / CARD_FILE).read_text(encoding="utf-8").strip())]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- seeding


def seed_workspace(at: str | int, settings: Settings | None = None, *, source: str | Path | None = None,
                   force: bool = False, smoke: bool = True,
                   on_output: Callable[[str, bool], None] | None = None) -> dict[str, Any]:
    """Seed the workspace so that notebook ``at`` (04, 05 or 06) can start; return what was done.

    ``source`` is the checkpoint folder (default ``data/checkpoints/<task>/``).
    ``force`` replaces a different dataset (moved aside, never deleted) and, for
    05/06, trains a new student even when a finished run exists. ``smoke``
    trains at smoke size (a handful of steps); ``smoke=False`` uses the
    settings' size. Raises ``ValueError`` for a stage that cannot be seeded and
    :class:`SeedError` for a missing checkpoint or work that would be replaced.
    """
    stage = normalize_stage(at)
    settings = settings or get_settings()
    folder = checkpoint_dir(settings, source)
    files = checkpoint_files(folder)
    provenance = read_provenance(folder)
    changed = _existing_work(settings, files)
    if changed and not force:
        shown = ", ".join(str(p.relative_to(settings.datasets_dir)) for p in changed)
        raise SeedError(
            f"{settings.datasets_dir} already holds a dataset that differs from the checkpoint ({shown}); "
            "seeding would replace it. Keep it and start at notebook 04 as you are, or seed anyway with "
            f"`python -m helpers seed {stage} --force` (force=True), which moves it to "
            f"{settings.datasets_dir}/before-seed-<time>/ first.")
    result: dict[str, Any] = {"stage": stage, "checkpoint": str(folder), "task": settings.task_key,
                              "datasets_dir": str(settings.datasets_dir), "backup": None, "files": {},
                              "warnings": []}
    if changed:
        result["backup"] = str(_move_aside(settings))
    recorded = provenance.get("files") or {}
    targets = _targets(settings)
    for name, src in files.items():
        digest = sha256_of(src)
        if name in recorded and recorded[name].get("sha256") != digest:
            result["warnings"].append(f"{name} differs from {PROVENANCE_FILE} (edited by hand?); "
                                      f"regenerate the provenance with {REFRESH_COMMAND}")
        _copy(src, targets[name])
        result["files"][name] = {"path": str(targets[name]), "sha256": digest}
    if "val.jsonl" not in files:
        result["warnings"].append("the checkpoint has no val.jsonl: training runs without validation loss")
    card = targets["train.jsonl"].with_name("README.md")
    card.write_text(seeded_card(folder, files, provenance, stage), encoding="utf-8")
    result["card"] = str(card)
    result["rows"] = {name: validate_jsonl(targets[name])["rows"] for name in ("train.jsonl", "val.jsonl")
                      if name in files}
    if stage in ("05", "06"):
        result.update(_seed_student(settings, stage, force=force, smoke=smoke, on_output=on_output))
    return result


def _seed_student(settings: Settings, stage: str, *, force: bool, smoke: bool,
                  on_output: Callable[[str, bool], None] | None) -> dict[str, Any]:
    """Train (unless a finished run exists and not ``force``) and, for 06, merge; as notebooks 04-05 do."""
    import time

    from ..merge.adapter import latest_merged_model, merge_adapter
    from ..models.student import prepare_student
    from ..train.checkpoints import final_checkpoint
    from ..train.config import default_config, default_output_dir
    from ..train.runner import train

    started = time.perf_counter()
    out: dict[str, Any] = {"trained": False, "merged": None, "training_run": None}
    try:
        checkpoint = None if force else final_checkpoint(default_output_dir(settings))
    except FileNotFoundError:
        checkpoint = None
    if checkpoint is None:
        run_settings = replace(settings, size="smoke") if smoke else settings
        student = prepare_student(run_settings)  # converted once (notebook 00), instant afterwards
        config = default_config(run_settings, model=student.path, report_to=())
        trained = train(config, settings=run_settings, on_output=on_output)
        checkpoint = final_checkpoint(default_output_dir(settings))
        out.update(trained=True, training_run=str(trained.run_dir), train_size=run_settings.size,
                   train_summary=trained.summary())
    out["checkpoint"] = str(checkpoint)
    if stage == "06":
        merged = merge_adapter(checkpoint, settings=settings, on_output=on_output)
        found = latest_merged_model(settings)
        if found is None or found.resolve() != merged.path.resolve():
            raise SeedError(f"Merged into {merged.path}, but notebook 06 would look at {found}: "
                            "a newer unfinished training run? Run notebooks 04-05 instead.")
        out["merged"] = str(merged.path)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


# --------------------------------------------------------------------------- refreshing the checkpoint


def _find_run(settings: Settings, rows: dict[str, int]) -> dict[str, Any]:
    """The course run (or interactive outputs) whose notebook 03 recorded these row counts."""
    candidates = sorted(settings.runs_dir.glob("course-*/numbers.json"), reverse=True)
    candidates.append(settings.outputs_dir / "numbers.json")
    for path in candidates:
        try:
            numbers = json.loads(path.read_text(encoding="utf-8")).get("03_curate_dataset") or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if numbers.get("train_rows") == rows.get("train.jsonl") and \
                numbers.get("val_rows", 0) == rows.get("val.jsonl", 0):
            name = path.parent.name if path.parent.name.startswith("course-") else "interactive (outputs/numbers.json)"
            keep = ("questions", "samples_in", "verified", "kept", "train_rows", "val_rows")
            return {"folder": name, "numbers_03": {k: numbers[k] for k in keep if k in numbers}}
    return {}


def refresh_checkpoint(settings: Settings | None = None, *, dest: str | Path | None = None,
                       force: bool = False) -> dict[str, Any]:
    """Copy the workspace's notebook-03 export into ``data/checkpoints/<task>/`` with its provenance.

    Copies ``train.jsonl``, ``val.jsonl``, ``curation/kept.jsonl`` and the
    dataset card (as ``card.md``), removes files of an older checkpoint that
    this export lacks, and writes ``provenance.json``: date, commit, profile,
    run, rows and sha256 per file. Refuses to copy a dataset that was itself
    seeded (``force=True`` does it anyway). Returns the provenance.
    """
    settings = settings or get_settings()
    distill = settings.datasets_dir / "distill"
    sources = {name: path for name, path in _targets(settings).items() if path.is_file()}
    if "train.jsonl" not in sources:
        raise SeedError(f"No notebook-03 export at {distill / 'train.jsonl'}: run notebooks 02-03 "
                        "(full size: COURSE_SIZE=full, e.g. `make course`) before refreshing the checkpoint.")
    readme = distill / "README.md"
    card = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if card.startswith(SEED_MARKER) and not force:
        raise SeedError(f"{distill} was seeded from a checkpoint, not exported by notebook 03: refreshing "
                        "from it would copy the checkpoint onto itself. Run notebooks 02-03 first "
                        "(or pass force=True / --force).")
    rows: dict[str, int] = {}
    for name in ("train.jsonl", "val.jsonl"):
        if name in sources:
            rows[name] = validate_jsonl(sources[name], "messages")["rows"]
    if "kept.jsonl" in sources:  # curated rows, not messages: counted, not validated as a training file
        rows["kept.jsonl"] = len(read_jsonl(sources["kept.jsonl"]))
    folder = checkpoint_dir(settings, dest)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for name in DATA_FILES:
        target = folder / name
        if name in sources:
            _copy(sources[name], target)
            files[name] = {"rows": rows.get(name), "bytes": target.stat().st_size, "sha256": sha256_of(target)}
        else:
            target.unlink(missing_ok=True)  # an older checkpoint's file this export does not have
    if card:
        (folder / CARD_FILE).write_text(card, encoding="utf-8")
    else:
        (folder / CARD_FILE).unlink(missing_ok=True)
    created = next((line[len("Created "):].rstrip(".") for line in card.splitlines() if line.startswith("Created ")),
                   None)
    provenance = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": settings.task_key,
        "profile": settings.profile.name,
        "commit": _git_commit(),
        "source": _shown(distill, settings.workspace),
        "card_created": created,
        "run": _find_run(settings, rows),
        "files": files,
        "command": REFRESH_COMMAND,
    }
    (folder / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    provenance["checkpoint"] = str(folder)
    return provenance
