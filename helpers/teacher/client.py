"""Talking to the teacher: one chat call, a streamed chat call, and one normalised reply type.

Any OpenAI-compatible endpoint works (DeepSeek, DashScope/Qwen, OpenAI, vLLM, or
the local ``swift deploy`` server). Endpoints return the chain of thought in one
of two ways and :func:`normalize_reply` turns both into the same
:class:`TeacherReply`:

* a separate ``reasoning_content`` field on the message or stream delta
  (DeepSeek-R1 style; some servers call it ``reasoning``);
* an inline ``<think>...</think>`` block inside the content.

:func:`chat` and :func:`stream_chat` are synchronous, for notebooks. The batch
engine (:mod:`helpers.teacher.engine`) is asynchronous but reuses :func:`build_request`,
:func:`reply_from_completion` and :func:`classify_error` from here, so the three
paths read replies and errors identically. Error texts go through
:func:`helpers.core.config.mask_secrets`: an API key never reaches a notebook output.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import openai

from ..core.config import TeacherEndpoint, mask_secrets
from .parsing import extract_boxed, split_thinking
from .quirks import adapt_to_error, default_max_tokens, shape_request

Messages = Sequence[Mapping[str, Any]] | str
DeltaKind = Literal["reasoning", "content"]

_ROLES = {"system", "user", "assistant", "tool", "developer"}


# --------------------------------------------------------------------------- reply types


@dataclass(frozen=True)
class Usage:
    """Token counts as the server reported them (zeros when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_any(cls, usage: Any) -> "Usage":
        """Accept an SDK usage object, a mapping, a :class:`Usage` or ``None``."""
        if usage is None:
            return cls()
        if isinstance(usage, Usage):
            return usage
        get = usage.get if isinstance(usage, Mapping) else (lambda k, d=None: getattr(usage, k, d))
        prompt = int(get("prompt_tokens", 0) or 0)
        completion = int(get("completion_tokens", 0) or 0)
        total = int(get("total_tokens", 0) or 0) or prompt + completion
        return cls(prompt, completion, total)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class TeacherReply:
    """One normalised teacher reply.

    ``thinking`` is the chain of thought (``None`` when the teacher gave none),
    ``answer`` the rest of the reply with the thinking removed, ``raw`` the
    message content exactly as the server sent it.
    """

    thinking: str | None
    answer: str
    raw: str
    finish_reason: str | None
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    model: str | None = None
    first_token_s: float | None = None
    """Time to the first streamed token (streaming only)."""

    @property
    def truncated(self) -> bool:
        """True when the server stopped because of the token limit."""
        return self.finish_reason == "length"

    @property
    def boxed(self) -> str | None:
        r"""The last ``\boxed{...}`` of the answer, if any."""
        return extract_boxed(self.answer)

    def to_dict(self, *, include_model: bool = True) -> dict[str, Any]:
        """The ``reply`` object of a sample row (``model`` is a row field, so it can be left out)."""
        data: dict[str, Any] = {
            "thinking": self.thinking,
            "answer": self.answer,
            "raw": self.raw,
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_dict(),
            "latency_s": round(self.latency_s, 4),
        }
        if self.first_token_s is not None:
            data["first_token_s"] = round(self.first_token_s, 4)
        if include_model:
            data["model"] = self.model
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, model: str | None = None) -> "TeacherReply":
        """Inverse of :meth:`to_dict` (used by the disk cache)."""
        return cls(
            thinking=data.get("thinking"),
            answer=data.get("answer") or "",
            raw=data.get("raw") or "",
            finish_reason=data.get("finish_reason"),
            usage=Usage.from_any(data.get("usage")),
            latency_s=float(data.get("latency_s") or 0.0),
            model=data.get("model", model),
            first_token_s=data.get("first_token_s"),
        )


def normalize_reply(raw_message_text: str | None, reasoning_content: str | None,
                    finish_reason: str | None, usage: Any, latency: float,
                    model: str | None, *, first_token_s: float | None = None) -> TeacherReply:
    """Build a :class:`TeacherReply` from the pieces every endpoint returns.

    The one place where thinking is separated from the answer: a non-empty
    ``reasoning_content`` is the thinking; an inline ``<think>`` block in the
    content is thinking too (both are joined if a server sends both). The answer
    is the content with any think block removed.
    """
    raw = raw_message_text or ""
    parsed = split_thinking(raw)
    inline = parsed.thinking
    separate = (reasoning_content or "").strip() or None
    if separate and inline:
        thinking: str | None = f"{separate}\n\n{inline}"
    else:
        thinking = separate or inline
    return TeacherReply(
        thinking=thinking,
        answer=parsed.answer,
        raw=raw,
        finish_reason=finish_reason,
        usage=Usage.from_any(usage),
        latency_s=float(latency),
        model=model,
        first_token_s=first_token_s,
    )


