"""Fast thinking (notebook 09): shorten, re-verify, fall back, export, configs, compare; scripted rewriters."""

from __future__ import annotations

import json

import pytest
from curation_rows import ANSWER, QUESTION, THINKING, make_row

from helpers.core.config import get_settings
from helpers.core.jsonl import write_jsonl
from helpers.core.rows import thinking_of
from helpers.curate.align import AlignmentAborted
from helpers.curate.export import to_messages
from helpers.teacher.prompts import load_prompt
from helpers.techniques.fast_thinking import (
    STATUSES,
    apply_rewrites,
    calculation_sentences,
    config_differences,
    export_variant,
    length_stats,
    llm_shortener,
    load_curated,
    plot_length_histograms,
    reaches_reference,
    rule_shortener,
    shorten_prompt,
    shorten_stage,
    variant_configs,
    zero_shot_prompt,
)


def words(text: str) -> int:
    """A stand-in token counter: whitespace words."""
    return len(text.split())


def reply(thinking: str, boxed: str = "8") -> str:
    return f"<reasoning>\n{thinking}\n</reasoning>\n<answer>\\boxed{{{boxed}}}</answer>"


class Script:
    """A fake batch teacher: one scripted reply (or exception, a failed call) per chat, in order."""

    def __init__(self, *replies: str | Exception) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []
        self.batches: list[int] = []

    def __call__(self, chats: list[list[dict[str, str]]]) -> list[str | Exception]:
        self.batches.append(len(chats))
        out = []
        for messages in chats:
            self.prompts.append(messages[-1]["content"])
            out.append(self.replies.pop(0) if len(self.replies) > 1 else self.replies[0])
        return out


def rows(n: int) -> list[dict]:
    """``n`` rows with different questions (proposals are cached by content)."""
    return [make_row(prompt_id=f"p{i}", question=f"{QUESTION} (case {i})") for i in range(n)]


# --------------------------------------------------------------------------- the rewrite and its checks


def test_a_verified_shorter_rewrite_replaces_the_thinking() -> None:
    chat = Script(reply("3 + 5 = 8."))
    result = shorten_stage([make_row()], llm_shortener(chat), source="llm", count_tokens=words)
    (row,) = result.kept
    assert thinking_of(row) == "3 + 5 = 8."
    assert row["fast"]["status"] == "shortened" and row["fast"]["rewritten"]
    assert row["fast"]["original_thinking"] == THINKING
    assert (row["fast"]["tokens_before"], row["fast"]["tokens_after"]) == (words(THINKING), words("3 + 5 = 8."))
    assert row["reply"]["answer"] == ANSWER
    assert result.n_dropped == 0
    # the request is notebook 03's shorten prompt, with the question, the chain and the fast-thinking remark
    assert QUESTION in chat.prompts[0] and THINKING in chat.prompts[0]
    assert load_prompt("fast_thinking_feedback").render() in chat.prompts[0]


@pytest.mark.parametrize("scripted, status", [
    (reply("3 + 5 = 9.", boxed="9"), "wrong_answer"),           # the answer changed
    (reply("3 + 5 = 9. So 8."), "wrong_arithmetic"),             # boxed 8 copied, arithmetic wrong
    (reply("Add them up."), "misses_reference"),                  # boxed 8 copied, never derived
    (reply(THINKING + " Let me check again: 3 + 5 = 8."), "not_shorter"),
    ("Sure! The answer is 8.", "no_rewrite"),                     # not in the <reasoning> format
])
def test_a_failed_rewrite_falls_back_to_the_original(scripted, status) -> None:
    result = shorten_stage([make_row()], llm_shortener(Script(scripted)), source="llm", count_tokens=words)
    (row,) = result.kept
    assert row["fast"]["status"] == status
    assert thinking_of(row) == THINKING and row["reply"]["answer"] == ANSWER
    assert not row["fast"]["rewritten"] and row["fast"]["original_thinking"] is None
    counts = result.tables["counts"].set_index("status")["rows"]
    assert counts[status] == 1 and counts.sum() == 1
    assert list(result.tables["counts"]["status"]) == list(STATUSES)


def test_a_failed_call_keeps_the_original() -> None:
    result = shorten_stage(rows(2), llm_shortener(Script(reply("3 + 5 = 8."), ConnectionError("reset"))),
                           source="llm", count_tokens=words)
    assert [r["fast"]["status"] for r in result.kept] == ["shortened", "call_failed"]
    assert thinking_of(result.kept[1]) == THINKING and "ConnectionError: reset" in result.kept[1]["fast"]["detail"]


