"""Task data from a hub dataset: the local copy first, a clear error offline, published distilled samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers.tasks.gsm8k import DatasetUnavailable
from helpers.tasks.sources import DATA_DIR_ENV, distilled_samples
from helpers.tasks.spec import load_task


def _hub_task(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "user.txt").write_text("$input\nPut the answer in \\boxed{}.", encoding="utf-8")
    task = {"name": "published", "data": {"source": "hub", "dataset": "someone/MathR", "input": "problem",
                                          "reference": "solution_value", "thinking": "reasoning", "answer": "final"},
            "prompt": {"user": "user.txt"}, "check": {"verifier": "number"}}
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(task), encoding="utf-8")
    return path


def test_offline_without_a_copy_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    task = load_task(_hub_task(tmp_path / "t"))
    assert task.distilled and task.source == "hub"
    with pytest.raises(DatasetUnavailable, match=rf"no local copy of someone/MathR \(train\).*{DATA_DIR_ENV}/MathR-train.jsonl"):
        task.items("train")


def test_a_local_copy_becomes_curation_ready_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "copies"))
    (tmp_path / "copies").mkdir()
    rows = [{"problem": f"What is {i} + {i}?", "solution_value": str(2 * i), "reasoning": f"{i} + {i} = {2 * i}.",
             "final": f"\\boxed{{{2 * i}}}"} for i in range(1, 6)]
    (tmp_path / "copies" / "MathR-train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(_hub_task(tmp_path / "t"))
    samples = distilled_samples(task, "train", 3)
    assert len(samples) == 3 and all(s["status"] == "ok" and s["cached"] for s in samples)
    first = next(s for s in samples if s["question"] == "What is 1 + 1?") if any(
        s["question"] == "What is 1 + 1?" for s in samples) else samples[0]
    n = int(first["reference"]) // 2
    assert first["reply"]["thinking"] == f"{n} + {n} = {2 * n}." and first["reply"]["answer"] == f"\\boxed{{{2 * n}}}"
    assert "teacher_thinking" not in first["meta"] and first["meta"]["check"]["verifier"] == "number"
    from helpers.curate.verify import verify_stage

    assert verify_stage(samples).n_kept == 3  # the published answers verify against their references
