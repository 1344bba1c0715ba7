"""JSON Lines, the course's one file format for rows: read, write atomically, append safely.

Every reader and writer of a ``.jsonl`` file in the course goes through here, so a
bad line is reported the same way everywhere (file, line, what to do) and a line
torn by a killed process has one policy: it is cut away (:func:`repair_tail`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _parse(line: str) -> tuple[Any, str]:
    """``(value, "")`` for a JSON line, ``(None, why)`` for anything else."""
    try:
        return json.loads(line), ""
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})"


def scan_jsonl(path: str | Path) -> tuple[list[tuple[int, Any, str]], int]:
    """Every line of ``path`` for a validator: ``(line number, value, problem)`` and the line count.

    Unlike :func:`iter_jsonl` nothing is skipped or raised: a blank line or a line
    that is not JSON comes back with ``problem`` set (and ``value`` ``None``).
    """
    with Path(path).open(encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    out: list[tuple[int, Any, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            out.append((number, None, "empty line"))
            continue
        value, problem = _parse(line)
        out.append((number, value, problem))
    return out, len(lines)


def iter_jsonl(path: str | Path, *, tolerant: bool = False) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-empty line of ``path``.

    Strict (default): a line that is not JSON raises ``ValueError`` naming the file
    and line. ``tolerant``: for append-only logs that a killed process may have left
    behind, a torn last line or a damaged line is skipped with a warning.
    """
    path = Path(path)
    with path.open(encoding="utf-8", errors="replace" if tolerant else "strict") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if tolerant and not line.endswith("\n"):
                log.debug("%s:%d: skipping a last line still being written (or torn)", path, lineno)
                continue
            value, problem = _parse(line)
            if problem and tolerant:
                log.warning("%s:%d: skipping a line that is not valid JSON", path, lineno)
                continue
            if problem:
                raise ValueError(f"{path}:{lineno}: {problem}; fix or delete that line")
            yield lineno, value


def read_jsonl(path: str | Path, *, tolerant: bool = False) -> list[Any]:
    """Every value of a JSONL file (see :func:`iter_jsonl` for ``tolerant``)."""
    return [value for _, value in iter_jsonl(path, tolerant=tolerant)]


def count_lines(path: str | Path) -> int:
    """Non-empty lines of a JSONL file (rows, without parsing them)."""
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``records`` one per line, atomically: readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def repair_tail(path: str | Path) -> int:
    """Cut away a torn last line (no trailing newline) left by a killed writer; return the bytes removed.

    Complete lines are never touched, so appending can go on from a clean end.
    """
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        pos, cut = size, 0
        while pos > 0:
            start = max(0, pos - 65536)
            handle.seek(start)
            idx = handle.read(pos - start).rfind(b"\n")
            if idx >= 0:
                cut = start + idx + 1
                break
            pos = start
        handle.truncate(cut)
        handle.flush()
        os.fsync(handle.fileno())
    log.warning("%s: removed a torn last line (%d bytes) left by an interrupted run", path, size - cut)
    return size - cut


class JsonlAppender:
    """Appends rows to a JSONL file, one whole line each, flushed at once (a kill -9 loses nothing written).

    Opening repairs a torn tail first. With ``fsync`` rows are also forced to disk:
    inside an event loop once per ``sync_interval_s`` (an fsync per row would stall
    the loop between requests), elsewhere after every row; :meth:`close` syncs the rest.
    """

    def __init__(self, path: str | Path, *, fsync: bool = True, sync_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired = repair_tail(self.path)
        self._handle = self.path.open("a", encoding="utf-8", newline="\n")
        self._fsync = fsync
        self._sync_interval_s = sync_interval_s
        self._timer: asyncio.TimerHandle | None = None
        self._unsynced = False

    def write(self, row: Mapping[str, Any]) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()
        self._unsynced = True
        if not self._fsync or self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.sync()
            return
        self._timer = loop.call_later(self._sync_interval_s, self.sync)

    def sync(self) -> None:
        """fsync everything written so far."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fsync and self._unsynced and not self._handle.closed:
            os.fsync(self._handle.fileno())
            self._unsynced = False

    def close(self) -> None:
        self.sync()
        self._handle.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
