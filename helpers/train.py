r"""LoRA supervised fine-tuning with ms-swift: a typed config, the command line, a live runner.

The course trains with ``swift sft`` as a **subprocess**, never in the notebook
kernel: the command the notebook prints is exactly what runs, a learner can
copy it into a terminal, and a crash or Ctrl+C in training never takes the
kernel down with it. This module holds everything around that command:

* :class:`TrainConfig` - every setting of one run, typed and validated, with
  :func:`default_config` giving the offline (SmolLM2 on CPU) and gpu
  (Qwen2.5-1.5B-Instruct, bf16) starting points and :func:`env_overrides`
  reading ``SFT_<FIELD>`` environment variables. ``config.args()`` is the
  ``swift sft`` argument list, ``config.shell()`` the full command to copy,
  ``config.multi_gpu(4, "zero2")`` the same run on four GPUs.
* :func:`train` - runs it, streams the console output into the notebook (long
  dumps folded, progress bars throttled), redraws a live loss / token-accuracy
  plot from swift's ``logging.jsonl``, stops the whole process group on
  Ctrl+C or an error, and raises :class:`TrainingError` with the log tail on a
  non-zero exit. :func:`run_swift` is the same streaming for any swift command
  (:mod:`helpers.merge` uses it for ``swift export``).
* Around it, in their own modules and re-exported here: :mod:`helpers.runlog`
  (read and plot ``logging.jsonl``), :mod:`helpers.checkpoints` (find runs and
  checkpoints in swift's layout, prune old runs) and :mod:`helpers.swift_process`
  (:func:`run_swift`, the streaming subprocess runner).

**Output folder layout.** ``swift sft --output_dir OUT`` never overwrites: each
run gets its own version folder ::

    OUT/
      course_plugins.py          # only with think_loss="ignore" (registers the loss scale)
      swanlog/                   # SwanLab's local experiment logs (swanlab watch OUT/swanlog)
      v0-20261122-074803/        # one folder per run: v<index>-<start time>
        args.json                # every argument of the run, defaults included
        logging.jsonl            # one JSON line per logging step (+ eval lines, + a final summary)
        loss_curve.png           # written by the course after the run
        checkpoint-3/            # LoRA adapter + optimizer/scheduler/RNG state to resume from
        checkpoint-6/            # ... at most save_total_limit of them (the last one is always kept)
        last-checkpoint -> checkpoint-6   # symlink, updated once a checkpoint is fully written
        checkpoint-6-merged/     # written by `swift export --merge_lora true` (notebook 05)
      v1-20261122-080112/        # the next run, e.g. a resume (--resume_from_checkpoint)

**Thinking tokens in the loss** (``think_loss``). By default (``"train"``,
ms-swift's ``--loss_scale default``) every token of the assistant turn counts:
the ``<think>`` reasoning *and* the answer. That is what distils reasoning.
``"ignore_empty"`` is ms-swift's ``ignore_empty_think`` preset: only an *empty*
``<think></think>`` block is masked (hybrid thinking models such as Qwen3 get it
automatically; rows without reasoning then do not teach "think nothing").
``"ignore"`` masks the whole ``<think>...</think>`` span so only the answer is
learned (an ablation: "does the student need the reasoning?"). ms-swift 4.6 has
no preset for that (``ignore_think_prefix`` masks just the opening ``<think>``
tag), so the course registers one, ``ignore_think``, through swift's own
extension point: ``--external_plugins OUT/course_plugins.py`` imports
:func:`register_loss_scales`, which adds a regex loss scale to
``swift.loss_scale.loss_scale_map``. The masked span and the answer are then
tokenized separately, so the token boundary at ``</think>`` can differ from
tokenizing the whole reply at once.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd

from .config import Settings, get_settings

# Re-exported: notebooks and chapters import these from helpers.train.
from .runlog import (HISTORY_COLUMNS, LivePlot, figure_png, final_record, full_history,  # noqa: F401
                     history_frame, plot_history, read_log, read_records, save_plot, summarize_history)
from .checkpoints import (LAST_CHECKPOINT_LINK, checkpoints, describe_layout, final_checkpoint,  # noqa: F401
                          is_complete_checkpoint, latest_checkpoint, latest_run, list_runs, prune_runs)
from .swift_process import (ConsolePrinter, ProcessRun, TrainingError, hub_env, run_swift,  # noqa: F401
                            swift_module_argv)

# --------------------------------------------------------------------------- thinking loss

ThinkLoss = Literal["train", "ignore_empty", "ignore"]
THINK_LOSS_SCALE: dict[str, str] = {
    "train": "default",
    "ignore_empty": "ignore_empty_think",
    "ignore": "ignore_think",
}
"""``think_loss`` -> the ``--loss_scale`` value passed to ms-swift."""

IGNORE_THINK = "ignore_think"
"""Name of the course's loss scale (registered by :func:`register_loss_scales`)."""

