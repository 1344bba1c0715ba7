"""Merging with ``swift export``, the equivalence check, and the side-by-side chat helpers.

The real merge uses the checkpoint of the smoke SFT in ``test_train.py`` (the
``sft_run`` session fixture, trained once per session).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai import FakeOpenAI  # noqa: E402
from test_train import sft_run  # noqa: E402,F401 - the shared session fixture

from helpers.core.config import Secret, TeacherEndpoint, get_settings  # noqa: E402
from helpers.merge.adapter import (
    MergeError,
    is_merged_model,
    latest_merged_model,
    merge_adapter,
    merge_args,
    merge_command,
    merged_dir,
)
from helpers.merge.chat import LocalChat, chat_view, compare_answers, format_side_by_side, grade, teacher_responder
from helpers.merge.equivalence import EquivalenceError, check_equivalence
from helpers.tasks.word_problems import word_problem_rows  # noqa: E402

QUESTIONS = [r["question"] for r in word_problem_rows("test", 2, seed=3, shots=0)]


# --------------------------------------------------------------------------- merge


def test_merge_command_and_location(tmp_path):
    ckpt = tmp_path / "v0-20260101-000000" / "checkpoint-12"
    assert merged_dir(ckpt) == tmp_path / "v0-20260101-000000" / "checkpoint-12-merged"
    assert merge_args(ckpt) == ["--adapters", str(ckpt), "--merge_lora", "true"]
    assert merge_args(ckpt, overwrite=True)[-2:] == ["--exist_ok", "true"]
    assert merge_command(ckpt).startswith("swift export \\\n    --adapters ")
    assert not is_merged_model(tmp_path)


def test_latest_merged_model_is_the_merge_of_the_newest_finished_run(tmp_path):
    settings = get_settings({"COURSE_WORKSPACE": str(tmp_path)}, apply_env=False)
    assert latest_merged_model(settings) is None
    run = tmp_path / "runs" / "sft-offline" / "v0-20260101-000000"
    ckpt = run / "checkpoint-2"
    ckpt.mkdir(parents=True)
    for name in ("adapter_config.json", "trainer_state.json"):
        (ckpt / name).write_text("{}")
    (run / "logging.jsonl").write_text(json.dumps({"last_model_checkpoint": str(ckpt)}) + "\n")
    assert latest_merged_model(settings) is None  # trained, not merged yet
    target = merged_dir(ckpt)
    target.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (target / name).write_text("{}")
    assert latest_merged_model(settings) == target
    newer = tmp_path / "runs" / "sft-offline" / "v1-20260102-000000"
    newer.mkdir()
    (newer / "logging.jsonl").write_text("")  # still training: the finished run's merge stays the answer
    assert latest_merged_model(settings) == target


def test_merge_refuses_a_folder_without_adapter(tmp_path, settings):
    with pytest.raises(MergeError, match="adapter_config.json"):
        merge_adapter(tmp_path, settings=settings)


@pytest.fixture(scope="module")
def merged(sft_run):  # noqa: F811 - the imported fixture
    _, _, resumed = sft_run
    checkpoint = resumed.last_checkpoint
    result = merge_adapter(checkpoint, settings=get_settings(), on_output=lambda text, transient: None)
    return checkpoint, result


@pytest.mark.slow
def test_real_merge_writes_next_to_the_checkpoint(merged):
    checkpoint, result = merged
    assert not result.reused and result.path == checkpoint.with_name(checkpoint.name + "-merged")
    assert is_merged_model(result.path) and result.seconds > 0
    files = set(result.files()["file"])
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= files
    again = merge_adapter(checkpoint, settings=get_settings())
    assert again.reused and again.path == result.path and again.seconds == 0.0


@pytest.mark.slow
def test_merged_model_equals_base_plus_adapter(merged, student):
    checkpoint, result = merged
    report = check_equivalence(student, checkpoint, result.path, QUESTIONS, max_new_tokens=12)
    assert report.ok and report.dtype == "float32" and report.tolerance == 1e-3
    assert all(c.identical and c.new_tokens > 0 for c in report.checks)
    assert 0 <= report.summary()["max_logit_diff"] < 1e-3
    assert len(report.table()) == len(QUESTIONS)


@pytest.mark.slow
def test_equivalence_failure_names_the_question(merged, student, tmp_path):
    """A tampered merged model is caught; the error names the question."""
    import torch
    from safetensors.torch import load_file, save_file

    checkpoint, result = merged
    tampered = tmp_path / "tampered"
    shutil.copytree(result.path, tampered)
    weights = load_file(tampered / "model.safetensors")
    name = next(k for k in weights if k.endswith("layers.0.mlp.down_proj.weight"))
    weights[name] = weights[name] * 1.5 + 0.01 * torch.randn_like(weights[name])
    save_file(weights, tampered / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(EquivalenceError, match="does not match base \\+ adapter") as error:
        check_equivalence(student, checkpoint, tampered, QUESTIONS[:1], max_new_tokens=8)
    assert QUESTIONS[0] in str(error.value)
    report = check_equivalence(student, checkpoint, tampered, QUESTIONS[:1], max_new_tokens=8,
                               raise_on_failure=False)
    assert not report.ok and report.failures[0].max_logit_diff > 1e-3


@pytest.mark.slow
def test_bfloat16_merge_passes_the_calibrated_check_and_a_tampered_one_fails(merged, student, tmp_path):
    """In bfloat16 the replies drift at near ties (the old max-|Δlogit| bound of 1.0 failed a correct merge);
    the calibrated criterion passes the real merge, saved in bfloat16 too, and still catches a tampered one."""
    import torch
    from safetensors.torch import load_file, save_file

    checkpoint, result = merged
    report = check_equivalence(student, checkpoint, result.path, QUESTIONS, max_new_tokens=12, dtype="bfloat16")
    assert report.ok and report.dtype == "bfloat16" and report.tolerance == 4.0
    assert all(c.agreement >= 0.9 and c.mean_logit_diff <= 0.3 for c in report.checks)
    rounded = tmp_path / "rounded"  # what a GPU merge writes: the merged weights saved in bfloat16
    shutil.copytree(result.path, rounded)
    weights = load_file(rounded / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, rounded / "model.safetensors",
              metadata={"format": "pt"})
    config = json.loads((rounded / "config.json").read_text())
    (rounded / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16", "torch_dtype": "bfloat16"}))
    loaded_fp32 = check_equivalence(student, checkpoint, rounded, QUESTIONS, max_new_tokens=12)
    assert loaded_fp32.ok and loaded_fp32.dtype == "bfloat16"  # judged by how it was saved
    tampered = {k: (v * 1.5 if k.endswith("layers.0.mlp.down_proj.weight") else v) for k, v in weights.items()}
    save_file(tampered, rounded / "model.safetensors", metadata={"format": "pt"})
    bad = check_equivalence(student, checkpoint, rounded, QUESTIONS[:1], max_new_tokens=8, dtype="bfloat16",
                            raise_on_failure=False)
    assert not bad.ok


@pytest.mark.slow
def test_local_chat_answers_with_the_merged_model(merged):
    _, result = merged
    chat = LocalChat.load(result.path, max_new_tokens=8)
    messages = chat.messages("What is 2 + 3?")
    assert [m["role"] for m in messages] == ["system", "user"]  # the training prompt, zero-shot
    reply = chat("What is 2 + 3?")
    # the same greedy reply, computed independently with plain transformers
    import torch

    encoded = chat.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
    with torch.no_grad():
        out = chat.model.generate(**encoded, max_new_tokens=8, do_sample=False)
    expected = chat.tokenizer.decode(out[0][encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert reply == expected and reply


# --------------------------------------------------------------------------- side by side (no model needed)


def test_grade_reads_the_answer_outside_the_thinking():
    assert grade("<think>maybe \\boxed{5}</think>\n\n<answer>\\boxed{7}</answer>", "7") == ("7", True)
    assert grade("<think>7</think> so \\boxed{6}", "7") == ("6", False)
    assert grade("It is 12.", None) == ("12", None)


def test_compare_answers_and_plain_table():
    responders = {
        "right": lambda q: "<think>\n3 + 4 = 7\n</think>\n\n<answer>\\boxed{7}</answer>",
        "wrong": lambda q: "\\boxed{8}",
        "broken": lambda q: 1 / 0,
    }
    table = compare_answers([{"question": "Tom has 3 and gets 4. How many?", "reference": "7"}, "Say hi."],
                            responders)
    assert list(table.columns) == ["question", "reference", "model", "answer", "correct", "seconds", "reply"]
    first = table[table["question"].str.startswith("Tom")].set_index("model")
    assert first.loc["right", "correct"] and not first.loc["wrong", "correct"]
    assert first.loc["broken", "reply"].startswith("[error: ZeroDivisionError")
    assert table[table["question"] == "Say hi."]["correct"].isna().all()
    text = format_side_by_side(table)
    assert "Q: Tom has 3 and gets 4." in text and "(reference: 7)" in text
    assert "-- right · answer 7 · correct" in text and "-- wrong · answer 8 · wrong" in text


def test_chat_view_asks_every_model():
    asked: list[str] = []
    view = chat_view({"a": lambda q: asked.append(q) or "<think>hm</think>\\boxed{1}", "b": lambda q: "\\boxed{2}"})
    box, button, columns = view.children
    box.value = "What is 1 + 1?"
    button.click()
    assert asked == ["What is 1 + 1?"]
    assert "answer: 1" in columns.children[0].value and "hm" in columns.children[0].value
    assert "answer: 2" in columns.children[1].value


def test_teacher_responder_against_a_fake_api():
    with FakeOpenAI(api_key="sk-test-merge-0123456789") as fake:
        endpoint = TeacherEndpoint(base_url=fake.base_url, model="fake", api_key=Secret("sk-test-merge-0123456789"))
        reply = teacher_responder(endpoint, max_tokens=64)("What is 3 + 4? [[reasoning]]")
    assert reply.startswith("<think>") and grade(reply, "7") == ("7", True)


@pytest.mark.slow
def test_inference_loads_follow_the_servers_precision(student, settings, monkeypatch):
    """Training dtype by default (the merge check compares like with like); serving dtype on request."""
    import torch

    from helpers.models.loading import load_model

    monkeypatch.setenv("COURSE_SERVE_DTYPE", "bfloat16")
    fast = load_model(student, settings, for_inference=True)
    assert fast.dtype == torch.bfloat16 and fast.config._attn_implementation == "eager"
    assert load_model(student, settings).dtype == getattr(torch, settings.profile.torch_dtype)
    monkeypatch.setenv("COURSE_SERVE_DTYPE", "float32")
    assert load_model(student, settings, for_inference=True).dtype == torch.float32
