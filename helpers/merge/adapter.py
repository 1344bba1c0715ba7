"""Merge the LoRA adapter into the student with ``swift export --merge_lora true``.

A LoRA checkpoint holds only the small update matrices; serving it needs the base
model *plus* peft. Merging adds ``B·A·alpha/r`` into the base weights and saves an
ordinary model folder next to the checkpoint, ``<checkpoint>-merged`` (swift 4.6's
default ``output_dir``, checked in ``swift/arguments/export_args.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from ..core.config import Settings, get_settings
from ..core.swift import ConsolePrinter, format_command, hub_env, run_swift, swift_module_argv
from ..train.checkpoints import final_checkpoint
from ..train.config import default_output_dir

MERGED_SUFFIX = "-merged"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class MergeError(RuntimeError):
    """The merge did not produce a usable model folder."""


def merged_dir(checkpoint: str | Path) -> Path:
    """Where ``swift export --merge_lora true`` writes: ``<checkpoint>-merged`` next to it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + MERGED_SUFFIX)


def is_merged_model(path: str | Path) -> bool:
    """A complete model folder: config, weights and tokenizer."""
    path = Path(path)
    return ((path / "config.json").is_file() and any((path / name).is_file() for name in WEIGHT_FILES)
            and (path / "tokenizer_config.json").is_file())


def merge_args(checkpoint: str | Path, *, overwrite: bool = False) -> list[str]:
    """The ``swift export`` arguments that merge a LoRA checkpoint.

    The base model, its type, template and dtype come from the checkpoint's
    ``args.json``, so the adapter alone is enough.
    """
    args = ["--adapters", str(checkpoint), "--merge_lora", "true"]
    if overwrite:
        args += ["--exist_ok", "true"]
    return args


def merge_command(checkpoint: str | Path, *, overwrite: bool = False) -> str:
    """The merge as a command to paste into a terminal."""
    return format_command("swift export", merge_args(checkpoint, overwrite=overwrite))


@dataclass
class MergeResult:
    """Where the merged model went and how long it took."""

    checkpoint: Path
    path: Path
    seconds: float
    reused: bool
    command: str
    console_log: Path | None = None

    def files(self) -> pd.DataFrame:
        """The merged folder's files and sizes."""
        return pd.DataFrame([{"file": p.name, "MB": round(p.stat().st_size / 1e6, 2)}
                             for p in sorted(self.path.iterdir()) if p.is_file()])


def merge_adapter(checkpoint: str | Path, *, settings: Settings | None = None, force: bool = False,
                  on_output: Callable[[str, bool], None] | None = None) -> MergeResult:
    """Merge ``checkpoint`` into its base model with ``swift export``; reuse a finished merge.

    ``force`` merges again over an existing folder. Raises :class:`MergeError`
    when swift fails or the merged folder is not where expected.
    """
    settings = settings or get_settings()
    checkpoint = Path(checkpoint)
    if not (checkpoint / "adapter_config.json").is_file():
        raise MergeError(f"{checkpoint} holds no LoRA adapter (no adapter_config.json); "
                         "pass a checkpoint-N folder of a LoRA run.")
    target = merged_dir(checkpoint)
    if is_merged_model(target) and not force:
        return MergeResult(checkpoint, target, 0.0, True, merge_command(checkpoint))
    overwrite = target.exists()  # a half-written folder of an interrupted merge, or force
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    log_path = settings.logs_dir / f"swift-export-{stamp}.log"
    argv = swift_module_argv("export", merge_args(checkpoint, overwrite=overwrite))
    run = run_swift(argv, env=hub_env(settings), log_path=log_path,
                    on_output=on_output or ConsolePrinter(log_path=log_path))
    if run.returncode != 0:
        raise MergeError(f"swift export exited with code {run.returncode}.\nFull log: {log_path}\n"
                         f"Last lines:\n{run.tail()}")
    announced = run.find(r"Successfully merged LoRA and saved in `(.+?)`")
    if announced is not None and Path(announced).resolve() != target.resolve():
        raise MergeError(f"swift wrote the merged model to {announced}, not to {target} as expected.")
    if not is_merged_model(target):
        raise MergeError(f"No complete model folder at {target} after the merge (see {log_path}).")
    return MergeResult(checkpoint, target, run.seconds, False, merge_command(checkpoint, overwrite=overwrite),
                       log_path)


def latest_merged_model(settings: Settings | None = None) -> Path | None:
    """The merged model of the newest *finished* training run of this profile, or None.

    That is ``<final checkpoint>-merged`` under ``runs/sft-<profile>/`` (notebook
    04 trains, notebook 05 merges). An older run's merge is never returned: after
    a new training run, the distilled model exists only once it is merged.
    """
    settings = settings or get_settings()
    try:
        checkpoint = final_checkpoint(default_output_dir(settings))
    except FileNotFoundError:
        return None
    target = merged_dir(checkpoint)
    return target if is_merged_model(target) else None


def require_merged_model(settings: Settings | None = None) -> Path:
    """:func:`latest_merged_model`, or a ``FileNotFoundError`` that says which notebooks to run.

    The course's one rule for a notebook whose input another notebook makes: stop
    with an error naming that notebook, never carry on with a stand-in.
    """
    settings = settings or get_settings()
    path = latest_merged_model(settings)
    if path is None:
        raise FileNotFoundError(f"No merged student under {default_output_dir(settings)}: run notebooks 04 "
                                "(04_lora_sft, training) and 05 (05_merge_and_chat, merging) first.")
    return path