def _reasoning_of(obj: Any) -> str | None:
    """``reasoning_content`` (DeepSeek) or ``reasoning`` (vLLM, OpenRouter) of a message or delta."""
    if obj is None:
        return None
    for name in ("reasoning_content", "reasoning"):
        value = getattr(obj, name, None)
        if value is None:
            extra = getattr(obj, "model_extra", None) or {}
            value = extra.get(name)
        if isinstance(value, str):
            return value
    return None


class MalformedReplyError(ValueError):
    """The server answered 200 but the body is not a usable chat completion."""


def reply_from_completion(completion: Any, latency: float, model: str | None = None) -> TeacherReply:
    """Normalise a non-streamed ``ChatCompletion``; raise :class:`MalformedReplyError` if unusable."""
    choices = getattr(completion, "choices", None)
    if not choices:
        raise MalformedReplyError(
            f"the server answered without any choices (body type {type(completion).__name__})")
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None:
        raise MalformedReplyError("the server's first choice has no message")
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise MalformedReplyError(f"message content is {type(content).__name__}, not text")
    return normalize_reply(content, _reasoning_of(message), getattr(choice, "finish_reason", None),
                           getattr(completion, "usage", None), latency,
                           getattr(completion, "model", None) or model)


# --------------------------------------------------------------------------- requests


def check_messages(messages: Messages) -> list[dict[str, Any]]:
    """Validate a chat and return it as a list of dicts; a plain string becomes one user turn."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts "
                         f"(or a plain string), got {type(messages).__name__}")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', "
                             f"got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}]['role'] must be one of {sorted(_ROLES)}, got {role!r}")
        if not isinstance(content, (str, list)):
            raise ValueError(f"messages[{i}]['content'] must be text, got {type(content).__name__}")
        out.append(dict(message))
    return out


def build_request(endpoint: TeacherEndpoint, messages: Messages, *, temperature: float = 0.0,
                  max_tokens: int | None = None, top_p: float | None = None, seed: int | None = None,
                  extra: Mapping[str, Any] | None = None,
                  thinking_budget: int | None = None) -> dict[str, Any]:
    """Keyword arguments for ``client.chat.completions.create`` (no secrets in them).

    ``extra`` goes to ``extra_body``: server-specific options such as
    ``{"top_k": 20}`` or ``{"enable_thinking": False}``. ``max_tokens=None`` takes the
    model's default (:func:`~helpers.teacher.quirks.default_max_tokens`: 8192 for an
    R1-style reasoner). The request is shaped for the endpoint's API
    (:func:`~helpers.teacher.quirks.shape_request`): ``max_completion_tokens`` for
    OpenAI reasoning models, rejected parameters left out, a thinking budget where
    the API takes one (``thinking_budget``, else 3/4 of the limit).
    """
    if max_tokens is None:
        max_tokens = default_max_tokens(endpoint)
    if not 0.0 <= float(temperature) <= 2.0:
        raise ValueError(f"temperature must be between 0 and 2, got {temperature}")
    if int(max_tokens) < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    kwargs: dict[str, Any] = {
        "model": endpoint.model,
        "messages": check_messages(messages),
        "temperature": float(temperature),
        "max_tokens": int(max_tokens),
    }
    if top_p is not None:
        kwargs["top_p"] = float(top_p)
    if seed is not None:
        kwargs["seed"] = int(seed)
    if extra:
        kwargs["extra_body"] = dict(extra)
    return shape_request(endpoint, kwargs, budget=thinking_budget)


# --------------------------------------------------------------------------- errors


_TIMEOUTS = (openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)
"""asyncio.TimeoutError is the builtin TimeoutError only from Python 3.11 on."""


@dataclass(frozen=True)
class ErrorInfo:
    """How the engine should treat one failed request."""

    message: str
    """Human-readable and masked: safe to print and to store in a sample row."""
    retryable: bool
    fatal: bool = False
    """The endpoint as a whole is unusable (wrong key, wrong model or URL): stop the run."""
    status: int | None = None
    retry_after: float | None = None
    """Seconds the server asked us to wait (``Retry-After``), when it said so."""
    unreachable: bool = False
    """No connection at all (refused, DNS, reset): the server is down or the URL is wrong."""


def _retry_after(headers: Any) -> float | None:
    """Parse ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
    except Exception:  # noqa: BLE001 - odd header containers
        return None
    if value is None:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _server_message(exc: openai.APIStatusError) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return getattr(exc, "message", None) or str(exc)


