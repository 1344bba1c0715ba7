"""Prompt rows in, sample rows out: the files the batch engine reads and writes.

A *prompt row* has a unique ``id`` and chat ``messages`` (plus optional
``question``, ``reference``, ``task``, ``meta`` that are copied into its samples).
The sample file is append-only: a sample that failed and later succeeded has two
rows, and :func:`load_samples` keeps the latest one per (prompt id, sample index).
:func:`sample_row` builds every row, whichever path (engine or Batch API) made it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..core.cache import stable_hash
from ..core.config import TeacherEndpoint
from ..core.jsonl import iter_jsonl
from .client import TeacherReply, check_messages

STATUSES: tuple[str, ...] = ("ok", "truncated", "error")
"""``ok``: a whole reply; ``truncated``: still cut off at the token limit after one retry with a
larger limit (its reasoning is incomplete); ``error``: no reply (the ``error`` field says why)."""
DONE_STATUSES: tuple[str, ...] = ("ok", "truncated")
"""Statuses that count as finished: such a (prompt id, sample index) is never requested again."""

SampleKey = tuple[str, int]


def load_prompts(source: str | Path | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Read prompt rows (a JSONL path or an iterable of dicts) and check them.

    Every row needs a unique string ``id`` and a valid ``messages`` list; the
    other fields (``question``, ``reference``, ``task``, ``meta``) are optional
    and copied into the samples. Errors name the line or the row id.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"prompt file not found: {path}")
        rows: list[tuple[str, Any]] = [(f"{path}:{lineno}", row) for lineno, row in iter_jsonl(path)]
    else:
        rows = [(f"row {i}", row) for i, row in enumerate(source)]

    prompts: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}: a prompt row must be a JSON object, got {type(row).__name__}")
        pid = row.get("id")
        if isinstance(pid, int) and not isinstance(pid, bool):
            pid = str(pid)
        if not isinstance(pid, str) or not pid:
            raise ValueError(f"{where}: every prompt row needs a non-empty string 'id'")
        if pid in seen:
            raise ValueError(f"{where}: duplicate prompt id {pid!r} (first seen at {seen[pid]})")
        seen[pid] = where
        try:
            messages = check_messages(row.get("messages"))  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"{where} (id {pid!r}): {exc}") from None
        prompts.append({**row, "id": pid, "messages": messages})
    return prompts


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """A cheap, deliberately generous token estimate (UTF-8 bytes / 3, + 4 per message).

    English runs at ~4 bytes per token and Chinese at ~3, so this over-estimates
    slightly, which is the safe side for a tokens-per-minute limit.
    """
    total = 0
    for message in messages:
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        total += len(text.encode("utf-8")) // 3 + 4
    return total


def request_key(endpoint: TeacherEndpoint, messages: Sequence[Mapping[str, Any]],
                params: Mapping[str, Any], sample_index: int) -> str:
    """SHA-256 of the canonical request (base URL, model, messages, params, sample index).

    Two runs that would send the same request get the same key; the API key is
    not part of it. A server on this machine counts as one place whatever port it
    got (``swift deploy`` picks a free port each start), so resuming a run
    against a restarted local teacher does not redo finished requests.
    """
    where = "local" if is_local(endpoint) else endpoint.base_url.rstrip("/")
    return stable_hash({"base_url": where, "model": endpoint.model, "messages": list(messages),
                        "params": dict(params), "sample_index": sample_index})


def utc_now() -> str:
    """The ``created_at`` stamp of a row: UTC, milliseconds, ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sample_row(prompt: Mapping[str, Any], sample_index: int, *, key: str, model: str,
               params: Mapping[str, Any], status: str, reply: TeacherReply | Mapping[str, Any] | None,
               error: str | None, attempts: int, cached: bool,
               max_tokens_used: int | None = None) -> dict[str, Any]:
    """One sample row (the contract of :mod:`helpers.core.rows`), the same for every way of generating.

    ``max_tokens_used`` is the limit of the request that gave the reply: larger than
    ``params["max_tokens"]`` when a cut-off reply was asked again with a larger limit.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if isinstance(reply, TeacherReply):
        reply = reply.to_dict(include_model=False)
    return {
        "prompt_id": prompt["id"],
        "sample_index": sample_index,
        "request_key": key,
        "model": model,
        "params": dict(params),
        "status": status,
        "question": prompt.get("question"),
        "reference": prompt.get("reference"),
        "task": prompt.get("task"),
        "meta": prompt.get("meta") or {},
        "reply": dict(reply) if reply is not None else None,
        "error": error,
        "attempts": attempts,
        "cached": cached,
        "max_tokens_used": max_tokens_used if max_tokens_used is not None else params.get("max_tokens"),
        "created_at": utc_now(),
    }


def is_local(endpoint: TeacherEndpoint) -> bool:
    host = (urlparse(endpoint.base_url).hostname or "").lower()
    return endpoint.local or host in {"localhost", "127.0.0.1", "0.0.0.0", "::1"}


def latest_rows(path: Path) -> dict[SampleKey, dict[str, Any]]:
    """The latest row per (prompt id, sample index) of a sample file; a torn or damaged line is skipped."""
    latest: dict[SampleKey, dict[str, Any]] = {}
    if path.exists():
        for _, row in iter_jsonl(path, tolerant=True):
            if isinstance(row, dict) and "prompt_id" in row and "sample_index" in row:
                latest[(str(row["prompt_id"]), int(row["sample_index"]))] = row
    return latest


def load_samples(path: str | Path, statuses: Sequence[str] | None = DONE_STATUSES) -> list[dict[str, Any]]:
    """The latest row per (prompt id, sample index), keeping only the given statuses.

    The output file is append-only, so a sample that failed and later succeeded
    has two rows; readers must take the last one. ``statuses=None`` keeps all.
    Rows come in the order their key first appeared.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sample file not found: {path}")
    rows = latest_rows(path).values()
    if statuses is None:
        return list(rows)
    wanted = set(statuses)
    return [row for row in rows if row.get("status") in wanted]