THINK_SPAN_PATTERN = r"^\s*<think>.*?</think>\s*"
"""The span ``ignore_think`` masks: the reasoning block at the start of the reply and the blank
lines after it. No capturing groups: swift joins the patterns into one ``re.split``."""

PLUGIN_FILE = "course_plugins.py"
_PLUGIN_SOURCE = '''"""ms-swift plugin written by helpers.train: registers the course's extra loss scales.

Passed to swift with --external_plugins; it adds the `ignore_think` loss scale
(mask the <think>...</think> span, train on the answer only).
"""
from helpers.train import register_loss_scales

register_loss_scales()
'''


def register_loss_scales() -> None:
    """Add ``ignore_think`` to ms-swift's table of loss scales (idempotent).

    Built on swift's ``ConfigLossScale``: a regex -> weight table applied to each
    assistant response. Weight ``0.0`` for :data:`THINK_SPAN_PATTERN`, ``1.0``
    (the default) for everything after it, so only the answer is in the loss.
    """
    from swift.loss_scale import ConfigLossScale, loss_scale_map

    if IGNORE_THINK in loss_scale_map:
        return

    class IgnoreThinkLossScale(ConfigLossScale):
        """Mask the ``<think>...</think>`` block of each response; train on the answer."""

        def __init__(self, base_strategy: str = "default") -> None:
            super().__init__(base_strategy)  # type: ignore[arg-type]
            self.loss_scale_map = {THINK_SPAN_PATTERN: [0.0]}

    loss_scale_map[IGNORE_THINK] = IgnoreThinkLossScale


def _swift_loss_scale_config(name: str) -> dict[str, list[float]]:
    """A preset's regex table, read from swift's package data without importing swift (slow)."""
    import importlib.util

    spec = importlib.util.find_spec("swift")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "loss_scale" / "config" / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"ms-swift's loss scale config {name}.json was not found; is ms-swift installed?")


def loss_scale_parts(response: str, think_loss: ThinkLoss = "train") -> list[tuple[str, float]]:
    """How one assistant reply is weighted in the loss: ``[(text, weight), ...]``.

    The same splitting ms-swift applies (regex parts, each matched part gets its
    weight, the rest 1.0), done here without importing swift so a notebook can
    show it instantly; the tests check it against swift's own ``get_loss_scale``.
    """
    if think_loss not in THINK_LOSS_SCALE:
        raise ValueError(f"think_loss must be one of {sorted(THINK_LOSS_SCALE)}, got {think_loss!r}")
    if think_loss == "train":
        return [(response, 1.0)]
    table = ({THINK_SPAN_PATTERN: [0.0]} if think_loss == "ignore"
             else _swift_loss_scale_config(THINK_LOSS_SCALE[think_loss]))
    combined = "|".join(f"({pattern})" for pattern in table)
    parts = [p for p in re.split(combined, response, flags=re.DOTALL) if p]
    out: list[tuple[str, float]] = []
    for part in parts:
        weight = next((w[0] for pattern, w in table.items() if re.match(pattern, part, re.DOTALL)), 1.0)
        out.append((part, float(weight)))
    return out


