"""A local OpenAI-compatible teacher served by ``swift deploy``.

The offline profile has no API to call, so the course serves a model itself:
``swift deploy`` with the transformers backend and request batching, bound to
127.0.0.1 (never 0.0.0.0) on a free port, protected by a freshly generated API
key. :class:`LocalServer` starts it, waits until ``/health`` answers, hands out
a :class:`~helpers.core.config.TeacherEndpoint`, and stops it again: as a context
manager, on ``stop()``, when the Python process (or notebook kernel) exits, and
even when the parent dies abruptly (Linux parent-death signal). The server runs
in its own process group so that nothing it spawned is left behind.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Mapping, Sequence

from ..core.config import (
    HUB_OFFLINE_VARS,
    LOCAL_BATCH_SIZE,
    Secret,
    Settings,
    TeacherEndpoint,
    get_settings,
    mask_secrets,
    teacher_from_env,
)
from ..core.swift import copy_masked, die_with_parent, stop_process_group
from ..models.loading import serving_precision
from ..models.student import prepare_student, swift_model_args

LOCAL_HOST = "127.0.0.1"
DEFAULT_SERVED_NAME = "local-teacher"


class ServerError(RuntimeError):
    """The local server could not start or answer; the message carries the log tail."""


SERVER_THREADS_ENV = "COURSE_SERVER_THREADS"


def free_port(host: str = LOCAL_HOST) -> int:
    """Ask the OS for a port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_threads(cpu_count: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """CPU threads for the server's matrix maths: half the cores, at least one.

    With one thread per core, the server's OpenMP threads stall whenever another
    process is busy (see bench/README.md); half the cores keeps the notebook kernel
    and the server out of each other's way in an interactive session.

    ``COURSE_SERVER_THREADS`` overrides the choice: the headless course run sets
    it to every core, because there one notebook runs at a time and the kernel
    mostly waits for the server. ``OMP_NUM_THREADS`` in the environment, when
    set, wins over both (it is what the server process reads).
    """
    env = os.environ if env is None else env
    wanted = (env.get(SERVER_THREADS_ENV) or "").strip()
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise ValueError(f"{SERVER_THREADS_ENV}={wanted!r} must be a whole number of threads, 1 or more.")
        return int(wanted)
    cores = cpu_count or os.cpu_count() or 2
    return max(1, cores // 2)


def serving_precision_args(settings: Settings, *, cpuinfo: str | None = None,
                           env: Mapping[str, str] | None = None) -> list[str]:
    """:func:`serving_precision` as ``swift deploy`` flags (``--torch_dtype``, ``--attn_impl``)."""
    dtype, attention = serving_precision(settings, cpuinfo=cpuinfo, env=env)
    return ["--torch_dtype", dtype] + (["--attn_impl", attention] if attention else [])


INFER_BACKEND_ENV = "COURSE_INFER_BACKEND"


def infer_backend(settings: Settings) -> str:
    """``vllm`` on a GPU where vLLM is installed (continuous batching, paged attention), else ``transformers``.

    ``COURSE_INFER_BACKEND`` (``transformers`` or ``vllm``) overrides it; the CPU always uses transformers.
    """
    import importlib.util

    wanted = os.environ.get(INFER_BACKEND_ENV, "").strip()
    if wanted and wanted not in ("transformers", "vllm"):
        raise ValueError(f"{INFER_BACKEND_ENV}={wanted!r} must be 'transformers' or 'vllm'.")
    if settings.profile.device != "cuda":
        if wanted == "vllm":
            raise ValueError(f"{INFER_BACKEND_ENV}=vllm needs a GPU; this profile runs on {settings.profile.device}.")
        return "transformers"
    if wanted == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ValueError(f"{INFER_BACKEND_ENV}=vllm but vLLM is not installed: pip install vllm")
    return wanted or ("vllm" if importlib.util.find_spec("vllm") is not None else "transformers")


def deploy_command(
    model_dir: Path | str,
    *,
    port: int,
    api_key: str,
    served_model_name: str,
    settings: Settings,
    max_batch_size: int = LOCAL_BATCH_SIZE,
    host: str = LOCAL_HOST,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``swift deploy`` arguments (without ``swift deploy`` itself) for a local model.

    ``max_batch_size`` requests are answered together. swift's transformers engine only
    batches requests whose sampling parameters are identical, and a batch lasts as long
    as its longest reply, so clients should send requests alike in parameters together
    (the batch engine in :mod:`helpers.teacher.engine` does). On a GPU with vLLM installed
    the backend is vLLM (:func:`infer_backend`), which batches continuously.
    """
    return [
        "--model", str(model_dir),
        *swift_model_args(model_dir, settings),
        "--infer_backend", infer_backend(settings),
        *serving_precision_args(settings),
        "--max_batch_size", str(max_batch_size),
        "--host", host,
        "--port", str(port),
        "--api_key", api_key,
        "--served_model_name", served_model_name,
        "--log_interval", "-1",
        *extra_args,
    ]


class LocalServer:
    """One ``swift deploy`` process serving ``model_dir`` on 127.0.0.1.

    >>> with LocalServer(model_dir) as server:      # doctest: +SKIP
    ...     endpoint = server.endpoint              # base_url, model, api_key
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        settings: Settings | None = None,
        served_model_name: str = DEFAULT_SERVED_NAME,
        max_batch_size: int = LOCAL_BATCH_SIZE,
        port: int | None = None,
        startup_timeout: float = 600.0,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise ServerError(f"{self.model_dir} is not a model folder (no config.json); run prepare_student() first.")
        self.served_model_name = served_model_name
        self.max_batch_size = max_batch_size
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self.api_key = Secret("local-" + secrets.token_urlsafe(24))
        self.log_path = log_path or self.settings.logs_dir / f"swift-deploy-{self.port}.log"
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    # ------------------------------------------------------------------ info
    @property
    def base_url(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}/v1"

    @property
    def endpoint(self) -> TeacherEndpoint:
        return TeacherEndpoint(base_url=self.base_url, model=self.served_model_name, api_key=self.api_key, local=True)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command_for_display(self) -> str:
        """The command a learner could paste into a terminal (API key masked)."""
        args = deploy_command(self.model_dir, port=self.port, api_key="$TEACHER_API_KEY",
                              served_model_name=self.served_model_name, settings=self.settings,
                              max_batch_size=self.max_batch_size, extra_args=self.extra_args)
        return "swift deploy " + " ".join(args)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, with the API key scrubbed out."""
        if not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return mask_secrets("\n".join(text))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LocalServer":
        """Launch the server and block until ``/health`` answers 200."""
        if self.running():
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.settings.profile.hub_offline:
            env.update(HUB_OFFLINE_VARS)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("OMP_NUM_THREADS", str(server_threads()))
        args = deploy_command(self.model_dir, port=self.port, api_key=self.api_key.reveal(),
                              served_model_name=self.served_model_name, settings=self.settings,
                              max_batch_size=self.max_batch_size, extra_args=self.extra_args)
        # `swift deploy` is a thin launcher that runs swift/cli/deploy.py in a second
        # process; running that module directly keeps ONE server process, which the
        # parent-death signal and the process-group kill both reach. The current
        # interpreter also avoids depending on PATH inside a notebook kernel.
        cmd = [sys.executable, "-m", "swift.cli.deploy", *args]
        # swift logs its full argument list, API key included: the output goes through
        # a thread that masks the key before anything reaches the log file.
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env, preexec_fn=die_with_parent, close_fds=True)
        threading.Thread(target=copy_masked, args=(self._proc.stdout, self.log_path, self.api_key.reveal()),
                         name=f"swift-deploy-log-{self.port}", daemon=True).start()
        self._finalizer = weakref.finalize(self, stop_process_group, self._proc)
        atexit.register(self._finalizer)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://{LOCAL_HOST}:{self.port}/health"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerError(
                    f"swift deploy exited with code {self._proc.returncode} before it was ready.\n"
                    f"Log ({self.log_path}):\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise ServerError(
            f"swift deploy was not ready after {self.startup_timeout:.0f} s.\nLog ({self.log_path}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server and everything it started; safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()  # runs stop_process_group once, then detaches
            atexit.unregister(self._finalizer)
        self._finalizer = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"LocalServer({self.served_model_name!r}, {self.base_url}, {state}, key={self.api_key})"


def start_local_teacher(settings: Settings | None = None, **kwargs: object) -> LocalServer:
    """Prepare the student model and serve it as the local teacher (offline profile).

    In the offline profile the teacher is the bundled SmolLM2 model; it becomes a
    better teacher through few-shot prompts, several samples and verification,
    not through size.
    """
    settings = settings or get_settings()
    prepared = prepare_student(settings)
    return LocalServer(prepared.path, settings=settings, **kwargs).start()  # type: ignore[arg-type]


def teacher_endpoint(settings: Settings | None = None) -> tuple[TeacherEndpoint, LocalServer | None]:
    """The configured teacher, or a freshly started local one when none is configured.

    Returns the endpoint and the server to stop later (``None`` for a remote teacher).
    """
    settings = settings or get_settings()
    if settings.teacher is not None:
        return settings.teacher, None
    if settings.self_teaching:
        raise RuntimeError("The gpu profile has no API teacher (TEACHER_BASE_URL, TEACHER_API_KEY, TEACHER_MODEL): the "
                           "student would teach itself. Set them (or a .env file), or COURSE_ALLOW_LOCAL_TEACHER=1 to "
                           "serve the student as its own teacher on purpose.")
    server = start_local_teacher(settings)
    return server.endpoint, server


def judge_endpoint(settings: Settings | None = None) -> tuple[TeacherEndpoint, LocalServer | None]:
    """The answer judge of notebook 06: ``JUDGE_BASE_URL``/``JUDGE_MODEL``/``JUDGE_API_KEY`` when set, else the teacher.

    A judge other than the teacher avoids a model grading its own answers; offline
    the judge is the local teacher, a 135M model, and notebook 06 measures how weak it is.
    """
    judge = teacher_from_env(prefix="JUDGE")
    return (judge, None) if judge is not None else teacher_endpoint(settings)
