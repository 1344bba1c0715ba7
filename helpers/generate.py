"""The batch generation engine: many prompts x n samples -> an append-only JSONL you can trust.

A real teacher API costs money and fails in many ways (rate limits, overloaded
servers, timeouts, cut-off replies). This engine is built so that none of that
loses work or pays twice:

* **Concurrency** with a limit (``concurrency`` requests in flight), plus optional
  requests-per-minute and tokens-per-minute limits (token buckets; tokens are
  estimated from the prompt length + ``max_tokens`` and corrected by the real usage).
* **Retries** with exponential backoff and full jitter on 429, 5xx, timeouts,
  connection errors and malformed bodies, honouring ``Retry-After``; a bounded
  number of attempts. Other 4xx fail the row at once; 401/403/404 stop the run
  (the key, the model or the URL is wrong, so every row would fail the same way).
* **Truncation** (``finish_reason == "length"``) is recorded as ``"truncated"``, never ``"ok"``.
* **Resumable**: every row is one complete line, flushed at once (and fsync'd
  within a second) by a single writer. On start the output is read back (a torn
  last line from a kill is cut away) and every (prompt id, sample index) whose
  latest row is ok/truncated is skipped; rows with status ``"error"`` are tried again.
* **Disk cache**: replies are stored under ``cache_dir`` keyed by the SHA-256 of
  the canonical request, so re-running a notebook costs nothing (rows say ``"cached": true``).
* **n samples per prompt** with a temperature schedule (sample 0 near-greedy, later ones hotter).
* **Progress bar** with rows done, failures, tokens/s and the estimated cost from
  ``data/prices.json``.

Python: :func:`generate` (works in a notebook too) or ``await agenerate(...)``.
Shell: ``python -m helpers generate --prompts p.jsonl --out samples.jsonl --n 4``.
Read results with :func:`load_samples`, which keeps the latest row per key.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import hashlib
import json
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import openai
from filelock import FileLock
from filelock import Timeout as LockTimeout
from tqdm.auto import tqdm

from .config import REPO_ROOT, TeacherEndpoint, load_dotenv_files, mask_secrets, teacher_from_env
from .teacher import TeacherReply, build_request, check_messages, classify_error, reply_from_completion

__all__ = [
    "DONE_STATUSES",
    "GenerationAborted",
    "GenerationConfig",
    "GenerationSummary",
    "PriceTable",
    "ReplyCache",
    "TokenBucket",
    "agenerate",
    "cli_main",
    "estimate_prompt_tokens",
    "generate",
    "load_prompts",
    "load_samples",
    "repair_jsonl_tail",
    "request_key",
    "temperature_schedule",
]

log = logging.getLogger(__name__)

PRICES_PATH: Path = REPO_ROOT / "data" / "prices.json"
DONE_STATUSES: tuple[str, ...] = ("ok", "truncated")
"""Statuses that count as finished: such a (prompt id, sample index) is never requested again."""

SampleKey = tuple[str, int]


# --------------------------------------------------------------------------- configuration


def temperature_schedule(n: int, *, t_min: float = 0.0, t_max: float = 1.0,
                         temperatures: Sequence[float] | None = None) -> list[float]:
    """Temperatures for samples ``0..n-1``.

    With an explicit list: one value (used for every sample) or exactly ``n``
    values. Otherwise a linear ramp from ``t_min`` (sample 0, near-greedy) to
    ``t_max`` (the last sample): n=4, 0.0..1.0 gives ``[0.0, 0.333, 0.667, 1.0]``.
    """
    if n < 1:
        raise ValueError(f"n_samples must be at least 1, got {n}")
    if temperatures is not None:
        temps = [float(t) for t in temperatures]
        if len(temps) == 1:
            temps = temps * n
        if len(temps) != n:
            raise ValueError(f"got {len(temps)} temperatures for {n} samples: give one value or exactly {n}")
    elif n == 1:
        temps = [float(t_min)]
    else:
        temps = [round(t_min + (t_max - t_min) * i / (n - 1), 4) for i in range(n)]
    for t in temps:
        if not 0.0 <= t <= 2.0:
            raise ValueError(f"temperatures must lie between 0 and 2, got {t}")
    return temps


@dataclass
class GenerationConfig:
    """Everything that decides what is sent and how hard the endpoint is pushed."""

    endpoint: TeacherEndpoint
    n_samples: int = 1
    temperatures: Sequence[float] | None = None
    """An explicit schedule (one value or ``n_samples`` values); else a ramp t_min -> t_max."""
    t_min: float = 0.0
    t_max: float = 1.0
    max_tokens: int = 512
    top_p: float | None = 1.0
    seed: int | None = None
    """Sent as ``seed + sample_index`` when set (servers that honour it become reproducible)."""
    extra_body: Mapping[str, Any] | None = None
    """Server-specific request fields, e.g. ``{"top_k": 20}``."""
    concurrency: int | None = None
    """Requests in flight; None: the endpoint's default (the local server's batch size, 8 for an API)."""
    rpm: float | None = None
    """Requests per minute (None: unlimited). Requests are spaced evenly, no bursts."""
    tpm: float | None = None
    """Tokens per minute (None: unlimited); a bucket holding one minute's worth."""
    max_attempts: int = 5
    timeout_s: float = 300.0
    """The longest one request may take (reasoning models can think for minutes)."""
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 300.0
    """A server's ``Retry-After`` is honoured up to this many seconds."""
    cache_dir: Path | str | None = None
    """Folder of cached replies (None: no cache)."""
    prices_path: Path | str | None = None
    """Price table (None: ``data/prices.json``)."""
    progress: bool = True
    fsync: bool = True
    """Also fsync the rows (within a second, not one by one) so they survive a power loss.

    Every row is flushed at once either way, which is what makes a kill -9 safe."""

    def __post_init__(self) -> None:
        if not isinstance(self.endpoint, TeacherEndpoint):
            raise TypeError("endpoint must be a helpers.config.TeacherEndpoint "
                            f"(got {type(self.endpoint).__name__})")
        for name in ("n_samples", "max_tokens", "concurrency", "max_attempts"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None for no limit), got {value}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        self.schedule()  # validates the temperatures early

    @property
    def in_flight(self) -> int:
        """The concurrency actually used (``concurrency``, or the endpoint's default)."""
        return self.concurrency or self.endpoint.default_concurrency

    def schedule(self) -> list[float]:
        return temperature_schedule(self.n_samples, t_min=self.t_min, t_max=self.t_max,
                                    temperatures=self.temperatures)