def test_rows_are_never_dropped_and_keep_their_order() -> None:
    chat = Script(reply("3 + 5 = 8."), "garbage", reply("3 + 5 = 8."))
    result = shorten_stage(rows(3), llm_shortener(chat), source="llm", count_tokens=words)
    assert [r["prompt_id"] for r in result.kept] == ["p0", "p1", "p2"]
    assert [r["fast"]["status"] for r in result.kept] == ["shortened", "no_rewrite", "shortened"]
    assert result.tables["outcomes"]["status"].tolist() == ["shortened", "no_rewrite", "shortened"]


def test_a_dead_endpoint_aborts_instead_of_keeping_everything() -> None:
    chat = Script(ConnectionError("refused"))
    with pytest.raises(AlignmentAborted, match="every shortener call failed.*refused"):
        shorten_stage(rows(5), llm_shortener(chat), source="llm", count_tokens=words)


def test_all_rows_go_to_the_teacher_in_one_batch() -> None:
    chat = Script(reply("3 + 5 = 8."))
    result = shorten_stage(rows(6), llm_shortener(chat), source="llm", count_tokens=words)
    assert chat.batches == [6]
    assert [r["prompt_id"] for r in result.kept] == [f"p{i}" for i in range(6)]
    assert all(r["fast"]["status"] == "shortened" for r in result.kept)
    single = llm_shortener(Script(reply("3 + 5 = 8.")))(make_row())  # one row, called directly
    assert single.thinking == "3 + 5 = 8."


def test_a_shortener_must_return_a_proposal() -> None:
    with pytest.raises(TypeError, match="expected a Proposal"):
        shorten_stage([make_row()], lambda row: ("a", "b"), source="x", count_tokens=words)


def test_reaches_reference() -> None:
    assert reaches_reference("3 + 5 = 8.", "8")
    assert not reaches_reference("3 + 5 = 80.", "8")
    assert reaches_reference("It costs 1,200 dollars.", "1200")
    assert reaches_reference("anything", "blue") is None


def test_shorten_prompt_is_filled_in() -> None:
    text = shorten_prompt(make_row())
    assert QUESTION in text and THINKING in text and "$" not in text.replace("$$", "")


def test_apply_rewrites_puts_the_sample_back_in_place() -> None:
    all_rows = rows(4)
    sample = [all_rows[2], all_rows[0]]
    done = shorten_stage(sample, llm_shortener(Script(reply("3 + 5 = 8."))), source="llm", count_tokens=words)
    merged = apply_rewrites(all_rows, done)
    assert [r["prompt_id"] for r in merged] == ["p0", "p1", "p2", "p3"]
    assert [thinking_of(r) == "3 + 5 = 8." for r in merged] == [True, False, True, False]
    with pytest.raises(ValueError, match="not among the rows"):
        apply_rewrites(all_rows[1:2], done)


# --------------------------------------------------------------------------- the rule-based baseline


def test_rule_shortener_keeps_only_the_calculations() -> None:
    thinking = "Nina shares 78 crayons with 2 friends. 78 / 2 = 39. Each friend gets 2.5 more. 39 + 50 = 89."
    proposal = rule_shortener(make_row(thinking=thinking, reference="89", answer="<answer>\\boxed{89}</answer>"))
    assert proposal.thinking == "78 / 2 = 39.\n39 + 50 = 89."
    assert proposal.answer == "<answer>\\boxed{89}</answer>"
    assert calculation_sentences("No numbers here. None.") == []


def test_rule_shortener_goes_through_the_same_checks() -> None:
    good = make_row(prompt_id="good")
    no_calc = make_row(prompt_id="prose", thinking="Tom has three and buys five, which makes eight.")
    wrong = make_row(prompt_id="wrong", thinking="He buys more apples. 3 + 5 = 9. Then he eats one. 9 - 1 = 8.")
    result = shorten_stage([good, no_calc, wrong], rule_shortener, source="rules", count_tokens=words)
    statuses = {r["prompt_id"]: r["fast"]["status"] for r in result.kept}
    assert statuses == {"good": "shortened", "prose": "no_rewrite", "wrong": "wrong_arithmetic"}
    assert thinking_of(result.kept[0]) == "3 + 5 = 8."
    assert thinking_of(result.kept[2]) == wrong["reply"]["thinking"]


# --------------------------------------------------------------------------- lengths


def test_length_stats() -> None:
    table = length_stats({"long": [10, 20, 30], "short": [5, 5, 20]}, baseline="long")
    assert table.loc["long", "mean"] == 20 and table.loc["short", "median"] == 5
    assert table.loc["long", "total"] == 60 and table.loc["short", "total"] == 30
    assert table.loc["short", "vs long"] == 0.5 and table.loc["long", "n"] == 3
    with pytest.raises(KeyError):
        length_stats({"long": [1]}, baseline="short")


