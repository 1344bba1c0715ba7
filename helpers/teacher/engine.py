"""The batch engine: many prompts x n samples -> an append-only JSONL you can trust.

The one way the course calls a teacher online, many times. A real API costs money
and fails in many ways, so nothing here loses work or pays twice:

* **concurrency** with a limit, plus requests- and tokens-per-minute limits;
* **retries** with backoff and jitter on 429, 5xx, timeouts and malformed bodies,
  honouring ``Retry-After``; a wrong key, model or URL stops the run at once, and so
  do ``max_connection_failures`` connection failures in a row (server down);
* **API quirks**: requests are shaped per model (:mod:`helpers.teacher.quirks`) and a
  400 naming an unsupported parameter is adapted to once, not counted as a failure;
* **truncation**: a cut-off reply (``finish_reason == "length"``) is asked again once
  with a larger limit; still cut off, it is recorded as ``"truncated"``, never ``"ok"``;
* **resumable**: every row is one flushed line; a rerun skips finished samples and
  retries failed ones; a **disk cache** of replies makes a rerun cost nothing;
* **n samples per prompt** with a temperature schedule, a progress bar with tokens/s and cost.

Python: :func:`generate` (works in a notebook too), ``await agenerate(...)``, or
:func:`batch_chat` for stages that just need many replies back in order. The same
jobs can go through an offline Batch API instead: :mod:`helpers.teacher.batch_api`.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from tqdm.auto import tqdm

from ..core.cache import DiskCache, stable_hash
from ..core.config import TeacherEndpoint, mask_secrets
from ..core.jsonl import JsonlAppender
from .client import (
    ErrorInfo,
    StreamAssembler,
    TeacherError,
    TeacherReply,
    classify_error,
    reply_from_completion,
)
from .jobs import (  # noqa: F401 - GenerationAborted, GenerationSummary, temperature_schedule: re-exported
    GenerationAborted,
    GenerationConfig,
    GenerationSummary,
    Job,
    output_lock,
    plan_jobs,
    temperature_schedule,
)
from .limits import RateLimiter
from .prices import PriceTable
from .quirks import adapt_to_error, shape_request
from .samples import DONE_STATUSES, estimate_prompt_tokens, is_local, load_prompts, load_samples, sample_row, utc_now

log = logging.getLogger(__name__)

MAX_ADAPTATIONS = 3
"""A request is reshaped after at most this many 400s naming an unsupported parameter."""


@dataclass
class _Stats:
    counts: Counter[str] = field(default_factory=Counter)
    cached: int = 0
    requests: int = 0
    retries: int = 0
    extended: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    aborted: str | None = None
    errors: list[str] = field(default_factory=list)


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
        self.unreachable_streak = 0
        """Connection failures in a row, over all workers (any HTTP answer resets it)."""

    def _row(self, job: Job, status: str, reply: TeacherReply | dict[str, Any] | None, error: str | None,
             attempts: int, cached: bool, max_tokens_used: int | None = None) -> dict[str, Any]:
        return sample_row(job.prompt, job.sample_index, key=job.key, model=self.endpoint.model,
                          params=job.params, status=status, reply=reply, error=error, attempts=attempts,
                          cached=cached, max_tokens_used=max_tokens_used)

    # -- one sample -----------------------------------------------------------
    async def _attempt(self, client: openai.AsyncOpenAI, job: Job) -> TeacherReply:
        """Send ``job.request`` once (shaped with what was learned so far); streamed where the API needs it."""
        job.request = shape_request(self.endpoint, job.request, budget=self.config.thinking_budget)
        start = time.perf_counter()
        if not job.request.get("stream"):
            completion = await asyncio.wait_for(client.chat.completions.create(**job.request),
                                                timeout=self.config.timeout_s)
            return reply_from_completion(completion, time.perf_counter() - start, self.endpoint.model)

        async def consume() -> StreamAssembler:
            assembler = StreamAssembler(None)
            stream = await client.chat.completions.create(**job.request)
            async with stream:
                async for chunk in stream:
                    assembler.feed(chunk)
            return assembler

        assembler = await asyncio.wait_for(consume(), timeout=self.config.timeout_s)
        return assembler.reply(start, time.perf_counter(), self.endpoint.model)

    def _unreachable(self, info: ErrorInfo) -> None:
        """Count a connection failure; enough in a row stop the whole run (retries would all fail too)."""
        if not info.unreachable:
            return
        self.unreachable_streak += 1
        limit = self.config.max_connection_failures
        if self.unreachable_streak >= limit and not self.stats.aborted:
            self.stats.aborted = mask_secrets(
                f"could not connect to {self.endpoint.base_url} {limit} times in a row "
                f"({info.message.split(': ', 1)[-1]}). "
                "The teacher server is down or the URL is wrong: start it (the course's local teacher: "
                "python -m helpers serve) or fix TEACHER_BASE_URL, then run again; finished rows are kept.")

    async def process(self, client: openai.AsyncOpenAI, limiter: RateLimiter, job: Job) -> dict[str, Any] | None:
        """Return the row for ``job`` (None when the run was aborted before it was sent)."""
        if self.cache is not None:
            entry = self.cache.get(job.key)
            if entry is not None and isinstance(entry.get("reply"), dict):
                reply = TeacherReply.from_dict(entry["reply"], model=self.endpoint.model)
                status = "truncated" if reply.truncated else "ok"
                return self._row(job, status, reply, None, 0, True, entry.get("max_tokens_used"))
        c = self.config
        limit = int(job.params["max_tokens"])
        failures = adaptations = sent = 0
        extended = False
        while not self.stats.aborted:
            await limiter.acquire(job.estimate)
            self.stats.requests += 1
            sent += 1
            try:
                reply = await self._attempt(client, job)
            except Exception as exc:  # noqa: BLE001 - one bad row never stops the run
                info = classify_error(exc, self.endpoint, c.timeout_s)
                if info.status is not None:
                    limiter.refund(job.estimate)
                    self.unreachable_streak = 0
                adapted = adapt_to_error(self.endpoint, job.request, exc) if adaptations < MAX_ADAPTATIONS else None
                if adapted is not None:  # the API named a parameter it does not take: not a failure
                    adaptations += 1
                    job.request = adapted
                    continue
                failures += 1
                self._unreachable(info)
                if info.fatal:
                    self.stats.aborted = self.stats.aborted or info.message
                if info.fatal or not info.retryable or failures >= c.max_attempts or self.stats.aborted:
                    note = "" if failures == 1 else f" (gave up after {failures} attempts)"
                    return self._row(job, "error", None, info.message + note, sent, False, limit)
                self.stats.retries += 1
                delay = _backoff(failures, c, info.retry_after)
                log.debug("%s #%d: %s; retrying in %.2f s", job.prompt["id"], job.sample_index,
                          info.message, delay)
                await asyncio.sleep(delay)
                continue
            self.unreachable_streak = 0
            limiter.settle(job.estimate, reply.usage.total_tokens)
            longer = c.longer_limit(limit) if reply.truncated and not extended else None
            if longer is not None:  # cut off: ask once more with room to finish
                extended = True
                self.stats.extended += 1
                self.stats.prompt_tokens += reply.usage.prompt_tokens  # paid for, though not kept
                self.stats.completion_tokens += reply.usage.completion_tokens
                log.debug("%s #%d: cut off at %d tokens; asking again with %d", job.prompt["id"],
                          job.sample_index, limit, longer)
                limit = longer
                job.request = job.request_with_limit(c, longer)
                job.estimate = estimate_prompt_tokens(job.request["messages"]) + longer
                continue
            status = "truncated" if reply.truncated else "ok"
            if self.cache is not None:  # cache first: a kill right after still saves the request
                try:
                    self.cache.put(job.key, {"request_key": job.key, "status": status,
                                             "reply": reply.to_dict(include_model=True),
                                             "max_tokens_used": limit, "created_at": utc_now()})
                except OSError as exc:  # a full or read-only cache must not lose the reply
                    log.warning("could not write the reply cache (%s); the sample is still saved", exc)
            return self._row(job, status, reply, None, sent, False, limit)
        return None

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
        jobs, already, stale = plan_jobs(self.prompts, self.out, self.config)
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
            error_examples=list(stats.errors), extended=stats.extended)


async def agenerate(prompts: str | Path | Iterable[Mapping[str, Any]], out_path: str | Path,
                    config: GenerationConfig) -> GenerationSummary:
    """Generate every missing (prompt, sample) into ``out_path`` and return a summary.

    Safe to interrupt at any moment and to run again. Raises
    :class:`GenerationAborted` (finished rows are kept) when the endpoint
    rejects the key, the model or the URL or cannot be reached at all, and ``RuntimeError`` when another
    run is already writing the same file.
    """
    rows = load_prompts(prompts)
    out = Path(out_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        summary = await _Engine(rows, out, config).run()
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
               max_tokens: int | None = None, **options: Any) -> BatchChat:
    """:func:`ask_many` as a function of the chats alone, for a stage to call round after round.

    ``options`` are further :class:`GenerationConfig` fields (``cache_dir``,
    ``concurrency``, ``progress``...).
    """
    config = GenerationConfig(endpoint=endpoint, temperatures=[temperature], max_tokens=max_tokens, **options)
    return lambda chats: ask_many(chats, config, log_path)