class GenerationAborted(RuntimeError):
    """The endpoint refused every request (wrong key, model or URL); finished rows are kept."""

    def __init__(self, message: str, summary: "GenerationSummary") -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class GenerationSummary:
    """What one run did (counts are for THIS run; ``already_done`` came from earlier runs)."""

    out_path: str
    planned: int
    already_done: int
    counts: dict[str, int]
    cached: int
    requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    elapsed_s: float
    tokens_per_s: float
    """Completion tokens per second of wall time, for the requests actually sent."""
    cost_usd: float | None
    """Estimated cost of the requests sent (None when the model has no price)."""
    repaired_bytes: int = 0
    stale: int = 0
    """Finished rows that were made with different settings (kept, not redone)."""
    aborted: str | None = None
    error_examples: list[str] = field(default_factory=list)
    """Up to five distinct error messages of this run, to see at a glance what went wrong."""

    @property
    def finished(self) -> int:
        return self.already_done + self.counts.get("ok", 0) + self.counts.get("truncated", 0)

    @property
    def remaining(self) -> int:
        """(prompt, sample) pairs still without an ok/truncated row: rerun to retry them."""
        return self.planned - self.finished

    @property
    def complete(self) -> bool:
        return self.remaining == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(finished=self.finished, remaining=self.remaining, complete=self.complete)
        return data

    def __str__(self) -> str:
        cost = "n/a" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "nothing new"
        text = (f"{self.finished}/{self.planned} samples finished ({counts}; {self.cached} from cache; "
                f"{self.already_done} from earlier runs) in {self.elapsed_s:.1f} s, "
                f"{self.requests} requests ({self.retries} retries), "
                f"{self.prompt_tokens}+{self.completion_tokens} tokens, "
                f"{self.tokens_per_s:.1f} tok/s, cost {cost} -> {self.out_path}")
        if self.remaining:
            text += f"\n{self.remaining} samples still missing: run again to retry them."
        for message in self.error_examples:
            text += f"\n  error: {message}"
        if self.aborted:
            text += f"\nABORTED: {self.aborted}"
        return text


# --------------------------------------------------------------------------- input rows


