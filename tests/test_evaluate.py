"""Notebook 06's evaluation machinery: evalscope configs, the output parser on a REAL run, the metrics.

``tests/fixtures/evalscope_smollm2/`` is a trimmed copy of a real evalscope 1.14 run
of the bundled SmolLM2 student served by ``swift deploy`` (``eval_type='openai_api'``,
greedy, ``max_tokens=48``) on two held-out word problems (``gsm8k`` benchmark on a
local file) and two headlines (``general_qa`` with chat messages). It was made with
``prepare_datasets`` + ``evaluate_model``; the ``logs/`` and ``report.html`` were left out.

``tests/fixtures/evalscope_smollm2_exemplar/`` is an earlier real run of the same kind
on headlines WITH the worked example of notebook 01 (an assistant turn, given as a list
of text parts): the student answered with a closed ``<think>`` block, which evalscope
stored as a separate "reasoning" part. It is why evaluation prompts are zero-shot.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from helpers.core.config import TeacherEndpoint
from helpers.evaluate.datasets import (
    EvalDataset,
    check_zero_shot,
    evalscope_prompt_template,
    prepare_datasets,
    teacher_prompt_rows,
)
from helpers.evaluate.evalscope import (
    EvalError,
    compare_backends,
    dashboard_command,
    generation_config,
    run_tasks,
    task_config,
)
from helpers.evaluate.results import (
    change_counts,
    fixed_broken,
    item_frame,
    message_text,
    metrics_by_model,
    plot_comparison,
    prompt_mismatches,
    read_outputs,
    reply_token_lengths,
    sample_rows,
    write_summary,
)
from helpers.merge.adapter import latest_merged_model as find_merged_model
from helpers.tasks.gsm8k import evalscope_gsm8k_path, gsm8k_dir
from helpers.tasks.math import math_messages
from helpers.teacher.prompts import render

matplotlib.use("Agg")

FIXTURE = Path(__file__).parent / "fixtures" / "evalscope_smollm2"
RUN = FIXTURE / "evalscope"
EXEMPLAR = Path(__file__).parent / "fixtures" / "evalscope_smollm2_exemplar"


def fixture_dataset(name: str) -> EvalDataset:
    return EvalDataset.load(FIXTURE / "data" / name)


# --------------------------------------------------------------------------- prompts and datasets


def test_prompt_template_is_the_course_prompt():
    template = evalscope_prompt_template("math_user")
    question = "Tom has {3} apples and $5. How many?"
    assert template.format(question=question) == render("math_user", question=question)
    assert "\\boxed{{}}" in template  # str.format would otherwise eat the braces


def test_evaluation_prompts_are_zero_shot():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "q", "extra": 1}]
    assert check_zero_shot(messages) == [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    shot = messages[:2] + [{"role": "assistant", "content": "<think>t</think>a"}, {"role": "user", "content": "q2"}]
    with pytest.raises(ValueError, match="zero-shot"):
        check_zero_shot(shot)


def test_prepare_datasets_writes_what_evalscope_reads(tmp_path):
    sets = prepare_datasets(tmp_path, word_problems=6, gsm8k=0, headlines=3)
    assert list(sets) == ["word_problems", "headlines"]
    wp, hl = sets["word_problems"], sets["headlines"]
    lines = evalscope_gsm8k_path(wp.folder).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and [json.loads(x)["question"] for x in lines] == [r["question"] for r in wp.rows]
    assert json.loads(lines[0])["answer"].endswith(f"#### {wp.rows[0]['reference']}")
    assert [r["meta"]["steps"] for r in wp.rows] == [1, 2, 3, 1, 2, 3]  # balanced difficulty
    assert all(r["messages"] == math_messages(r["question"]) for r in wp.rows)  # zero-shot student prompt
    records = [json.loads(x) for x in (hl.folder / "headlines.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 3 and records[0]["answer"] == hl.rows[0]["reference"]
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user"]
    assert records[0]["messages"][1]["content"] == f"Headline: {hl.rows[0]['question']}\nWhich topic does this headline belong to?"
    assert EvalDataset.load(wp.folder) == wp
    args = wp.dataset_args()
    assert args["local_path"] == str(wp.folder) and args["subset_list"] == ["default"] and args["few_shot_num"] == 0
    assert args["system_prompt"] == render("math_system")
    assert hl.dataset_args()["subset_list"] == ["headlines"] and "prompt_template" not in hl.dataset_args()


@pytest.mark.skipif(gsm8k_dir() is None, reason="no local gsm8k copy")
def test_prepare_datasets_gsm8k(tmp_path):
    sets = prepare_datasets(tmp_path, word_problems=0, gsm8k=2, headlines=0)
    rows = sets["gsm8k"].rows
    assert [r["id"] for r in rows] == ["gsm8k-test-00000", "gsm8k-test-00001"]
    first = json.loads(evalscope_gsm8k_path(sets["gsm8k"].folder).read_text(encoding="utf-8").splitlines()[0])
    assert first["answer"].rsplit("####", 1)[1].strip() == rows[0]["reference"]


def test_task_config_checkpoint_and_served(tmp_path, settings):
    ds = fixture_dataset("word_problems")
    ckpt = task_config(tmp_path / "model", "base", ds, tmp_path / "out", max_tokens=64, batch_size=1,
                          settings=settings)
    assert ckpt["eval_type"] == "llm_ckpt" and ckpt["model_args"] == {"precision": "torch.float32",
                                                                       "device_map": "cpu"}
    assert ckpt["generation_config"] == {"max_tokens": 64, "do_sample": False}
    assert ckpt["datasets"] == ["gsm8k"] and ckpt["no_timestamp"] and ckpt["model_id"] == "base"
    endpoint = TeacherEndpoint("http://127.0.0.1:8000/v1", "student", "secret-key-123")
    served = task_config(endpoint, "distilled", ds, tmp_path / "out", max_tokens=64, settings=settings)
    assert served["eval_type"] == "openai_api" and served["api_url"] == "http://127.0.0.1:8000/v1"
    assert served["generation_config"]["temperature"] == 0.0 and served["generation_config"]["max_tokens"] == 64
    assert "secret-key-123" not in json.dumps(served)
    with pytest.raises(ValueError):
        generation_config("openai_api", 0)


# --------------------------------------------------------------------------- the parser on a real run


def test_message_text():
    assert message_text("plain") == "plain"
    assert message_text(None) == ""
    parts = [{"type": "reasoning", "reasoning": "3 + 4 = 7."}, {"type": "text", "text": "<answer>\\boxed{7}</answer>"}]
    assert message_text(parts) == "<think>3 + 4 = 7.</think>\n\n<answer>\\boxed{7}</answer>"
    empty_text = [{"type": "reasoning", "reasoning": "r"}, {"type": "text", "text": ""}]
    assert message_text(empty_text) == "<think>r</think>"


def test_read_outputs_of_a_real_run():
    wp = read_outputs(RUN / "base-word_problems")
    assert list(wp[["model_id", "benchmark", "subset"]].iloc[0]) == ["base", "gsm8k", "default"]
    assert wp["index"].tolist() == [0, 1]
    assert set(wp["finish_reason"]) == {"length"}  # evalscope says "max_tokens"; 48 tokens cut both off
    assert wp["output_tokens"].tolist() == [48, 48] and (wp["latency_s"] > 0).all()
    assert [t[0] for t in wp["target"]] == [r["reference"] for r in fixture_dataset("word_problems").rows]
    assert wp["prompt"][0] == math_messages(fixture_dataset("word_problems").rows[0]["question"])
    hl = read_outputs(RUN / "base-headlines")
    assert list(hl[["benchmark", "subset"]].iloc[0]) == ["general_qa", "headlines"]
    assert hl["finish_reason"].tolist() == ["stop", "stop"] and hl["output_tokens"].tolist() == [20, 19]
    assert hl["raw"][0].startswith("This headline belongs to the topic of floods")


def test_read_outputs_puts_split_thinking_back():
    hl = read_outputs(EXEMPLAR / "evalscope" / "base-headlines")
    # evalscope split the closed <think> block of reply 1 off into a "reasoning" part; it is put back.
    assert hl["raw"][1].startswith("<think>The headline is about opposition") and hl["raw"][1].endswith("</think>")
    assert hl["raw"][0].lstrip().startswith("<think>") and "</think>" not in hl["raw"][0]  # cut off mid-thought
    assert hl["finish_reason"].tolist() == ["length", "stop"]
    # that prompt had a worked example (an assistant turn): no longer accepted for evaluation
    with pytest.raises(ValueError, match="zero-shot"):
        check_zero_shot(EvalDataset.load(EXEMPLAR / "data" / "headlines").rows[0]["messages"])


def test_prompts_sent_by_evalscope_are_the_course_prompts():
    for name in ("word_problems", "headlines"):
        dataset = fixture_dataset(name)
        outputs = read_outputs(RUN / f"base-{name}")
        assert prompt_mismatches(outputs, dataset) == []
    assert [m["role"] for m in read_outputs(RUN / "base-headlines")["prompt"][0]] == ["system", "user"]
    changed = read_outputs(RUN / "base-word_problems")
    changed.at[1, "prompt"] = [{"role": "user", "content": "something else"}]
    assert prompt_mismatches(changed, fixture_dataset("word_problems")) == ["wp-test-000001"]


def test_real_run_scored_by_the_course_scorer():
    rows = []
    for name in ("word_problems", "headlines"):
        rows += sample_rows(read_outputs(RUN / f"base-{name}"), fixture_dataset(name), "base")
    items = item_frame(rows)
    assert len(items) == 4 and set(items["model"]) == {"base"}
    assert items["prompt_id"].tolist() == ["wp-test-000000", "wp-test-000001", "hl-002", "hl-004"]
    assert items["truncated"].tolist() == [True, True, False, False]
    assert items["tokens"].tolist() == [48, 48, 20, 19]
    assert not items["correct"].any() and not items["has_thinking"].any()
    assert items["format_ok"].tolist() == [False, False, True, True]  # no \boxed{}; a label-task answer is text
    assert items["prompt_tokens"].tolist() == [104, 107, 164, 162]
    assert items["es_score"].tolist() == [0.0, 0.0, 0.0, 0.0]
    table = metrics_by_model(items, models=["base"])
    assert table.loc[("word_problems", "base"), "truncated"] == 1.0
    assert table.loc[("headlines", "base"), "mean_tokens"] == 19.5


def test_read_outputs_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions"):
        read_outputs(tmp_path)


# --------------------------------------------------------------------------- metrics on hand-made predictions


def _reply_row(model, pid, raw, *, reference="8", finish="stop", tokens=20, dataset="word_problems",
               task="word_problem", latency=1.0):
    outputs = pd.DataFrame([{"index": 0, "raw": raw, "finish_reason": finish, "input_tokens": 100,
                             "output_tokens": tokens, "latency_s": latency, "error": None, "es_score": None}])
    row = {"id": pid, "question": f"question {pid}", "reference": reference, "task": task, "meta": {"steps": 1},
           "messages": []}
    dataset_ = EvalDataset(dataset, "gsm8k", "default", Path("."), [row])
    return sample_rows(outputs, dataset_, model)[0]


def hand_made_items() -> pd.DataFrame:
    good = "<think>5 + 3 = 8.</think>\n\n<answer>\\boxed{8}</answer>"
    rows = [
        _reply_row("base", "q1", "The answer is 8", tokens=40),                         # right by last number, no box
        _reply_row("base", "q2", "<think>5 + 3 = 8.</think> \\boxed{8}", tokens=30),     # right, formatted
        _reply_row("base", "q3", "I think 9 \\boxed{9}", tokens=30),                     # wrong, formatted
        _reply_row("base", "q4", "Let me count: 1, 2, 3", finish="length", tokens=64),  # cut off
        _reply_row("distilled", "q1", good, tokens=12),                                 # still right
        _reply_row("distilled", "q2", "<think>5 + 3 = 9.</think>\n\n<answer>\\boxed{9}</answer>", tokens=12),  # broken
        _reply_row("distilled", "q3", good, tokens=12),                                 # fixed
        _reply_row("distilled", "q4", "<think>5 + 3 = 8. Then", tokens=10),             # unclosed think: truncated
    ]
    return item_frame(rows)


def test_metrics_on_hand_made_predictions():
    items = hand_made_items()
    table = metrics_by_model(items, models=["base", "distilled"])
    base, dist = table.loc[("word_problems", "base")], table.loc[("word_problems", "distilled")]
    assert base["n"] == 4 and base["accuracy"] == 0.5 and base["format_ok"] == 0.5
    assert base["truncated"] == 0.25 and base["mean_tokens"] == 41.0 and base["think_rate"] == 0.25
    assert dist["accuracy"] == 0.5 and dist["format_ok"] == 0.75 and dist["truncated"] == 0.25
    assert dist["think_rate"] == 1.0 and dist["mean_think_words"] == pytest.approx((5 + 5 + 5 + 6) / 4, abs=0.05)
    assert dist["mean_latency_s"] == 1.0
    assert list(table.index.get_level_values("model")) == ["base", "distilled"]


def test_fixed_and_broken():
    changes = fixed_broken(hand_made_items(), "base", "distilled")
    by_id = changes.set_index("prompt_id")["change"].to_dict()
    assert by_id == {"q1": "both right", "q2": "broken", "q3": "fixed", "q4": "both wrong"}
    assert {"prediction_base", "prediction_distilled", "question", "reference"} <= set(changes.columns)
    counts = change_counts(changes)
    assert counts.loc["word_problems"].to_dict() == {"fixed": 1, "broken": 1, "both right": 1, "both wrong": 1,
                                                     "net": 0}


def test_plot_and_summary(tmp_path):
    items = hand_made_items()
    table = metrics_by_model(items)
    fig = plot_comparison(table, title="t")
    assert len(fig.axes) == 4
    path = write_summary(tmp_path / "summary.json", metrics=table, changes=change_counts(
        fixed_broken(items, "base", "distilled")), settings={"max_tokens": 64}, folder=tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["metrics"][0]["dataset"] == "word_problems" and data["settings"] == {"max_tokens": 64}
    assert data["changes"][0]["fixed"] == 1


# --------------------------------------------------------------------------- teacher rows, models, dashboard


def test_teacher_rows_are_the_same_items_with_shots(tmp_path):
    sets = prepare_datasets(tmp_path, word_problems=3, gsm8k=0, headlines=2)
    teacher = teacher_prompt_rows(sets["word_problems"], shots=3)
    assert [r["id"] for r in teacher] == [r["id"] for r in sets["word_problems"].rows]
    assert len(teacher[0]["messages"]) == 1 + 2 * 3 + 1
    assert teacher[0]["messages"][-1] == sets["word_problems"].rows[0]["messages"][-1]
    assert teacher_prompt_rows(sets["headlines"]) == sets["headlines"].rows
    with_example = teacher_prompt_rows(sets["headlines"], shots=3)
    assert [m["role"] for m in with_example[0]["messages"]] == ["system", "user", "assistant", "user"]


def test_teacher_rows_of_a_task_set_follow_the_task(tmp_path):
    """The headlines *task* (mixed EN/ZH, seeded draw) is not the English headline probe of the math story."""
    from helpers.tasks.spec import load_task

    task = load_task("headlines")
    for langs in (None, ["zh"]):
        sets = prepare_datasets(tmp_path / str(langs), task=task, n=5, gsm8k=0, headlines=0, seed=3, langs=langs)
        rows = sets["headlines"].rows
        teacher = teacher_prompt_rows(sets["headlines"], shots=1)
        assert [r["id"] for r in teacher] == [r["id"] for r in rows]
        assert teacher[0]["messages"][-1] == rows[0]["messages"][-1] and len(teacher[0]["messages"]) > 2


def test_find_merged_model_is_the_merge_helper():
    from helpers.merge.adapter import latest_merged_model

    assert find_merged_model is latest_merged_model  # one finder for notebooks 05, 06 and the bench


def test_reply_token_lengths(tmp_path, student):
    train = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]}
            for text in ("<think>5 + 3 = 8.</think>\n\n<answer>\\boxed{8}</answer>", "ok")]
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    lengths = reply_token_lengths(train, student)
    assert len(lengths) == 2 and lengths[0] > 10 and 0 < lengths[1] < 3


def test_dashboard_command():
    command = dashboard_command("/x/run")
    assert command.startswith("evalscope service --outputs /x/run/evalscope")
    assert "127.0.0.1" in command


@pytest.mark.slow
def test_failed_evalscope_run_shows_its_log(tmp_path, settings):
    dataset = fixture_dataset("word_problems")
    config = task_config(tmp_path / "model", "x", dataset, tmp_path / "out", max_tokens=4, settings=settings)
    config["eval_type"] = "no-such-backend"  # fails fast, before any model or dataset is touched
    with pytest.raises(EvalError, match="evalscope exited"):
        run_tasks([config], tmp_path / "logs" / "x.log", settings=settings)


@pytest.mark.slow
def test_compare_backends_on_one_item(tmp_path, student, settings):
    """Checkpoint (one by one and batched) and served evaluation give the same greedy reply."""
    probe = prepare_datasets(tmp_path / "data", word_problems=0, gsm8k=0, headlines=1)["headlines"]
    table = compare_backends(student, probe, tmp_path, max_tokens=8, batch_size=1, settings=settings)
    assert len(table) == 3 and (table["items"] == 1).all()
    assert table["same_text"].all()
    assert table.iloc[2]["setup_s"] > 0  # the served run started a swift deploy server
    assert all(tokens == [8] for tokens in table["output_tokens"])
