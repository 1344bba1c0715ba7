"""API quirks, thinking budgets, cut-off replies and an unreachable teacher (helpers.teacher.quirks + engine).

Everything runs against the fake OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py),
which can answer like OpenAI's reasoning models (400 for ``max_tokens`` and ``temperature``).
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai import FakeOpenAI  # noqa: E402

from helpers.core.config import TeacherEndpoint  # noqa: E402
from helpers.teacher import quirks  # noqa: E402
from helpers.teacher.client import build_request, chat  # noqa: E402
from helpers.teacher.engine import GenerationAborted, GenerationConfig, ask_many, generate  # noqa: E402
from helpers.teacher.quirks import (  # noqa: E402
    adapt_request,
    default_max_tokens,
    forget_adaptations,
    quirks_for,
    rejected_parameter,
    shape_request,
)
from helpers.teacher.samples import load_samples  # noqa: E402

QUIRK_ENV = ("TEACHER_TOKEN_PARAM", "TEACHER_DROP_PARAMS", "TEACHER_MAX_TOKENS", "TEACHER_THINKING_BUDGET")


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch):
    for name in QUIRK_ENV:
        monkeypatch.delenv(name, raising=False)
    forget_adaptations()
    yield
    forget_adaptations()


def endpoint(model: str, base_url: str = "https://api.example.com/v1") -> TeacherEndpoint:
    return TeacherEndpoint(base_url=base_url, model=model)


def config_for(server: FakeOpenAI, model: str = "fake-teacher", **overrides: Any) -> GenerationConfig:
    base: dict[str, Any] = dict(endpoint=endpoint(model, server.base_url), max_tokens=32, concurrency=1,
                                max_attempts=3, timeout_s=5.0, backoff_base_s=0.01, backoff_max_s=0.02,
                                progress=False)
    base.update(overrides)
    return GenerationConfig(**base)


def prompts(*texts: str) -> list[dict[str, Any]]:
    return [{"id": f"p{i}", "messages": [{"role": "user", "content": text}]} for i, text in enumerate(texts)]


# --------------------------------------------------------------------------- the quirks file and the environment


def test_the_quirks_file_knows_reasoning_models() -> None:
    o3 = quirks_for(endpoint("o3-mini"))
    assert o3.token_param == "max_completion_tokens" and {"temperature", "top_p"} <= o3.drop and o3.reasoning
    assert quirks_for(endpoint("openai/o1")).token_param == "max_completion_tokens"
    assert quirks_for(endpoint("gpt-5-mini")).token_param == "max_completion_tokens"
    for plain in ("gpt-5-chat-latest", "gpt-4o", "deepseek-chat", "local-teacher", "Qwen/Qwen3-8B-Instruct-2507",
                  "foo1-model"):
        assert quirks_for(endpoint(plain)) == quirks.ApiQuirks(), plain
    for reasoner in ("deepseek-reasoner", "deepseek-ai/DeepSeek-R1", "DeepSeek-R1-Distill-Qwen-7B", "qwq-32b",
                     "Qwen/Qwen3-8B", "qwen3-235b-a22b-thinking-2507"):
        found = quirks_for(endpoint(reasoner))
        assert found.reasoning and found.max_tokens == 8192 and found.token_param == "max_tokens", reasoner
        assert default_max_tokens(endpoint(reasoner)) == 8192
    assert default_max_tokens(endpoint("gpt-4o")) == 512
    dash = quirks_for(endpoint("qwen3-32b", "https://dashscope.aliyuncs.com/compatible-mode/v1"))
    assert dash.stream and dash.extra_body == {"enable_thinking": True, "thinking_budget": "$thinking_budget"}
    assert not quirks_for(endpoint("qwen3-32b", "http://localhost:8000/v1")).stream  # vLLM: no DashScope fields


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEACHER_TOKEN_PARAM", "max_completion_tokens")
    monkeypatch.setenv("TEACHER_DROP_PARAMS", "top_p, seed")
    monkeypatch.setenv("TEACHER_MAX_TOKENS", "4096")
    found = quirks_for(endpoint("my-private-model"))
    assert found.token_param == "max_completion_tokens" and found.drop == {"top_p", "seed"}
    assert default_max_tokens(endpoint("deepseek-reasoner")) == 4096  # the environment beats the file
    request = build_request(endpoint("my-private-model"), "hi", top_p=0.9, seed=1)
    assert request["max_completion_tokens"] == 4096 and "top_p" not in request and "seed" not in request
    monkeypatch.setenv("TEACHER_TOKEN_PARAM", "max_length")
    with pytest.raises(ValueError, match="TEACHER_TOKEN_PARAM"):
        quirks_for(endpoint("x"))
    monkeypatch.delenv("TEACHER_TOKEN_PARAM")
    monkeypatch.setenv("TEACHER_MAX_TOKENS", "lots")
    with pytest.raises(ValueError, match="TEACHER_MAX_TOKENS"):
        default_max_tokens(endpoint("x"))


def test_requests_are_shaped_for_the_api() -> None:
    o3 = build_request(endpoint("o3-mini"), "hi", temperature=0.7, max_tokens=100, top_p=0.9)
    assert o3["max_completion_tokens"] == 100
    assert not {"max_tokens", "temperature", "top_p"} & set(o3)
    plain = build_request(endpoint("gpt-4o"), "hi", temperature=0.7, max_tokens=100, top_p=0.9)
    assert plain["max_tokens"] == 100 and plain["temperature"] == 0.7 and "stream" not in plain
    assert build_request(endpoint("deepseek-reasoner"), "hi")["max_tokens"] == 8192  # the thinking budget default

    dash = endpoint("qwen3-32b", "https://dashscope.aliyuncs.com/compatible-mode/v1")
    shaped = build_request(dash, "hi", max_tokens=8192)
    assert shaped["extra_body"] == {"enable_thinking": True, "thinking_budget": 6144}
    assert shaped["stream"] is True and shaped["stream_options"] == {"include_usage": True}
    assert shape_request(dash, shaped) == shaped  # idempotent
    mine = build_request(dash, "hi", max_tokens=8192, thinking_budget=1000, extra={"enable_thinking": False})
    assert mine["extra_body"] == {"enable_thinking": False, "thinking_budget": 1000}  # the caller's own wins


def test_the_rejected_parameter_is_read_from_the_error() -> None:
    request = {"model": "m", "messages": [], "max_tokens": 5, "temperature": 0.0, "top_p": 1.0, "seed": 3,
               "extra_body": {"thinking_budget": 10}}
    said = {
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' "
        "instead.": "max_tokens",
        "Unsupported value: 'temperature' does not support 0.0 with this model.": "temperature",
        "top_p is not supported for this model": "top_p",
        "Unrecognized request argument supplied: seed": "seed",
        "unknown field: thinking_budget": "thinking_budget",
    }
    for message, name in said.items():
        assert rejected_parameter(request, 400, {"message": message}) == name, message
        assert rejected_parameter(request, 400, {"error": {"message": message}}) == name
    assert rejected_parameter(request, 400, {"message": "x", "param": "top_p"}) == "top_p"
    assert rejected_parameter(request, 400, "This model's maximum context length is exceeded") is None
    assert rejected_parameter(request, 500, {"message": "Unsupported parameter: 'top_p'"}) is None
    assert rejected_parameter(request, 400, {"message": "'messages' is not supported"}) is None  # never dropped

    where = endpoint("mystery")
    fixed = adapt_request(where, request, 400, {"message": "Unsupported parameter: 'max_tokens'"})
    assert fixed is not None and fixed["max_completion_tokens"] == 5 and "max_tokens" not in fixed
    assert quirks_for(where).token_param == "max_completion_tokens" and "learned" in quirks_for(where).rules
    # the server rejects the new name too: no ping-pong
    assert adapt_request(where, fixed, 400, {"message": "Unsupported parameter: 'max_completion_tokens'"}) is None
    fixed = adapt_request(where, request, 400, {"message": "unknown field: thinking_budget"})
    assert fixed is not None and fixed["extra_body"] == {}
    assert shape_request(where, {"model": "m", "messages": [], "extra_body": {"thinking_budget": 1}}
                         )["extra_body"] == {}


# --------------------------------------------------------------------------- a 400 is adapted to, once per endpoint


def test_engine_adapts_to_an_unknown_reasoning_model(tmp_path: Path) -> None:
    with FakeOpenAI(unsupported=frozenset({"max_tokens", "temperature", "top_p"})) as server:
        config = config_for(server, "mystery-model")
        summary = generate(prompts("a", "b", "c"), tmp_path / "s.jsonl", config)
        assert summary.counts == {"ok": 3} and summary.retries == 0
        # the first sample learns three things (3 x 400, then ok); the others are right at once
        assert server.total_requests == 6
        last = server.bodies[-1]
        assert last["max_completion_tokens"] == 32 and not {"max_tokens", "temperature", "top_p"} & set(last)
        rows = {r["prompt_id"]: r for r in load_samples(tmp_path / "s.jsonl")}
        assert rows["p0"]["attempts"] == 4 and rows["p1"]["attempts"] == 1
        assert rows["p0"]["params"]["temperature"] == 0.0  # what was asked for, still part of the key

        server.reset()  # the sync client uses what the engine learned: one request
        assert chat(config.endpoint, "d [[answer:4]]", max_tokens=16).boxed == "4"
        assert server.total_requests == 1

        forget_adaptations()  # and adapts by itself
        server.reset()
        assert chat(config.endpoint, "e [[answer:5]]", max_tokens=16, max_retries=0).boxed == "5"
        assert server.total_requests == 3  # max_tokens, temperature, then the reply (chat sends no top_p)


def test_known_reasoning_models_are_shaped_before_the_first_request(tmp_path: Path) -> None:
    with FakeOpenAI(unsupported=frozenset({"max_tokens", "temperature", "top_p"})) as server:
        summary = generate(prompts("a", "b"), tmp_path / "s.jsonl", config_for(server, "o4-mini"))
        assert summary.counts == {"ok": 2} and server.total_requests == 2


# --------------------------------------------------------------------------- cut-off replies


def test_a_cut_off_reply_is_asked_again_with_a_larger_limit(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    with FakeOpenAI() as server:
        summary = generate(prompts("fits at 64 [[fits:64]]", "needs more [[fits:1000]]", "short"), out,
                           config_for(server))
        assert summary.counts == {"ok": 2, "truncated": 1} and summary.extended == 2
        limits = [(b["messages"][0]["content"].split()[0], b["max_tokens"]) for b in server.bodies]
        assert sorted(limits) == sorted([("fits", 32), ("fits", 64), ("needs", 32), ("needs", 64), ("short", 32)])
        rows = {r["prompt_id"]: r for r in load_samples(out, statuses=None)}
        assert rows["p0"]["status"] == "ok" and rows["p0"]["reply"]["finish_reason"] == "stop"
        assert rows["p0"]["max_tokens_used"] == 64 and rows["p0"]["params"]["max_tokens"] == 32
        assert rows["p0"]["attempts"] == 2 and rows["p2"]["max_tokens_used"] == 32
        assert rows["p1"]["status"] == "truncated" and rows["p1"]["reply"]["finish_reason"] == "length"
        assert "cut-off replies were asked again" in str(summary)
        # the tokens of the discarded cut-off replies are paid for, so they are counted
        assert summary.completion_tokens >= 32 + 32 + 64

        server.reset()  # truncated counts as finished: a rerun asks nothing
        assert generate(prompts("fits at 64 [[fits:64]]", "needs more [[fits:1000]]", "short"), out,
                        config_for(server)).already_done == 3
        assert server.total_requests == 0

        server.reset()
        generate(prompts("x [[fits:1000]]"), tmp_path / "off.jsonl", config_for(server, retry_truncated=False))
        assert server.total_requests == 1
        server.reset()
        generate(prompts("x [[fits:1000]]"), tmp_path / "cap.jsonl", config_for(server, max_tokens_cap=40))
        assert [b["max_tokens"] for b in server.bodies] == [32, 40]


def test_reasoning_teachers_get_a_thinking_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    where = "http://127.0.0.1:9/v1"
    reasoner = GenerationConfig(endpoint=endpoint("deepseek-reasoner", where))
    assert reasoner.max_tokens == 8192 and reasoner.longer_limit(8192) == 16384
    cut = GenerationConfig(endpoint=endpoint("deepseek-reasoner", where), max_tokens=2048)
    assert cut.max_tokens == 2048 and cut.longer_limit(2048) == 8192  # straight to the reasoning default
    plain = GenerationConfig(endpoint=endpoint("gpt-4o", where))
    assert plain.max_tokens == 512 and plain.longer_limit(512) == 1024 and plain.longer_limit(32768) is None
    local = GenerationConfig(endpoint=TeacherEndpoint(base_url=where, model="local-teacher", local=True))
    assert local.longer_limit(128) is None  # the course's own CPU server: no second, longer request
    monkeypatch.setenv("TEACHER_MAX_TOKENS", "3000")
    assert GenerationConfig(endpoint=endpoint("gpt-4o", where)).max_tokens == 3000
    assert GenerationConfig(endpoint=endpoint("gpt-4o", where), max_tokens=100).max_tokens == 100


def test_a_streamed_thinking_api_keeps_reasoning_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DashScope-style: thinking budget in the body, streamed, thinking in ``reasoning_content``."""
    rules = tmp_path / "quirks.yaml"
    rules.write_text("rules:\n  - name: streamed thinker\n    match: 'thinker'\n    reasoning: true\n"
                     "    max_tokens: 400\n    stream: true\n"
                     "    extra_body: {enable_thinking: true, thinking_budget: $thinking_budget}\n")
    monkeypatch.setattr(quirks, "QUIRKS_PATH", rules)
    with FakeOpenAI() as server:
        summary = generate(prompts("q [[reasoning]] [[answer:9]]"), tmp_path / "s.jsonl",
                           config_for(server, "fake-thinker", max_tokens=None))
        assert summary.counts == {"ok": 1}
        (body,) = server.bodies
        assert body["stream"] is True and body["enable_thinking"] is True
        assert body["max_tokens"] == 400 and body["thinking_budget"] == 300
        (row,) = load_samples(tmp_path / "s.jsonl")
        assert row["reply"]["thinking"] == "I add the numbers carefully and get 9."
        assert row["reply"]["answer"] == "The result is \\boxed{9}." and row["reply"]["usage"]["completion_tokens"] > 0
        server.reset()
        reply = chat(config_for(server, "fake-thinker").endpoint, "r [[reasoning]] [[answer:8]]")
        assert reply.thinking and reply.boxed == "8" and server.bodies[0]["stream"] is True


