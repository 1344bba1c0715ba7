"""Export to ms-swift JSONL (and ShareGPT / Alpaca), the schema check and the dataset card."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from curation_rows import ANSWER, QUESTION, THINKING, make_row

from helpers.core.jsonl import write_jsonl
from helpers.curate.export import (
    DatasetFormatError,
    assistant_text,
    dataset_card,
    export_dataset,
    split_train_val,
    to_alpaca,
    to_messages,
    to_sharegpt,
    validate_jsonl,
    write_dataset_card,
)
from helpers.curate.funnel import Funnel, StageResult

FEW_SHOT = [{"role": "system", "content": "sys"}, {"role": "user", "content": "shot q"},
            {"role": "assistant", "content": "shot a"}, {"role": "user", "content": "Q: " + QUESTION}]


def test_messages_record_is_zero_shot_with_inline_thinking() -> None:
    record = to_messages(make_row(messages=FEW_SHOT))
    assert record == {"messages": [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": f"<think>\n{THINKING}\n</think>\n\n{ANSWER}"}]}


def test_custom_prompt_builder_and_system() -> None:
    build = lambda row: [{"role": "user", "content": f"{row['question']}\nPut the answer in \\boxed{{}}."}]  # noqa: E731
    record = to_messages(make_row(), build, system="Be brief.")
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    assert record["messages"][1]["content"].endswith("\\boxed{}.")
    with pytest.raises(ValueError, match="ending with a user turn"):
        to_messages(make_row(), lambda row: [])


def test_sharegpt_and_alpaca_from_the_same_row() -> None:
    row = make_row()
    assert to_sharegpt(row, system="S") == {"conversations": [
        {"from": "system", "value": "S"}, {"from": "human", "value": QUESTION},
        {"from": "gpt", "value": assistant_text(row)}]}
    assert to_alpaca(row) == {"instruction": QUESTION, "input": "", "output": assistant_text(row)}
    assert to_alpaca(row, system="S")["system"] == "S"
    with pytest.raises(ValueError, match="one user turn"):
        to_alpaca(row, lambda r: FEW_SHOT[1:])


def test_assistant_text_without_thinking_and_without_answer() -> None:
    assert assistant_text(make_row(thinking=None)) == ANSWER
    with pytest.raises(ValueError, match="no answer"):
        assistant_text(make_row(answer="  "))


def test_split_is_by_question_and_seeded() -> None:
    rows = [make_row(prompt_id=f"q{i}", sample_index=s) for i in range(10) for s in range(3)]
    train, val = split_train_val(rows, 0.2, seed=0)
    assert len(train) + len(val) == 30 and len(val) == 6
    assert not {r["prompt_id"] for r in train} & {r["prompt_id"] for r in val}
    assert split_train_val(rows, 0.2, seed=0) == (train, val)
    assert split_train_val(rows, 0.0)[1] == []
    assert len(split_train_val(rows[:6], 0.01)[1]) == 3  # at least one question


# --------------------------------------------------------------------------- validation

GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_validate_reports_every_bad_line_with_its_number(tmp_path: Path) -> None:
    bad = [
        json.dumps(GOOD),                                                          # 1 ok
        "{not json",                                                               # 2
        json.dumps({"text": "hi"}),                                                # 3
        json.dumps({"messages": [{"role": "assistant", "content": "a"},
                                 {"role": "user", "content": "q"}]}),              # 4 order
        json.dumps({"messages": [{"role": "user", "content": "q"},
                                 {"role": "assistant", "content": "  "}]}),        # 5 empty
        json.dumps({"messages": [{"role": "user", "content": "q"}]}),              # 6 last turn
        json.dumps({"messages": [{"role": "user", "content": 5},
                                 {"role": "assistant", "content": "a"}]}),         # 7 non-string
        json.dumps({"messages": [{"role": "bot", "content": "q"}]}),               # 8 role
        "",                                                                        # 9 blank
        json.dumps([1, 2]),                                                        # 10 not object
        json.dumps({"messages": [{"role": "user", "content": "q"},
                                 {"role": "system", "content": "s"},
                                 {"role": "assistant", "content": "a"}]}),         # 11 system late
        json.dumps({"messages": []}),                                              # 12 empty list
    ]
    with pytest.raises(DatasetFormatError) as info:
        validate_jsonl(_write(tmp_path, bad))
    errors = dict(info.value.errors)
    assert sorted(errors) == list(range(2, 13))
    assert "invalid JSON" in errors[2]
    assert "missing 'messages'" in errors[3]
    assert "alternate" in errors[4]
    assert "content is empty" in errors[5]
    assert "last turn" in errors[6]
    assert "is int, expected a string" in errors[7]
    assert "'bot'" in errors[8]
    assert "empty line" in errors[9]
    assert "JSON object" in errors[10]
    assert "system turn may only come first" in errors[11]
    assert "is empty" in errors[12]
    message = str(info.value)
    assert "line 2:" in message and "line 12:" in message and "11 problem(s)" in message


def test_validate_sharegpt_and_alpaca(tmp_path: Path) -> None:
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert validate_jsonl(_write(tmp_path, [json.dumps(sharegpt)]), "sharegpt")["rows"] == 1
    wrong = {"conversations": [{"from": "human", "value": "q"}, {"from": "assistant", "value": "a"}]}
    with pytest.raises(DatasetFormatError, match="line 1: .*'assistant'"):
        validate_jsonl(_write(tmp_path, [json.dumps(wrong)]), "sharegpt")
    alpaca = {"instruction": "q", "input": "", "output": "a"}
    assert validate_jsonl(_write(tmp_path, [json.dumps(alpaca)]), "alpaca")["rows"] == 1
    with pytest.raises(DatasetFormatError, match="line 2: 'output' is empty"):
        validate_jsonl(_write(tmp_path, [json.dumps(alpaca), json.dumps({**alpaca, "output": ""})]),
                       "alpaca")
    with pytest.raises(DatasetFormatError, match="no rows"):
        validate_jsonl(_empty(tmp_path))
    with pytest.raises(ValueError, match="fmt"):
        validate_jsonl(_write(tmp_path, [json.dumps(GOOD)]), "csv")  # type: ignore[arg-type]


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    return path


def test_export_writes_valid_files_in_every_format(tmp_path: Path) -> None:
    rows = [make_row(prompt_id=f"q{i}", sample_index=s, steps=1 + i % 3) for i in range(10) for s in range(2)]
    result = export_dataset(rows, tmp_path, formats=("messages", "sharegpt", "alpaca"),
                            val_fraction=0.2, seed=1)
    assert result.n_train == 16 and result.n_val == 4
    assert result.files["messages"]["train"].name == "train.jsonl"
    assert result.files["alpaca"]["val"].name == "val.alpaca.jsonl"
    stats = result.stats["messages"]["train"]
    assert stats["rows"] == 16 and stats["with_think"] == 16 and stats["with_system"] == 0
    first = json.loads(result.files["messages"]["train"].read_text(encoding="utf-8").splitlines()[0])
    assert first["messages"][-1]["content"].startswith("<think>\n")
    with pytest.raises(ValueError, match="No rows"):
        export_dataset([], tmp_path)
    with pytest.raises(ValueError, match="Unknown format"):
        export_dataset(rows, tmp_path, formats=("parquet",))


def test_written_file_with_a_bad_row_is_rejected(tmp_path: Path) -> None:
    path = write_jsonl([GOOD, {"messages": [{"role": "user", "content": "q"}]}], tmp_path / "x.jsonl")
    with pytest.raises(DatasetFormatError, match="line 2"):
        validate_jsonl(path)


# --------------------------------------------------------------------------- dataset card


class WordPieceTokenizer:
    """A stand-in tokenizer: every 3 characters is a token."""

    name_or_path = "fake/tokenizer"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(range((len(text) + 2) // 3))


def test_dataset_card(tmp_path: Path) -> None:
    rows = [make_row(prompt_id="a", steps=1, pass_rate=1.0),
            make_row(prompt_id="b", steps=2, pass_rate=0.5),
            make_row(prompt_id="c", steps=2, task="gsm8k", pass_rate=0.5)]
    dropped = make_row(prompt_id="z") | {"drop_reason": "refusal", "drop_stage": "filters",
                                         "drop_detail": "x"}
    funnel = Funnel([StageResult("filters", kept=rows, dropped=[dropped])])
    card = dataset_card(rows, source="synthetic word problems", funnel=funnel)
    assert "synthetic word problems" in card and "teacher-x" in card
    assert "whitespace-separated words" in card
    assert "| filters |" in card and "refusal" in card
    task_table = card.split("## Task mix")[1]
    assert re.search(r"\|\s*word_problem\s*\|\s*2\s*\|\s*0.667\s*\|", task_table)
    assert re.search(r"\|\s*gsm8k\s*\|\s*1\s*\|\s*0.333\s*\|", task_table)
    steps_table = card.split("## Difficulty mix")[1].split("##")[0]
    assert re.search(r"\|\s*1\s*\|\s*1\s*\|", steps_table)
    assert re.search(r"\|\s*2\s*\|\s*2\s*\|", steps_table)
    assert "Mean teacher pass rate" in card and "0.67" in card

    tokens = dataset_card(rows, source="s", tokenizer=WordPieceTokenizer(), teacher_model="T")
    assert "tokens of the fake/tokenizer tokenizer" in tokens and "**Teacher model:** T" in tokens
    local = WordPieceTokenizer()
    local.name_or_path = str(tmp_path / "models" / "Student-1B")  # a local folder, not a hub id
    card_local = dataset_card(rows, source="s", tokenizer=local)
    assert "tokens of the Student-1B tokenizer" in card_local and str(tmp_path) not in card_local
    path = write_dataset_card(tmp_path, rows, source="s")
    assert path.name == "README.md" and path.read_text(encoding="utf-8").startswith("# ")
    with pytest.raises(ValueError, match="empty"):
        dataset_card([], source="s")
