"""ms-swift in a child process: start it, stream its console into the notebook, stop it and all it spawned.

Serving, training, merging and evaluating all run swift outside the kernel: the
printed command is exactly what runs, and a crash or Ctrl+C in the child never
takes the kernel down. Children die with the process that started them (Linux
parent-death signal) and are stopped as a whole process group.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .config import HUB_OFFLINE_VARS, Settings, mask_secrets


class SwiftError(RuntimeError):
    """A swift command exited with an error; the message carries the end of its log."""


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGKILL the server if the process that started it dies.

    SIGKILL, not SIGTERM: uvicorn's graceful shutdown waits for requests in
    flight, and a long generation would keep an orphaned server alive.
    """
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is still alive."""
    if proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        # SIGTERM lets uvicorn finish cleanly; it waits for requests in flight, so a
        # generation still running is cut short by the SIGKILL after `timeout` seconds.
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # The group leader is gone; make sure no straggler of the group survives it.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def copy_masked(stream: IO[bytes], path: Path, secret: str) -> None:
    """Copy a child's output to ``path`` line by line with ``secret`` replaced by ``****``."""
    token = secret.encode()
    with stream, open(path, "wb") as log:
        for line in iter(stream.readline, b""):
            log.write(line.replace(token, b"****") if token else line)
            log.flush()



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
                                env=full_env, cwd=str(cwd) if cwd else None, preexec_fn=die_with_parent,
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
                        stop_process_group(proc)
            proc.wait()
            if on_poll is not None:
                on_poll()
            finish = getattr(on_output, "finish", None)
            if callable(finish):
                finish()
        except BaseException:
            stop_process_group(proc)
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
