"""Tests of the batch engine (helpers.teacher.engine) against a misbehaving fake server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai import FakeOpenAI, body_key  # noqa: E402

from helpers.core.config import REPO_ROOT, Secret, TeacherEndpoint  # noqa: E402
from helpers.course.cli import generate_main as cli_main
from helpers.teacher.engine import GenerationAborted, GenerationConfig, generate, temperature_schedule
from helpers.teacher.limits import RateLimiter, TokenBucket
from helpers.teacher.prices import PriceTable
from helpers.teacher.samples import load_prompts, load_samples, request_key

# --------------------------------------------------------------------------- fixtures & helpers


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI(slow_s=1.0) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake: FakeOpenAI):
    fake.reset()
    fake.delay_s = 0.0
    fake.retry_after = "0.05"
    yield


def endpoint_for(fake: FakeOpenAI, key: str = "") -> TeacherEndpoint:
    return TeacherEndpoint(base_url=fake.base_url, model="fake-teacher", api_key=Secret(key))


def config_for(fake: FakeOpenAI, **overrides: Any) -> GenerationConfig:
    base: dict[str, Any] = dict(endpoint=endpoint_for(fake), n_samples=1, max_tokens=32, concurrency=4,
                                max_attempts=4, timeout_s=0.3, backoff_base_s=0.01, backoff_max_s=0.05,
                                progress=False)
    base.update(overrides)
    return GenerationConfig(**base)


def prompt_rows(texts: dict[str, str]) -> list[dict[str, Any]]:
    return [{"id": pid, "messages": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": text}],
             "question": text, "reference": "7", "task": "word_problem", "meta": {"steps": 1}}
            for pid, text in texts.items()]


def raw_rows(path: Path) -> list[dict[str, Any]]:
    """Every line of the file, parsed (fails the test on a corrupt line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def requests_by(fake: FakeOpenAI) -> Counter[tuple[str, float]]:
    """Requests the server saw per (user text, temperature)."""
    return Counter((b["messages"][-1]["content"], b["temperature"]) for b in fake.bodies)


def assert_one_result_per_sample(path: Path, expected_keys: set[tuple[str, int]]) -> None:
    finished = Counter((r["prompt_id"], r["sample_index"]) for r in raw_rows(path)
                       if r["status"] in ("ok", "truncated"))
    assert set(finished) == expected_keys
    assert all(n == 1 for n in finished.values()), f"duplicated samples: {finished}"


# --------------------------------------------------------------------------- pure parts


def test_temperature_schedule() -> None:
    assert temperature_schedule(1) == [0.0]
    assert temperature_schedule(4, t_min=0.0, t_max=0.9) == [0.0, 0.3, 0.6, 0.9]
    assert temperature_schedule(3, temperatures=[0.7]) == [0.7, 0.7, 0.7]
    assert temperature_schedule(2, temperatures=[0.1, 0.8]) == [0.1, 0.8]
    with pytest.raises(ValueError, match="2 temperatures for 3 samples"):
        temperature_schedule(3, temperatures=[0.1, 0.8])
    with pytest.raises(ValueError, match="between 0 and 2"):
        temperature_schedule(2, t_max=3.0)


def test_load_prompts_validation(tmp_path: Path) -> None:
    good = tmp_path / "p.jsonl"
    good.write_text('{"id": "a", "messages": [{"role": "user", "content": "x"}]}\n\n', encoding="utf-8")
    assert load_prompts(good)[0]["id"] == "a"
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"id": "a", "messages": [{"role": "user", "content": "x"}]}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        load_prompts(bad_json)
    with pytest.raises(ValueError, match="duplicate prompt id 'a'"):
        load_prompts(prompt_rows({"a": "x"}) * 2)
    with pytest.raises(ValueError, match=r"id 'b'.*non-empty list"):
        load_prompts([{"id": "b", "messages": []}])
    with pytest.raises(ValueError, match="non-empty string 'id'"):
        load_prompts([{"messages": [{"role": "user", "content": "x"}]}])
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        load_prompts(tmp_path / "missing.jsonl")


def test_config_validation(fake: FakeOpenAI) -> None:
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        config_for(fake, concurrency=0)
    with pytest.raises(ValueError, match="rpm must be positive"):
        config_for(fake, rpm=0)
    with pytest.raises(TypeError, match="TeacherEndpoint"):
        GenerationConfig(endpoint="http://x")  # type: ignore[arg-type]


