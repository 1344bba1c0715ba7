"""Task files: loading and clear errors, prompt rows for every built-in task, and the checks and
metrics each verifier gives (hand-computed values, bad input counted as format failures)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.evaluate.metrics import confusion_table, field_f1_table, item_table, macro_f1, metrics_table
from helpers.tasks.checks import check_answer, check_row, parse_json_answer, verify_fields
from helpers.tasks.spec import TaskFileError, guess_lang, list_tasks, load_task
from helpers.teacher.client import normalize_reply

FIELDS = ["party_a", "amount"]
GOLD = {"party_a": "Acme Ltd.", "amount": "USD 5,000"}


def sample(row: dict, raw: str, status: str = "ok") -> dict:
    """A sample row as the engine writes it, for a prompt row and a reply text."""
    reply = normalize_reply(raw, None, "length" if status == "truncated" else "stop", {"completion_tokens": 7},
                            0.1, "t").to_dict()
    return {**row, "prompt_id": row["id"], "sample_index": 0, "status": status, "reply": reply}


# --------------------------------------------------------------------------- loading


def test_built_in_tasks_load() -> None:
    assert list_tasks()[:3] == ["math", "headlines", "extraction"]
    math_task, headlines, extraction = (load_task(n) for n in ("math", "headlines", "extraction"))
    assert (math_task.verifier, math_task.reply_format) == ("number", "think")
    assert (headlines.verifier, sorted(headlines.labels)) == ("label", sorted(
        ["world", "sports", "business", "science_tech", "culture"]))
    assert (extraction.verifier, extraction.reply_format) == ("fields", "sections")
    assert extraction.fields == ("party_a", "party_b", "amount", "signing_date", "term", "penalty")
    assert load_task(headlines.path) == headlines and load_task(headlines.folder) == headlines


def _write_task(folder: Path, task: dict, rows: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "user.txt").write_text("Classify: $input", encoding="utf-8")
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows or [
        {"text": f"item {i}", "label": "yes" if i % 2 else "no"} for i in range(20)]), encoding="utf-8")
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(task), encoding="utf-8")
    return path


BASE = {"name": "mine", "data": {"file": "data.jsonl", "input": "text", "reference": "label"},
        "prompt": {"user": "user.txt"}, "check": {"verifier": "label", "labels": ["yes", "no"]}}


def test_a_learners_task_file_needs_no_code(tmp_path: Path) -> None:
    task = load_task(_write_task(tmp_path / "mine", BASE))
    train, test = task.items("train"), task.items("test")
    assert len(train) + len(test) == 20 and test and {r["id"] for r in train}.isdisjoint({r["id"] for r in test})
    assert [r["id"] for r in task.items("test")] == [r["id"] for r in test]  # a stable split
    rows = task.prompt_rows("train", 3, shots=2)
    assert rows[0]["messages"][-1] == {"role": "user", "content": f"Classify: {rows[0]['question']}"}
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert rows[0]["meta"]["check"] == {"verifier": "label", "format": "think", "labels": ["yes", "no"]}
    assert rows[0]["question"] not in [m["content"] for m in rows[0]["messages"][:-1]]  # never its own answer


@pytest.mark.parametrize("change, message", [
    ({"chek": {"verifier": "label"}}, "unknown key 'chek'.*Did you mean 'check'"),
    ({"data": {"file": "data.jsonl", "inptu": "text"}}, "unknown key 'data.inptu'.*'input'"),
    ({"check": {"verifier": "labels"}}, "check.verifier must be one of"),
    ({"check": {"verifier": "label"}}, "needs check.labels"),
    ({"check": {"verifier": "fields"}}, "needs check.fields"),
    ({"reply": {"format": "sections"}}, "needs reply.markers"),
    ({"prompt": {"system": "user.txt"}}, "'prompt.user' is missing"),
    ({"data": {"input": "text"}}, "'data.file' is missing"),
    ({"data": {"source": "web", "file": "x"}}, "data.source must be one of"),
    ({"prompt": {"user": "nowhere.txt"}}, r"prompt.user 'nowhere.txt' not found: create .*bad/nowhere.txt"),
    ({"prompt": {"user": "user.txt", "system": "system.txt"}}, r"prompt.system 'system.txt' not found"),
    ({"prompt": {"user": "user.txt", "exemplar_thinking": "It is {label}."}},
     r"exemplar_thinking uses \{label\}; it may use only \{input\}, \{reference\}"),
    ({"prompt": {"user": "user.txt", "exemplar_thinking": "a { brace"}}, r"exemplar_thinking: .*\{\{"),
])
def test_a_bad_task_file_names_the_key(tmp_path: Path, change: dict, message: str) -> None:
    task = {k: v for k, v in {**BASE, **change}.items() if k != "check" or "chek" not in change}
    with pytest.raises((TaskFileError, FileNotFoundError), match=message):
        load_task(_write_task(tmp_path / "bad", task))


def test_a_task_files_outputs_go_under_its_name(tmp_path: Path) -> None:
    from helpers.core.config import get_settings

    path = _write_task(tmp_path / "folder-name", {**BASE, "name": "sentence kind"})
    settings = get_settings({"COURSE_TASK": str(path), "COURSE_WORKSPACE": str(tmp_path / "ws")}, apply_env=False)
    assert settings.task_dir == tmp_path / "ws" / "tasks" / "sentence_kind"
    assert get_settings({"COURSE_TASK": "headlines"}, apply_env=False).task_key == "headlines"


def test_bad_data_rows_name_the_line(tmp_path: Path) -> None:
    bad = load_task(_write_task(tmp_path / "a", BASE, [{"text": "x", "label": "maybe"}]))
    with pytest.raises(TaskFileError, match=r"data.jsonl:1: reference 'maybe' is not one of"):
        bad.items("train")
    empty = load_task(_write_task(tmp_path / "b", BASE, [{"label": "yes"}]))
    with pytest.raises(TaskFileError, match=r"data.jsonl:1: no text in the field 'text'.*fields \['label'\]"):
        empty.items("test")
    with pytest.raises(FileNotFoundError, match="No task 'nope'"):
        load_task("nope")


def test_prompt_rows_of_the_built_in_tasks() -> None:
    headlines = load_task("headlines").prompt_rows("test", shots=3)
    assert {r["meta"]["lang"] for r in headlines} == {"en", "zh"} and len(headlines) == 160
    zh = next(r for r in headlines if r["meta"]["lang"] == "zh")
    assert zh["messages"][-1]["content"].startswith("标题：") and "<answer>" in zh["messages"][2]["content"]
    contracts = load_task("extraction").prompt_rows("train", 4, shots=2)
    assert [r["meta"]["lang"] for r in contracts] == ["en", "zh", "en", "zh"]
    for row in contracts:  # retrieved exemplars: training contracts of the same template, other values
        shots = row["messages"][1:-1]
        assert len(shots) == 4 and all(s["content"] != row["messages"][-1]["content"] for s in shots)
        markers = row["meta"]["check"]["markers"]
        assert shots[1]["content"].startswith(markers[0]) and markers[1] in shots[1]["content"]
        assert json.loads(shots[1]["content"].split(markers[1])[1]).keys() == set(row["reference"])
    assert guess_lang("甲方：上海某公司") == "zh" and guess_lang("Party A: Acme") == "en"


# --------------------------------------------------------------------------- checks


def test_fields_checked_one_by_one() -> None:
    right = verify_fields(GOLD, '{"party_a": "acme ltd", "amount": "USD 5,000."}', FIELDS)
    assert right.correct and right.format_ok and right.fields == {"party_a": "tp", "amount": "tp"}
    wrong = verify_fields(GOLD, '```json\n{"party_a": "Acme Ltd.", "amount": "USD 500", "x": 1}\n```', FIELDS)
    assert not wrong.correct and not wrong.format_ok and wrong.fields == {"party_a": "tp", "amount": "wrong"}
    assert "unknown keys ['x']" in wrong.detail and "amount" in wrong.detail
    missing = verify_fields(GOLD, '{"party_a": null}', FIELDS)
    assert missing.fields == {"party_a": "fn", "amount": "fn"} and "missing keys ['amount']" in missing.detail
    invented = verify_fields({"party_a": None, "amount": "1"}, '{"party_a": "X", "amount": "1"}', FIELDS)
    assert invented.fields == {"party_a": "fp", "amount": "tp"} and not invented.correct
    broken = verify_fields(GOLD, '{"party_a": "Acme", }', FIELDS)
    assert broken.format_ok is False and broken.detail.startswith("invalid JSON")
    assert parse_json_answer("no json here") == (None, "no JSON object in the answer")


def test_labels_and_numbers_say_what_is_wrong_with_the_format() -> None:
    spec = {"verifier": "label", "labels": ["world", "sports"]}
    assert check_answer("sports", "<answer>Sports</answer>", spec=spec).format_ok
    unknown = check_answer("sports", "<answer>weather</answer>", spec=spec)
    assert not unknown.correct and not unknown.format_ok and unknown.detail == "unknown label 'weather'"
    empty = check_answer("sports", "", spec=spec)
    assert not empty.format_ok and empty.detail == "no label in the answer"
    number = check_answer("8", "the answer is 8", spec={"verifier": "number"})
    assert number.correct and not number.format_ok  # right by luck, but no \boxed{} to read it from


def test_sections_replies_and_their_failures() -> None:
    row = load_task("extraction").prompt_rows("test", 1)[0]
    think, answer = row["meta"]["check"]["markers"]
    good = sample(row, f"{think}\nParty A pays.\n{answer}\n{json.dumps(row['reference'])}")
    assert check_row(good).correct and check_row(good).format_ok
    no_answer = sample(row, f"{think}\nI think about it for a long time")
    result = check_row(no_answer)
    assert result.correct is False and result.format_ok is False and "no Final answer section" in result.detail


# --------------------------------------------------------------------------- metrics


def test_macro_f1_and_confusion_by_hand() -> None:
    refs = ["a", "a", "b", "b"]
    preds = ["a", "b", "b", None]
    # a: tp 1, fp 0, fn 1 -> 2/3; b: tp 1, fp 1, fn 1 -> 1/2; mean 7/12
    assert macro_f1(refs, preds) == pytest.approx(7 / 12)
    items = pd.DataFrame({"reference": refs, "prediction": preds})
    table = confusion_table(items, labels=["a", "b"])
    assert table.loc["a"].tolist() == [1, 1, 0] and table.loc["b"].tolist() == [0, 1, 1]


def test_metrics_of_each_task_by_hand() -> None:
    headlines = load_task("headlines").prompt_rows("test", 4)
    rows = [sample(headlines[0], f"<think>x</think><answer>{headlines[0]['reference']}</answer>"),
            sample(headlines[1], "<think>x</think><answer>not a label</answer>"),
            sample(headlines[2], "<think>x</think>", status="truncated")]
    table = metrics_table(rows)
    assert table.loc["all", "accuracy"] == 0.333 and table.loc["all", "format_ok"] == 0.333  # rounded to 3 places
    assert table.loc["all", "truncated"] == 0.333 and "macro_f1" in table
    contracts = load_task("extraction").prompt_rows("test", 2)
    think, answer = contracts[0]["meta"]["check"]["markers"]
    half = {**contracts[1]["reference"], "amount": "wrong", "term": None}
    rows = [sample(contracts[0], f"{think}\nx\n{answer}\n{json.dumps(contracts[0]['reference'])}"),
            sample(contracts[1], f"{contracts[1]['meta']['check']['markers'][1]}\n{json.dumps(half, ensure_ascii=False)}")]
    items = item_table(rows, extra=["model"])
    # 6 + 4 fields right (tp 10); amount wrong (fp 1, fn 1); term missed (fn 1): F1 = 20 / (20 + 1 + 2)
    assert metrics_table(items).loc["all", "micro_f1"] == pytest.approx(round(20 / 23, 3))
    per_field = field_f1_table(items.assign(model="m"), by="model")
    assert per_field.loc["party_a", "m"] == 1.0 and per_field.loc["amount", "m"] == 0.5  # tp 1, fp 1, fn 1
    assert math.isclose(per_field.loc["term", "m"], round(2 / 3, 3))
    assert items["format_ok"].tolist() == [True, False]  # the second reply has no thinking section
