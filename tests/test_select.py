"""Stage 6 (selection) and the pipeline runner / funnel tables that tie the stages together."""

from __future__ import annotations

import pytest
from curation_rows import make_row

from helpers.curate.filters import FilterConfig, quality_filter
from helpers.curate.funnel import Funnel, StageResult
from helpers.curate.select import allocate, select_rows
from helpers.curate.verify import verify_stage


def _pool() -> list[dict]:
    rows = []
    for i in range(10):
        rows.append(make_row(prompt_id=f"easy{i}", question=f"easy question {i}", steps=1))
    for i in range(10):
        for s in range(2):  # two samples per hard question
            rows.append(make_row(prompt_id=f"hard{i}", sample_index=s, question=f"hard question {i}",
                                 steps=3))
    for i in range(2):
        rows.append(make_row(prompt_id=f"cls{i}", question=f"headline {i}", task="classification",
                             steps=1, reference="Sports"))
    return rows


def test_allocate_water_fills() -> None:
    assert allocate({"a": 10, "b": 10, "c": 2}, 12) == {"a": 5, "b": 5, "c": 2}
    assert allocate({"a": 10, "b": 1}, 100) == {"a": 10, "b": 1}
    quota = allocate({"a": 5, "b": 5, "c": 5}, 4, seed=3)
    assert sum(quota.values()) == 4 and max(quota.values()) - min(quota.values()) <= 1


def test_balanced_selection_and_drop_reasons() -> None:
    result = select_rows(_pool(), 12, seed=0)
    assert result.n_kept == 12 and result.n_in == 32
    mix = result.tables["mix"].set_index(["task", "steps"])["selected"].to_dict()
    assert mix == {("classification", 1): 2, ("word_problem", 1): 5, ("word_problem", 3): 5}
    assert {r["drop_reason"] for r in result.dropped} == {"not_selected"}
    # distinct questions first: 5 hard rows come from 5 different questions
    hard = [r for r in result.kept if r["meta"]["steps"] == 3]
    assert len({r["prompt_id"] for r in hard}) == 5


def test_prefers_questions_the_student_failed() -> None:
    failed = {"hard7", "hard8", "easy question 2"}  # ids and question texts both work
    result = select_rows(_pool(), 6, seed=0, student_failed=failed)
    kept = {r["prompt_id"] for r in result.kept}
    assert {"hard7", "hard8", "easy2"} <= kept
    assert all("student_failed" in r for r in result.kept + result.dropped)
    mix = result.tables["mix"]
    assert mix["failed_selected"].sum() == 3


def test_deterministic_with_a_seed() -> None:
    ids = lambda res: [(r["prompt_id"], r["sample_index"]) for r in res.kept]  # noqa: E731
    assert ids(select_rows(_pool(), 9, seed=1)) == ids(select_rows(_pool(), 9, seed=1))
    assert any(ids(select_rows(_pool(), 9, seed=s)) != ids(select_rows(_pool(), 9, seed=1))
               for s in range(2, 6))


def test_target_larger_than_pool_keeps_everything() -> None:
    assert select_rows(_pool(), 1000).n_dropped == 0
    with pytest.raises(ValueError):
        select_rows(_pool(), -1)


# --------------------------------------------------------------------------- pipeline / funnel


def test_pipeline_records_the_funnel() -> None:
    rows = [make_row(prompt_id="a"), make_row(prompt_id="b", answer="<answer>\\boxed{9}</answer>"),
            make_row(prompt_id="c", status="truncated"), make_row(prompt_id="d"),
            make_row(prompt_id="e", reply=False)]
    funnel = Funnel()
    verified = funnel.add(verify_stage(rows))
    filtered = funnel.add(quality_filter(verified.kept, config=FilterConfig(outlier_rule=None)))
    final = funnel.add(select_rows(filtered.kept, target_size=1, stage="pick")).kept
    assert len(final) == 1
    with pytest.raises(ValueError, match="rows went missing"):
        funnel.add(select_rows(filtered.kept, target_size=1))  # the input is not what the last stage kept
    table = funnel.table()
    assert table["stage"].tolist() == ["verify", "filters", "pick"]
    assert table["in"].tolist() == [5, 3, 2]
    assert table["kept"].tolist() == [3, 2, 1]
    assert table["dropped"].tolist() == [2, 1, 1]
    assert table.loc[0, "wrong_answer"] == 1 and table.loc[0, "request_failed"] == 1
    assert table.loc[1, "truncated"] == 1 and table.loc[0, "truncated"] == 0
    assert table.loc[2, "not_selected"] == 1
    assert funnel["pick"].dropped[0]["drop_stage"] == "pick"  # renamed stage
    examples = funnel.examples(per_reason=1)
    assert sorted(examples["reason"]) == ["not_selected", "request_failed", "truncated",
                                          "wrong_answer"]
    assert examples.set_index("reason").loc["truncated", "row"] == "c#0"
    assert len(funnel.dropped) == 4
    reasons = funnel.reasons()
    assert reasons["count"].sum() == 4


def test_stage_result_refuses_lost_rows() -> None:
    with pytest.raises(ValueError, match="lost rows"):
        StageResult("bad", kept=[make_row()], dropped=[], n_in=2)
    with pytest.raises(ValueError, match="without a drop_reason"):
        StageResult("bad", kept=[], dropped=[make_row()])
    funnel = Funnel([StageResult("one", kept=[make_row()], n_in=1)])
    with pytest.raises(ValueError, match="went missing"):
        funnel.add(StageResult("two", kept=[make_row(), make_row()], n_in=2))


def test_funnel_plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [make_row(prompt_id="a"), make_row(prompt_id="b", answer="\\boxed{1}")]
    funnel = Funnel([verify_stage(rows)])
    ax = funnel.plot()
    assert [p.get_width() for p in ax.patches] == [1, 2]  # bottom-up: verify kept 1, input 2
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="empty"):
        Funnel().plot()
