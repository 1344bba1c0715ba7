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
* :func:`read_log`, :func:`final_record`, :func:`plot_history` - parse and plot
  ``logging.jsonl``.
* :func:`list_runs`, :func:`latest_run`, :func:`latest_checkpoint`,
  :func:`final_checkpoint` - find runs and checkpoints in swift's layout;
  :func:`prune_runs` deletes old runs.

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
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from .config import HUB_OFFLINE_VARS, Settings, get_settings, mask_secrets
from .server import _die_with_parent, _stop_process_group

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
        return ["swift", "sft", *self.args()]

    def shell(self, *, multiline: bool = True) -> str:
        """The full command to paste into a terminal: environment, ``swift sft``, one flag per line."""
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env().items())
        head = f"{prefix} swift sft" if prefix else "swift sft"
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


# --------------------------------------------------------------------------- logging.jsonl

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


def _read_records(path: Path) -> list[dict[str, Any]]:
    """JSON lines of a file that may still be growing: a torn last line is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


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


def _frame(rows: Iterable[dict[str, Any] | None]) -> pd.DataFrame:
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
    return _frame(_history_row(r) for r in _read_records(path) if "last_model_checkpoint" not in r)


def final_record(path: str | Path) -> dict[str, Any] | None:
    """The summary swift appends when a run ends (last checkpoint, steps, full log history)."""
    path = Path(path)
    if path.is_dir():
        path = path / "logging.jsonl"
    finals = [r for r in _read_records(path) if "last_model_checkpoint" in r]
    return finals[-1] if finals else None


def full_history(run_dir: str | Path) -> pd.DataFrame:
    """The whole history of a run, including the steps before a resume.

    A resumed run's ``logging.jsonl`` holds only its own steps, but the trainer
    state restored from the checkpoint carries the earlier ones, and swift
    writes that ``log_history`` into the final record. Falls back to the lines.
    """
    final = final_record(run_dir)
    if final and isinstance(final.get("log_history"), list):
        frame = _frame(_history_row(r) for r in final["log_history"])
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


# --------------------------------------------------------------------------- runs and checkpoints

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


# --------------------------------------------------------------------------- streaming subprocesses


class TrainingError(RuntimeError):
    """A swift command exited with an error; the message carries the end of its log."""


_BLOCK_HEADER = re.compile(r"^\[INFO:swift\] [\w .]+: \S")
_NEW_MESSAGE = re.compile(r"^(\[(INFO|WARNING|ERROR):swift\]|\{')")
_SWANLAB_ERROR = re.compile(r"\|\s*ERROR\s*\|\s*swanlab\.")
_OPENERS, _CLOSERS = "([{", ")]}"


def _bracket_depth(text: str) -> int:
    """Open minus closed brackets in a line (a dump that continues on the next lines is > 0)."""
    return sum(text.count(c) for c in _OPENERS) - sum(text.count(c) for c in _CLOSERS)


class ConsolePrinter:
    """Shows a swift command's console output in a notebook, readable.

    Lines are printed as they come, with four exceptions (the log file keeps
    everything):

    * multi-line dumps longer than ``fold_over`` lines (``args: SftArguments(...)``,
      the model's module tree, its config) are folded to one line; a dump is
      recognised by a ``[INFO:swift] name: ...`` line whose brackets stay open;
    * single lines longer than ``max_line`` characters (token-id lists) are cut;
    * progress bars, which redraw with ``\\r``, are printed as a plain line at
      most every ``progress_every`` seconds;
    * SwanLab 0.10 complains (3-4 lines each time) that it cannot chart swift's
      text-valued metrics (``elapsed_time: '9s'``); those complaints are
      counted, and :meth:`finish` says how many were hidden.
    """

    def __init__(self, progress_every: float = 15.0, write: Callable[[str], None] | None = None,
                 log_path: Path | None = None, fold_over: int = 12, max_line: int = 300) -> None:
        self.progress_every = progress_every
        self.write = write or (lambda text: print(text, flush=True))
        self.log_path = log_path
        self.fold_over = fold_over
        self.max_line = max_line
        self._block: list[str] | None = None
        self._depth = 0
        self._last_progress = float("-inf")
        self._pending: list[str] | None = None
        self._harmless = 0

    def finish(self) -> None:
        """Flush what is held back and say what was hidden."""
        self._end_block()
        if self._pending:
            for line in self._pending:
                self._show(line)
        self._pending = None
        if self._harmless:
            self.write(f"(hidden: {self._harmless} SwanLab complaints about text-valued metrics such as "
                       "elapsed_time; harmless, the numbers are all logged)")
            self._harmless = 0

    def _show(self, text: str) -> None:
        stripped = text.strip()
        if not stripped:
            return
        line = stripped if stripped.startswith("{") else text.rstrip()
        if len(line) > self.max_line:
            line = f"{line[: self.max_line]} … ({len(line)} characters, the whole line is in the log)"
        self.write(line)

    def _end_block(self) -> None:
        block, self._block = self._block, None
        if not block:
            return
        if len(block) <= self.fold_over:
            for line in block:
                self._show(line)
        else:
            where = f" (in {self.log_path})" if self.log_path else ""
            self._show(f"{block[0].rstrip()[:200]} … {len(block) - 1} more lines folded{where}")

    def __call__(self, text: str, transient: bool) -> None:
        if transient:
            now = time.monotonic()
            if text.strip() and now - self._last_progress >= self.progress_every:
                self._last_progress = now
                self.write(text.strip())
            return
        if self._pending is not None:
            self._pending.append(text)
            joined = " ".join(self._pending)
            if "Unsupported scalar" in joined and re.search(r"string value: .*'\.?$", text.strip()):
                self._harmless += 1
                self._pending = None
            elif len(self._pending) >= 6:
                pending, self._pending = self._pending, None
                for line in pending:
                    self._show(line)
            return
        if _SWANLAB_ERROR.search(text):
            self._end_block()
            self._pending = [text]
            return
        if self._block is not None:
            if _NEW_MESSAGE.match(text):  # an unbalanced dump must not swallow the next message
                self._end_block()
            else:
                self._block.append(text)
                self._depth += _bracket_depth(text)
                if self._depth <= 0:
                    self._end_block()
                return
        if _BLOCK_HEADER.match(text) and _bracket_depth(text) > 0:
            self._block, self._depth = [text], _bracket_depth(text)
            return
        self._show(text)


@dataclass
class ProcessRun:
    """What :func:`run_swift` observed."""

    command: list[str]
    returncode: int
    seconds: float
    log_path: Path
    stopped: bool = False
    """True when ``on_poll`` asked to stop the process (a deliberate interruption)."""
    lines: list[str] = field(default_factory=list)
    """Every complete output line (progress redraws excluded)."""

    def find(self, pattern: str) -> str | None:
        """The first group of the last line matching ``pattern``."""
        regex = re.compile(pattern)
        for line in reversed(self.lines):
            m = regex.search(line)
            if m:
                return m.group(1).strip()
        return None

    def tail(self, n: int = 40) -> str:
        return mask_secrets("\n".join(self.lines[-n:]))


def _pump(fd: int, out: "queue.Queue[tuple[str, bool] | None]") -> None:
    """Read a pipe to its end, cutting it into lines (``\\n``) and redraws (``\\r``)."""
    buffer = b""
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            while True:
                match = re.search(rb"\r\n|\n|\r", buffer)
                if match is None or (match.group() == b"\r" and match.end() == len(buffer)):
                    break  # a lone \r at the end may be the start of \r\n
                text = buffer[:match.start()].decode("utf-8", errors="replace")
                out.put((text, match.group() == b"\r"))
                buffer = buffer[match.end():]
        if buffer:
            out.put((buffer.decode("utf-8", errors="replace"), False))
    finally:
        out.put(None)


def run_swift(argv: Sequence[str], *, env: Mapping[str, str] | None = None, log_path: Path,
              on_output: Callable[[str, bool], None] | None = None,
              on_poll: Callable[[], bool | None] | None = None, poll_seconds: float = 2.0,
              cwd: str | Path | None = None) -> ProcessRun:
    """Run a command (a swift CLI module), streaming its output, and wait for it.

    ``on_output(text, transient)`` sees every line (``transient`` for a ``\\r``
    progress redraw); ``on_poll()`` runs every ``poll_seconds`` and once at the
    end, and returning True stops the process group (a deliberate stop, not an
    error). The process runs in its own session, dies with the kernel (Linux
    parent-death signal) and is stopped with all its children on Ctrl+C or any
    exception here. Everything is also written to ``log_path``. The caller
    checks ``returncode``.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    full_env.setdefault("TQDM_MININTERVAL", "5")  # fewer progress redraws through the pipe
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = list(argv)
    started = time.monotonic()
    lines: list[str] = []
    stopped = False
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + mask_secrets(" ".join(map(shlex.quote, argv))) + "\n")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, cwd=str(cwd) if cwd else None, preexec_fn=_die_with_parent,
                                close_fds=True, bufsize=0)
        segments: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        assert proc.stdout is not None
        reader = threading.Thread(target=_pump, args=(proc.stdout.fileno(), segments), daemon=True)
        reader.start()
        last_poll = time.monotonic()
        try:
            while True:
                try:
                    item = segments.get(timeout=0.25)
                except queue.Empty:
                    item = ("", True)  # nothing new: just a chance to poll
                else:
                    if item is None:
                        break
                    text, transient = item
                    log.write(text + ("\r" if transient else "\n"))
                    if not transient:
                        lines.append(text)
                    if on_output is not None and (text or not transient):
                        on_output(text, transient)
                if on_poll is not None and not stopped and time.monotonic() - last_poll >= poll_seconds:
                    last_poll = time.monotonic()
                    if on_poll():
                        stopped = True
                        _stop_process_group(proc)
            proc.wait()
            if on_poll is not None:
                on_poll()
            finish = getattr(on_output, "finish", None)
            if callable(finish):
                finish()
        except BaseException:
            _stop_process_group(proc)
            raise
        finally:
            reader.join(timeout=5)
            proc.stdout.close()
    return ProcessRun(argv, proc.returncode, time.monotonic() - started, log_path, stopped, lines)


