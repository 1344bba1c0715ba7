"""The environment report of notebook 00: what is installed, what hardware there is,
whether the teacher answers and whether the student is ready.

Every check returns a :class:`Check` with a plain-language fix, so a learner who
sees a red line knows the next command to type.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Iterable

from ..core.config import Settings, get_settings, mask_secrets

# Packages the course needs, with the reason a learner would care.
REQUIRED_PACKAGES: dict[str, str] = {
    "torch": "tensors, training",
    "transformers": "models and tokenizers",
    "ms-swift": "LoRA fine-tuning, merging, serving (swift sft/export/deploy)",
    "evalscope": "evaluation",
    "openai": "teacher client (any OpenAI-compatible API)",
    "swanlab": "experiment tracking",
    "math-verify": "checking math answers",
    "gguf": "reading the bundled GGUF student",
    "pandas": "tables",
    "matplotlib": "plots",
    "jupyterlab": "the notebooks",
    "ipywidgets": "interactive widgets",
}
STATUS_ICON = {"ok": "OK", "warn": "WARN", "fail": "FAIL"}


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    area: str
    item: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def check_packages(packages: dict[str, str] = REQUIRED_PACKAGES) -> list[Check]:
    checks = []
    for name, why in packages.items():
        try:
            version = importlib.metadata.version(name)
            checks.append(Check("packages", name, "ok", f"{version} ({why})"))
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check("packages", name, "fail", f"not installed ({why})",
                                "Run `make setup` (or `pip install -e .`) in the repository."))
    return checks


def check_hardware(settings: Settings) -> list[Check]:
    import psutil
    import torch

    checks = [Check("hardware", "python", "ok", platform.python_version())]
    cores = os.cpu_count() or 1
    checks.append(Check("hardware", "cpu", "ok", f"{cores} cores, {platform.machine()}"))
    mem_gib = psutil.virtual_memory().total / 2**30
    need = 8 if settings.profile.device == "cpu" else 16
    checks.append(Check("hardware", "memory", "ok" if mem_gib >= need else "warn", f"{mem_gib:.1f} GiB",
                        "" if mem_gib >= need else f"Below {need} GiB: use the smoke size (COURSE_SIZE=smoke)."))
    settings.workspace.mkdir(parents=True, exist_ok=True)
    free_gib = shutil.disk_usage(settings.workspace).free / 2**30
    checks.append(Check("hardware", "disk (workspace)", "ok" if free_gib >= 5 else "warn", f"{free_gib:.1f} GiB free",
                        "" if free_gib >= 5 else "Free some space: models and checkpoints need a few GiB."))
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        gib = torch.cuda.get_device_properties(0).total_memory / 2**30
        checks.append(Check("hardware", "gpu", "ok", f"{name}, {gib:.0f} GiB"))
    elif settings.profile.device == "cuda":
        checks.append(Check("hardware", "gpu", "fail", "no CUDA GPU visible to torch",
                            "The gpu profile needs a CUDA GPU. Without one, use COURSE_PROFILE=offline."))
    else:
        checks.append(Check("hardware", "gpu", "ok", "none (not needed: offline profile runs on CPU)"))
    return checks


def check_profile(settings: Settings) -> list[Check]:
    profile = settings.profile
    checks = [
        Check("profile", "active", "ok", f"{profile.name}: {profile.description}"),
        Check("profile", "workspace", "ok", str(settings.workspace)),
        Check("profile", "size", "ok", settings.size),
    ]
    if profile.hub_offline:
        missing = [k for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(k) != "1"]
        checks.append(Check("profile", "hub offline switches", "fail" if missing else "ok",
                            f"missing: {', '.join(missing)}" if missing else "HF_HUB_OFFLINE, HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE = 1",
                            "Call helpers.core.config.get_settings() before loading models." if missing else ""))
    return checks


def check_teacher(settings: Settings, timeout: float = 10.0) -> list[Check]:
    """Is a remote teacher configured and does it answer ``/models``?"""
    teacher = settings.teacher
    if settings.self_teaching:
        return [Check("teacher", "endpoint", "fail", "the gpu profile has no API teacher: the student would teach itself",
                      "Set TEACHER_BASE_URL, TEACHER_API_KEY and TEACHER_MODEL (or a .env file); see the README. "
                      "COURSE_ALLOW_LOCAL_TEACHER=1 serves the student as its own teacher on purpose.")]
    if teacher is None:
        return [Check("teacher", "endpoint", "ok", "none configured: the course starts a local `swift deploy` teacher",
                      "To use an API teacher, set TEACHER_BASE_URL, TEACHER_API_KEY and TEACHER_MODEL (or a .env file).")]
    import openai

    started = time.perf_counter()
    try:
        client = openai.OpenAI(**teacher.client_kwargs(), timeout=timeout, max_retries=0)
        models = [m.id for m in client.models.list()]
    except openai.AuthenticationError:
        return [Check("teacher", "endpoint", "fail", f"{teacher.base_url} rejected the API key",
                      "Check TEACHER_API_KEY (it is never printed here).")]
    except Exception as exc:  # connection errors, timeouts, odd servers
        return [Check("teacher", "endpoint", "fail", f"{teacher.base_url} unreachable: {mask_secrets(str(exc))[:200]}",
                      "Check TEACHER_BASE_URL and your network; or unset it to use the local teacher.")]
    latency = time.perf_counter() - started
    listed = teacher.model in models if models else None
    detail = f"{teacher.base_url} answered in {latency:.2f} s; model {teacher.model}"
    if listed is False:
        return [Check("teacher", "endpoint", "warn", detail + " is not in its /models list",
                      f"Available: {', '.join(models[:8])}. Fix TEACHER_MODEL if calls fail.")]
    return [Check("teacher", "endpoint", "ok", detail)]


def check_local_teacher(settings: Settings, question: str = "What is 2 + 3?") -> list[Check]:
    """Start the local ``swift deploy`` teacher, ask one question, stop it again."""
    import openai

    from ..teacher.server import ServerError, start_local_teacher

    started = time.perf_counter()
    try:
        with start_local_teacher(settings, max_batch_size=2) as server:
            ready = time.perf_counter() - started
            endpoint = server.endpoint
            client = openai.OpenAI(**endpoint.client_kwargs(), max_retries=0, timeout=120)
            reply = client.chat.completions.create(
                model=endpoint.model, temperature=0, max_tokens=24,
                messages=[{"role": "system", "content": "You are a helpful assistant."},
                          {"role": "user", "content": question}])
            text = (reply.choices[0].message.content or "").strip()
    except (ServerError, openai.OpenAIError) as exc:
        return [Check("teacher", "local swift deploy", "fail", mask_secrets(str(exc))[-400:],
                      "Read the log under workspace/logs; `make setup` reinstalls ms-swift.")]
    return [Check("teacher", "local swift deploy", "ok",
                  f"ready in {ready:.0f} s on 127.0.0.1:{server.port}; {question!r} -> {text[:80]!r}")]


def check_student(settings: Settings, prepare: bool = False) -> list[Check]:
    from ..models.student import StudentUnavailable, is_prepared, prepare_student, student_dir

    target = student_dir(settings)
    if is_prepared(target) and not prepare:
        return [Check("student", settings.profile.student_model, "ok", f"prepared at {target}")]
    if not prepare:
        return [Check("student", settings.profile.student_model, "warn", "not prepared yet",
                      "Run helpers.models.student.prepare_student() (notebook 00 does it).")]
    try:
        result = prepare_student(settings)
    except StudentUnavailable as exc:
        return [Check("student", settings.profile.student_model, "fail", "not available", str(exc))]
    how = "reused" if result.reused else f"prepared in {result.seconds:.0f} s"
    return [Check("student", settings.profile.student_model, "ok",
                  f"{how} at {result.path}; says: {result.sample_output!r}")]


def run_checks(settings: Settings | None = None, *, prepare_student: bool = False) -> list[Check]:
    """All checks in report order."""
    settings = settings or get_settings()
    return [*check_packages(), *check_hardware(settings), *check_profile(settings),
            *check_teacher(settings), *check_student(settings, prepare=prepare_student)]


def report_frame(checks: Iterable[Check]):
    """The checks as a pandas table (status, area, item, detail, what to do)."""
    import pandas as pd

    frame = pd.DataFrame([asdict(c) for c in checks])
    frame.insert(0, "", frame.pop("status").map(STATUS_ICON))
    return frame.rename(columns={"fix": "what to do"})
