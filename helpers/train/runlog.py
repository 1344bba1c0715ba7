"""swift's ``logging.jsonl``: read it into a table, summarise it, plot it (live too).

ms-swift appends one JSON line per logging step to ``<run>/logging.jsonl``
(train lines, eval lines, and a final summary line). :func:`read_log` turns it
into a tidy :class:`pandas.DataFrame` (``HISTORY_COLUMNS``), :func:`full_history`
joins the logs of a run and the runs it resumed from, :class:`LivePlot` redraws
the loss / token-accuracy curve while training runs. Used by every chapter that
trains (SFT, GKD, fast thinking).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.jsonl import read_jsonl

_STEP_KEY = "global_step/max_steps"
HISTORY_COLUMNS = ["step", "max_steps", "epoch", "loss", "token_acc", "grad_norm", "learning_rate",
                   "eval_loss", "eval_token_acc", "elapsed_s"]


def _seconds(text: Any) -> float | None:
    """swift's ``elapsed_time`` strings ('9s', '1m 5s', '1h 2m 3s') in seconds."""
    if not isinstance(text, str):
        return None
    total, found = 0.0, False
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text):
        total += float(value) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
        found = True
    return total if found else None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a log that may still be growing (a last line being written is skipped)."""
    if not path.is_file():
        return []
    return [value for value in read_jsonl(path, tolerant=True) if isinstance(value, dict)]


def _history_row(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """One training or evaluation log entry as a history row; None for other records."""
    if "loss" not in record and "eval_loss" not in record:
        return None
    step, max_steps = record.get("step"), None
    progress = record.get(_STEP_KEY)
    if isinstance(progress, str) and "/" in progress:
        done, total = progress.split("/", 1)
        step, max_steps = int(done), int(total)
    if step is None:
        return None
    row = {c: None for c in HISTORY_COLUMNS}
    row.update(step=int(step), max_steps=max_steps, elapsed_s=_seconds(record.get("elapsed_time")))
    for key in ("epoch", "loss", "token_acc", "grad_norm", "learning_rate", "eval_loss", "eval_token_acc"):
        if isinstance(record.get(key), (int, float)):
            row[key] = float(record[key])
    return row


def history_frame(rows: Iterable[dict[str, Any] | None]) -> pd.DataFrame:
    frame = pd.DataFrame([r for r in rows if r], columns=HISTORY_COLUMNS)
    return frame.astype({c: "float64" for c in HISTORY_COLUMNS if c not in ("step", "max_steps")})


def read_log(path: str | Path) -> pd.DataFrame:
    """The per-step history in a ``logging.jsonl`` (training and eval rows), readable mid-run.

    Columns: step, max_steps, epoch, loss, token_acc, grad_norm, learning_rate,
    eval_loss, eval_token_acc, elapsed_s. Training rows have ``loss``; eval rows
    ``eval_loss``. The final summary record is not a row (see :func:`final_record`).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "logging.jsonl"
    return history_frame(_history_row(r) for r in read_records(path) if "last_model_checkpoint" not in r)


def final_record(path: str | Path) -> dict[str, Any] | None:
    """The summary swift appends when a run ends (last checkpoint, steps, full log history)."""
    path = Path(path)
    if path.is_dir():
        path = path / "logging.jsonl"
    finals = [r for r in read_records(path) if "last_model_checkpoint" in r]
    return finals[-1] if finals else None


def full_history(run_dir: str | Path) -> pd.DataFrame:
    """The whole history of a run, including the steps before a resume.

    A resumed run's ``logging.jsonl`` holds only its own steps, but the trainer
    state restored from the checkpoint carries the earlier ones, and swift
    writes that ``log_history`` into the final record. Falls back to the lines.
    """
    final = final_record(run_dir)
    if final and isinstance(final.get("log_history"), list):
        frame = history_frame(_history_row(r) for r in final["log_history"])
        if len(frame):
            frame["max_steps"] = final.get("global_step")
            return frame
    return read_log(run_dir)


def summarize_history(history: pd.DataFrame) -> dict[str, Any]:
    """Key numbers of a history: steps, first/last/min train loss, last token accuracy, eval loss."""
    train = history.dropna(subset=["loss"])
    evals = history.dropna(subset=["eval_loss"])
    out: dict[str, Any] = {"steps": int(history["step"].max()) if len(history) else 0}
    if len(train):
        out.update(loss_first=round(float(train["loss"].iloc[0]), 4), loss_last=round(float(train["loss"].iloc[-1]), 4),
                   loss_min=round(float(train["loss"].min()), 4))
        acc = train["token_acc"].dropna()
        if len(acc):
            out.update(token_acc_first=round(float(acc.iloc[0]), 4), token_acc_last=round(float(acc.iloc[-1]), 4))
    if len(evals):
        out.update(eval_loss_last=round(float(evals["eval_loss"].iloc[-1]), 4))
    return out


# --------------------------------------------------------------------------- plots


def plot_history(history: pd.DataFrame, title: str | None = None, smooth: float = 0.6) -> Any:
    """Loss and token accuracy against the step: raw, smoothed, and eval points.

    Returns a ``matplotlib.figure.Figure`` made without pyplot, so it is shown
    only where it is displayed (the live plot redraws one figure in place).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    train = history.dropna(subset=["loss"])
    evals = history.dropna(subset=["eval_loss"])
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "token_acc", "token accuracy")):
        series = train.dropna(subset=[key])
        if len(series):
            ax.plot(series["step"], series[key], color="tab:blue", alpha=0.35, marker=".", label=f"train {label}")
            if len(series) > 3 and smooth > 0:
                ax.plot(series["step"], series[key].ewm(alpha=1 - smooth).mean(), color="tab:blue",
                        label=f"train {label} (smoothed)")
        ekey = f"eval_{key}"
        points = evals.dropna(subset=[ekey])
        if len(points):
            ax.plot(points["step"], points[ekey], color="tab:red", marker="o", label=f"validation {label}")
        ax.set(xlabel="optimizer step", ylabel=label)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    max_steps = history["max_steps"].dropna()
    if len(max_steps):
        for ax in (ax_loss, ax_acc):
            ax.set_xlim(0, max(float(max_steps.max()), 1) + 0.5)
    ax_loss.set_title("training loss (cross-entropy per token)")
    ax_acc.set_title("token accuracy (next token = target)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_plot(history: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Write :func:`plot_history` as a PNG (e.g. ``<run>/loss_curve.png``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_history(history, title).savefig(path, dpi=110)
    return path


class LivePlot:
    """A plot that redraws in place in a notebook while training runs.

    ``update(history)`` is cheap to call often: it redraws only when new rows
    arrived. The figure is sent as a PNG and replaced in place (a display id),
    so the saved notebook keeps one, final picture. Outside IPython it does nothing.
    """

    def __init__(self, title: str | None = None) -> None:
        self.title = title
        self._handle: Any = None
        self._rows = -1

    def update(self, history: pd.DataFrame) -> None:
        if len(history) == self._rows or history.empty:
            return
        self._rows = len(history)
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython comes with jupyter
            return
        if get_ipython() is None:
            return
        image = figure_png(plot_history(history, self.title))
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


def figure_png(fig: Any, dpi: int = 90) -> Any:
    """A figure as an ``IPython.display.Image`` (PNG), whatever matplotlib backend is active."""
    import io

    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return Image(data=buffer.getvalue(), format="png")