def test_price_table() -> None:
    prices = PriceTable.load()
    assert prices.lookup("deepseek-reasoner") is not None
    assert prices.lookup("deepseek-ai/DeepSeek-R1") == prices.lookup("deepseek-r1")  # path part matched
    assert prices.lookup("gpt-4o-mini-2024-07-18") is not None
    assert prices.lookup("SmolLM2-135M-Instruct") == (0.0, 0.0)
    assert prices.lookup("no-such-model") is None
    table = PriceTable([{"pattern": "m*", "input": 1.0, "output": 4.0}])
    assert table.cost("m1", 1_000_000, 500_000) == pytest.approx(3.0)


def test_token_bucket_waits_and_refunds() -> None:
    async def scenario() -> tuple[float, float, float]:
        bucket = TokenBucket(rate_per_s=100.0, capacity=10.0)
        t0 = time.monotonic()
        await bucket.acquire(10)          # full bucket: immediate
        first = time.monotonic() - t0
        await bucket.acquire(10)          # empty: ~0.1 s for 10 tokens at 100/s
        second = time.monotonic() - t0
        bucket.adjust(+10)                # refund
        await bucket.acquire(10)
        third = time.monotonic() - t0 - second
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert first < 0.02
    assert 0.09 <= second < 0.3
    assert third < 0.02


def test_rate_limiter_settles_tpm_with_real_usage() -> None:
    async def scenario() -> float:
        limiter = RateLimiter(rpm=None, tpm=600)   # 10 tokens/s, bucket of 600
        await limiter.acquire(600)                   # estimate used the whole minute
        limiter.settle(600, 100)                     # the reply only used 100
        t0 = time.monotonic()
        await limiter.acquire(400)                   # 500 back: no wait
        return time.monotonic() - t0

    assert asyncio.run(scenario()) < 0.05


# --------------------------------------------------------------------------- the engine against faults


FAULTS = {
    "plain": "q plain [[answer:3]]",
    "rate": "q rate [[429:2]]",
    "flaky": "q flaky [[500:2]]",
    "slow": "q slow [[slow:1]]",
    "cut": "q cut [[trunc]]",
    "garbled": "q garbled [[malformed:1]]",
    "shapeless": "q shapeless [[badshape:1]]",
    "reasoner": "q reasoner [[reasoning]]",
    "rejected": "q rejected [[400]]",
    "broken": "q broken [[500:99]]",
}