def test_length_histograms() -> None:
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_length_histograms({"long": [10, 20, 30], "short": [5, 5, 20]})
    assert len(ax.patches) > 0 and [t.get_text() for t in ax.get_legend().get_texts()][1].startswith("short (n=3")
    empty = plot_length_histograms({"long": [], "short": []})
    assert empty.texts[0].get_text() == "nothing to plot"


# --------------------------------------------------------------------------- notebook 03's export and the variants


def _write_export(settings, kept_rows, splits) -> None:
    export_variant(kept_rows, splits, settings.datasets_dir / "distill")
    write_jsonl(kept_rows, settings.datasets_dir / "curation" / "kept.jsonl")


def _settings(tmp_path, size: str = "full"):
    return get_settings({"COURSE_WORKSPACE": str(tmp_path), "COURSE_SIZE": size}, apply_env=False)


def test_load_curated_pairs_rows_with_their_split(tmp_path) -> None:
    settings = _settings(tmp_path)
    kept = [make_row(prompt_id="a"), make_row(prompt_id="a", sample_index=1, thinking="3 + 5 = 8."),
            make_row(prompt_id="b", question="Ann has 2 pens and buys 6 more. How many pens?", reference="8")]
    _write_export(settings, kept, ["train", "train", "val"])
    curated = load_curated(settings)
    assert curated.splits == ["train", "train", "val"]
    assert (curated.count("train"), curated.count("val")) == (2, 1)
    # an exported variant with the same split is byte-identical to the original export
    again = export_variant(curated.rows, curated.splits, tmp_path / "copy")
    assert again["train"].read_bytes() == (settings.datasets_dir / "distill" / "train.jsonl").read_bytes()


def test_load_curated_names_notebook_03_when_missing(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="notebook 03"):
        load_curated(_settings(tmp_path))


def test_load_curated_refuses_files_of_different_runs(tmp_path) -> None:
    settings = _settings(tmp_path)
    _write_export(settings, [make_row(prompt_id="a")], ["train"])
    write_jsonl([make_row(prompt_id="a", thinking="3 + 5 = 8.")], settings.datasets_dir / "curation" / "kept.jsonl")
    with pytest.raises(ValueError, match="different runs"):
        load_curated(settings)


def test_export_variant_keeps_the_split_and_removes_stale_files(tmp_path) -> None:
    out = tmp_path / "short"
    out.mkdir()
    (out / "val.jsonl").write_text("stale\n", encoding="utf-8")
    files = export_variant(rows(3), ["train", "train", "train"], out)
    assert set(files) == {"train"} and not (out / "val.jsonl").exists()
    lines = files["train"].read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == to_messages(rows(1)[0], zero_shot_prompt)
    with pytest.raises(ValueError, match="split labels"):
        export_variant(rows(2), ["train"], out)
    with pytest.raises(ValueError, match="'train' or 'val'"):
        export_variant(rows(1), ["test"], out)


def test_variant_configs_differ_only_in_data_and_output(tmp_path) -> None:
    settings = _settings(tmp_path)
    files = {name: export_variant(rows(10), ["train"] * 10, tmp_path / name)["train"] for name in ("long", "short")}
    configs = variant_configs(files, settings, output_root=tmp_path / "runs", num_train_epochs=1.0)
    diff = config_differences(configs)
    assert set(diff["setting"]) == {"dataset", "output_dir", "swanlab_exp_name"}
    long = configs["long"]
    assert long.num_train_epochs == 1.0 and long.val_dataset == ()
    assert long.save_steps == long.total_steps(10) == 3  # 10 rows, batch 4, one epoch: one checkpoint at the end
    assert "--val_dataset" not in long.args()
    files["short"].write_text(files["short"].read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="same rows"):
        variant_configs(files, settings, output_root=tmp_path / "runs")


def test_gpu_profile_configs_by_construction(tmp_path) -> None:
    settings = get_settings({"COURSE_WORKSPACE": str(tmp_path), "COURSE_SIZE": "full", "COURSE_PROFILE": "gpu"},
                            apply_env=False)
    files = {name: export_variant(rows(10), ["train"] * 10, tmp_path / name)["train"] for name in ("long", "short")}
    configs = variant_configs(files, settings, output_root=tmp_path / "runs", num_train_epochs=2.0)
    assert set(config_differences(configs)["setting"]) == {"dataset", "output_dir", "swanlab_exp_name"}
    args = configs["short"].args()
    for flag, value in (("--torch_dtype", "bfloat16"), ("--gradient_checkpointing", "true"),
                        ("--max_length", "4096"), ("--num_train_epochs", "2"), ("--dataset", str(files["short"]))):
        assert args[args.index(flag) + 1] == value
    assert "--check_model" not in args and "--val_dataset" not in args
    assert configs["short"].effective_batch_size == 16
    assert configs["short"].save_steps == configs["short"].total_steps(10) == 2


# --------------------------------------------------------------------------- the comparison