# --------------------------------------------------------------------------- a teacher that is not there


def _refused_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on: connections are refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_an_unreachable_teacher_stops_the_run(tmp_path: Path) -> None:
    url = _refused_url()
    config = GenerationConfig(endpoint=endpoint("fake-teacher", url), max_tokens=16, concurrency=1,
                              max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.02, progress=False)
    started = time.perf_counter()
    with pytest.raises(GenerationAborted, match="5 times in a row") as info:
        generate(prompts("a", "b", "c"), tmp_path / "s.jsonl", config)
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert url in message and "TEACHER_BASE_URL" in message and "python -m helpers serve" in message
    summary = info.value.summary
    assert summary.requests == 5 and summary.counts == {"error": 1} and summary.remaining == 3

    many = GenerationConfig(endpoint=endpoint("fake-teacher", url), max_tokens=16, concurrency=4,
                            max_attempts=10, max_connection_failures=3, backoff_base_s=0.01,
                            backoff_max_s=0.02, progress=False)
    with pytest.raises(GenerationAborted) as info:
        generate(prompts(*[f"q{i}" for i in range(20)]), tmp_path / "many.jsonl", many)
    assert info.value.summary.requests <= 3 + 4 - 1  # the limit, plus what was already in flight
    with pytest.raises(GenerationAborted, match="in a row"):
        ask_many([[{"role": "user", "content": "hi"}]], many, tmp_path / "ask.jsonl")
