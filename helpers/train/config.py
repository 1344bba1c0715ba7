"""The ``swift sft`` run as a typed config: LoRA settings, the profile's flags, the exact command.

:class:`TrainConfig` holds every setting of one run, validated; field names are
swift's argument names, so ``SFT_<FIELD>`` environment variables
(:func:`env_overrides`) and the printed command read the same.
:func:`default_config` gives the offline (SmolLM2 on CPU) and gpu starting
points; ``config.shell()`` is the command to copy, ``config.multi_gpu(4, "zero2")``
the same run on four GPUs.
"""

from __future__ import annotations

import math
import os
import shlex
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd

from ..core.config import Settings, get_settings
from ..core.jsonl import count_lines, read_jsonl
from ..core.swift import format_command
from .loss_scale import PLUGIN_FILE, THINK_LOSS_SCALE, ThinkLoss

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
                  "--lora_dropout", num_arg(self.lora_dropout), "--target_modules", self.target_modules]
        a += ["--dataset", *self.dataset]
        if self.val_dataset:
            a += ["--val_dataset", *self.val_dataset]
        a += ["--split_dataset_ratio", num_arg(self.split_dataset_ratio),
              "--dataset_num_proc", str(self.dataset_num_proc),
              "--max_length", str(self.max_length),
              "--num_train_epochs", num_arg(self.num_train_epochs)]
        if self.max_steps > 0:
            a += ["--max_steps", str(self.max_steps)]
        a += ["--per_device_train_batch_size", str(self.per_device_train_batch_size)]
        if self.has_validation:
            a += ["--per_device_eval_batch_size", str(self.per_device_eval_batch_size)]
        a += ["--gradient_accumulation_steps", str(self.gradient_accumulation_steps),
              "--learning_rate", num_arg(self.learning_rate),
              "--lr_scheduler_type", self.lr_scheduler_type,
              "--warmup_ratio", num_arg(self.warmup_ratio),
              "--gradient_checkpointing", bool_arg(self.gradient_checkpointing),
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


def num_arg(value: float) -> str:
    """A number as swift reads it: ``3`` for 3.0, ``0.0002`` for 2e-4."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def bool_arg(value: bool) -> str:
    return "true" if value else "false"


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


def token_lengths(path: str | Path, tokenizer: Any) -> pd.Series:
    """Tokens per training row (chat template applied, as the trainer sees it) of a messages JSONL."""
    lengths = []
    for record in read_jsonl(path):
        encoded = tokenizer.apply_chat_template(record["messages"], tokenize=True)
        lengths.append(len(encoded["input_ids"] if hasattr(encoded, "keys") else encoded))
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
      max length 512 (the curated rows are ~150-400 tokens); speed: bench/README.md.
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
    from ..models.student import student_dir, swift_model_args

    model = overrides.pop("model", model) or student_dir(settings)  # SFT_MODEL=... is an override like any other
    base: dict[str, Any] = dict(
        model=str(model),
        dataset=(str(train_file),),
        val_dataset=(str(val_file),) if val_file else (),
        output_dir=str(output_dir or default_output_dir(settings)),
        profile_args=(*swift_model_args(model, settings), *profile.swift_precision_args,
                      *profile.swift_train_hub_args),
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
        n_rows = count_lines(train_file) if Path(train_file).is_file() else 1
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