def test_faults_end_with_one_result_per_sample(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.retry_after = "0.2"
    out = tmp_path / "samples.jsonl"
    config = config_for(fake, n_samples=2, t_min=0.0, t_max=1.0)
    summary = generate(prompt_rows(FAULTS), out, config)

    rows = raw_rows(out)
    assert len(rows) == 20  # one row per (prompt, sample), errors included
    by_key = {(r["prompt_id"], r["sample_index"]): r for r in rows}
    status = {k: r["status"] for k, r in by_key.items()}
    for pid in FAULTS:
        for i in (0, 1):
            expected = {"cut": "truncated", "rejected": "error", "broken": "error"}.get(pid, "ok")
            assert status[(pid, i)] == expected, (pid, i, by_key[(pid, i)]["error"])
    assert summary.counts == {"ok": 14, "truncated": 2, "error": 4}
    assert any("HTTP 400" in e for e in summary.error_examples)
    assert any("HTTP 500" in e for e in summary.error_examples)
    assert not summary.complete and summary.remaining == 4

    # the temperature schedule and the row contract
    row = by_key[("plain", 1)]
    assert by_key[("plain", 0)]["params"]["temperature"] == 0.0 and row["params"]["temperature"] == 1.0
    assert row["reply"]["answer"] == "<answer>\\boxed{3}</answer>" and row["reply"]["thinking"]
    assert row["question"] == FAULTS["plain"] and row["reference"] == "7" and row["meta"] == {"steps": 1}
    assert len(row["request_key"]) == 64 and row["model"] == "fake-teacher" and row["error"] is None
    assert by_key[("reasoner", 0)]["reply"]["thinking"] == "I add the numbers carefully and get 7."
    assert by_key[("cut", 0)]["reply"]["finish_reason"] == "length"
    assert by_key[("cut", 0)]["max_tokens_used"] == 64 and by_key[("cut", 0)]["params"]["max_tokens"] == 32
    assert summary.extended == 2

    # how many requests each fault cost
    seen = requests_by(fake)
    for t in (0.0, 1.0):
        assert seen[(FAULTS["rate"], t)] == 3        # two 429s, then ok
        assert seen[(FAULTS["flaky"], t)] == 3       # two 500s, then ok
        assert seen[(FAULTS["slow"], t)] == 2        # one timeout, then ok
        assert seen[(FAULTS["garbled"], t)] == 2     # invalid JSON, then ok
        assert seen[(FAULTS["shapeless"], t)] == 2   # no choices, then ok
        assert seen[(FAULTS["rejected"], t)] == 1    # 400 is not retried
        assert seen[(FAULTS["broken"], t)] == 4      # max_attempts, then give up
        assert seen[(FAULTS["plain"], t)] == 1
        assert seen[(FAULTS["cut"], t)] == 2         # cut off, asked again with twice the limit, cut again
    assert by_key[("rate", 0)]["attempts"] == 3
    assert "HTTP 400" in by_key[("rejected", 0)]["error"]
    assert "gave up after 4 attempts" in by_key[("broken", 1)]["error"]

    # Retry-After (0.2 s) was honoured between the 429s of one request
    rate_keys = {body_key(b) for b in fake.bodies if b["messages"][-1]["content"] == FAULTS["rate"]}
    assert len(rate_keys) == 2
    gaps = [b - a for k in rate_keys for a, b in zip(fake.arrivals[k], fake.arrivals[k][1:])]
    assert gaps and min(gaps) >= 0.19

    # a second run retries only the errors and repeats no finished request
    fake.reset()
    again = generate(prompt_rows(FAULTS), out, config)
    assert again.already_done == 16 and again.counts == {"error": 4}
    assert set(k[0] for k in requests_by(fake)) == {FAULTS["rejected"], FAULTS["broken"]}
    assert load_samples(out) and len(load_samples(out)) == 16
    assert len(load_samples(out, statuses=None)) == 20


def test_rpm_limit_spaces_requests(fake: FakeOpenAI, tmp_path: Path) -> None:
    rows = prompt_rows({f"r{i}": f"rpm question {i}" for i in range(8)})
    summary = generate(rows, tmp_path / "rpm.jsonl", config_for(fake, concurrency=8, rpm=1200))  # 20/s
    assert summary.counts == {"ok": 8}
    arrivals = sorted(fake.all_arrivals)
    assert len(arrivals) == 8
    # Per-gap checks are flaky on a loaded 2-core machine (a request can reach the server a
    # little late); the span is robust: without the limiter all 8 arrive within a few ms.
    span = arrivals[-1] - arrivals[0]
    assert span >= 7 * 0.05 * 0.8, f"8 requests at 20/s took only {span:.3f} s"


def test_cache_serves_identical_requests(fake: FakeOpenAI, tmp_path: Path) -> None:
    rows = prompt_rows({f"c{i}": f"cache question {i}" for i in range(5)})
    config = config_for(fake, n_samples=2, cache_dir=tmp_path / "cache")
    first = generate(rows, tmp_path / "a.jsonl", config)
    assert first.counts == {"ok": 10} and first.cached == 0 and fake.total_requests == 10

    fake.reset()
    second = generate(rows, tmp_path / "b.jsonl", config)  # a new output file, same requests
    assert fake.total_requests == 0
    assert second.cached == 10 and second.counts == {"ok": 10} and second.requests == 0
    a, b = raw_rows(tmp_path / "a.jsonl"), raw_rows(tmp_path / "b.jsonl")
    assert all(r["cached"] for r in b) and not any(r["cached"] for r in a)
    key = lambda r: (r["prompt_id"], r["sample_index"])  # noqa: E731
    assert {key(r): r["reply"] for r in a} == {key(r): r["reply"] for r in b}
    assert {key(r): r["request_key"] for r in a} == {key(r): r["request_key"] for r in b}

    hotter = generate(rows, tmp_path / "c.jsonl", config_for(fake, n_samples=2, t_max=0.5,
                                                              cache_dir=tmp_path / "cache"))
    assert hotter.cached == 5 and fake.total_requests == 5  # sample 1 changed temperature: a new request


def test_rows_are_flushed_at_once_and_fsynced_in_groups(fake: FakeOpenAI, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No fsync per row on the event loop (it delayed the next requests), yet every row reaches disk."""
    from helpers.core import jsonl

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(jsonl.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])

    out = tmp_path / "sync.jsonl"
    writer = jsonl.JsonlAppender(out)  # outside an event loop: each row is synced at once
    writer.write({"n": 1})
    assert out.read_text(encoding="utf-8") == '{"n": 1}\n' and len(synced) == 1
    writer.close()

    async def burst() -> int:
        w = jsonl.JsonlAppender(out, sync_interval_s=60.0)
        for i in range(20):
            w.write({"n": i})
        flushed = len(raw_rows(out))  # readable (flushed) before any sync
        assert len(synced) == 1  # none of the 20 rows was synced on the spot
        w.close()  # syncs what is left
        return flushed

    assert asyncio.run(burst()) == 21 and len(synced) == 2

    synced.clear()
    rows = prompt_rows({f"s{i}": f"sync question {i}" for i in range(12)})
    summary = generate(rows, tmp_path / "run.jsonl", config_for(fake))
    assert summary.counts == {"ok": 12}
    assert 1 <= len(synced) < 12  # one fsync covers many rows; close() syncs the last ones


def test_replies_that_arrive_together_send_the_next_requests_together(
        fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batching server answers a whole batch at once; the next requests must leave as one wave.

    Otherwise the first of them reaches swift deploy alone, starts a batch of one and
    the others wait a whole batch for it.
    """
    from helpers.teacher import engine
    from helpers.teacher.client import TeacherReply, Usage

    events: list[str] = []
    release: dict[int, asyncio.Event] = {}

    async def batched_attempt(self: Any, client: Any, job: Any) -> TeacherReply:
        wave = int(job.prompt["id"][1:]) // 4  # jobs 0-3 are the first batch, 4-7 the second
        events.append(f"start {wave}")
        event = release.setdefault(wave, asyncio.Event())
        if sum(e == f"start {wave}" for e in events) == 4:
            event.set()  # the "server" answers the full batch at once
        await event.wait()
        events.append(f"done {wave}")
        return TeacherReply(None, "ok", "ok", "stop", Usage(10, 5, 15))

    monkeypatch.setattr(engine._Engine, "_attempt", batched_attempt)
    rows = prompt_rows({f"w{i}": f"wave question {i}" for i in range(8)})
    summary = generate(rows, tmp_path / "waves.jsonl", config_for(fake, concurrency=4))
    assert summary.counts == {"ok": 8}
    assert events == ["start 0"] * 4 + ["done 0"] * 4 + ["start 1"] * 4 + ["done 1"] * 4


def test_requests_alike_in_parameters_are_sent_together(fake: FakeOpenAI, tmp_path: Path) -> None:
    """Sample-major order: every prompt's sample 0 goes out before any sample 1.

    swift deploy batches only requests with identical sampling parameters, so mixing
    temperatures in flight splits every batch in two.
    """
    rows = prompt_rows({f"q{i}": f"ordered question {i}" for i in range(6)})
    generate(rows, tmp_path / "order.jsonl", config_for(fake, n_samples=2, t_min=0.0, t_max=0.9, concurrency=1))
    temperatures = [b["temperature"] for b in fake.bodies]
    assert temperatures == [0.0] * 6 + [0.9] * 6


def test_concurrency_defaults_to_the_endpoints_own(fake: FakeOpenAI) -> None:
    from helpers.core.config import API_CONCURRENCY, LOCAL_BATCH_SIZE

    remote = GenerationConfig(endpoint=endpoint_for(fake))
    local = GenerationConfig(endpoint=TeacherEndpoint(base_url=fake.base_url, model="t", local=True))
    assert (remote.in_flight, local.in_flight) == (API_CONCURRENCY, LOCAL_BATCH_SIZE)
    assert GenerationConfig(endpoint=endpoint_for(fake), concurrency=3).in_flight == 3
    with pytest.raises(ValueError, match="concurrency"):
        GenerationConfig(endpoint=endpoint_for(fake), concurrency=0)


def test_torn_last_line_is_recovered(fake: FakeOpenAI, tmp_path: Path) -> None:
    rows = prompt_rows({f"t{i}": f"torn question {i}" for i in range(4)})
    out = tmp_path / "torn.jsonl"
    generate(rows, out, config_for(fake))
    data = out.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn_row = json.loads(data[last_start:])
    torn = data[:last_start] + data[last_start:last_start + 25]  # a kill in the middle of a write
    out.write_bytes(torn)

    fake.reset()
    summary = generate(rows, out, config_for(fake))
    assert summary.repaired_bytes == 25
    assert summary.counts == {"ok": 1} and summary.already_done == 3
    assert fake.prompt_snapshot() == Counter({torn_row["question"]: 1})  # only the torn one again
    assert_one_result_per_sample(out, {(f"t{i}", 0) for i in range(4)})


def test_wrong_key_aborts_with_masked_error(tmp_path: Path) -> None:
    wrong = "sk-wrong-key-zyxwvutsrqponm"
    with FakeOpenAI(api_key="sk-right-key-0123456789") as server:
        config = GenerationConfig(endpoint=endpoint_for(server, wrong), concurrency=1, max_attempts=3,
                                  backoff_base_s=0.01, progress=False)
        rows = prompt_rows({f"k{i}": f"key question {i}" for i in range(3)})
        with pytest.raises(GenerationAborted, match="rejected the API key") as info:
            generate(rows, tmp_path / "k.jsonl", config)
        assert server.total_requests == 1  # no retries, no further rows
    summary = info.value.summary
    assert summary.counts == {"error": 1} and summary.remaining == 3
    text = (tmp_path / "k.jsonl").read_text() + str(info.value) + str(summary)
    assert wrong not in text and wrong[3:] not in text


def test_generate_works_inside_a_running_event_loop(fake: FakeOpenAI, tmp_path: Path) -> None:
    rows = prompt_rows({"j0": "jupyter question"})

    async def notebook_cell() -> Any:
        return generate(rows, tmp_path / "j.jsonl", config_for(fake))  # a sync call, loop running

    summary = asyncio.run(notebook_cell())
    assert summary.counts == {"ok": 1}


def test_concurrent_runs_on_one_file_are_refused(fake: FakeOpenAI, tmp_path: Path) -> None:
    from filelock import FileLock

    out = tmp_path / "locked.jsonl"
    with FileLock(str(out) + ".lock"):
        with pytest.raises(RuntimeError, match="already writing"):
            generate(prompt_rows({"l0": "lock"}), out, config_for(fake))


# --------------------------------------------------------------------------- the command line


def _cli_args(fake: FakeOpenAI, prompts: Path, out: Path, *extra: str) -> list[str]:
    return ["--prompts", str(prompts), "--out", str(out), "--base-url", fake.base_url,
            "--model", "fake-teacher", "--no-progress", "--backoff", "0.01", "--timeout", "5", *extra]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEACHER_")}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_kill_then_rerun_repeats_no_finished_request(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.delay_s = 0.05
    texts = {f"k{i:02d}": f"kill question {i}" for i in range(40)}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in prompt_rows(texts)), encoding="utf-8")
    out = tmp_path / "killed.jsonl"

    proc = subprocess.Popen([sys.executable, "-m", "helpers", "generate",
                             *_cli_args(fake, prompts, out, "--concurrency", "2")],
                            cwd=REPO_ROOT, env=_clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 6:
            break
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no cleanup at all
    proc.wait(timeout=10)
    assert proc.returncode != 0, "the run finished before it could be killed"

    fake.delay_s = 0.0
    before = fake.prompt_snapshot()
    complete_lines = out.read_text(encoding="utf-8").split("\n")[:-1]  # a torn tail has no newline
    finished_before = {r["question"] for r in map(json.loads, complete_lines) if r["status"] == "ok"}
    assert 6 <= len(finished_before) < 40

    assert cli_main(_cli_args(fake, prompts, out, "--concurrency", "4")) == 0
    after = fake.prompt_snapshot()
    for question in finished_before:  # finished before the kill: never asked again
        assert after[question] == before[question] == 1, question
    for question in texts.values():   # at most the requests in flight at the kill were repeated
        assert 1 <= after[question] <= 2
    assert sum(after.values()) <= 40 + 2
    assert_one_result_per_sample(out, {(pid, 0) for pid in texts})


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a child on Windows")
def test_ctrl_c_stops_cleanly_and_rerun_finishes(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.delay_s = 0.05
    texts = {f"i{i:02d}": f"interrupt question {i}" for i in range(30)}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in prompt_rows(texts)), encoding="utf-8")
    out = tmp_path / "interrupted.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "helpers", "generate",
                             *_cli_args(fake, prompts, out, "--concurrency", "2")],
                            cwd=REPO_ROOT, env=_clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "run the same command again" in err
    data = out.read_text(encoding="utf-8")
    assert data.endswith("\n") and len(data.splitlines()) < 30  # stopped early, no torn line
    fake.delay_s = 0.0
    assert cli_main(_cli_args(fake, prompts, out)) == 0
    assert_one_result_per_sample(out, {(pid, 0) for pid in texts})


