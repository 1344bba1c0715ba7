"""Tests of helpers.teacher.client against the fake OpenAI-compatible server (127.0.0.1 only)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai import FakeOpenAI  # noqa: E402

from helpers.core.config import Secret, TeacherEndpoint  # noqa: E402
from helpers.teacher.client import (
    TeacherError,
    TeacherReply,
    Usage,
    chat,
    check_messages,
    classify_error,
    normalize_reply,
    stream_chat,
)
from helpers.teacher.quirks import forget_adaptations  # noqa: E402

KEY = "sk-test-right-key-0123456789"


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture()
def endpoint(fake: FakeOpenAI) -> TeacherEndpoint:
    return TeacherEndpoint(base_url=fake.base_url, model="fake-teacher", api_key=Secret(KEY))


# --------------------------------------------------------------------------- normalize_reply


def test_normalize_inline_think() -> None:
    reply = normalize_reply("<think>2+2=4</think>\n\\boxed{4}", None, "stop",
                            {"prompt_tokens": 3, "completion_tokens": 5}, 0.5, "m")
    assert reply.thinking == "2+2=4"
    assert reply.answer == "\\boxed{4}"
    assert reply.raw == "<think>2+2=4</think>\n\\boxed{4}"
    assert reply.usage == Usage(3, 5, 8)  # total filled in when the server omits it
    assert reply.boxed == "4" and not reply.truncated


def test_normalize_reasoning_field_wins_and_joins_inline() -> None:
    reply = normalize_reply("The result is \\boxed{7}.", "  I add.  ", "stop", None, 0.1, "m")
    assert reply.thinking == "I add." and reply.answer == "The result is \\boxed{7}."
    both = normalize_reply("<think>inline</think>ans", "field", "stop", None, 0.1, "m")
    assert both.thinking == "field\n\ninline" and both.answer == "ans"
    assert reply.usage == Usage(0, 0, 0)


def test_reply_dict_round_trip_and_contract_keys() -> None:
    reply = normalize_reply("<think>a</think>b", None, "length", {"prompt_tokens": 1, "completion_tokens": 2,
                                                                 "total_tokens": 3}, 1.23456, "m")
    data = reply.to_dict(include_model=False)
    assert set(data) == {"thinking", "answer", "raw", "finish_reason", "usage", "latency_s"}
    assert data["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert reply.truncated
    assert TeacherReply.from_dict(reply.to_dict()) == TeacherReply(**{**reply.__dict__, "latency_s": 1.2346})


def test_check_messages_errors_are_clear() -> None:
    assert check_messages("hi") == [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="non-empty list"):
        check_messages([])
    with pytest.raises(ValueError, match=r"messages\[1\]\['role'\]"):
        check_messages([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])
    with pytest.raises(ValueError, match="must be text"):
        check_messages([{"role": "user", "content": None}])


# --------------------------------------------------------------------------- chat


def test_chat_inline_think(endpoint: TeacherEndpoint) -> None:
    reply = chat(endpoint, [{"role": "user", "content": "1+6? [[answer:7]]"}])
    assert reply.thinking == "I add the numbers carefully and get 7."
    assert reply.answer == "<answer>\\boxed{7}</answer>"
    assert reply.finish_reason == "stop" and not reply.truncated
    assert reply.usage.completion_tokens > 0 and reply.usage.total_tokens > reply.usage.completion_tokens
    assert reply.latency_s > 0 and reply.model == "fake-teacher"


def test_chat_reasoning_content_field(endpoint: TeacherEndpoint) -> None:
    reply = chat(endpoint, "what is 3+4? [[reasoning]] [[answer:7]]")
    assert reply.thinking == "I add the numbers carefully and get 7."
    assert reply.answer == "The result is \\boxed{7}."
    assert "<think>" not in reply.raw


def test_chat_length_is_truncated(endpoint: TeacherEndpoint) -> None:
    reply = chat(endpoint, "long one [[trunc]]", max_tokens=11)
    assert reply.truncated and reply.finish_reason == "length"
    assert reply.answer == ""  # the think block never closed
    assert reply.usage.completion_tokens == 11


def test_chat_sends_parameters(endpoint: TeacherEndpoint, fake: FakeOpenAI) -> None:
    chat(endpoint, "params please", temperature=0.7, max_tokens=33, top_p=0.9, seed=5, extra={"top_k": 20})
    body = fake.bodies[-1]
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["seed"], body["top_k"]) == (
        0.7, 33, 0.9, 5, 20)


def test_chat_wrong_key_is_masked(fake: FakeOpenAI) -> None:
    wrong = "sk-wrong-key-abcdefghijklmnop"
    bad = TeacherEndpoint(base_url=fake.base_url, model="fake-teacher", api_key=Secret(wrong))
    with pytest.raises(TeacherError) as info:
        chat(bad, "hi", max_retries=0)
    message = str(info.value)
    assert info.value.status == 401 and not info.value.retryable
    assert "API key" in message and "TEACHER_API_KEY" in message
    assert wrong not in message and wrong[3:] not in message  # the server echoed it; we hide it


def test_chat_non_retryable_and_rate_limit_errors(endpoint: TeacherEndpoint) -> None:
    with pytest.raises(TeacherError, match="HTTP 400") as info:
        chat(endpoint, "too long [[400]]", max_retries=0)
    assert not info.value.retryable
    with pytest.raises(TeacherError, match="HTTP 429") as info:
        chat(endpoint, "busy [[429:1]]", max_retries=0)
    assert info.value.retryable and info.value.info.retry_after == pytest.approx(0.05)


def test_chat_timeout_and_connection_errors(endpoint: TeacherEndpoint, fake: FakeOpenAI) -> None:
    with pytest.raises(TeacherError, match="timed out") as info:
        chat(endpoint, "slow please [[slow:1]]", timeout=0.2, max_retries=0)
    assert info.value.retryable
    nowhere = TeacherEndpoint(base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(TeacherError, match="could not connect"):
        chat(nowhere, "hi", timeout=2, max_retries=0)


def test_classify_error_on_plain_exceptions() -> None:
    assert classify_error(TimeoutError()).retryable
    info = classify_error(KeyError("boom"))
    assert not info.retryable and "KeyError" in info.message


# --------------------------------------------------------------------------- stream_chat


def test_stream_inline_think_collects_deltas(endpoint: TeacherEndpoint) -> None:
    seen: list[tuple[str, str]] = []
    reply = stream_chat(endpoint, "stream me [[answer:12]]", on_token=lambda d, k: seen.append((d, k)))
    assert len(seen) > 5 and {k for _, k in seen} == {"content"}
    assert "".join(d for d, _ in seen) == reply.raw
    assert reply.thinking == "I add the numbers carefully and get 12."
    assert reply.answer == "<answer>\\boxed{12}</answer>" and reply.boxed == "12"
    assert reply.usage.total_tokens > 0  # include_usage asked for the final usage chunk
    assert reply.first_token_s is not None and 0 <= reply.first_token_s <= reply.latency_s


def test_stream_reasoning_field(endpoint: TeacherEndpoint) -> None:
    seen: list[tuple[str, str]] = []
    reply = stream_chat(endpoint, "stream [[reasoning]]", on_token=lambda d, k: seen.append((d, k)))
    kinds = [k for _, k in seen]
    assert kinds[0] == "reasoning" and kinds[-1] == "content"
    assert "".join(d for d, k in seen if k == "reasoning") == "I add the numbers carefully and get 7."
    assert reply.thinking == "I add the numbers carefully and get 7."
    assert reply.answer == "The result is \\boxed{7}."
    # the same reply, non-streamed, normalises identically
    plain = chat(endpoint, "stream [[reasoning]]")
    assert (plain.thinking, plain.answer, plain.raw) == (reply.thinking, reply.answer, reply.raw)


def test_stream_truncated_and_without_usage(endpoint: TeacherEndpoint) -> None:
    reply = stream_chat(endpoint, "cut [[trunc]]", max_tokens=9, include_usage=False)
    assert reply.truncated and reply.answer == ""
    assert reply.usage == Usage(0, 0, 0)


def test_stream_falls_back_when_stream_options_are_rejected(endpoint: TeacherEndpoint,
                                                            fake: FakeOpenAI) -> None:
    fake.reject_stream_options = True
    try:
        before = fake.total_requests
        reply = stream_chat(endpoint, "old server [[answer:5]]", max_retries=0)
    finally:
        fake.reject_stream_options = False
        forget_adaptations()  # the fake's endpoint learned to leave stream_options out
    assert reply.boxed == "5" and reply.usage == Usage(0, 0, 0)
    assert fake.total_requests - before == 2
    assert "stream_options" not in fake.bodies[-1]
