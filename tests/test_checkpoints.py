"""Runs and checkpoints in ms-swift's output layout: find the newest, the complete, the final; prune."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.train.checkpoints import (
    describe_layout,
    final_checkpoint,
    latest_checkpoint,
    latest_run,
    list_runs,
    prune_runs,
)


def _checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    path = run / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_run_and_checkpoint_locator(tmp_path):
    out = tmp_path / "sft"
    assert list_runs(out) == [] and latest_checkpoint(out) is None
    v2 = out / "v2-20260101-000000"
    v10 = out / "v10-20260102-000000"
    _checkpoint(v2, 5)
    _checkpoint(v2, 10)
    (v2 / "checkpoint-10-merged").mkdir()
    _checkpoint(v10, 3)
    _checkpoint(v10, 6, complete=False)  # still being written
    (out / "swanlog").mkdir()
    assert list_runs(out) == [v2, v10] and latest_run(out) == v10  # v10 after v2: numeric order
    assert latest_checkpoint(v2) == v2 / "checkpoint-10"
    assert latest_checkpoint(v10) == v10 / "checkpoint-3"
    assert latest_checkpoint(out) == v10 / "checkpoint-3"
    os.symlink("checkpoint-5", v2 / "last-checkpoint")  # swift's link wins over the highest number
    assert latest_checkpoint(v2) == v2 / "checkpoint-5"
    with pytest.raises(FileNotFoundError, match="notebook 04"):
        final_checkpoint(out)  # no run has finished
    (v2 / "logging.jsonl").write_text(json.dumps({"last_model_checkpoint": str(v2 / "checkpoint-10"),
                                                  "global_step": 10}) + "\n")
    assert final_checkpoint(out) == v2 / "checkpoint-10"
    v11 = out / "v11-20260103-000000"
    _checkpoint(v11, 1)
    assert prune_runs(out, keep=2) == [v2] and list_runs(out) == [v10, v11] and (out / "swanlog").is_dir()
    assert prune_runs(out, keep=0) == [] and prune_runs(out, keep=5) == []
    layout = describe_layout(out, last_runs=1)
    assert "v11-20260103-000000/checkpoint-1/" in layout["path"].tolist()
    assert not any(p.startswith("v10-") for p in layout["path"])
