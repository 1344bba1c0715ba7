"""A fake OpenAI Batch API for tests, in-process: an ``httpx2.MockTransport`` behind a real ``openai.OpenAI``.

Routes: ``POST /v1/files`` (multipart upload), ``POST /v1/batches``, ``GET /v1/batches/{id}``
and ``GET /v1/files/{id}/content``. A batch is ``validating`` when created, ``in_progress``
while polled, and ends (``finish``: completed, expired or failed) after ``polls`` retrievals.
Each request line is answered from the LAST user message's directives:

``[[fail]]``       an error line with HTTP 400
``[[expire]]``     no line at all when the batch expires (it never ran)
``[[trunc]]``      ``finish_reason`` ``"length"``
``[[reasoning]]``  the thinking comes in ``reasoning_content``
``[[answer:X]]``   the boxed answer is X (default 7)

``reject_max_tokens`` answers every body with ``max_tokens`` like OpenAI's reasoning models.
``crash_on_poll`` raises ``KeyboardInterrupt`` on the next retrieval (a killed notebook).
Every request is counted per route in ``calls``; uploaded files are in ``files``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

import httpx2
import openai

_DIRECTIVE = re.compile(r"\[\[(\w+)(?::([^\]]*))?\]\]")


class FakeBatchAPI:
    def __init__(self, *, polls: int = 2, finish: str = "completed", reject_max_tokens: bool = False) -> None:
        self.polls = polls
        self.finish = finish
        self.reject_max_tokens = reject_max_tokens
        self.crash_on_poll = False
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.polled: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(api_key="sk-fake-batch-key-0123", base_url="https://batch.example/v1", max_retries=0,
                             http_client=httpx2.Client(transport=httpx2.MockTransport(self.handle)))

    def uploaded_lines(self, file_id: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.files[file_id].decode().splitlines() if line.strip()]

    # ------------------------------------------------------------------ routes
    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path, method = request.url.path.rstrip("/"), request.method
        if method == "POST" and path.endswith("/files"):
            self.calls["upload"] += 1
            return self._json(self._upload(request))
        if method == "POST" and path.endswith("/batches"):
            self.calls["create"] += 1
            body = json.loads(request.read())
            batch_id = f"batch_{len(self.batches) + 1}"
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                "status": "validating", "created_at": 1, "metadata": body.get("metadata"),
                "output_file_id": None, "error_file_id": None,
                "request_counts": {"total": len(self.uploaded_lines(body["input_file_id"])), "completed": 0,
                                   "failed": 0}}
            return self._json(self.batches[batch_id])
        match = re.search(r"/batches/([^/]+)$", path)
        if method == "GET" and match:
            self.calls["retrieve"] += 1
            if self.crash_on_poll:
                self.crash_on_poll = False
                raise KeyboardInterrupt("the notebook was closed")
            batch = self.batches.get(match.group(1))
            if batch is None:
                return self._json({"error": {"message": "No batch found"}}, 404)
            self.polled[batch["id"]] += 1
            if batch["status"] not in ("completed", "expired", "failed"):
                batch["status"] = "in_progress"
                if self.polled[batch["id"]] >= self.polls:
                    self._finish(batch)
            return self._json(batch)
        match = re.search(r"/files/([^/]+)/content$", path)
        if method == "GET" and match:
            self.calls["download"] += 1
            return httpx2.Response(200, content=self.files[match.group(1)],
                                   headers={"content-type": "application/octet-stream"})
        return self._json({"error": {"message": f"no route {method} {path}"}}, 404)

    def _json(self, payload: Any, status: int = 200) -> httpx2.Response:
        return httpx2.Response(status, json=payload)

    def _upload(self, request: httpx2.Request) -> dict[str, Any]:
        raw = request.read()
        message = BytesParser(policy=email_policy).parsebytes(
            b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + raw)
        fields = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                  for part in message.iter_parts()}
        assert fields.get("purpose") == b"batch", fields.get("purpose")
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = fields["file"]
        return {"id": file_id, "object": "file", "bytes": len(fields["file"]), "created_at": 1,
                "filename": "input.jsonl", "purpose": "batch", "status": "processed"}

    def _finish(self, batch: dict[str, Any]) -> None:
        batch["status"] = self.finish
        if self.finish == "failed":
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "bad input file"}]}
            return
        output, errors = [], []
        for line in self.uploaded_lines(batch["input_file_id"]):
            body = line["body"]
            d = {name: arg for name, arg in _DIRECTIVE.findall(
                [m for m in body["messages"] if m["role"] == "user"][-1]["content"])}
            if self.finish == "expired" and "expire" in d:
                continue
            if self.reject_max_tokens and "max_tokens" in body:
                errors.append(self._error_line(line, "Unsupported parameter: 'max_tokens' is not supported with "
                                                     "this model. Use 'max_completion_tokens' instead.", "max_tokens"))
            elif "fail" in d:
                errors.append(self._error_line(line, "Invalid prompt (fake).", None))
            else:
                output.append({"id": "resp", "custom_id": line["custom_id"], "error": None,
                               "response": {"status_code": 200, "request_id": "req", "body": self._completion(body, d)}})
        for key, lines in (("output_file_id", output), ("error_file_id", errors)):
            if lines:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = "\n".join(json.dumps(x) for x in lines).encode()  # no final newline
                batch[key] = file_id
        batch["request_counts"].update(completed=len(output), failed=len(errors))

    @staticmethod
    def _error_line(line: dict[str, Any], message: str, param: str | None) -> dict[str, Any]:
        return {"id": "resp", "custom_id": line["custom_id"], "error": None,
                "response": {"status_code": 400, "request_id": "req", "body": {"error": {
                    "message": message, "type": "invalid_request_error", "param": param, "code": None}}}}

    @staticmethod
    def _completion(body: dict[str, Any], d: dict[str, str]) -> dict[str, Any]:
        answer = d.get("answer") or "7"
        thinking = f"I add the numbers carefully and get {answer}."
        message: dict[str, Any] = {"role": "assistant"}
        if "reasoning" in d:
            message.update(content=f"The result is \\boxed{{{answer}}}.", reasoning_content=thinking)
        elif "trunc" in d:
            message["content"] = f"<think>{thinking} Then I check it again and"
        else:
            message["content"] = f"<think>{thinking}</think>\n<answer>\\boxed{{{answer}}}</answer>"
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        return {"id": "chatcmpl-batch", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "length" if "trunc" in d else "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": limit if "trunc" in d else 12,
                          "total_tokens": 10 + (limit if "trunc" in d else 12)}}