def test_cli_reports_bad_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("TEACHER_BASE_URL", "TEACHER_MODEL", "TEACHER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps(prompt_rows({"a": "x"})[0]) + "\n")
    assert cli_main(["--prompts", str(prompts), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no teacher endpoint" in capsys.readouterr().err
    assert cli_main(["--prompts", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.jsonl"),
                     "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]) == 2
    assert "prompt file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["--prompts", str(prompts), "--out", "o.jsonl", "--temperatures", "hot"])


def test_cli_json_summary_and_exit_code_for_failures(fake: FakeOpenAI, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in prompt_rows(
        {"ok": "fine question", "bad": "bad question [[400]]"})))
    code = cli_main(_cli_args(fake, prompts, tmp_path / "o.jsonl", "--json", "--n", "2",
                              "--temperatures", "0.2,0.9"))
    assert code == 1  # one prompt failed: run again later
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["counts"] == {"ok": 2, "error": 2} and summary["remaining"] == 2
    assert summary["cost_usd"] == 0.0  # a local endpoint costs nothing
    temps = sorted(b["temperature"] for b in fake.bodies)
    assert temps == [0.2, 0.2, 0.9, 0.9]


def test_request_key_ignores_the_port_of_a_local_server_but_not_a_remote_host() -> None:
    msgs = [{"role": "user", "content": "2+2?"}]
    params = {"temperature": 0.0, "max_tokens": 8}

    def key(url: str, model: str = "m") -> str:
        return request_key(TeacherEndpoint(base_url=url, model=model, api_key=Secret("k")), msgs, params, 0)

    assert key("http://127.0.0.1:8001/v1") == key("http://127.0.0.1:9123/v1")  # swift deploy restarted
    assert key("http://127.0.0.1:8001/v1") != key("http://127.0.0.1:8001/v1", model="other")
    assert key("https://api.deepseek.com/v1") != key("https://api.openai.com/v1")
    assert key("https://api.deepseek.com/v1") != key("http://127.0.0.1:8001/v1")


# --------------------------------------------------------------------------- many chats, replies in order


def test_ask_many_returns_replies_in_order_and_resumes(fake: FakeOpenAI, tmp_path: Path) -> None:
    from helpers.teacher.client import TeacherError
    from helpers.teacher.engine import ask_many, batch_chat

    chats = [[{"role": "user", "content": "one [[answer:1]]"}], [{"role": "user", "content": "two [[400]]"}],
             [{"role": "user", "content": "three [[trunc]]"}], [{"role": "user", "content": "one [[answer:1]]"}]]
    log = tmp_path / "calls.jsonl"
    replies = ask_many(chats, config_for(fake, cache_dir=tmp_path / "cache"), log)
    assert fake.total_requests == 4  # the repeated chat is asked once; the cut-off one again, longer
    assert "\\boxed{1}" in replies[0].raw and replies[3].raw == replies[0].raw
    assert isinstance(replies[1], TeacherError) and "HTTP 400" in str(replies[1])
    assert replies[2].truncated
    again = batch_chat(endpoint_for(fake), log, max_tokens=32, progress=False, concurrency=4,
                       backoff_base_s=0.01)(chats)
    assert fake.total_requests == 5  # only the failed chat is asked again: the log holds the rest
    assert [r.raw for r in again if not isinstance(r, Exception)] == [replies[0].raw, replies[2].raw, replies[0].raw]
    assert ask_many([], config_for(fake), log) == []
    with pytest.raises(ValueError, match="n_samples=1"):
        ask_many(chats, config_for(fake, n_samples=2), log)
