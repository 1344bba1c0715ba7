"""Generalized knowledge distillation (GKD) with ms-swift: ``swift rlhf --rlhf_type gkd``.

Notebooks 02-04 distil at the **sequence level** (SFT on the teacher's text). GKD
(Agarwal et al., 2024) distils at the **token level**: at every position of a reply the
student is pulled towards the teacher's whole next-token distribution, so **the teacher
must share the student's tokenizer**. The knobs (``swift/arguments/rlhf_args.py``):

* ``beta``: the divergence, from forward KL (0, mode covering) through Jensen-Shannon
  (0.5) to reverse KL (1, mode seeking);
* ``lmbda``: the on-policy share, batches where the student writes its own replies and
  the teacher grades exactly those (the train/test mismatch of SFT, fixed);
* ``temperature``: sampling of on-policy replies and softening of both distributions;
* ``seq_kd`` was removed in ms-swift 4.6 (it is what notebooks 02-04 do), so
  :class:`GKDConfig` refuses it; ``sft_alpha`` adds the ordinary cross-entropy.

On CPU GKD needs ``msgspec``, which ms-swift 4.6 imports but does not declare; ``vllm``,
``deepspeed`` and ``liger-kernel`` help on a GPU (:func:`gkd_dependencies` reports them).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd

from ..core.config import Settings, get_settings
from ..train.config import TrainConfig, bool_arg, default_config, num_arg
from ..train.runlog import LivePlot
from ..train.runner import TrainResult, train

GPU_TEACHER_MODEL = "Qwen/Qwen2.5-3B-Instruct"
"""The gpu profile's default log-prob teacher (scoring, GKD): the student's tokenizer, and with the
1.5B student it fits one 24 GB card (see :func:`gkd_memory_estimate`). ``COURSE_LOGIT_TEACHER``
chooses another, e.g. Qwen/Qwen2.5-7B-Instruct on a 40 GB+ card."""

DEPENDENCIES: tuple[tuple[str, str, str, bool], ...] = (
    ("msgspec", "msgspec", "importing swift's GKD/GRPO trainers (swift/rlhf_trainers/utils.py); "
     "ms-swift 4.6 does not declare it", True),
    ("vllm", "vllm", "fast on-policy generation: --use_vllm true --vllm_mode colocate|server (GPU)", False),
    ("deepspeed", "deepspeed", "--deepspeed zero2/zero3 for the student, --teacher_deepspeed for the teacher (GPU)",
     False),
    ("liger-kernel", "liger_kernel", "--use_liger_kernel: fused JSD loss without full-vocabulary logits (GPU)",
     False),
)
"""(pip name, import name, what it is for, required on every profile)."""


def gkd_dependencies() -> pd.DataFrame:
    """Which of GKD's extra packages are installed here (version) and which are missing."""
    from importlib.metadata import PackageNotFoundError, version

    rows = []
    for pip_name, module, purpose, required in DEPENDENCIES:
        try:
            found = version(pip_name) if importlib.util.find_spec(module) else None
        except PackageNotFoundError:
            found = "installed"
        rows.append({"package": pip_name, "required": "yes" if required else "optional",
                     "installed": found or "missing", "needed for": purpose})
    return pd.DataFrame(rows)