# --------------------------------------------------------------------------- config

DEEPSPEED_PRESETS = ("zero0", "zero1", "zero2", "zero3", "zero2_offload", "zero3_offload")
"""Names ``--deepspeed`` accepts besides a path to a JSON config (ms-swift ships these files)."""


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one ``swift sft`` run. Build it with :func:`default_config`.

    Field names are swift's argument names, so ``SFT_<FIELD>`` environment
    variables (:func:`env_overrides`) and the printed command line read the same.
    """

    model: str
    """A local model folder (or a hub id on the gpu profile)."""
    dataset: tuple[str, ...]
    """Training files (ms-swift ``messages`` JSONL)."""
    output_dir: str
    """The run's parent folder; swift adds a ``v<N>-<timestamp>`` folder per run."""
    val_dataset: tuple[str, ...] = ()
    split_dataset_ratio: float = 0.0
    """Share of the training data held out for validation when there is no ``val_dataset``."""
    tuner_type: Literal["lora", "full"] = "lora"
    lora_rank: int = 16
    """Rank r of the low-rank update B·A: its capacity. 8-64 is usual."""
    lora_alpha: int = 32
    """The update is scaled by alpha / r; alpha = 2r is a common default."""
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    """Which layers get adapters: every linear layer of attention and MLP."""
    num_train_epochs: float = 3.0
    max_steps: int = -1
    """Stop after this many optimizer steps (overrides epochs); -1: train the epochs."""
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    """Sum gradients of this many batches before one optimizer step (a bigger effective batch)."""
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    max_length: int = 512
    """Longest training row in tokens; longer rows are dropped (swift's truncation_strategy=delete)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% slower."""
    logging_steps: int = 1
    save_steps: int = 50
    eval_steps: int | None = None
    """Evaluate every this many steps (default: with every checkpoint); needs validation data."""
    save_total_limit: int = 2
    think_loss: ThinkLoss = "train"
    """Do the ``<think>`` tokens count in the loss? See the module docstring."""
    report_to: tuple[str, ...] = ("swanlab",)
    """Experiment trackers: swanlab, tensorboard, wandb, or none."""
    swanlab_mode: Literal["local", "cloud"] = "local"
    swanlab_project: str = "distill-course"
    swanlab_exp_name: str | None = None
    seed: int = 42
    dataset_num_proc: int = 1
    dataloader_num_workers: int = 0
    resume_from_checkpoint: str | None = None
    """A ``checkpoint-N`` folder to continue from: weights, optimizer, scheduler, step and RNG."""
    deepspeed: str | None = None
    """``zero2`` / ``zero3`` (or another preset / a JSON path) to shard work over several GPUs."""
    nproc_per_node: int = 1
    """Processes (GPUs) on this machine; more than one runs under torchrun (``NPROC_PER_NODE``)."""
    profile_args: tuple[str, ...] = ()
    """Flags the profile needs: model type/template (SmolLM2), precision, hub checks."""
    extra_args: tuple[str, ...] = ()
    """Any other ``swift sft`` flags, appended as they are."""

    subcommand: ClassVar[str] = "sft"
    """The swift command that runs this config (a subclass may run ``swift rlhf`` with the same fields)."""

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ValueError("TrainConfig needs at least one training file (dataset).")
        if self.think_loss not in THINK_LOSS_SCALE:
            raise ValueError(f"think_loss must be one of {sorted(THINK_LOSS_SCALE)}, got {self.think_loss!r}")
        if self.tuner_type not in ("lora", "full"):
            raise ValueError(f"tuner_type must be 'lora' or 'full', got {self.tuner_type!r}")
        if self.swanlab_mode not in ("local", "cloud"):
            raise ValueError(f"swanlab_mode must be 'local' or 'cloud', got {self.swanlab_mode!r}")
        if self.nproc_per_node < 1:
            raise ValueError(f"nproc_per_node must be at least 1, got {self.nproc_per_node}")
        if self.deepspeed and self.deepspeed not in DEEPSPEED_PRESETS and not self.deepspeed.endswith(".json"):
            raise ValueError(f"deepspeed must be one of {DEEPSPEED_PRESETS} or a .json file, got {self.deepspeed!r}")
        if not 0.0 <= self.split_dataset_ratio < 1.0:
            raise ValueError(f"split_dataset_ratio must be in [0, 1), got {self.split_dataset_ratio}")
        for name in ("lora_rank", "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "max_length", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use epochs) or positive, got {self.max_steps}")

    # ------------------------------------------------------------------ derived values
    @property
    def effective_batch_size(self) -> int:
        """Rows per optimizer step: batch x accumulation x processes."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.nproc_per_node

    @property
    def has_validation(self) -> bool:
        return bool(self.val_dataset) or self.split_dataset_ratio > 0

    @property
    def plugin_path(self) -> Path | None:
        """The plugin file ``--external_plugins`` loads (only needed for ``think_loss="ignore"``)."""
        return Path(self.output_dir) / PLUGIN_FILE if self.think_loss == "ignore" else None

    @property
    def swanlab_dir(self) -> Path:
        """Where SwanLab writes its local logs (``swanlab watch <this folder>``)."""
        return Path(self.output_dir) / "swanlog"

    def total_steps(self, n_rows: int) -> int:
        """Optimizer steps for ``n_rows`` training rows (what ``max_steps`` or the epochs give)."""
        if self.max_steps > 0:
            return self.max_steps
        per_epoch = math.ceil(n_rows / (self.per_device_train_batch_size * self.nproc_per_node))
        per_epoch = max(1, math.ceil(per_epoch / self.gradient_accumulation_steps))
        return max(1, math.ceil(per_epoch * self.num_train_epochs))

    # ------------------------------------------------------------------ command line
    def args(self) -> list[str]:
        """The ``swift sft`` arguments (without ``swift sft``)."""
        a: list[str] = ["--model", self.model, *self.profile_args,
                        "--tuner_type", self.tuner_type]
        if self.tuner_type == "lora":
            a += ["--lora_rank", str(self.lora_rank), "--lora_alpha", str(self.lora_alpha),
                  "--lora_dropout", _num(self.lora_dropout), "--target_modules", self.target_modules]
        a += ["--dataset", *self.dataset]
        if self.val_dataset:
            a += ["--val_dataset", *self.val_dataset]
        a += ["--split_dataset_ratio", _num(self.split_dataset_ratio),
              "--dataset_num_proc", str(self.dataset_num_proc),
              "--max_length", str(self.max_length),
              "--num_train_epochs", _num(self.num_train_epochs)]
        if self.max_steps > 0:
            a += ["--max_steps", str(self.max_steps)]
        a += ["--per_device_train_batch_size", str(self.per_device_train_batch_size)]
        if self.has_validation:
            a += ["--per_device_eval_batch_size", str(self.per_device_eval_batch_size)]
        a += ["--gradient_accumulation_steps", str(self.gradient_accumulation_steps),
              "--learning_rate", _num(self.learning_rate),
              "--lr_scheduler_type", self.lr_scheduler_type,
              "--warmup_ratio", _num(self.warmup_ratio),
              "--gradient_checkpointing", _bool(self.gradient_checkpointing),
              "--loss_scale", THINK_LOSS_SCALE[self.think_loss]]
        if self.plugin_path is not None:
            a += ["--external_plugins", str(self.plugin_path)]
        a += ["--logging_steps", str(self.logging_steps),
              "--save_steps", str(self.save_steps),
              "--save_total_limit", str(self.save_total_limit)]
        if self.has_validation:
            a += ["--eval_steps", str(self.eval_steps or self.save_steps)]
        a += ["--output_dir", self.output_dir,
              "--report_to", *(self.report_to or ("none",))]
        if "swanlab" in self.report_to:
            a += ["--swanlab_mode", self.swanlab_mode, "--swanlab_project", self.swanlab_project]
            if self.swanlab_exp_name:
                a += ["--swanlab_exp_name", self.swanlab_exp_name]
        a += ["--seed", str(self.seed), "--dataloader_num_workers", str(self.dataloader_num_workers)]
        if self.resume_from_checkpoint:
            a += ["--resume_from_checkpoint", self.resume_from_checkpoint]
        if self.deepspeed:
            a += ["--deepspeed", self.deepspeed]
        return a + list(self.extra_args)

    def env(self) -> dict[str, str]:
        """Environment variables the run needs on top of the current ones."""
        env: dict[str, str] = {}
        if self.nproc_per_node > 1:
            env["NPROC_PER_NODE"] = str(self.nproc_per_node)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(self.nproc_per_node))
        if "swanlab" in self.report_to:
            env["SWANLAB_LOG_DIR"] = str(self.swanlab_dir)
        return env

    def command(self) -> list[str]:
        """``swift sft ...`` as a list (environment variables: :meth:`env`)."""
        return ["swift", self.subcommand, *self.args()]

    def shell(self, *, multiline: bool = True) -> str:
        """The full command to paste into a terminal: environment, ``swift sft``, one flag per line."""
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env().items())
        head = f"{prefix} swift {self.subcommand}" if prefix else f"swift {self.subcommand}"
        return format_command(head, self.args(), multiline=multiline)

    # ------------------------------------------------------------------ variants
    def multi_gpu(self, n_gpus: int, deepspeed: str | None = "zero2") -> "TrainConfig":
        """The same run on ``n_gpus`` GPUs of one machine (torchrun via ``NPROC_PER_NODE``).

        The effective batch grows n-fold, so the gradient accumulation is divided
        by n (rounded up) to keep about the same batch and learning-rate schedule.
        ``zero2`` shards optimizer state and gradients (the usual choice for LoRA);
        ``zero3`` also shards the weights (models that do not fit on one GPU).
        """
        if n_gpus < 2:
            raise ValueError(f"multi_gpu needs 2 GPUs or more, got {n_gpus}")
        accumulation = max(1, math.ceil(self.gradient_accumulation_steps / n_gpus))
        return replace(self, nproc_per_node=n_gpus, deepspeed=deepspeed, gradient_accumulation_steps=accumulation)

    def resumed(self, checkpoint: str | Path) -> "TrainConfig":
        """The same run continued from ``checkpoint`` (a ``checkpoint-N`` folder)."""
        path = Path(checkpoint)
        if not (path / "trainer_state.json").is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no trainer_state.json).")
        return replace(self, resume_from_checkpoint=str(path))

    def with_overrides(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def table(self) -> pd.DataFrame:
        """The settings as a two-column table for a notebook."""
        return pd.DataFrame([(k, _show(v)) for k, v in asdict(self).items()], columns=["setting", "value"])


def _num(value: float) -> str:
    """A number as swift reads it: ``3`` for 3.0, ``0.0002`` for 2e-4."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


