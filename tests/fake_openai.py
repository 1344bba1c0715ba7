"""A fake OpenAI-compatible chat server for tests (stdlib only, 127.0.0.1, free port).

It answers ``POST /v1/chat/completions`` (plain and streaming) and misbehaves on
purpose, deterministically, when the LAST user message contains directives:

``[[429:k]]``       the first k requests with this exact body get HTTP 429 + ``Retry-After``
``[[500:k]]``       the first k requests get HTTP 500
``[[slow:k]]``      the first k requests sleep ``slow_s`` seconds before answering
``[[malformed:k]]`` the first k requests get HTTP 200 with a body that is not valid JSON
``[[badshape:k]]``  the first k requests get HTTP 200 with valid JSON but no ``choices``
``[[400]]``         every request gets HTTP 400 (a non-retryable client error)
``[[trunc]]``       the reply is cut: ``finish_reason`` is ``"length"`` and ``</think>`` is missing
``[[fits:N]]``      like ``[[trunc]]`` while the token limit is below N, a whole reply from N on
``[[reasoning]]``   the chain of thought comes in a separate ``reasoning_content`` field
``[[answer:X]]``    the boxed answer is X (default 7)

"The first k requests" are counted per request key: the SHA-256 of the canonical
JSON body, so two samples that differ in temperature are counted separately.
Everything the server sees is recorded (``counts``, ``arrivals``, ``bodies``) so
tests can assert how many requests each key cost.

Run it by hand with ``python tests/fake_openai.py`` to point a notebook at it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_DIRECTIVE = re.compile(r"\[\[(\w+)(?::([^\]]*))?\]\]")


def body_key(body: dict[str, Any]) -> str:
    """The key the fake counts requests by: SHA-256 of the canonical JSON body."""
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _last_user(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def _directives(body: dict[str, Any]) -> dict[str, str]:
    return {name: (arg or "") for name, arg in _DIRECTIVE.findall(_last_user(body))}


class FakeOpenAI:
    """A scripted OpenAI-compatible server running in a background thread.

    Parameters
    ----------
    api_key:
        When set, requests without ``Authorization: Bearer <api_key>`` get a 401
        whose message echoes the wrong key (as real providers partly do).
    delay_s:
        Seconds every request waits before answering (to keep requests in flight).
    slow_s:
        How long a ``[[slow]]`` request sleeps (longer than the client timeout).
    retry_after:
        The ``Retry-After`` header sent with 429s (seconds, as a string).
    reject_stream_options:
        Answer 400 to requests with ``stream_options`` (as some older servers do).
    unsupported:
        Parameters answered with OpenAI's reasoning-model 400s (``max_tokens``: "Unsupported
        parameter ... Use 'max_completion_tokens' instead"; ``temperature``: "Unsupported value").
    """

    def __init__(self, *, api_key: str | None = None, delay_s: float = 0.0, slow_s: float = 1.0,
                 retry_after: str = "0.05", model: str = "fake-teacher",
                 reject_stream_options: bool = False, unsupported: frozenset[str] = frozenset()) -> None:
        self.api_key = api_key
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.model = model
        self.reject_stream_options = reject_stream_options
        self.unsupported = frozenset(unsupported)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.prompt_counts: Counter[str] = Counter()
        """Requests per last-user-message text (handy when each prompt is unique)."""
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.all_arrivals: list[float] = []
        self.bodies: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.prompt_counts.clear()
            self.arrivals.clear()
            self.all_arrivals.clear()
            self.bodies.clear()

    @property
    def total_requests(self) -> int:
        with self.lock:
            return sum(self.counts.values())

    def snapshot(self) -> Counter[str]:
        """A copy of the per-body-key request counts."""
        with self.lock:
            return Counter(self.counts)

    def prompt_snapshot(self) -> Counter[str]:
        """A copy of the per-prompt-text request counts."""
        with self.lock:
            return Counter(self.prompt_counts)

    # ------------------------------------------------------------------ behaviour
    def record(self, body: dict[str, Any]) -> tuple[str, int]:
        key = body_key(body)
        now = time.monotonic()
        with self.lock:
            self.counts[key] += 1
            self.prompt_counts[_last_user(body)] += 1
            self.arrivals[key].append(now)
            self.all_arrivals.append(now)
            self.bodies.append(body)
            return key, self.counts[key]

    def completion(self, body: dict[str, Any], d: dict[str, str]) -> dict[str, Any]:
        answer = d.get("answer") or "7"
        thinking = f"I add the numbers carefully and get {answer}."
        limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        truncated = "trunc" in d or ("fits" in d and limit < int(d["fits"] or 0))
        if "reasoning" in d:
            reasoning, content = thinking, f"The result is \\boxed{{{answer}}}."
        elif truncated:
            reasoning, content = None, f"<think>{thinking} Then I check it again and"
        else:
            reasoning, content = None, f"<think>{thinking}</think>\n<answer>\\boxed{{{answer}}}</answer>"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = limit if truncated else len(
            ((reasoning or "") + " " + content).split())
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "length" if truncated else "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        return

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps({"error": {"message": message, "type": "fake_error", "code": status}})
        self._send(status, payload.encode(), headers)

    def _unsupported(self, param: str, value: Any) -> None:
        """OpenAI's 400 for a parameter a reasoning model does not take (o1, o3, gpt-5)."""
        if param == "max_tokens":
            message = ("Unsupported parameter: 'max_tokens' is not supported with this model. "
                       "Use 'max_completion_tokens' instead.")
            code = "unsupported_parameter"
        elif param == "temperature":
            message = (f"Unsupported value: 'temperature' does not support {value} with this model. "
                       "Only the default (1) value is supported.")
            code = "unsupported_value"
        else:
            message, code = f"Unsupported parameter: '{param}' is not supported with this model.", "unsupported_parameter"
        payload = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        self._send(400, json.dumps(payload).encode())

    def _authorised(self) -> bool:
        """Like real providers: a wrong or missing key gets a 401 that echoes it (secrets must be masked)."""
        fake = self.server_fake
        auth = self.headers.get("Authorization", "")
        if fake.api_key is not None and auth != f"Bearer {fake.api_key}":
            given = auth.removeprefix("Bearer ")
            self._error(401, f"Incorrect API key provided: {given}. You can find your key at ...")
            return False
        return True

    def do_GET(self) -> None:  # /v1/models, for clients that list models
        fake = self.server_fake
        if not self._authorised():
            return
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [
                {"id": fake.model, "object": "model", "owned_by": "fake"}]}).encode())
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._error(404, f"no route {self.path}")
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._error(400, "request body is not JSON")
            return
        _, n = fake.record(body)  # every request counts, rejected ones too
        if not self._authorised():
            return
        d = _directives(body)

        def first(name: str) -> bool:
            return name in d and n <= int(d[name] or 1)

        if fake.delay_s:
            time.sleep(fake.delay_s)
        rejected = sorted(p for p in fake.unsupported if p in body)
        if "400" in d:
            self._error(400, "This model's maximum context length is exceeded (fake 400).")
        elif rejected:
            self._unsupported(rejected[0], body[rejected[0]])
        elif fake.reject_stream_options and "stream_options" in body:
            self._error(400, "unknown field: stream_options")
        elif first("429"):
            self._error(429, "Rate limit reached (fake).", {"Retry-After": fake.retry_after})
        elif first("500"):
            self._error(500, "The server had an error (fake).")
        elif first("malformed"):
            self._send(200, b'{"id": "chatcmpl-fake", "choices": [{"index": 0, "mess')
        elif first("badshape"):
            self._send(200, json.dumps({"id": "chatcmpl-fake", "object": "chat.completion",
                                        "created": 0, "model": fake.model}).encode())
        else:
            if first("slow"):
                time.sleep(fake.slow_s)
            completion = fake.completion(body, d)
            if body.get("stream"):
                self._stream(body, completion)
            else:
                self._send(200, json.dumps(completion).encode())

    def _stream(self, body: dict[str, Any], completion: dict[str, Any]) -> None:
        """Server-sent events: reasoning deltas, content deltas, finish, usage, [DONE]."""
        choice = completion["choices"][0]
        message = choice["message"]
        base = {"id": completion["id"], "object": "chat.completion.chunk",
                "created": completion["created"], "model": completion["model"]}

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None,
                  choices: bool = True) -> bytes:
            data = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}]
                        if choices else [])
            if usage is not None:
                data["usage"] = usage
            return f"data: {json.dumps(data)}\n\n".encode()

        def pieces(text: str) -> list[str]:
            return re.findall(r"\S+\s*|\s+", text)

        events = [chunk({"role": "assistant", "content": ""})]
        for piece in pieces(message.get("reasoning_content") or ""):
            events.append(chunk({"reasoning_content": piece}))
        for piece in pieces(message["content"]):
            events.append(chunk({"content": piece}))
        events.append(chunk({}, finish=choice["finish_reason"]))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk({}, usage=completion["usage"], choices=False))
        events.append(b"data: [DONE]\n\n")
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for event in events:
                self.wfile.write(event)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


if __name__ == "__main__":  # pragma: no cover - manual use
    with FakeOpenAI() as server:
        print(f"fake OpenAI server at {server.base_url} (Ctrl+C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