def require_gkd_dependencies() -> None:
    """Raise ``ImportError`` naming the pip command when a required package is missing."""
    missing = [pip for pip, module, _, required in DEPENDENCIES
               if required and importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(f"swift rlhf --rlhf_type gkd needs {', '.join(missing)}, which ms-swift 4.6 does not "
                          f"install: pip install {' '.join(missing)}  (or `make setup` once the course declares it).")


# --------------------------------------------------------------------------- config

VllmMode = Literal["colocate", "server"]


@dataclass(frozen=True)
class GKDConfig(TrainConfig):
    """A ``swift rlhf --rlhf_type gkd`` run: every :class:`TrainConfig` field plus the GKD ones.

    Build it with :func:`gkd_config`; ``args()`` is the argument list, ``shell()`` the
    command to copy, and :func:`helpers.train.runner.train` runs it like an SFT config.
    """

    teacher_model: str | None = None
    """A local folder or hub id of the teacher (same tokenizer as the student)."""
    teacher_model_type: str | None = None
    teacher_model_server: str | None = None
    """Instead of ``teacher_model``: the URL of a served teacher (vLLM / swift deploy with prompt log-probs)."""
    beta: float = 0.5
    lmbda: float = 0.5
    temperature: float = 0.9
    max_completion_length: int = 512
    sft_alpha: float = 0.0
    seq_kd: bool = False
    """Removed in ms-swift 4.6; kept as a field only to refuse it with an explanation."""
    gkd_logits_topk: int | None = None
    offload_teacher_model: bool = False
    """Keep the teacher in CPU memory and move it to the GPU only for its forward pass."""
    teacher_deepspeed: str | None = None
    use_vllm: bool = False
    vllm_mode: VllmMode | None = None
    vllm_gpu_memory_utilization: float = 0.5
    log_completions: bool = False
    """Write the student's on-policy replies to ``<run>/completions.jsonl`` (see :func:`read_completions`)."""

    subcommand: ClassVar[str] = "rlhf"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seq_kd:
            raise ValueError("seq_kd was removed from ms-swift 4.6 (`--seq_kd true` raises NotImplementedError). "
                             "Sequence-level KD is SFT on teacher-written replies: notebooks 02-04 do exactly that.")
        if (self.teacher_model is None) == (self.teacher_model_server is None):
            raise ValueError("Give exactly one of teacher_model (a model folder or hub id) and teacher_model_server "
                             "(the URL of a served teacher).")
        if self.teacher_model is not None and Path(self.teacher_model) == Path(self.model):
            raise ValueError("The teacher is the student itself: with LoRA swift would then distil the student into "
                             "its own base weights. Pass a different teacher_model.")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1] (0 = forward KL, 0.5 = JSD, 1 = reverse KL), got {self.beta}")
        if not 0.0 <= self.lmbda <= 1.0:
            raise ValueError(f"lmbda (the on-policy share of batches) must be in [0, 1], got {self.lmbda}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.max_completion_length < 1:
            raise ValueError(f"max_completion_length must be at least 1, got {self.max_completion_length}")
        if self.sft_alpha < 0:
            raise ValueError(f"sft_alpha must be >= 0, got {self.sft_alpha}")
        if self.gkd_logits_topk is not None and self.gkd_logits_topk < 1:
            raise ValueError(f"gkd_logits_topk must be a positive integer, got {self.gkd_logits_topk}")
        if self.teacher_model_server is not None and self.gkd_logits_topk is None:
            raise ValueError("A served teacher (teacher_model_server) returns top-k log-probs only: "
                             "set gkd_logits_topk.")
        if self.use_vllm and self.vllm_mode not in ("colocate", "server"):
            raise ValueError(f"use_vllm needs vllm_mode 'colocate' or 'server', got {self.vllm_mode!r}")
        if self.vllm_mode is not None and not self.use_vllm:
            raise ValueError("vllm_mode is set but use_vllm is false.")
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            raise ValueError(f"vllm_gpu_memory_utilization must be in (0, 1], got {self.vllm_gpu_memory_utilization}")

    def gkd_args(self) -> list[str]:
        """The GKD-specific flags (after the shared training flags)."""
        a: list[str] = []
        if self.teacher_model is not None:
            a += ["--teacher_model", self.teacher_model]
            if self.teacher_model_type:
                a += ["--teacher_model_type", self.teacher_model_type]
        else:
            a += ["--teacher_model_server", str(self.teacher_model_server)]
        a += ["--beta", num_arg(self.beta), "--lmbda", num_arg(self.lmbda), "--temperature", num_arg(self.temperature),
              "--max_completion_length", str(self.max_completion_length)]
        if self.sft_alpha:
            a += ["--sft_alpha", num_arg(self.sft_alpha)]
        if self.gkd_logits_topk is not None:
            a += ["--gkd_logits_topk", str(self.gkd_logits_topk)]
        if self.offload_teacher_model:
            a += ["--offload_teacher_model", bool_arg(True)]
        if self.teacher_deepspeed:
            a += ["--teacher_deepspeed", self.teacher_deepspeed]
        if self.use_vllm:
            a += ["--use_vllm", bool_arg(True), "--vllm_mode", str(self.vllm_mode),
                  "--vllm_gpu_memory_utilization", num_arg(self.vllm_gpu_memory_utilization)]
        if self.log_completions:
            a += ["--log_completions", bool_arg(True)]
        return a

    def args(self) -> list[str]:
        """``swift rlhf`` arguments: ``--rlhf_type gkd``, the training flags, the GKD flags, extras last."""
        shared = TrainConfig.args(replace(self, extra_args=()))
        return ["--rlhf_type", "gkd", *shared, *self.gkd_args(), *self.extra_args]

    def sft_baseline(self, output_dir: str | Path) -> TrainConfig:
        """Plain SFT with the same student, data, LoRA, optimizer and steps: the comparison run."""
        shared = {f.name: getattr(self, f.name) for f in fields(TrainConfig)}
        return TrainConfig(**{**shared, "output_dir": str(output_dir)})

    def with_vllm(self, mode: VllmMode = "colocate", gpu_memory_utilization: float = 0.5) -> "GKDConfig":
        """The same run with vLLM generating the on-policy replies (GPU, ``pip install vllm``)."""
        return replace(self, use_vllm=True, vllm_mode=mode, vllm_gpu_memory_utilization=gpu_memory_utilization)


def default_gkd_dir(settings: Settings | None = None) -> Path:
    """``<workspace>/runs/gkd-<profile>``: notebook 08's runs (``gkd/`` and ``sft/`` inside)."""
    settings = settings or get_settings()
    return settings.runs_dir / f"gkd-{settings.profile.name}"


def offline_teacher(settings: Settings | None = None) -> Path:
    """The offline GKD teacher: notebook 05's merged distilled student (raises if there is none)."""
    from ..merge.adapter import latest_merged_model

    settings = settings or get_settings()
    path = latest_merged_model(settings)
    if path is None:
        raise FileNotFoundError(
            "GKD needs a teacher that shares the student's vocabulary; offline that is the distilled student "
            f"merged by notebook 05, and there is none under {settings.runs_dir}. Run notebooks 04 (04_lora_sft) "
            "and 05 (05_merge_and_chat) first.")
    return path


def logit_teacher(settings: Settings | None = None) -> str:
    """The GKD teacher: ``COURSE_LOGIT_TEACHER``, else :data:`GPU_TEACHER_MODEL` (gpu) or notebook 05's merged model."""
    settings = settings or get_settings()
    if settings.logit_teacher:
        return settings.logit_teacher
    return GPU_TEACHER_MODEL if settings.profile.name == "gpu" else str(offline_teacher(settings))


def gkd_memory_estimate(config: "GKDConfig", *, student_b: float, teacher_b: float, vocab: int,
                        hidden: int, layers: int, bytes_per_param: int = 2) -> pd.DataFrame:
    """GPU memory (GiB) of a GKD run, part by part: an estimate to compare with the card, not a measurement.

    Weights of both models, the LoRA optimizer state, the full-vocabulary logits of student and
    teacher in float32 for one micro-batch (the JSD loss keeps a few copies: ×3), and the
    checkpointed activations of the student; plus ~1.5 GiB of CUDA context and allocator slack.
    """
    gib = 1024 ** 3
    tokens = config.per_device_train_batch_size * config.max_length
    lora = 2 * config.lora_rank * hidden * 7 * layers  # all-linear: ~7 projections per layer
    parts = {
        "student weights": student_b * 1e9 * bytes_per_param,
        "teacher weights": 0.0 if config.offload_teacher_model else teacher_b * 1e9 * bytes_per_param,
        "LoRA weights, grads, Adam": lora * (4 + 4 + 8),
        "logits (student + teacher, fp32, x3)": tokens * vocab * 4 * 2 * 3,
        "activations (checkpointed)": tokens * hidden * layers * bytes_per_param * 2,
        "CUDA context and slack": 1.5 * gib,
    }
    table = pd.DataFrame({"GiB": {k: v / gib for k, v in parts.items()}})
    table.loc["total"] = table["GiB"].sum()
    return table.round(1)


def gkd_config(settings: Settings | None = None, *, teacher_model: str | Path | None = None,
               train_file: str | Path | None = None, model: str | Path | None = None,
               output_dir: str | Path | None = None, **overrides: Any) -> GKDConfig:
    """The course's GKD run for the active profile and size; ``overrides`` win.

    Built on :func:`helpers.train.config.default_config` (same student, data, LoRA and
    optimizer as notebook 04), without validation data (evaluating GKD generates too),
    plus the GKD settings:

    * **offline**: teacher = notebook 05's merged model (``--teacher_model_type llama``),
      ``beta 0.5``, ``lmbda 0.5``, ``temperature 0.9``, 64 completion tokens, batch 1, 8 steps
      (CPU time: generating is memory-bound, ~5-10 tokens/s for a 135M model on one core, so
      an on-policy step costs 10-20 s, a dataset step a few seconds);
    * **gpu**: teacher = :func:`logit_teacher` (Qwen2.5-3B-Instruct unless ``COURSE_LOGIT_TEACHER``),
      sized for one 24 GB card: 2,048-token rows, 512 completion tokens, batch 1 x 16, at most 300 steps;
    * **smoke** (either profile): 3 steps, batch 1, 32 completion tokens.
    """
    settings = settings or get_settings()
    gpu = settings.profile.name == "gpu"
    if teacher_model is None:
        teacher_model = logit_teacher(settings)
    from ..models.student import swift_model_args

    teacher_args = swift_model_args(teacher_model, settings)
    base = default_config(settings, train_file=train_file, model=model,
                          output_dir=output_dir or default_gkd_dir(settings) / "gkd", val_dataset=(),
                          report_to=("none",), swanlab_exp_name=None)
    gkd: dict[str, Any] = dict(teacher_model=str(teacher_model),
                               teacher_model_type=teacher_args[1] if teacher_args else None,
                               beta=0.5, lmbda=0.5, temperature=0.9, max_completion_length=512)
    sizing: dict[str, Any] = (dict(max_length=2048, per_device_train_batch_size=1, gradient_accumulation_steps=16,
                                   max_steps=300) if gpu else
                              dict(max_steps=8, per_device_train_batch_size=1, max_completion_length=64))
    if settings.smoke:
        sizing = dict(max_steps=3, per_device_train_batch_size=1, max_completion_length=32)
    merged = {**asdict(base), **gkd, **sizing, **overrides}
    if "save_steps" not in overrides:
        merged["save_steps"] = merged["max_steps"] if merged["max_steps"] > 0 else base.save_steps
    return GKDConfig(**merged)


def run_gkd(config: GKDConfig, *, settings: Settings | None = None, live: LivePlot | None = None) -> TrainResult:
    """Check the dependencies and the teacher folder, then run ``swift rlhf`` like :func:`helpers.train.runner.train`."""
    require_gkd_dependencies()
    if config.teacher_model is not None and Path(config.teacher_model).is_absolute() \
            and not Path(config.teacher_model).is_dir():
        raise FileNotFoundError(f"The GKD teacher {config.teacher_model} does not exist.")
    return train(config, settings=settings, live=live)


def same_vocabulary(student: str | Path, teacher: str | Path) -> tuple[bool, str]:
    """Do two local model folders tokenize alike? ``(same, a sentence saying how they compare)``."""
    from transformers import AutoTokenizer

    a, b = AutoTokenizer.from_pretrained(student), AutoTokenizer.from_pretrained(teacher)
    va, vb = a.get_vocab(), b.get_vocab()
    if va == vb:
        return True, f"identical vocabularies ({len(va):,} tokens): the teacher's logits line up with the student's"
    shared = len(va.keys() & vb.keys())
    return False, (f"different vocabularies ({len(va):,} vs {len(vb):,} tokens, {shared:,} shared strings): "
                   "token-level distillation needs the same tokenizer")


# --------------------------------------------------------------------------- comparing the runs


def plot_runs(histories: Mapping[str, pd.DataFrame], title: str | None = None,
              on_policy: Mapping[str, Sequence[int]] | None = None) -> Any:
    """Each run's training loss in its own panel (GKD's divergence and SFT's cross-entropy differ in kind).

    ``on_policy`` maps a panel name to the steps whose batch the student generated (marked in red).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * len(histories), 3.4))
    axes = fig.subplots(1, len(histories), squeeze=False)[0]
    for ax, (name, history) in zip(axes, histories.items()):
        rows = history.dropna(subset=["loss"])
        ax.plot(rows["step"], rows["loss"], marker="o", color="tab:blue", label="loss per step")
        marked = rows[rows["step"].isin(list((on_policy or {}).get(name, ())))]
        if len(marked):
            ax.plot(marked["step"], marked["loss"], "o", color="tab:red", label="on-policy step (student's replies)")
            ax.legend(fontsize=8)
        ax.set(xlabel="optimizer step", ylabel="training loss", title=name)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def read_completions(run_dir: str | Path) -> pd.DataFrame:
    """The on-policy replies swift logged (``--log_completions true``): step, prompt, completion.

    swift appends one JSON object of columns per logging step to ``<run>/completions.jsonl``;
    only on-policy batches (a fraction ``lmbda`` of the steps) produce rows.
    """
    from ..train.runlog import read_records

    rows = []
    for record in read_records(Path(run_dir) / "completions.jsonl"):
        for step, prompt, completion in zip(record.get("step", []), record.get("prompt", []),
                                            record.get("completion", [])):
            rows.append({"step": int(step), "prompt": prompt, "completion": completion})
    return pd.DataFrame(rows, columns=["step", "prompt", "completion"])


# --------------------------------------------------------------------------- forward vs reverse KL, in miniature


def bimodal_teacher(n_tokens: int = 12) -> Any:
    """A teacher torn between two next tokens (two bumps over a small vocabulary), as probabilities."""
    import numpy as np

    x = np.arange(n_tokens)
    p = np.exp(-0.5 * ((x - n_tokens * 0.25) / 0.9) ** 2) + 0.6 * np.exp(-0.5 * ((x - n_tokens * 0.7) / 0.9) ** 2)
    return p / p.sum()


def fit_one_bump(teacher_probs: Any, beta: float, steps: int = 500, lr: float = 0.1) -> Any:
    """Fit a student that can only make ONE bump (a mean and a width) to ``teacher_probs``
    by minimising swift's own GKD divergence (``swift.rlhf_trainers.gkd_loss.jsd_loss``) at ``beta``.

    Forward KL (``beta = 0``) makes the bump cover both teacher modes; reverse KL
    (``beta = 1``) makes it sit on one of them. Returns the student's probabilities.
    """
    import torch
    from swift.rlhf_trainers.gkd_loss import jsd_loss

    target = torch.log(torch.as_tensor(teacher_probs, dtype=torch.float32))[None]
    x = torch.arange(target.shape[1], dtype=torch.float32)
    mean = torch.tensor(float(target.shape[1]) * 0.35, requires_grad=True)  # starts nearer the larger mode
    log_width = torch.tensor(0.0, requires_grad=True)
    optimizer = torch.optim.Adam([mean, log_width], lr=lr)

    def student_logits() -> torch.Tensor:
        return (-0.5 * ((x - mean) / log_width.exp()) ** 2)[None]

    for _ in range(steps):
        optimizer.zero_grad()
        jsd_loss(student_logits(), target, beta).backward()
        optimizer.step()
    return torch.softmax(student_logits(), dim=-1)[0].detach().numpy()


def plot_divergences(teacher_probs: Any, students: Mapping[str, Any]) -> Any:
    """The teacher's distribution (bars) and each fitted student (lines)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.2))
    axes = fig.subplots(1, len(students), sharey=True)
    for ax, (name, probs) in zip(axes, students.items()):
        ax.bar(range(len(teacher_probs)), teacher_probs, color="lightgrey", label="teacher")
        ax.plot(range(len(probs)), probs, marker="o", color="tab:red", label="student")
        ax.set(title=name, xlabel="next token")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("probability")
    fig.tight_layout()
    return fig