def format_command(head: str, args: Sequence[str], *, multiline: bool = True) -> str:
    """``head --flag value ...`` shell-quoted; with ``multiline``, one ``--flag values`` per line."""
    if not multiline:
        return " ".join([head, *map(shlex.quote, args)])
    groups: list[list[str]] = []
    for arg in args:
        if arg.startswith("--") or not groups:
            groups.append([arg])
        else:
            groups[-1].append(arg)
    lines = [head] + ["    " + " ".join(map(shlex.quote, g)) for g in groups]
    return " \\\n".join(lines)


def count_rows(path: str | Path) -> int:
    """Non-empty lines of a JSONL file."""
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def token_lengths(path: str | Path, tokenizer: Any) -> pd.Series:
    """Tokens per training row (chat template applied, as the trainer sees it) of a messages JSONL."""
    lengths = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                encoded = tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=True)
                ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
                lengths.append(len(ids))
    return pd.Series(lengths, name="tokens", dtype="int64")


def default_output_dir(settings: Settings | None = None) -> Path:
    """``<workspace>/runs/sft-<profile>``: notebook 04 trains here, notebooks 05-06 look here."""
    settings = settings or get_settings()
    return settings.runs_dir / f"sft-{settings.profile.name}"


def default_config(settings: Settings | None = None, *, train_file: str | Path | None = None,
                   val_file: str | Path | None = None, model: str | Path | None = None,
                   output_dir: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The course's starting point for the active profile and size; ``overrides`` win.

    * **offline** (CPU, float32): the converted SmolLM2-135M student, LoRA r=16,
      alpha=32 on all linear layers, lr 2e-4, 3 epochs, batch 4 (no accumulation:
      with ~100 rows, more optimizer steps help more than a larger batch),
      max length 512 (the curated rows are ~150-400 tokens). About one training
      row per second on 2 free cores; a 150-token row took 2-4 s per step with one
      thread on a busy machine (measured).
    * **gpu** (one CUDA GPU, bfloat16): Qwen2.5-1.5B-Instruct with the usual
      ms-swift LoRA recipe as a starting point: LoRA r=16, alpha=32 on all linear
      layers, lr 1e-4, 2 epochs, batch 2 x 8 accumulation (16 rows per step), max
      length 4096 (long reasoning chains of a real teacher), gradient checkpointing.
    * **smoke** size (either profile): a handful of steps, batch 1, so a full
      train -> checkpoint -> resume -> merge cycle takes a minute on CPU.

    Checkpoints: about four per run (``save_steps`` from the data size), so an
    interrupted run loses at most a quarter; with a ``val_file`` the validation
    loss is computed at every checkpoint. Without one nothing is held out
    (``split_dataset_ratio 0``): at smoke size there may be a single row.
    """
    settings = settings or get_settings()
    profile = settings.profile
    if train_file is None:
        train_file = settings.datasets_dir / "distill" / "train.jsonl"
    if val_file is None:
        candidate = Path(train_file).with_name("val.jsonl")
        val_file = candidate if candidate.is_file() and candidate != Path(train_file) else None
    if model is None:
        from .models import student_dir

        model = student_dir(settings)
    base: dict[str, Any] = dict(
        model=str(model),
        dataset=(str(train_file),),
        val_dataset=(str(val_file),) if val_file else (),
        output_dir=str(output_dir or default_output_dir(settings)),
        profile_args=(*profile.swift_model_args, *profile.swift_precision_args, *profile.swift_train_hub_args),
        swanlab_exp_name=f"{profile.name}-{settings.size}",
    )
    if profile.name == "gpu":
        base.update(num_train_epochs=2.0, per_device_train_batch_size=2, per_device_eval_batch_size=2,
                    gradient_accumulation_steps=8, learning_rate=1e-4, max_length=4096,
                    gradient_checkpointing=True, logging_steps=5, dataloader_num_workers=2)
    else:
        base.update(num_train_epochs=3.0, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                    gradient_accumulation_steps=1, learning_rate=2e-4, max_length=512, logging_steps=1)
    if settings.smoke:
        base.update(max_steps=6, per_device_train_batch_size=1, per_device_eval_batch_size=1,
                    gradient_accumulation_steps=1, logging_steps=1, dataloader_num_workers=0)
    base.update(overrides)
    if "save_steps" not in overrides:
        probe = TrainConfig(**{**base, "save_steps": 1})
        n_rows = count_rows(train_file) if Path(train_file).is_file() else 1
        base["save_steps"] = max(1, math.ceil(probe.total_steps(n_rows) / (2 if settings.smoke else 4)))
    return TrainConfig(**base)


def _parse_value(raw: str, annotation: Any, name: str) -> Any:
    raw = raw.strip()
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        if raw.lower() in ("", "none", "null"):
            return None
        annotation = next(a for a in args if a is not type(None))
        return _parse_value(raw, annotation, name)
    if origin is Literal:
        if raw not in args:
            raise ValueError(f"{name}={raw!r} must be one of {list(args)}")
        return raw
    if origin is tuple:
        if name.lower().endswith(("extra_args", "profile_args")):  # command-line flags: shell words
            return tuple(shlex.split(raw))
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    if annotation is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}={raw!r} is not a boolean (use true/false)")
    if annotation is int:
        return int(raw)
    if annotation is float:
        return float(raw)
    return raw


ENV_PREFIX = "SFT_"


def env_overrides(env: Mapping[str, str] | None = None, prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """Config overrides from ``SFT_<FIELD>`` environment variables, typed by the field.

    ``SFT_LORA_RANK=8``, ``SFT_MAX_STEPS=20``, ``SFT_THINK_LOSS=ignore``,
    ``SFT_REPORT_TO=none``, ``SFT_DATASET=a.jsonl,b.jsonl`` (lists: commas),
    ``SFT_EXTRA_ARGS="--weight_decay 0.1"`` (flags: shell words). An unknown
    ``SFT_`` name is an error, so a typo does not silently do nothing.
    """
    env = os.environ if env is None else env
    hints = typing.get_type_hints(TrainConfig)
    names = {f.name for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):].lower()
        if name not in names:
            raise ValueError(f"{key} does not name a training setting; known: "
                             f"{', '.join(prefix + n.upper() for n in sorted(names))}")
        out[name] = _parse_value(raw, hints[name], key)
    return out


# --------------------------------------------------------------------------- swanlab


def swanlab_available() -> tuple[bool, str]:
    """Can SwanLab log locally here? ``(ok, why not)``."""
    import importlib.util

    if importlib.util.find_spec("swanlab") is None:
        return False, "swanlab is not installed (pip install 'swanlab[dashboard]')"
    try:
        from importlib.metadata import version

        return True, f"swanlab {version('swanlab')}"
    except Exception as exc:  # pragma: no cover - metadata of an installed package
        return False, f"swanlab is broken: {exc}"


def tracking_overrides(requested: Sequence[str] = ("swanlab",)) -> tuple[dict[str, Any], str]:
    """``report_to`` that works here, and a sentence saying what was chosen and why."""
    if "swanlab" not in requested:
        return {"report_to": tuple(requested) or ("none",)}, f"tracking: {', '.join(requested) or 'none'}"
    ok, why = swanlab_available()
    if ok:
        return {"report_to": tuple(requested)}, f"tracking: SwanLab in local mode ({why}), no account needed"
    rest = tuple(r for r in requested if r != "swanlab") or ("none",)
    return {"report_to": rest}, f"tracking: SwanLab off ({why}); logging.jsonl and the course's plots still work"


# --------------------------------------------------------------------------- training


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
        config.plugin_path.write_text(_PLUGIN_SOURCE, encoding="utf-8")
    return out


def train(config: TrainConfig, *, settings: Settings | None = None, live: LivePlot | None = None,
          on_output: Callable[[str, bool], None] | None = None, stop_after_checkpoint: bool = False,
          poll_seconds: float = 2.0, console_log: Path | None = None) -> TrainResult:
    """Run ``swift sft`` for ``config`` and stream it; return where everything went.

    (``swift <config.subcommand>`` in general: a :class:`helpers.gkd.GKDConfig` runs ``swift rlhf``.)

    ``live`` redraws a loss plot from ``logging.jsonl`` every ``poll_seconds``.
    ``stop_after_checkpoint`` stops the run (the whole process group) as soon as
    its first checkpoint is fully written: a real interruption, to practise
    resuming. ``on_output`` defaults to a :class:`ConsolePrinter`. Raises
    :class:`TrainingError` with the log tail when swift fails.
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
        raise TrainingError(f"swift {config.subcommand} exited with code {run.returncode} "
                            f"after {run.seconds:.0f} s.\n"
                            f"Full log: {console_log}\nLast lines:\n{run.tail()}")
    if live is not None and run_dir is not None:
        live.update(full_history(run_dir))
    return result
