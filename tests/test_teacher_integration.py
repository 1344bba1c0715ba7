"""The teacher client and the batch engine against the REAL local teacher (swift deploy)."""

from __future__ import annotations

import pytest

from helpers.tasks.word_problems import word_problem_rows
from helpers.teacher.client import chat, stream_chat
from helpers.teacher.engine import GenerationConfig, generate
from helpers.teacher.samples import load_samples
from helpers.teacher.server import LocalServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher(student, settings):
    with LocalServer(student, settings=settings, max_batch_size=4) as server:
        yield server.endpoint


def test_chat_and_stream_agree_on_greedy_output(teacher):
    row = word_problem_rows("train", 1, seed=3, shots=3)[0]
    plain = chat(teacher, row["messages"], max_tokens=48)
    pieces: list[str] = []
    streamed = stream_chat(teacher, row["messages"], max_tokens=48, on_token=lambda d, k: pieces.append(d))
    assert plain.raw and plain.usage.completion_tokens > 0 and plain.latency_s > 0
    assert "".join(pieces) == streamed.raw
    assert streamed.raw == plain.raw  # greedy decoding is deterministic
    # 3-shot exemplars teach the format: the reply opens a <think> block, read back as thinking
    assert plain.raw.lstrip().startswith("<think>"), plain.raw
    assert plain.thinking and plain.thinking.strip() in plain.raw


def test_engine_on_real_teacher_then_resume(teacher, tmp_path):
    rows = word_problem_rows("train", 3, seed=5, shots=3)
    out = tmp_path / "samples.jsonl"
    config = GenerationConfig(endpoint=teacher, n_samples=2, max_tokens=48, concurrency=4,
                              cache_dir=tmp_path / "cache", progress=False)
    first = generate(rows, out, config)
    assert first.complete and first.requests == 6, first
    samples = load_samples(out)
    assert {(s["prompt_id"], s["sample_index"]) for s in samples} == {(r["id"], i) for r in rows for i in (0, 1)}
    for s in samples:
        assert s["status"] in ("ok", "truncated")
        assert s["reply"]["usage"]["completion_tokens"] > 0
        assert s["reference"] and s["meta"]["steps"] in (1, 2, 3)
        assert (s["status"] == "truncated") == (s["reply"]["finish_reason"] == "length")
    assert [s["params"]["temperature"] for s in samples if s["sample_index"] == 0] == [0.0] * 3
    second = generate(rows, out, config)
    assert second.requests == 0 and second.already_done == 6