def swift_module_argv(subcommand: str, args: Sequence[str], nproc_per_node: int = 1) -> list[str]:
    """How to start ``swift <subcommand>`` with this interpreter.

    One process: ``python -m swift.cli.<sub>`` (what the ``swift`` launcher runs
    anyway, minus one process in between). Several: ``python -m swift.cli.main``,
    the ``swift`` launcher itself, which starts torchrun when ``NPROC_PER_NODE`` is set.
    """
    if nproc_per_node > 1:
        return [sys.executable, "-m", "swift.cli.main", subcommand, *args]
    return [sys.executable, "-m", f"swift.cli.{subcommand}", *args]


def hub_env(settings: Settings) -> dict[str, str]:
    """Hub-offline variables for a child process of an offline profile."""
    return dict(HUB_OFFLINE_VARS) if settings.profile.hub_offline else {}


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
        return full_history(self.run_dir) if self.run_dir else _frame([])

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
    for record in _read_records(run_dir / "logging.jsonl"):
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
    console_log = console_log or settings.logs_dir / f"swift-sft-{stamp}.log"
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

    argv = swift_module_argv("sft", config.args(), config.nproc_per_node)
    run = run_swift(argv, env=env, log_path=console_log, on_output=printer, on_poll=poll,
                    poll_seconds=poll_seconds, cwd=output_dir)
    announced = run.find(r"\[INFO:swift\] output_dir: (.+)$")
    run_dir = Path(announced) if announced else state["run_dir"] or _new_run_dir(output_dir, before)
    result = TrainResult(config, config.shell(), run.returncode, run.seconds, console_log, run_dir, run.stopped)
    if run.returncode != 0 and not run.stopped:
        raise TrainingError(f"swift sft exited with code {run.returncode} after {run.seconds:.0f} s.\n"
                            f"Full log: {console_log}\nLast lines:\n{run.tail()}")
    if live is not None and run_dir is not None:
        live.update(full_history(run_dir))
    return result
