"""Run ``swift sft`` (or ``swift rlhf``) for a :class:`~helpers.train.config.TrainConfig` and stream it.

Training runs as a **subprocess**, never in the kernel: the printed command is
exactly what runs, and a crash or Ctrl+C in training never takes the kernel down.
:func:`train` streams the console (long dumps folded, progress throttled),
redraws a live loss plot from swift's ``logging.jsonl``, can stop the run right
after its first checkpoint (to practise resuming), and raises
:class:`~helpers.core.swift.SwiftError` with the log tail when swift fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import Settings, get_settings
from ..core.swift import ConsolePrinter, SwiftError, hub_env, run_swift, swift_module_argv
from .checkpoints import latest_checkpoint, list_runs
from .config import TrainConfig
from .loss_scale import PLUGIN_SOURCE
from .runlog import LivePlot, final_record, full_history, history_frame, read_log, read_records, summarize_history


@dataclass
class TrainResult:
    """One ``swift sft`` run, finished or deliberately stopped."""

    config: TrainConfig
    command: str
    returncode: int
    seconds: float
    console_log: Path
    run_dir: Path | None
    interrupted: bool = False

    @property
    def logging_path(self) -> Path | None:
        return self.run_dir / "logging.jsonl" if self.run_dir else None

    @property
    def last_checkpoint(self) -> Path | None:
        """The run's last fully written checkpoint."""
        return latest_checkpoint(self.run_dir) if self.run_dir else None

    def history(self) -> pd.DataFrame:
        """Every logged step of the run (earlier steps of a resumed run included)."""
        return full_history(self.run_dir) if self.run_dir else history_frame([])

    def summary(self) -> dict[str, Any]:
        """Steps, losses, token accuracy, minutes, seconds per step, the run folder."""
        hist = self.history()
        out = summarize_history(hist)
        own = read_log(self.run_dir) if self.run_dir else hist
        own_steps = int(own.dropna(subset=["loss"])["step"].nunique()) if len(own) else 0
        out.update(minutes=round(self.seconds / 60, 2), steps_this_run=own_steps,
                   interrupted=self.interrupted, run_dir=str(self.run_dir) if self.run_dir else None)
        final = final_record(self.run_dir) if self.run_dir else None
        if final:
            runtime = _train_runtime(self.run_dir)
            if runtime and own_steps:
                out["seconds_per_step"] = round(runtime / own_steps, 2)
        return out


def _train_runtime(run_dir: Path) -> float | None:
    for record in read_records(run_dir / "logging.jsonl"):
        if isinstance(record.get("train_runtime"), (int, float)):
            return float(record["train_runtime"])
    return None


def _new_run_dir(output_dir: Path, before: set[Path]) -> Path | None:
    fresh = [p for p in list_runs(output_dir) if p not in before]
    return fresh[-1] if fresh else None


def prepare_output(config: TrainConfig) -> Path:
    """Create the output folder and, for ``think_loss="ignore"``, the plugin file the command names."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.plugin_path is not None:
        config.plugin_path.write_text(PLUGIN_SOURCE, encoding="utf-8")
    return out


def train(config: TrainConfig, *, settings: Settings | None = None, live: LivePlot | None = None,
          on_output: Callable[[str, bool], None] | None = None, stop_after_checkpoint: bool = False,
          poll_seconds: float = 2.0, console_log: Path | None = None) -> TrainResult:
    """Run ``swift sft`` for ``config`` and stream it; return where everything went.

    (``swift <config.subcommand>`` in general: a :class:`helpers.techniques.gkd.GKDConfig` runs ``swift rlhf``.)

    ``live`` redraws a loss plot from ``logging.jsonl`` every ``poll_seconds``.
    ``stop_after_checkpoint`` stops the run (the whole process group) as soon as
    its first checkpoint is fully written: a real interruption, to practise
    resuming. ``on_output`` defaults to a :class:`ConsolePrinter`. Raises
    :class:`~helpers.core.swift.SwiftError` with the log tail when swift fails.
    """
    settings = settings or get_settings()
    output_dir = prepare_output(config)
    before = set(list_runs(output_dir))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    console_log = console_log or settings.logs_dir / f"swift-{config.subcommand}-{stamp}.log"
    printer = on_output or ConsolePrinter(log_path=console_log)
    env = {**hub_env(settings), **config.env()}
    state: dict[str, Any] = {"run_dir": None}

    def poll() -> bool:
        run_dir = state["run_dir"] or _new_run_dir(output_dir, before)
        state["run_dir"] = run_dir
        if run_dir is None:
            return False
        if live is not None:
            live.update(read_log(run_dir))
        return stop_after_checkpoint and latest_checkpoint(run_dir) is not None

    argv = swift_module_argv(config.subcommand, config.args(), config.nproc_per_node)
    run = run_swift(argv, env=env, log_path=console_log, on_output=printer, on_poll=poll,
                    poll_seconds=poll_seconds, cwd=output_dir)
    announced = run.find(r"\[INFO:swift\] output_dir: (.+)$")
    run_dir = Path(announced) if announced else state["run_dir"] or _new_run_dir(output_dir, before)
    result = TrainResult(config, config.shell(), run.returncode, run.seconds, console_log, run_dir, run.stopped)
    if run.returncode != 0 and not run.stopped:
        raise SwiftError(f"swift {config.subcommand} exited with code {run.returncode} "
                            f"after {run.seconds:.0f} s.\n"
                            f"Full log: {console_log}\nLast lines:\n{run.tail()}")
    if live is not None and run_dir is not None:
        live.update(full_history(run_dir))
    return result
