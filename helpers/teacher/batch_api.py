"""Teacher jobs through an OpenAI-compatible Batch API: upload, submit, poll, collect, resume.

The other way to send the engine's jobs (:mod:`helpers.teacher.engine` stays the one
path for online calls). A Batch API (OpenAI, DashScope, ...) answers within a window
(24 h), usually at half the price and outside the rate limits: for big jobs that need
not finish now. :func:`generate_batch` plans exactly like the engine (finished samples
of the output file are skipped), uploads the rest as a JSONL of requests to
``/v1/files``, creates the job at ``/v1/batches``, polls it, downloads the output and
error files and appends one row per request to the same append-only samples file,
built by the same :func:`~helpers.teacher.samples.sample_row` with the same statuses:
``ok``, ``truncated`` (no second, longer round in a batch), ``error`` (failed, expired).

Resumable: the batch id and the hash of its input are written to ``<out>.batch.json``
*before* any waiting, so running the same call again after a crash or a closed
notebook polls that batch instead of paying for it twice. A recorded batch is always
collected before anything new is submitted; once collected, a rerun submits only what
is still missing (the error rows), like a rerun of the engine.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from ..core.cache import DiskCache, stable_hash
from ..core.config import mask_secrets
from ..core.jsonl import JsonlAppender, read_jsonl, write_jsonl
from .client import ErrorInfo, MalformedReplyError, TeacherError, TeacherReply, classify_error, reply_from_completion
from .jobs import TERMINAL_BATCH_STATUSES, GenerationConfig, GenerationSummary, Job, output_lock, plan_jobs
from .prices import PriceTable
from .quirks import adapt_request, shape_request, token_limit
from .samples import is_local, load_prompts, sample_row, utc_now

log = logging.getLogger(__name__)

CHAT_ROUTE = "/v1/chat/completions"


def state_path(out_path: str | Path) -> Path:
    """``samples.jsonl`` -> ``samples.batch.json``: the batch id and input hash of the last submission."""
    out = Path(out_path)
    return out.with_name(out.stem + ".batch.json")


def files_dir(out_path: str | Path) -> Path:
    """``samples.jsonl`` -> ``samples.batch/``: the uploaded input and the downloaded results, kept to inspect."""
    out = Path(out_path)
    return out.with_name(out.stem + ".batch")


def read_state(out_path: str | Path) -> dict[str, Any] | None:
    """The recorded batch of ``out_path`` (None when there is none)."""
    path = state_path(out_path)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ValueError(f"{path} is not valid JSON: fix it, or delete it to forget that batch "
                         "(it may still be running and billed)") from None
    return state if isinstance(state, dict) else None


def _write_state(out: Path, state: Mapping[str, Any]) -> None:
    path = state_path(out)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(state), indent=2), encoding="utf-8")
    os.replace(tmp, path)


def request_line(job: Job, config: GenerationConfig) -> dict[str, Any]:
    """One line of the batch input: ``custom_id``, method, URL and the request body (never streamed)."""
    request = shape_request(config.endpoint, job.request, budget=config.thinking_budget)
    body = {k: v for k, v in request.items() if k not in ("extra_body", "stream", "stream_options")}
    body.update(request.get("extra_body") or {})
    return {"custom_id": job.custom_id, "method": "POST", "url": CHAT_ROUTE, "body": body}


class _BatchRun:
    """One call: collect a recorded batch or submit a new one, and write the rows."""

    def __init__(self, prompts: list[dict[str, Any]], out: Path, config: GenerationConfig,
                 client: openai.OpenAI, writer: JsonlAppender) -> None:
        self.prompts, self.out, self.config, self.client, self.writer = prompts, out, config, client, writer
        self.endpoint = config.endpoint
        self.cache = DiskCache(config.cache_dir) if config.cache_dir else None
        self.counts: Counter[str] = Counter()
        self.tokens = [0, 0]
        self.cached = self.skipped = 0
        self.errors: list[str] = []

    def write(self, row: dict[str, Any]) -> None:
        self.writer.write(row)
        self.counts[row["status"]] += 1
        if row["reply"] and not row["cached"]:
            self.tokens[0] += row["reply"]["usage"]["prompt_tokens"]
            self.tokens[1] += row["reply"]["usage"]["completion_tokens"]
        if row["status"] == "error" and len(self.errors) < 5 and row["error"] not in self.errors:
            self.errors.append(row["error"])

    def row(self, job: Job, status: str, reply: TeacherReply | dict[str, Any] | None, error: str | None,
            *, cached: bool = False, limit: int | None = None) -> dict[str, Any]:
        return sample_row(job.prompt, job.sample_index, key=job.key, model=self.endpoint.model,
                          params=job.params, status=status, reply=reply, error=error,
                          attempts=0 if cached else 1, cached=cached, max_tokens_used=limit)

    def from_cache(self, jobs: list[Job]) -> list[Job]:
        """Write the rows of cached replies at once; return the jobs still to send."""
        if self.cache is None:
            return jobs
        left = []
        for job in jobs:
            entry = self.cache.get(job.key)
            if entry is not None and isinstance(entry.get("reply"), dict):
                reply = TeacherReply.from_dict(entry["reply"], model=self.endpoint.model)
                self.write(self.row(job, "truncated" if reply.truncated else "ok", reply, None, cached=True,
                                    limit=entry.get("max_tokens_used")))
                self.cached += 1
            else:
                left.append(job)
        return left

    # -- submitting -----------------------------------------------------------
    def upload(self, lines: list[dict[str, Any]], digest: str) -> dict[str, Any]:
        folder = files_dir(self.out)
        path = write_jsonl(lines, folder / "input.jsonl")
        with path.open("rb") as handle:
            uploaded = self.client.files.create(file=(f"{self.out.stem}.batch-input.jsonl", handle), purpose="batch")
        state = {"input_hash": digest, "input_file_id": uploaded.id, "requests": len(lines),
                 "base_url": self.endpoint.base_url, "model": self.endpoint.model, "batch_id": None,
                 "status": "uploaded", "collected": False, "created_at": utc_now()}
        _write_state(self.out, state)
        return state

    def create(self, state: dict[str, Any]) -> dict[str, Any]:
        batch = self.client.batches.create(input_file_id=state["input_file_id"], endpoint=CHAT_ROUTE,
                                           completion_window="24h",
                                           metadata={"input_hash": state["input_hash"][:32], "out": self.out.name})
        state.update(batch_id=batch.id, status=batch.status, submitted_at=utc_now())
        _write_state(self.out, state)  # from here on a rerun polls this batch instead of paying again
        log.warning("submitted batch %s (%d requests); its id is kept in %s", batch.id, state["requests"],
                    state_path(self.out))
        return state

    def poll(self, state: dict[str, Any], wait: bool, poll_s: float, max_wait_s: float | None) -> Any:
        deadline = None if max_wait_s is None else time.monotonic() + max_wait_s
        while True:
            batch = self.client.batches.retrieve(state["batch_id"])
            if batch.status != state.get("status"):
                state["status"] = batch.status
                _write_state(self.out, state)
            if batch.status in TERMINAL_BATCH_STATUSES or not wait:
                return batch
            if deadline is not None and time.monotonic() >= deadline:
                return batch
            counts = batch.request_counts
            log.info("batch %s %s: %s/%s done, %s failed", batch.id, batch.status, getattr(counts, "completed", "?"),
                     getattr(counts, "total", "?"), getattr(counts, "failed", "?"))
            time.sleep(poll_s)

    # -- collecting -----------------------------------------------------------
    def download(self, file_id: str | None, name: str) -> list[Any]:
        if not file_id:
            return []
        path = files_dir(self.out) / name
        if not path.is_file():  # keep the download: a crash while writing rows does not fetch it again
            content = self.client.files.content(file_id)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(content.content)
            os.replace(tmp, path)
        return read_jsonl(path)  # written whole (tmp + rename): a bad line is an error, not a torn tail

    def result_row(self, job: Job, batch_id: str, line: Mapping[str, Any], sent: Mapping[str, Any]) -> dict[str, Any]:
        """The row of one result line: a reply (ok / truncated) or why there is none (error)."""
        response = line.get("response") or {}
        status_code, body = response.get("status_code"), response.get("body")
        limit = token_limit(sent) or int(job.params["max_tokens"])
        if status_code == 200 and isinstance(body, Mapping):
            try:
                reply = reply_from_completion(ChatCompletion.model_validate(dict(body)), 0.0, self.endpoint.model)
            except (ValueError, MalformedReplyError) as exc:
                return self.row(job, "error", None, mask_secrets(f"batch {batch_id}: malformed reply: {exc}"))
            if self.cache is not None:
                self.cache.put(job.key, {"request_key": job.key, "reply": reply.to_dict(include_model=True),
                                         "status": "truncated" if reply.truncated else "ok",
                                         "max_tokens_used": limit, "created_at": utc_now()})
            return self.row(job, "truncated" if reply.truncated else "ok", reply, None, limit=limit)
        error = line.get("error") or (body.get("error") if isinstance(body, Mapping) else None) or {}
        message = error.get("message") if isinstance(error, Mapping) else str(error)
        code = f"HTTP {status_code}" if status_code else (error.get("code") if isinstance(error, Mapping) else None)
        adapt_request(self.endpoint, sent, status_code, body if isinstance(body, Mapping) else message)
        return self.row(job, "error", None, mask_secrets(f"batch {batch_id}: {code or 'failed'}: {message or 'no reply'}"),
                        limit=limit)

    def collect(self, batch: Any, pending: dict[str, Job]) -> None:
        """Write one row per job of ``batch`` that is still missing in the output file."""
        results = {line.get("custom_id"): line for name, file_id in
                   ((f"{batch.id}.output.jsonl", batch.output_file_id), (f"{batch.id}.errors.jsonl", batch.error_file_id))
                   for line in self.download(file_id, name) if isinstance(line, Mapping)}
        input_path = files_dir(self.out) / "input.jsonl"
        sent = {line["custom_id"]: line["body"] for line in (read_jsonl(input_path) if input_path.is_file() else [])}
        why = "; ".join(e.message for e in (getattr(batch.errors, "data", None) or []) if getattr(e, "message", None))
        for custom_id in sent.keys() | results.keys():
            job = pending.get(custom_id)
            if job is None:  # finished meanwhile, or its prompt changed: the old result is not this job's
                self.skipped += 1
                continue
            if custom_id in results:
                self.write(self.result_row(job, batch.id, results[custom_id], sent.get(custom_id, job.request)))
            else:
                note = f" ({why})" if why else ""
                self.write(self.row(job, "error", None, mask_secrets(
                    f"batch {batch.id} {batch.status}: no result for this request{note}; run again to resubmit it")))

    # -- one call -------------------------------------------------------------
    def go(self, wait: bool, poll_s: float, max_wait_s: float | None) -> GenerationSummary:
        started = time.perf_counter()
        jobs, already, stale = plan_jobs(self.prompts, self.out, self.config)
        jobs = self.from_cache(jobs)
        lines = [request_line(job, self.config) for job in jobs]
        digest = stable_hash(lines)
        state = read_state(self.out)
        if state and (state.get("collected") or (not state.get("batch_id") and state.get("input_hash") != digest)):
            state = None  # collected already, or an upload for other jobs that was never submitted
        submitted = 0
        if state is None and lines:
            state = self.upload(lines, digest)
            submitted = len(lines)
        batch = None
        if state is not None:
            if not state.get("batch_id"):
                state = self.create(state)
            elif state.get("input_hash") != digest:
                log.warning("the jobs changed since batch %s was submitted: collecting it first; run again "
                            "to submit what is still missing", state["batch_id"])
            batch = self.poll(state, wait, poll_s, max_wait_s)
            if batch.status in TERMINAL_BATCH_STATUSES:
                self.collect(batch, {job.custom_id: job for job in jobs})
                state.update(collected=True, collected_at=utc_now())
                _write_state(self.out, state)
        if self.skipped:
            log.warning("%d results of the batch belong to no missing sample (done meanwhile, or the prompt "
                        "changed): left out", self.skipped)
        prices = PriceTable.load(self.config.prices_path)
        cost = 0.0 if is_local(self.endpoint) else prices.cost(self.endpoint.model, *self.tokens)
        return GenerationSummary(
            out_path=str(self.out), planned=len(self.prompts) * self.config.n_samples, already_done=already,
            counts=dict(self.counts), cached=self.cached, requests=submitted, retries=0,
            prompt_tokens=self.tokens[0], completion_tokens=self.tokens[1],
            elapsed_s=round(time.perf_counter() - started, 3), tokens_per_s=0.0, cost_usd=cost,
            repaired_bytes=self.writer.repaired, stale=stale, error_examples=list(self.errors),
            batch_id=batch.id if batch is not None else None,
            batch_status=batch.status if batch is not None else None)


def generate_batch(prompts: str | Path | Iterable[Mapping[str, Any]], out_path: str | Path,
                   config: GenerationConfig, *, wait: bool = True, poll_s: float = 30.0,
                   max_wait_s: float | None = None, client: openai.OpenAI | None = None) -> GenerationSummary:
    """Generate every missing (prompt, sample) of ``out_path`` through the endpoint's Batch API.

    Same prompts, config and output file as :func:`~helpers.teacher.engine.generate`
    (the rows of one path count as finished for the other). ``wait=False`` submits
    (or checks on) the batch and returns; ``max_wait_s`` bounds the polling. Either
    way, call again with the same arguments to collect the results: nothing is
    submitted twice. ``client`` is an ``openai.OpenAI`` to use instead of one built
    from ``config.endpoint`` (tests pass one with a fake transport). Cost is at list
    price (Batch APIs usually bill about half). Raises :class:`TeacherError` (masked)
    when the endpoint refuses the upload or the batch, or has no Batch API.
    """
    rows = load_prompts(prompts)
    out = Path(out_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    endpoint = config.endpoint
    own = client is None
    client = client or openai.OpenAI(**endpoint.client_kwargs(), timeout=config.timeout_s, max_retries=3)
    try:
        with output_lock(out):
            writer = JsonlAppender(out, fsync=config.fsync)
            try:
                return _BatchRun(rows, out, config, client, writer).go(wait, poll_s, max_wait_s)
            finally:
                writer.close()
    except openai.NotFoundError as exc:
        raise TeacherError(ErrorInfo(
            mask_secrets(f"HTTP 404 from {endpoint.base_url}: no Batch API there (/files, /batches), or the "
                         f"batch is gone: use helpers.teacher.engine.generate for this endpoint. Server said: "
                         f"{exc}"), retryable=False, fatal=True, status=404)) from None
    except openai.OpenAIError as exc:
        raise TeacherError(classify_error(exc, endpoint, config.timeout_s)) from None
    finally:
        if own:
            client.close()
