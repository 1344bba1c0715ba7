"""Stage 2: one dropped and one kept case for every quality filter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from curation_rows import QUESTION, make_row

from helpers.curate.filters import FilterConfig, find_refusal, load_refusal_phrases, quality_filter

PHRASES = load_refusal_phrases()


def _reason(row: dict, config: FilterConfig | None = None) -> str | None:
    result = quality_filter([row], config, phrases=PHRASES)
    assert result.n_kept + result.n_dropped == 1
    return result.dropped[0]["drop_reason"] if result.dropped else None


CASES = [
    # (name, row, expected drop reason or None = kept)
    ("good", make_row(), None),
    ("failed request", make_row(reply=False), "no_reply"),
    ("status truncated", make_row(status="truncated"), "truncated"),
    ("finish length", make_row(finish_reason="length"), "truncated"),
    ("finish stop", make_row(finish_reason="stop"), None),
    ("english refusal", make_row(answer="I'm sorry, but I can't help with that."), "refusal"),
    ("curly apostrophe", make_row(answer="I\u2019m unable to solve this."), "refusal"),
    ("chinese refusal", make_row(answer="抱歉，我无法回答这个问题。"), "refusal"),
    ("disclaimer in thinking", make_row(thinking="As an AI language model, I think 3 + 5 = 8 apples."), "refusal"),
    ("honest 'cannot'", make_row(thinking="We cannot subtract here, so we add: 3 + 5 = 8 apples."), None),
    ("missing thinking", make_row(thinking=None), "broken_format"),
    ("blank thinking", make_row(thinking="   "), "broken_format"),
    ("missing answer", make_row(answer=""), "broken_format"),
    ("think tag in answer", make_row(answer="</think> <answer>\\boxed{8}</answer>"), "broken_format"),
    ("empty answer tags", make_row(answer="<answer></answer>"), "empty_answer"),
    ("empty box", make_row(answer="<answer>\\boxed{}</answer>"), "empty_answer"),
    ("short thinking", make_row(thinking="3 + 5 = 8"), "too_short"),
    ("short chinese thinking", make_row(thinking="三加五"), "too_short"),
    ("chinese thinking long enough", make_row(thinking="汤姆有三个苹果，又买了五个，一共八个。"), None),
    ("answer repeats question", make_row(answer=f"<answer>{QUESTION}</answer>"), "repeats_question"),
    ("thinking repeats question", make_row(thinking=QUESTION.upper() + " Hmm."), "repeats_question"),
    ("thinking quotes question then solves",
     make_row(thinking=QUESTION + " He starts with 3 and adds 5, so 3 + 5 = 8 apples in total."), None),
]


@pytest.mark.parametrize("name, row, expected", CASES, ids=[c[0] for c in CASES])
def test_each_filter_keeps_and_drops(name: str, row: dict, expected: str | None) -> None:
    assert _reason(row, FilterConfig(outlier_rule=None)) == expected


def test_every_reason_has_a_kept_and_a_dropped_case() -> None:
    dropped = {c[2] for c in CASES if c[2]}
    assert dropped >= {"no_reply", "truncated", "refusal", "broken_format", "empty_answer",
                       "too_short", "repeats_question"}
    assert any(c[2] is None for c in CASES)


def test_thinking_optional_when_not_required() -> None:
    config = FilterConfig(require_thinking=False, outlier_rule=None)
    assert _reason(make_row(thinking=None), config) is None
    assert _reason(make_row(thinking="8"), config) == "too_short"  # present but too short


def test_min_answer_chars() -> None:
    config = FilterConfig(min_answer_chars=3, outlier_rule=None)
    assert _reason(make_row(), config) == "too_short"
    assert _reason(make_row(answer="<answer>\\boxed{128}</answer>"), config) is None


def _length_rows(extra_words: int) -> list[dict]:
    rows = [make_row(prompt_id=f"p{i}", thinking=" ".join(["step"] * (20 + 5 * (i % 5))))
            for i in range(24)]
    rows.append(make_row(prompt_id="long", thinking=" ".join(["step"] * extra_words)))
    return rows


def test_length_outlier_iqr() -> None:
    result = quality_filter(_length_rows(400), phrases=PHRASES)
    assert [r["prompt_id"] for r in result.dropped] == ["long"]
    assert result.dropped[0]["drop_reason"] == "length_outlier"
    assert "400 words" in result.dropped[0]["drop_detail"]
    assert result.n_kept == 24
    # a slightly longer chain of thought is not an outlier
    assert quality_filter(_length_rows(60), phrases=PHRASES).n_dropped == 0  # fence 35 + 3 x 10


def test_length_outlier_has_a_floor_for_uniformly_short_chains() -> None:
    # 24 one-step chains of 13-15 words (IQR 2) and one two-step chain of 23 words:
    # Q3 + 3 x IQR = 21, but a 23-word chain of thought is not a runaway one.
    rows = [make_row(prompt_id=f"p{i}", thinking=" ".join(["step"] * (13 + i % 3))) for i in range(24)]
    rows.append(make_row(prompt_id="two-step", thinking=" ".join(["step"] * 23)))
    assert quality_filter(rows, phrases=PHRASES).n_dropped == 0
    rows.append(make_row(prompt_id="runaway", thinking=" ".join(["step"] * 80)))
    result = quality_filter(rows, phrases=PHRASES)
    assert [r["prompt_id"] for r in result.dropped] == ["runaway"]
    assert "> 64 (floor min_outlier_words" in result.dropped[0]["drop_detail"]
    assert quality_filter(rows, FilterConfig(min_outlier_words=0), phrases=PHRASES).n_dropped == 2


def test_length_outlier_percentile_and_small_sets() -> None:
    config = FilterConfig(outlier_rule="percentile", percentile=90)
    result = quality_filter(_length_rows(400), config, phrases=PHRASES)
    assert "long" in [r["prompt_id"] for r in result.dropped]
    assert all(r["drop_reason"] == "length_outlier" for r in result.dropped)
    tiny = _length_rows(400)[-5:]  # 5 rows: too few for statistics, nothing dropped
    assert quality_filter(tiny, phrases=PHRASES).n_dropped == 0


def test_refusal_phrases_file_has_english_and_chinese(tmp_path: Path) -> None:
    from helpers.curate.filters import REFUSAL_PHRASES_PATH

    data = json.loads(REFUSAL_PHRASES_PATH.read_text(encoding="utf-8"))
    assert data["en"] and data["zh"]
    assert find_refusal("作为一个人工智能，我不能", PHRASES)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"en": ["ok", ""]}), encoding="utf-8")
    with pytest.raises(ValueError, match="non-empty strings"):
        load_refusal_phrases(bad)
    with pytest.raises(FileNotFoundError):
        load_refusal_phrases(tmp_path / "missing.json")


def test_stage_accounts_for_every_row() -> None:
    rows = [c[1] for c in CASES]
    result = quality_filter(rows, FilterConfig(outlier_rule=None), phrases=PHRASES)
    assert result.n_kept + result.n_dropped == len(rows)
    assert all(r["drop_stage"] == "filters" and r["drop_detail"] for r in result.dropped)
