"""What a generation run is: its settings, its jobs (one per prompt x sample) and its summary.

Shared by the two ways of sending the same jobs: the online engine
(:mod:`helpers.teacher.engine`) and the Batch API (:mod:`helpers.teacher.batch_api`).
Both plan with :func:`plan_jobs` (finished samples of the output file are skipped,
so a rerun only does what is missing), file each row under the job's request key
and report a :class:`GenerationSummary`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as LockTimeout

from ..core.config import TeacherEndpoint
from .client import build_request
from .quirks import default_max_tokens, quirks_for
from .samples import DONE_STATUSES, estimate_prompt_tokens, latest_rows, request_key

log = logging.getLogger(__name__)

TERMINAL_BATCH_STATUSES = ("completed", "failed", "expired", "cancelled")
"""Batch API statuses after which nothing changes any more."""


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
    max_tokens: int | None = None
    """The token limit (thinking + answer). None: ``TEACHER_MAX_TOKENS``, else the model's default in
    ``data/teacher/api_quirks.yaml`` (8192 for an R1-style reasoner), else 512."""
    thinking_budget: int | None = None
    """Sent where the API takes a thinking budget (DashScope); None: ``TEACHER_THINKING_BUDGET``,
    else 3/4 of the token limit."""
    retry_truncated: bool | None = None
    """Ask once more with a larger limit when a reply is cut off (``finish_reason == "length"``).
    None: yes for an API; no for the course's own local server, where CPU time is the budget."""
    max_tokens_cap: int = 32768
    """The largest limit a cut-off reply is asked again with."""
    max_connection_failures: int = 5
    """Stop the whole run after this many connection failures in a row (server down, wrong URL)."""
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
        explicit = self.max_tokens is not None
        if self.max_tokens is None:
            self.max_tokens = default_max_tokens(self.endpoint)
        for name in ("n_samples", "max_tokens", "concurrency", "max_attempts", "thinking_budget",
                     "max_tokens_cap", "max_connection_failures"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None for no limit), got {value}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        self.schedule()  # validates the temperatures early
        quirks = quirks_for(self.endpoint)
        if explicit and quirks.reasoning and quirks.max_tokens and self.max_tokens < quirks.max_tokens:
            log.warning("%s thinks before it answers: max_tokens=%d will cut many replies off (leave "
                        "max_tokens=None for its default, %d)", self.endpoint.model, self.max_tokens,
                        quirks.max_tokens)

    @property
    def in_flight(self) -> int:
        """The concurrency actually used (``concurrency``, or the endpoint's default)."""
        return self.concurrency or self.endpoint.default_concurrency

    def schedule(self) -> list[float]:
        return temperature_schedule(self.n_samples, t_min=self.t_min, t_max=self.t_max,
                                    temperatures=self.temperatures)

    def longer_limit(self, current: int) -> int | None:
        """The limit to ask a cut-off reply again with: twice ``current`` (at least the model's
        reasoning default), at most ``max_tokens_cap``; None when it is not asked again."""
        retry = self.retry_truncated if self.retry_truncated is not None else not self.endpoint.local
        if not retry:
            return None
        quirks = quirks_for(self.endpoint)
        target = max(2 * current, quirks.max_tokens or 0) if quirks.reasoning else 2 * current
        target = min(target, self.max_tokens_cap)
        return target if target > current else None


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
    extended: int = 0
    """Cut-off replies asked again with a larger token limit."""
    batch_id: str | None = None
    """The Batch API job these rows came from (:mod:`helpers.teacher.batch_api`)."""
    batch_status: str | None = None

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
        if self.extended:
            text += f"\n{self.extended} cut-off replies were asked again with a larger token limit."
        if self.batch_id:
            text += f"\nbatch {self.batch_id}: {self.batch_status}"
            if self.batch_status not in TERMINAL_BATCH_STATUSES:
                text += " (still running: run again to collect the results; nothing is submitted twice)"
        if self.remaining:
            text += f"\n{self.remaining} samples still missing: run again to retry them."
        for message in self.error_examples:
            text += f"\n  error: {message}"
        if self.aborted:
            text += f"\nABORTED: {self.aborted}"
        return text


# --------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One (prompt, sample) to generate: the request to send and the key its row is filed under."""

    prompt: dict[str, Any]
    sample_index: int
    params: dict[str, Any]
    """What the caller asked for (temperature, max_tokens, ...): part of the key, recorded in the row."""
    request: dict[str, Any]
    """``chat.completions.create`` arguments, shaped for the endpoint's API."""
    key: str
    estimate: int
    """Tokens the request may use (prompt estimate + limit), for the tokens-per-minute limit."""

    @property
    def custom_id(self) -> str:
        """The job's name in a Batch API file: ``<prompt id>#<sample index>#<key prefix>``."""
        return f"{self.prompt['id']}#{self.sample_index}#{self.key[:16]}"

    def request_with_limit(self, config: GenerationConfig, max_tokens: int) -> dict[str, Any]:
        """The same request with another token limit (the thinking budget follows it)."""
        return build_request(config.endpoint, self.prompt["messages"], temperature=self.params["temperature"],
                             max_tokens=max_tokens, top_p=config.top_p, seed=self.params.get("seed"),
                             extra=config.extra_body, thinking_budget=config.thinking_budget)


def make_job(config: GenerationConfig, prompt: dict[str, Any], index: int, temperature: float) -> Job:
    """The job for sample ``index`` of ``prompt`` at ``temperature``."""
    seed = None if config.seed is None else config.seed + index
    max_tokens = int(config.max_tokens or 1)
    params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
    if config.top_p is not None:
        params["top_p"] = config.top_p
    if seed is not None:
        params["seed"] = seed
    if config.extra_body:
        params["extra_body"] = dict(config.extra_body)
    if config.thinking_budget is not None:
        params["thinking_budget"] = config.thinking_budget
    job = Job(prompt, index, params, {}, "", 0)
    job.request = job.request_with_limit(config, max_tokens)
    job.key = request_key(config.endpoint, job.request["messages"], params, index)
    job.estimate = estimate_prompt_tokens(job.request["messages"]) + max_tokens
    return job


def plan_jobs(prompts: Sequence[dict[str, Any]], out: Path,
              config: GenerationConfig) -> tuple[list[Job], int, int]:
    """``(jobs still to do, samples already finished, finished ones made with other settings)``.

    Sample-major order: every prompt's sample 0, then every prompt's sample 1, ...
    Requests in flight then share their temperature, which lets a batching server
    (swift deploy batches only requests with identical parameters) fill whole batches.
    """
    latest = latest_rows(out)
    jobs: list[Job] = []
    already = stale = 0
    for index, temperature in enumerate(config.schedule()):
        for prompt in prompts:
            job = make_job(config, prompt, index, temperature)
            previous = latest.get((prompt["id"], index))
            if previous is not None and previous.get("status") in DONE_STATUSES:
                already += 1
                if previous.get("request_key") != job.key:
                    stale += 1
                continue
            jobs.append(job)
    if stale:
        log.warning("%d finished samples in %s were made with other settings (model, prompt or "
                    "parameters); they are kept. Write to a new file to regenerate them.", stale, out)
    return jobs, already, stale


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``<out>.lock`` while writing ``out``: a second run on the same file is refused, not interleaved."""
    lock = FileLock(str(out) + ".lock", timeout=0)
    try:
        lock.acquire()
    except LockTimeout:
        raise RuntimeError(f"another generation run is already writing {out}; wait for it to finish "
                           "(or stop it) before starting a new one") from None
    try:
        yield
    finally:
        lock.release()
