"""The Batch API path (helpers.teacher.batch_api) against an in-process fake Batch API.

The same jobs as the engine, the same rows and statuses, and a rerun after a crash
polls the recorded batch instead of submitting (and paying for) it again.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_batch_api import FakeBatchAPI  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402

from helpers.core.config import TeacherEndpoint  # noqa: E402
from helpers.core.jsonl import read_jsonl  # noqa: E402
from helpers.teacher.batch_api import files_dir, generate_batch, read_state, state_path  # noqa: E402
from helpers.teacher.client import TeacherError  # noqa: E402
from helpers.teacher.engine import GenerationConfig, generate  # noqa: E402
from helpers.teacher.quirks import forget_adaptations  # noqa: E402
from helpers.teacher.samples import load_samples  # noqa: E402

TEXTS = {"plain": "plain [[answer:3]]", "cut": "cut [[trunc]]", "bad": "bad [[fail]]",
         "thinker": "thinker [[reasoning]] [[answer:9]]"}


@pytest.fixture(autouse=True)
def _forget():
    forget_adaptations()
    yield
    forget_adaptations()


def prompt_rows(texts: dict[str, str]) -> list[dict[str, Any]]:
    return [{"id": pid, "messages": [{"role": "user", "content": text}], "question": text, "reference": "7",
             "task": "word_problem", "meta": {"steps": 1}} for pid, text in texts.items()]


def config_for(base_url: str = "https://batch.example/v1", model: str = "fake-teacher",
               **overrides: Any) -> GenerationConfig:
    base: dict[str, Any] = dict(endpoint=TeacherEndpoint(base_url=base_url, model=model), n_samples=2,
                                t_min=0.0, t_max=1.0, max_tokens=32, progress=False, backoff_base_s=0.01)
    base.update(overrides)
    return GenerationConfig(**base)


def test_a_batch_lands_in_the_samples_file_like_the_engine(tmp_path: Path) -> None:
    fake = FakeBatchAPI(polls=2)
    out = tmp_path / "samples.jsonl"
    with FakeOpenAI() as online:
        config = config_for(online.base_url)
        summary = generate_batch(prompt_rows(TEXTS), out, config, poll_s=0, client=fake.client())
        assert fake.calls["upload"] == 1 and fake.calls["create"] == 1 and fake.calls["retrieve"] == 2
        assert summary.counts == {"ok": 4, "truncated": 2, "error": 2} and summary.requests == 8
        assert summary.batch_id == "batch_1" and summary.batch_status == "completed"

        (lines,) = [fake.uploaded_lines(f) for f in fake.files if f == "file-1"]
        assert {line["url"] for line in lines} == {"/v1/chat/completions"} and len(lines) == 8
        assert lines[0]["custom_id"].startswith("plain#0#") and lines[0]["body"]["max_tokens"] == 32
        assert {line["body"]["temperature"] for line in lines} == {0.0, 1.0}

        rows = {(r["prompt_id"], r["sample_index"]): r for r in load_samples(out, statuses=None)}
        assert rows[("plain", 1)]["status"] == "ok" and rows[("plain", 1)]["reply"]["answer"].endswith(
            "\\boxed{3}</answer>")
        assert rows[("cut", 0)]["status"] == "truncated" and rows[("cut", 0)]["reply"]["finish_reason"] == "length"
        assert rows[("bad", 0)]["status"] == "error" and "HTTP 400" in rows[("bad", 0)]["error"]
        assert rows[("thinker", 0)]["reply"]["thinking"] == "I add the numbers carefully and get 9."
        assert rows[("thinker", 0)]["reply"]["answer"] == "The result is \\boxed{9}."
        state = read_state(out)
        assert state is not None and state["batch_id"] == "batch_1" and state["collected"] is True
        assert (files_dir(out) / "batch_1.output.jsonl").is_file()

        # the same rows as the engine writes: same keys, same request keys, so the engine resumes from them
        engine_out = tmp_path / "engine.jsonl"
        generate(prompt_rows(TEXTS), engine_out, config)
        engine_rows = {(r["prompt_id"], r["sample_index"]): r for r in load_samples(engine_out, statuses=None)}
        assert all(set(rows[k]) == set(engine_rows[k]) for k in rows)
        assert all(rows[k]["request_key"] == engine_rows[k]["request_key"] for k in rows)
        online.reset()
        again = generate(prompt_rows(TEXTS), out, config)  # the engine finishes what the batch left
        assert again.already_done == 6 and again.stale == 0 and again.counts == {"ok": 2}  # online, [[fail]] is fine
        assert online.prompt_snapshot().keys() == {TEXTS["bad"]}


def test_a_rerun_after_a_crash_polls_instead_of_submitting_again(tmp_path: Path) -> None:
    fake = FakeBatchAPI(polls=3)
    out = tmp_path / "samples.jsonl"
    config = config_for()
    fake.crash_on_poll = True
    with pytest.raises(KeyboardInterrupt):
        generate_batch(prompt_rows(TEXTS), out, config, poll_s=0, client=fake.client())
    state = read_state(out)
    assert state is not None and state["batch_id"] == "batch_1" and not state["collected"]
    assert len(state["input_hash"]) == 64 and state["requests"] == 8
    assert not out.exists() or not read_jsonl(out)

    waiting = generate_batch(prompt_rows(TEXTS), out, config, wait=False, client=fake.client())
    assert waiting.batch_status == "in_progress" and waiting.remaining == 8 and "still running" in str(waiting)

    done = generate_batch(prompt_rows(TEXTS), out, config, poll_s=0, client=fake.client())
    assert fake.calls["upload"] == 1 and fake.calls["create"] == 1  # nothing was submitted twice
    assert done.batch_id == "batch_1" and done.counts == {"ok": 4, "truncated": 2, "error": 2}
    assert done.requests == 0  # this call sent no new requests
    assert len(read_jsonl(out)) == 8

    before = dict(fake.calls)  # a collected batch is not collected again; the errors are resubmitted
    retry = generate_batch(prompt_rows(TEXTS), out, config, poll_s=0, client=fake.client())
    assert fake.calls["upload"] == before["upload"] + 1 and fake.calls["create"] == 2
    resent = fake.uploaded_lines(fake.batches["batch_2"]["input_file_id"])
    assert sorted(line["custom_id"].split("#")[0] for line in resent) == ["bad", "bad"]
    assert retry.already_done == 6 and retry.counts == {"error": 2}


def test_expired_and_failed_batches_give_error_rows(tmp_path: Path) -> None:
    texts = {"a": "a [[answer:1]]", "late": "late [[expire]]"}
    fake = FakeBatchAPI(polls=1, finish="expired")
    out = tmp_path / "samples.jsonl"
    summary = generate_batch(prompt_rows(texts), out, config_for(n_samples=1), poll_s=0, client=fake.client())
    rows = {r["prompt_id"]: r for r in load_samples(out, statuses=None)}
    assert summary.batch_status == "expired" and rows["a"]["status"] == "ok"
    assert rows["late"]["status"] == "error" and "expired: no result" in rows["late"]["error"]

    failed = FakeBatchAPI(polls=1, finish="failed")
    out = tmp_path / "failed.jsonl"
    summary = generate_batch(prompt_rows(texts), out, config_for(n_samples=1), poll_s=0, client=failed.client())
    assert summary.counts == {"error": 2} and "bad input file" in summary.error_examples[0]


def test_a_rejected_parameter_is_learned_for_the_next_batch(tmp_path: Path) -> None:
    fake = FakeBatchAPI(polls=1, reject_max_tokens=True)
    out = tmp_path / "samples.jsonl"
    config = config_for(model="mystery-reasoner-x", n_samples=1, max_tokens=64)
    first = generate_batch(prompt_rows({"a": "a"}), out, config, poll_s=0, client=fake.client())
    assert first.counts == {"error": 1} and "max_completion_tokens" in first.error_examples[0]
    second = generate_batch(prompt_rows({"a": "a"}), out, config, poll_s=0, client=fake.client())
    assert second.counts == {"ok": 1}
    (line,) = fake.uploaded_lines(fake.batches["batch_2"]["input_file_id"])
    assert line["body"]["max_completion_tokens"] == 64 and "max_tokens" not in line["body"]


def test_nothing_to_do_and_no_batch_api(tmp_path: Path) -> None:
    fake = FakeBatchAPI(polls=1)
    out = tmp_path / "samples.jsonl"
    generate_batch(prompt_rows({"a": "a"}), out, config_for(n_samples=1), poll_s=0, client=fake.client())
    calls = sum(fake.calls.values())
    again = generate_batch(prompt_rows({"a": "a"}), out, config_for(n_samples=1), poll_s=0, client=fake.client())
    assert sum(fake.calls.values()) == calls and again.already_done == 1 and again.batch_id is None
    assert state_path(out).name == "samples.batch.json"

    class NoBatches(FakeBatchAPI):
        def handle(self, request: Any) -> Any:
            return self._json({"error": {"message": "Not Found"}}, 404)

    with pytest.raises(TeacherError, match="no Batch API"):
        generate_batch(prompt_rows({"b": "b"}), tmp_path / "none.jsonl", config_for(n_samples=1),
                       client=NoBatches().client())


def test_the_generate_command_sends_a_batch_with_the_batch_flag(tmp_path: Path, monkeypatch, capsys) -> None:
    import helpers.teacher.batch_api as batch_api
    from helpers.core.jsonl import write_jsonl
    from helpers.course.cli import main

    fake = FakeBatchAPI(polls=1)
    client = fake.client()  # built before the patch: it is a real openai.OpenAI with a fake transport
    monkeypatch.setattr(batch_api.openai, "OpenAI", lambda **kwargs: client)
    prompts, out = tmp_path / "prompts.jsonl", tmp_path / "samples.jsonl"
    write_jsonl(prompt_rows({"plain": "plain [[answer:3]]"}), prompts)
    argv = ["generate", "--prompts", str(prompts), "--out", str(out), "--n", "1", "--batch", "--poll", "0",
            "--base-url", "https://batch.example/v1", "--model", "fake-teacher", "--no-progress", "--json"]
    assert main(argv) == 0
    assert fake.calls["create"] == 1 and read_state(out)["collected"] is True
    assert '"ok": 1' in capsys.readouterr().out
    assert main(argv) == 0 and fake.calls["create"] == 1, "a rerun submits nothing twice"
