"""Self-consistency, the curation stage for questions without reference answers: majority, thresholds, failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


from helpers.curate.consistency import consistency_stage, final_answer  # noqa: E402


def sample(pid: str, index: int, answer: str | None, status: str = "ok") -> dict:
    reply = None if answer is None else {"thinking": "I work it out.", "answer": answer, "raw": answer}
    return {"prompt_id": pid, "sample_index": index, "question": f"question {pid}", "status": status,
            "reply": reply}


def test_consistency_keeps_the_majority() -> None:
    rows = [
        sample("a", 0, "<answer>\\boxed{9}</answer>"), sample("a", 1, "It is 9."),
        sample("a", 2, "\\boxed{10}"),                                     # minority
        sample("b", 0, "\\boxed{1/2}"), sample("b", 1, "\\boxed{0.5}"),   # the same number
        sample("c", 0, "\\boxed{3}"), sample("c", 1, "\\boxed{4}"),       # no consensus
        sample("d", 0, "no number here"), sample("d", 1, None, status="error"),
        sample("e", 0, "\\boxed{Paris}"), sample("e", 1, "\\boxed{paris.}"),  # text answers
    ]
    result = consistency_stage(rows)
    kept = [(r["prompt_id"], r["sample_index"]) for r in result.kept]
    assert kept == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("e", 0), ("e", 1)]
    reasons = {(r["prompt_id"], r["sample_index"]): r["drop_reason"] for r in result.dropped}
    assert reasons == {("a", 2): "minority_answer", ("c", 0): "no_consensus", ("c", 1): "no_consensus",
                       ("d", 0): "no_final_answer", ("d", 1): "no_final_answer"}
    table = result.tables["agreement"].set_index("prompt_id")
    assert table.loc["a", "majority"] == "9" and table.loc["a", "votes"] == 2
    assert table.loc["a", "agreement"] == pytest.approx(0.667)
    assert bool(table.loc["c", "consensus"]) is False
    assert result.kept[0]["consistency"]["majority"] == "9"


def test_consistency_thresholds() -> None:
    rows = [sample("a", 0, "\\boxed{9}"), sample("a", 1, "\\boxed{9}"), sample("a", 2, "\\boxed{1}"),
            sample("a", 3, "\\boxed{2}")]
    assert consistency_stage(rows).n_kept == 0              # 2 of 4 is not more than half
    assert consistency_stage(rows, min_agreement=0.4).n_kept == 2
    single = [sample("s", 0, "\\boxed{5}")]
    assert consistency_stage(single).n_kept == 0            # one sample cannot agree with anything
    assert consistency_stage(single, min_votes=1, min_agreement=0.0).n_kept == 1
    assert final_answer(sample("x", 0, "\\boxed{1,200}")) == "1200"
    with pytest.raises(ValueError):
        consistency_stage(rows, min_votes=0)
    with pytest.raises(ValueError):
        consistency_stage(rows, min_agreement=1.0)
