"""The batch engine: many prompts x n samples -> an append-only JSONL you can trust.

The one way the course calls a teacher many times. A real API costs money and
fails in many ways, so nothing here loses work or pays twice:

* **concurrency** with a limit, plus requests- and tokens-per-minute limits;
* **retries** with backoff and jitter on 429, 5xx, timeouts and malformed bodies,
  honouring ``Retry-After``; a wrong key, model or URL stops the run at once;
* **truncation** (``finish_reason == "length"``) is recorded as ``"truncated"``, never ``"ok"``;
* **resumable**: every row is one flushed line; a rerun skips finished samples and
  retries failed ones;
* **disk cache** of replies keyed by the canonical request, so a rerun costs nothing;
* **n samples per prompt** with a temperature schedule, a progress bar with
  tokens/s and the estimated cost.

Python: :func:`generate` (works in a notebook too), ``await agenerate(...)``, or
:func:`batch_chat` for stages that just need many replies back in order.
Shell: ``python -m helpers generate --prompts p.jsonl --out samples.jsonl --n 4``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import openai
from filelock import FileLock
from filelock import Timeout as LockTimeout
from tqdm.auto import tqdm

from ..core.cache import DiskCache, stable_hash
from ..core.config import TeacherEndpoint
from ..core.jsonl import JsonlAppender
from .client import ErrorInfo, TeacherError, TeacherReply, build_request, classify_error, reply_from_completion
from .limits import RateLimiter
from .prices import PriceTable
from .samples import (
    DONE_STATUSES,
    estimate_prompt_tokens,
    is_local,
    latest_rows,
    load_prompts,
    load_samples,
    request_key,
)

log = logging.getLogger(__name__)



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
            raise TypeError("endpoint must be a helpers.core.config.TeacherEndpoint "
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
        self.cache = DiskCache(config.cache_dir) if config.cache_dir else None
        self.prices = PriceTable.load(config.prices_path)
        self.free = is_local(self.endpoint)
        self.stats = _Stats()

    # -- planning -------------------------------------------------------------
    def plan(self) -> tuple[list[_Job], int, int]:
        latest = latest_rows(self.out)
        jobs: list[_Job] = []
        already = stale = 0
        # Sample-major order: every prompt's sample 0, then every prompt's sample 1, ...
        # Requests in flight then share their temperature, which lets a batching server
        # (swift deploy batches only requests with identical parameters) fill whole batches.
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

    async def process(self, client: openai.AsyncOpenAI, limiter: RateLimiter,
                      job: _Job) -> dict[str, Any] | None:
        """Return the row for ``job`` (None when the run was aborted before it was sent)."""
        if self.cache is not None:
            entry = self.cache.get(job.key)
            if entry is not None and isinstance(entry.get("reply"), dict):
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
        writer = JsonlAppender(self.out, fsync=self.config.fsync)  # cuts a torn tail first
        repaired = writer.repaired
        jobs, already, stale = self.plan()
        bar = tqdm(total=len(jobs), desc=f"teacher {self.endpoint.model}", unit="sample",
                   disable=not self.config.progress or not jobs, dynamic_ncols=True)
        limiter = RateLimiter(self.config.rpm, self.config.tpm)
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


# --------------------------------------------------------------------------- many chats, replies in order

BatchChat = Callable[[Sequence[Sequence[Mapping[str, Any]]]], "list[TeacherReply | str | BaseException]"]
"""Many chats in, one reply each back in the same order (an exception where the call failed);
:func:`helpers.teacher.client.reply_text` reads any of them."""


def ask_many(chats: Sequence[Sequence[Mapping[str, Any]]], config: GenerationConfig,
             log_path: str | Path) -> list[TeacherReply | TeacherError]:
    """One reply per chat through the engine, in order; a :class:`TeacherError` where a chat failed.

    For stages that need replies back rather than a sample file (the alignment
    judge, the tag tree, the rewriter). Every request and reply is appended to
    ``log_path``, so an interrupted stage resumes where it stopped; identical
    chats are asked once. Raises :class:`GenerationAborted` when the endpoint is
    unusable (wrong key, model or URL, or unreachable).
    """
    if config.n_samples != 1:
        raise ValueError("ask_many sends each chat once: use n_samples=1")
    keys = [stable_hash(list(chat))[:20] for chat in chats]
    prompts = list({key: {"id": key, "messages": list(chat)} for key, chat in zip(keys, chats)}.values())
    if prompts:
        generate(prompts, log_path, config)
    latest = {row["prompt_id"]: row for row in load_samples(log_path, statuses=None)} if prompts else {}

    def answer(key: str) -> TeacherReply | TeacherError:
        row = latest.get(key) or {}
        if row.get("status") in DONE_STATUSES:
            return TeacherReply.from_dict(row["reply"], model=config.endpoint.model)
        return TeacherError(ErrorInfo(row.get("error") or "no reply", retryable=True))

    return [answer(key) for key in keys]


def batch_chat(endpoint: TeacherEndpoint, log_path: str | Path, *, temperature: float = 0.0,
               max_tokens: int = 512, **options: Any) -> BatchChat:
    """:func:`ask_many` as a function of the chats alone, for a stage to call round after round.

    ``options`` are further :class:`GenerationConfig` fields (``cache_dir``,
    ``concurrency``, ``progress``...).
    """
    config = GenerationConfig(endpoint=endpoint, temperatures=[temperature], max_tokens=max_tokens, **options)
    return lambda chats: ask_many(chats, config, log_path)