def load_prompts(source: str | Path | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Read prompt rows (a JSONL path or an iterable of dicts) and check them.

    Every row needs a unique string ``id`` and a valid ``messages`` list; the
    other fields (``question``, ``reference``, ``task``, ``meta``) are optional
    and copied into the samples. Errors name the line or the row id.
    """
    rows: list[tuple[str, Any]] = []
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"prompt file not found: {path}")
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((f"{path}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
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
    where = "local" if _is_local(endpoint) else endpoint.base_url.rstrip("/")
    canonical = {"base_url": where, "model": endpoint.model,
                 "messages": list(messages), "params": dict(params), "sample_index": sample_index}
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- output file


def repair_jsonl_tail(path: str | Path) -> int:
    """Cut away a torn last line (no trailing newline) left by a killed writer.

    Returns the number of bytes removed (0 when the file was clean or absent).
    Complete lines are never touched.
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
        pos = size
        block = 64 * 1024
        cut = 0
        while pos > 0:
            start = max(0, pos - block)
            handle.seek(start)
            data = handle.read(pos - start)
            idx = data.rfind(b"\n")
            if idx >= 0:
                cut = start + idx + 1
                break
            pos = start
        handle.truncate(cut)
        handle.flush()
        os.fsync(handle.fileno())
    removed = size - cut
    log.warning("%s: removed a torn last line (%d bytes) left by an interrupted run", path, removed)
    return removed


def _iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Complete, parseable rows of a sample file; damaged lines are skipped with a warning."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                log.warning("%s:%d: skipping a torn last line", path, lineno)
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping a line that is not valid JSON", path, lineno)
                continue
            if isinstance(row, dict) and "prompt_id" in row and "sample_index" in row:
                yield row


def _latest_rows(path: Path) -> dict[SampleKey, dict[str, Any]]:
    latest: dict[SampleKey, dict[str, Any]] = {}
    for row in _iter_rows(path):
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
    rows = _latest_rows(path).values()
    if statuses is None:
        return list(rows)
    wanted = set(statuses)
    return [row for row in rows if row.get("status") in wanted]


class _SampleWriter:
    """The single writer of the output file: one whole line per row, flushed at once.

    A flushed row is in the OS and survives a kill -9 of this process. With
    ``fsync`` the rows are also forced to disk (power loss), one fsync per
    ``sync_interval_s`` for every row written since the last one. An fsync per row
    blocked the event loop for milliseconds between a reply and the next request,
    and on a batching server (swift deploy) requests that arrive spread out miss
    the batch and wait for the next one. Outside an event loop every row is synced
    at once; :meth:`close` syncs the rest.
    """

    def __init__(self, path: Path, fsync: bool = True, sync_interval_s: float = 1.0) -> None:
        self._handle = path.open("a", encoding="utf-8", newline="\n")
        self._fsync = fsync
        self._sync_interval_s = sync_interval_s
        self._timer: asyncio.TimerHandle | None = None
        self._unsynced = False

    def write(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        self._handle.write(line)
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


# --------------------------------------------------------------------------- cache


class ReplyCache:
    """Replies on disk, one JSON file per request key (``<dir>/<key[:2]>/<key>.json``).

    Plain files so a learner can open them; written atomically (temp file +
    rename), so a kill never leaves a half-written entry. Only ok/truncated
    replies are stored; errors are always retried.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path_for(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("ignoring an unreadable cache entry %s", path)
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("reply"), dict):
            return None
        return entry

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(entry, handle, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json"))


# --------------------------------------------------------------------------- prices


class PriceTable:
    """Model-name pattern -> USD per 1M input and output tokens (see ``data/prices.json``)."""

    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self.entries = [dict(e) for e in entries]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "PriceTable":
        path = Path(path) if path is not None else PRICES_PATH
        if not path.exists():
            log.warning("price table %s not found: costs will show as n/a", path)
            return cls([])
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data.get("models", []) if isinstance(data, Mapping) else data
        for i, entry in enumerate(entries):
            if not {"pattern", "input", "output"} <= set(entry):
                raise ValueError(f"{path}: models[{i}] needs 'pattern', 'input' and 'output'")
        return cls(entries)

    def lookup(self, model: str) -> tuple[float, float] | None:
        names = {model.lower(), model.lower().rsplit("/", 1)[-1]}
        for entry in self.entries:
            pattern = str(entry["pattern"]).lower()
            if any(fnmatch.fnmatchcase(name, pattern) for name in names):
                return float(entry["input"]), float(entry["output"])
        return None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.lookup(model)
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000


def _is_local(endpoint: TeacherEndpoint) -> bool:
    host = (urlparse(endpoint.base_url).hostname or "").lower()
    return endpoint.local or host in {"localhost", "127.0.0.1", "0.0.0.0", "::1"}


# --------------------------------------------------------------------------- rate limits


class TokenBucket:
    """An async token bucket: ``rate_per_s`` tokens flow in, at most ``capacity`` are held.

    :meth:`acquire` waits until enough tokens are there (callers are served in
    order); :meth:`adjust` gives tokens back or takes extra ones (the balance may
    go negative, which simply delays later callers).
    """

    def __init__(self, rate_per_s: float, capacity: float) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = float(rate_per_s)
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self._stamp = time.monotonic()
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> float:
        """Take ``amount`` tokens (capped at the capacity); returns the seconds waited."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        amount = min(float(amount), self.capacity)
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                if self.tokens >= amount:
                    self.tokens -= amount
                    return waited
                delay = (amount - self.tokens) / self.rate
                waited += delay
                await asyncio.sleep(delay)

    def adjust(self, delta: float) -> None:
        self._refill()
        self.tokens = min(self.capacity, self.tokens + delta)


class _RateLimiter:
    """Requests-per-minute (evenly spaced) and tokens-per-minute limits together."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.requests = TokenBucket(rpm / 60.0, 1.0) if rpm else None
        self.tokens = TokenBucket(tpm / 60.0, tpm) if tpm else None

    async def acquire(self, estimate: int) -> None:
        if self.tokens is not None:
            await self.tokens.acquire(estimate)
        if self.requests is not None:
            await self.requests.acquire(1.0)

    def refund(self, estimate: int) -> None:
        """The server rejected the request outright: its tokens were not spent."""
        if self.tokens is not None:
            self.tokens.adjust(estimate)

    def settle(self, estimate: int, actual: int) -> None:
        """Correct the estimate with the real usage."""
        if self.tokens is not None and actual > 0:
            self.tokens.adjust(estimate - actual)


# --------------------------------------------------------------------------- the engine


@dataclass
class _Job:
    prompt: dict[str, Any]
    sample_index: int
    params: dict[str, Any]
    request: dict[str, Any]
    key: str
    estimate: int


@dataclass
class _Stats:
    counts: Counter[str] = field(default_factory=Counter)
    cached: int = 0
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    aborted: str | None = None
    errors: list[str] = field(default_factory=list)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _backoff(attempt: int, config: GenerationConfig, retry_after: float | None) -> float:
    """Seconds before the next attempt: the server's Retry-After, else full jitter."""
    if retry_after is not None:
        return min(retry_after, config.retry_after_max_s)
    ceiling = min(config.backoff_max_s, config.backoff_base_s * 2 ** (attempt - 1))
    return random.uniform(0.0, ceiling)


class _Engine:
    """One run: plan the jobs, run the workers, write rows, keep score."""

    def __init__(self, prompts: list[dict[str, Any]], out: Path, config: GenerationConfig) -> None:
        self.prompts = prompts
        self.out = out
        self.config = config
        self.endpoint = config.endpoint
        self.cache = ReplyCache(config.cache_dir) if config.cache_dir else None
        self.prices = PriceTable.load(config.prices_path)
        self.free = _is_local(self.endpoint)
        self.stats = _Stats()

    # -- planning -------------------------------------------------------------
    def plan(self) -> tuple[list[_Job], int, int]:
        latest = _latest_rows(self.out)
        jobs: list[_Job] = []
        already = stale = 0
        # Sample-major order: every prompt's sample 0, then every prompt's sample 1, ...
        # Requests in flight then share their temperature, which lets a batching server
        # (swift deploy batches only requests with identical parameters) fill whole batches:
        # measured on the local teacher, 32 requests took 146 s this way against 166 s interleaved.
        for index, temperature in enumerate(self.config.schedule()):
            for prompt in self.prompts:
                job = self._job(prompt, index, temperature)
                previous = latest.get((prompt["id"], index))
                if previous is not None and previous.get("status") in DONE_STATUSES:
                    already += 1
                    if previous.get("request_key") != job.key:
                        stale += 1
                    continue
                jobs.append(job)
        if stale:
            log.warning("%d finished samples in %s were made with other settings (model, prompt or "
                        "parameters); they are kept. Write to a new file to regenerate them.",
                        stale, self.out)
        return jobs, already, stale

    def _job(self, prompt: dict[str, Any], index: int, temperature: float) -> _Job:
        c = self.config
        seed = None if c.seed is None else c.seed + index
        request = build_request(self.endpoint, prompt["messages"], temperature=temperature,
                                max_tokens=c.max_tokens, top_p=c.top_p, seed=seed, extra=c.extra_body)
        params: dict[str, Any] = {"temperature": temperature, "max_tokens": c.max_tokens}
        if c.top_p is not None:
            params["top_p"] = c.top_p
        if seed is not None:
            params["seed"] = seed
        if c.extra_body:
            params["extra_body"] = dict(c.extra_body)
        key = request_key(self.endpoint, request["messages"], params, index)
        estimate = estimate_prompt_tokens(request["messages"]) + c.max_tokens
        return _Job(prompt, index, params, request, key, estimate)

    # -- rows -----------------------------------------------------------------
    def _row(self, job: _Job, status: str, reply: TeacherReply | dict[str, Any] | None,
             error: str | None, attempts: int, cached: bool) -> dict[str, Any]:
        prompt = job.prompt
        if isinstance(reply, TeacherReply):
            reply = reply.to_dict(include_model=False)
        return {
            "prompt_id": prompt["id"],
            "sample_index": job.sample_index,
            "request_key": job.key,
            "model": self.endpoint.model,
            "params": job.params,
            "status": status,
            "question": prompt.get("question"),
            "reference": prompt.get("reference"),
            "task": prompt.get("task"),
            "meta": prompt.get("meta") or {},
            "reply": reply,
            "error": error,
            "attempts": attempts,
            "cached": cached,
            "created_at": _now(),
        }

    # -- one sample -----------------------------------------------------------
    async def _attempt(self, client: openai.AsyncOpenAI, job: _Job) -> TeacherReply:
        start = time.perf_counter()
        completion = await asyncio.wait_for(client.chat.completions.create(**job.request),
                                            timeout=self.config.timeout_s)
        return reply_from_completion(completion, time.perf_counter() - start, self.endpoint.model)

    async def process(self, client: openai.AsyncOpenAI, limiter: _RateLimiter,
                      job: _Job) -> dict[str, Any] | None:
        """Return the row for ``job`` (None when the run was aborted before it was sent)."""
        if self.cache is not None:
            entry = self.cache.get(job.key)
            if entry is not None:
                reply = TeacherReply.from_dict(entry["reply"], model=self.endpoint.model)
                status = "truncated" if reply.truncated else "ok"
                return self._row(job, status, reply, None, 0, True)
        c = self.config
        for attempt in range(1, c.max_attempts + 1):
            if self.stats.aborted:
                return None
            await limiter.acquire(job.estimate)
            self.stats.requests += 1
            try:
                reply = await self._attempt(client, job)
            except Exception as exc:  # noqa: BLE001 - one bad row never stops the run
                info = classify_error(exc, self.endpoint, c.timeout_s)
                if info.status is not None:
                    limiter.refund(job.estimate)
                if info.fatal:
                    self.stats.aborted = self.stats.aborted or info.message
                if info.fatal or not info.retryable or attempt == c.max_attempts:
                    note = "" if attempt == 1 else f" (gave up after {attempt} attempts)"
                    return self._row(job, "error", None, info.message + note, attempt, False)
                self.stats.retries += 1
                delay = _backoff(attempt, c, info.retry_after)
                log.debug("%s #%d: %s; retrying in %.2f s", job.prompt["id"], job.sample_index,
                          info.message, delay)
                await asyncio.sleep(delay)
                continue
            limiter.settle(job.estimate, reply.usage.total_tokens)
            status = "truncated" if reply.truncated else "ok"
            if self.cache is not None:  # cache first: a kill right after still saves the request
                try:
                    self.cache.put(job.key, {"request_key": job.key, "status": status,
                                             "reply": reply.to_dict(include_model=True),
                                             "created_at": _now()})
                except OSError as exc:  # a full or read-only cache must not lose the reply
                    log.warning("could not write the reply cache (%s); the sample is still saved", exc)
            return self._row(job, status, reply, None, attempt, False)
        return None  # pragma: no cover - the loop always returns

    # -- the run --------------------------------------------------------------
    def cost(self) -> float | None:
        if self.free:
            return 0.0
        return self.prices.cost(self.endpoint.model, self.stats.prompt_tokens,
                                self.stats.completion_tokens)

    async def run(self) -> GenerationSummary:
        started = time.perf_counter()
        repaired = repair_jsonl_tail(self.out)
        jobs, already, stale = self.plan()
        writer = _SampleWriter(self.out, fsync=self.config.fsync)
        bar = tqdm(total=len(jobs), desc=f"teacher {self.endpoint.model}", unit="sample",
                   disable=not self.config.progress or not jobs, dynamic_ncols=True)
        limiter = _RateLimiter(self.config.rpm, self.config.tpm)
        stats = self.stats
        pending = iter(jobs)

        def record(row: dict[str, Any]) -> None:
            writer.write(row)  # only ever called from the event-loop thread: one writer
            stats.counts[row["status"]] += 1
            if row["cached"]:
                stats.cached += 1
            elif row["reply"]:
                stats.prompt_tokens += row["reply"]["usage"]["prompt_tokens"]
                stats.completion_tokens += row["reply"]["usage"]["completion_tokens"]
            elapsed = max(time.perf_counter() - started, 1e-9)
            cost = self.cost()
            if row["status"] == "error" and len(stats.errors) < 5 and row["error"] not in stats.errors:
                stats.errors.append(row["error"])
            bar.set_postfix_str(
                f"ok={stats.counts['ok']} trunc={stats.counts['truncated']} err={stats.counts['error']} "
                f"cached={stats.cached} {stats.completion_tokens / elapsed:.0f} tok/s "
                f"cost={'n/a' if cost is None else f'${cost:.4f}'}", refresh=False)
            bar.update(1)

        async def worker(client: openai.AsyncOpenAI) -> None:
            for job in pending:  # a shared iterator: each job goes to exactly one worker
                if stats.aborted:
                    return
                row = await self.process(client, limiter, job)
                if row is not None:
                    record(row)
                # Let the other replies that came in together be handled first, so that the
                # next requests leave together: a batching server (swift deploy) takes what is
                # waiting when it polls, and a request a few ms late waits a whole batch.
                await asyncio.sleep(0)

        try:
            if jobs:
                client = openai.AsyncOpenAI(**self.endpoint.client_kwargs(), max_retries=0,
                                            timeout=self.config.timeout_s)
                try:
                    workers = min(self.config.in_flight, len(jobs))
                    await asyncio.gather(*(worker(client) for _ in range(workers)))
                finally:
                    await client.close()
        finally:
            bar.close()
            writer.close()
        elapsed = time.perf_counter() - started
        if stats.aborted:
            log.error("generation stopped: %s", stats.aborted)
        return GenerationSummary(
            out_path=str(self.out), planned=len(self.prompts) * self.config.n_samples,
            already_done=already, counts=dict(stats.counts), cached=stats.cached,
            requests=stats.requests, retries=stats.retries, prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens, elapsed_s=round(elapsed, 3),
            tokens_per_s=round(stats.completion_tokens / elapsed, 2) if elapsed > 0 else 0.0,
            cost_usd=self.cost(), repaired_bytes=repaired, stale=stale, aborted=stats.aborted,
            error_examples=list(stats.errors))


async def agenerate(prompts: str | Path | Iterable[Mapping[str, Any]], out_path: str | Path,
                    config: GenerationConfig) -> GenerationSummary:
    """Generate every missing (prompt, sample) into ``out_path`` and return a summary.

    Safe to interrupt at any moment and to run again. Raises
    :class:`GenerationAborted` (finished rows are kept) when the endpoint
    rejects the key, the model or the URL, and ``RuntimeError`` when another
    run is already writing the same file.
    """
    rows = load_prompts(prompts)
    out = Path(out_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out) + ".lock", timeout=0)
    try:
        lock.acquire()
    except LockTimeout:
        raise RuntimeError(f"another generation run is already writing {out}; wait for it to finish "
                           "(or stop it) before starting a new one") from None
    try:
        summary = await _Engine(rows, out, config).run()
    finally:
        lock.release()
    if summary.aborted:
        raise GenerationAborted(summary.aborted, summary)
    return summary


def _run_in_thread(factory: Any) -> Any:
    """Run a coroutine on a fresh event loop in a worker thread (for Jupyter, whose loop is busy).

    Ctrl+C / "interrupt kernel" cancels the coroutine cleanly before re-raising.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        try:
            task = loop.create_task(factory())
            box["task"] = task
            box["value"] = loop.run_until_complete(task)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    thread = threading.Thread(target=target, name="helpers-generate", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        loop, task = box.get("loop"), box.get("task")
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop already finished
                pass
        thread.join()
        raise
    if "error" in box:
        raise box["error"]
    return box.get("value")


def generate(prompts: str | Path | Iterable[Mapping[str, Any]], out_path: str | Path,
             config: GenerationConfig) -> GenerationSummary:
    """Synchronous :func:`agenerate`; also works inside Jupyter's running event loop."""
    prompt_rows = load_prompts(prompts)  # fail fast, in the caller's thread

    def factory() -> Any:
        return agenerate(prompt_rows, out_path, config)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    return _run_in_thread(factory)


# --------------------------------------------------------------------------- command line


def _temperatures(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--temperatures takes comma-separated numbers such as 0,0.6,1.0; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers generate",
        description="Generate teacher samples for a JSONL of prompts (resumable, cached, rate-limited). "
                    "The endpoint defaults to TEACHER_BASE_URL / TEACHER_MODEL / TEACHER_API_KEY; "
                    "the API key is only ever read from the environment.")
    parser.add_argument("--prompts", required=True, help="JSONL of prompt rows (id, messages, ...)")
    parser.add_argument("--out", required=True, help="append-only JSONL of sample rows")
    parser.add_argument("--n", type=int, default=1, help="samples per prompt (default 1)")
    parser.add_argument("--temperatures", type=_temperatures, default=None,
                        help="one value or n comma-separated values; default: a ramp t-min -> t-max")
    parser.add_argument("--t-min", type=float, default=0.0, help="temperature of sample 0 (default 0)")
    parser.add_argument("--t-max", type=float, default=1.0, help="temperature of the last sample (default 1)")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="requests in flight (default: 16 for the local teacher, 8 for an API)")
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute limit")
    parser.add_argument("--tpm", type=float, default=None, help="tokens per minute limit")
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--backoff", type=float, default=1.0, help="base backoff seconds")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible /v1 URL (default TEACHER_BASE_URL)")
    parser.add_argument("--model", default=None, help="model name (default TEACHER_MODEL)")
    parser.add_argument("--cache-dir", default=None, help="folder for the reply cache (default: no cache)")
    parser.add_argument("--prices", default=None, help="price table JSON (default data/prices.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m helpers generate``.

    Exit codes: 0 every sample finished, 1 some samples failed (run again to
    retry them), 2 bad input or configuration, 3 the endpoint refused us
    (key, model or URL), 130 interrupted.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_dotenv_files()
    env = dict(os.environ)
    if args.base_url:
        env["TEACHER_BASE_URL"] = args.base_url
    if args.model:
        env["TEACHER_MODEL"] = args.model
    try:
        endpoint = teacher_from_env(env)
        if endpoint is None:
            raise ValueError("no teacher endpoint: pass --base-url and --model, or set TEACHER_BASE_URL "
                             "and TEACHER_MODEL (start the local teacher first with helpers.server)")
        config = GenerationConfig(
            endpoint=endpoint, n_samples=args.n, temperatures=args.temperatures, t_min=args.t_min,
            t_max=args.t_max, max_tokens=args.max_tokens, top_p=args.top_p, seed=args.seed,
            concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm, max_attempts=args.max_attempts,
            timeout_s=args.timeout, backoff_base_s=args.backoff, cache_dir=args.cache_dir,
            prices_path=args.prices, progress=not args.no_progress)
        summary = generate(args.prompts, args.out, config)
    except GenerationAborted as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(json.dumps(exc.summary.to_dict()) if args.json else exc.summary)
        return 3
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {mask_secrets(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished samples are saved; run the same command again to continue",
              file=sys.stderr)
        return 130
    print(json.dumps(summary.to_dict()) if args.json else summary)
    return 0 if summary.complete else 1


if __name__ == "__main__":  # python -m helpers.generate ...
    raise SystemExit(cli_main())