def classify_error(exc: BaseException, endpoint: TeacherEndpoint | None = None,
                   timeout_s: float | None = None) -> ErrorInfo:
    """Decide whether a failed request is worth retrying, and describe it safely.

    Retryable: HTTP 408, 409, 429 and 5xx, timeouts, connection errors (marked
    ``unreachable``: the engine stops after a few in a row) and malformed bodies.
    Not retryable: other 4xx (400, 422 ...). Fatal for the whole run: 401 (wrong
    key), 403 (no access) and 404 (wrong model or URL).
    """
    where = f" from {endpoint.base_url}" if endpoint else ""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _server_message(exc)
        retry_after = _retry_after(getattr(exc.response, "headers", None))
        if status == 401:
            key = endpoint.api_key.masked() if endpoint else "****"
            message = (f"HTTP 401{where}: the teacher rejected the API key (key {key}). Check "
                       f"TEACHER_API_KEY for this endpoint. Server said: {detail}")
            return ErrorInfo(mask_secrets(message), retryable=False, fatal=True, status=status)
        if status == 403:
            message = (f"HTTP 403{where}: this key has no access to the model or the endpoint. "
                       f"Server said: {detail}")
            return ErrorInfo(mask_secrets(message), retryable=False, fatal=True, status=status)
        if status == 404:
            model = f" {endpoint.model!r}" if endpoint else ""
            message = (f"HTTP 404{where}: the model{model} or the /chat/completions route does not "
                       f"exist there (check TEACHER_MODEL and TEACHER_BASE_URL, which usually ends "
                       f"in /v1). Server said: {detail}")
            return ErrorInfo(mask_secrets(message), retryable=False, fatal=True, status=status)
        retryable = status in (408, 409, 429) or status >= 500
        kind = "rate limited" if status == 429 else ("server error" if status >= 500 else "rejected")
        message = f"HTTP {status}{where} ({kind}): {detail}"
        return ErrorInfo(mask_secrets(message), retryable=retryable, status=status,
                         retry_after=retry_after)
    if isinstance(exc, _TIMEOUTS):
        limit = f" after {timeout_s:g} s" if timeout_s else ""
        return ErrorInfo(mask_secrets(f"request timed out{limit}{where}"), retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return ErrorInfo(mask_secrets(f"could not connect{where}: {cause}"), retryable=True, unreachable=True)
    if isinstance(exc, (openai.APIResponseValidationError, MalformedReplyError, json.JSONDecodeError)):
        return ErrorInfo(mask_secrets(f"malformed reply{where}: {exc}"), retryable=True)
    return ErrorInfo(mask_secrets(f"unexpected error{where}: {type(exc).__name__}: {exc}"),
                     retryable=False)


_CALL_ERRORS = (openai.OpenAIError, MalformedReplyError, json.JSONDecodeError, *_TIMEOUTS)
"""Failures of the call itself; they become a masked :class:`TeacherError` (bugs propagate)."""


class TeacherError(RuntimeError):
    """A teacher call failed; the message is masked and says what to do."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info
        self.status = info.status
        self.retryable = info.retryable


def reply_text(item: "TeacherReply | str | BaseException | None") -> tuple[str | None, str]:
    """``(text, error)`` of one answer of a batch call: a reply's raw text, or ``None`` and why it failed.

    Stages that take a batch chat function accept a :class:`TeacherReply`, a plain
    string (handy in tests and exercises) or an exception for a failed call. The text is
    the message content as sent: thinking that came in ``reasoning_content`` is not in it
    (stages parse answers and verdicts); it stays in :attr:`TeacherReply.thinking`.
    """
    if isinstance(item, TeacherReply):
        return item.raw, ""
    if isinstance(item, str):
        return item, ""
    if isinstance(item, BaseException):
        return None, f"{type(item).__name__}: {item}" if not isinstance(item, TeacherError) else str(item)
    return None, "no reply"


# --------------------------------------------------------------------------- sync calls


def _client(endpoint: TeacherEndpoint, timeout: float, max_retries: int) -> openai.OpenAI:
    return openai.OpenAI(**endpoint.client_kwargs(), timeout=timeout, max_retries=max_retries)


def _create(client: openai.OpenAI, endpoint: TeacherEndpoint, kwargs: dict[str, Any]) -> Any:
    """``chat.completions.create``, sent again (up to 3 times) with the parameter a 400 names as unsupported."""
    for _ in range(3):
        try:
            return client.chat.completions.create(**kwargs)
        except openai.BadRequestError as exc:
            adapted = adapt_to_error(endpoint, kwargs, exc)
            if adapted is None:
                raise
            kwargs.clear()
            kwargs.update(adapted)
    return client.chat.completions.create(**kwargs)


def chat(endpoint: TeacherEndpoint, messages: Messages, *, temperature: float = 0.0,
         max_tokens: int | None = None, top_p: float | None = None, seed: int | None = None,
         extra: Mapping[str, Any] | None = None, timeout: float = 300.0,
         max_retries: int = 2) -> TeacherReply:
    """Send one chat and wait for the whole reply.

    ``messages`` is a list of ``{"role", "content"}`` dicts or a plain user string.
    ``max_retries`` is the SDK's own retry count for 429/5xx (use the batch engine
    for bulk work). A 400 naming an unsupported parameter is adapted to once
    (:func:`~helpers.teacher.quirks.adapt_request`); an API that thinks only when
    streamed is streamed. Raises :class:`TeacherError` with a masked, explanatory message.
    """
    kwargs = build_request(endpoint, messages, temperature=temperature, max_tokens=max_tokens,
                           top_p=top_p, seed=seed, extra=extra)
    start = time.perf_counter()
    try:
        with _client(endpoint, timeout, max_retries) as client:
            completion = _create(client, endpoint, kwargs)
            if not kwargs.get("stream"):
                return reply_from_completion(completion, time.perf_counter() - start, endpoint.model)
            assembler = StreamAssembler(None)
            with completion:
                for chunk in completion:
                    assembler.feed(chunk)
            return assembler.reply(start, time.perf_counter(), endpoint.model)
    except _CALL_ERRORS as exc:
        raise TeacherError(classify_error(exc, endpoint, timeout)) from None


def print_delta(delta: str, kind: DeltaKind) -> None:
    """An ``on_token`` callback that prints the stream live (thinking in grey)."""
    if kind == "reasoning":
        print(f"\x1b[90m{delta}\x1b[0m", end="", flush=True)
    else:
        print(delta, end="", flush=True)


class StreamAssembler:
    """Collects stream chunks (sync or async stream alike) into one :class:`TeacherReply`."""

    def __init__(self, on_token: Callable[[str, DeltaKind], None] | None) -> None:
        self.on_token = on_token
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.model: str | None = None
        self.first_token_at: float | None = None

    def feed(self, chunk: Any) -> None:
        self.model = getattr(chunk, "model", None) or self.model
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            if getattr(choice, "index", 0) not in (0, None):
                continue
            delta = getattr(choice, "delta", None)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            if delta is None:
                continue
            for kind, text in (("reasoning", _reasoning_of(delta)), ("content", delta.content)):
                if text:
                    if self.first_token_at is None:
                        self.first_token_at = time.perf_counter()
                    (self.reasoning if kind == "reasoning" else self.content).append(text)
                    if self.on_token is not None:
                        self.on_token(text, kind)  # type: ignore[arg-type]

    def reply(self, start: float, end: float, model: str | None) -> TeacherReply:
        """The assembled reply, normalised exactly like a non-streamed one (times from ``perf_counter``)."""
        first = None if self.first_token_at is None else self.first_token_at - start
        return normalize_reply("".join(self.content), "".join(self.reasoning) or None, self.finish_reason,
                               self.usage, end - start, self.model or model, first_token_s=first)


def stream_chat(endpoint: TeacherEndpoint, messages: Messages, *, temperature: float = 0.0,
                max_tokens: int | None = None, top_p: float | None = None, seed: int | None = None,
                extra: Mapping[str, Any] | None = None, timeout: float = 300.0,
                max_retries: int = 2, include_usage: bool = True,
                on_token: Callable[[str, DeltaKind], None] | None = None) -> TeacherReply:
    """Like :func:`chat` but streamed: ``on_token(delta, kind)`` sees every piece as it arrives.

    ``kind`` is ``"reasoning"`` for a separate reasoning field and ``"content"``
    for the message text (which may itself contain an inline ``<think>`` block).
    Pass :func:`print_delta` to watch the answer being written. The assembled
    reply is normalised exactly like a non-streamed one. ``include_usage`` asks
    the server for token counts at the end of the stream; a server that rejects
    ``stream_options`` with a 400 is asked again without it (usage then reads 0).
    """
    kwargs = build_request(endpoint, messages, temperature=temperature, max_tokens=max_tokens,
                           top_p=top_p, seed=seed, extra=extra)
    kwargs["stream"] = True
    if include_usage:
        kwargs["stream_options"] = {"include_usage": True}
    assembler = StreamAssembler(on_token)
    start = time.perf_counter()
    try:
        with _client(endpoint, timeout, max_retries) as client:
            try:
                stream = _create(client, endpoint, kwargs)
            except openai.BadRequestError:
                if "stream_options" not in kwargs:
                    raise
                # Some servers reject stream_options: ask again without usage (a 400 costs nothing).
                del kwargs["stream_options"]
                stream = client.chat.completions.create(**kwargs)
            with stream:
                for chunk in stream:
                    assembler.feed(chunk)
    except _CALL_ERRORS as exc:
        raise TeacherError(classify_error(exc, endpoint, timeout)) from None
    return assembler.reply(start, time.perf_counter(), endpoint.model)
