"""Skip-ahead checkpoints: seeding a workspace for notebook 04 (fully) and 05/06 (arguments only), and refreshing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.core.config import get_settings
from helpers.core.jsonl import write_jsonl
from helpers.course import seed
from helpers.course.seed import (
    REFRESH_COMMAND,
    SEED_MARKER,
    SeedError,
    normalize_stage,
    read_provenance,
    refresh_checkpoint,
    seed_workspace,
    sha256_of,
)
from helpers.curate.export import validate_jsonl


def _record(question: str, answer: int) -> dict:
    reply = f"<think>\nadd them\n</think>\n\n<answer>\\boxed{{{answer}}}</answer>"
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]}


def _settings(workspace: Path):
    return get_settings({"COURSE_WORKSPACE": str(workspace), "COURSE_PROFILE": "offline", "COURSE_SIZE": "smoke"},
                        apply_env=False)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A tiny checkpoint folder as refresh_checkpoint writes it (no provenance: seeding works without)."""
    folder = tmp_path / "checkpoints" / "math"
    write_jsonl([_record("What is 1 + 1?", 2), _record("What is 2 + 2?", 4)], folder / "train.jsonl")
    write_jsonl([_record("What is 3 + 3?", 6)], folder / "val.jsonl")
    write_jsonl([{"prompt_id": "q1", "question": "What is 1 + 1?"}], folder / "kept.jsonl")
    (folder / "card.md").write_text("# Distillation dataset\n\nCreated 2026-11-22 07:48 UTC.\n\n## Source\n",
                                    encoding="utf-8")
    return folder


@pytest.fixture
def settings(tmp_path: Path):  # shadows conftest's session settings: a fresh workspace per test
    return _settings(tmp_path / "workspace")


def test_stage_names() -> None:
    given = ("04", "4", 4, "04_lora_sft", " 06 ", "05")
    assert [normalize_stage(x) for x in given] == ["04", "04", "04", "04", "06", "05"]
    for bad in ("03", "07", "9", "", "lora"):
        with pytest.raises(ValueError, match="choose one of 04"):
            normalize_stage(bad)


def test_seed_04_puts_the_dataset_where_notebook_03_exports_it(settings, checkpoint: Path) -> None:
    result = seed_workspace("04", settings, source=checkpoint)
    distill = settings.datasets_dir / "distill"
    for name in ("train.jsonl", "val.jsonl"):
        assert (distill / name).read_bytes() == (checkpoint / name).read_bytes()
    assert (settings.datasets_dir / "curation" / "kept.jsonl").read_bytes() == (checkpoint / "kept.jsonl").read_bytes()
    assert validate_jsonl(distill / "train.jsonl")["rows"] == 2  # what notebook 04 checks first
    assert result["rows"] == {"train.jsonl": 2, "val.jsonl": 1}
    assert result["stage"] == "04" and result["backup"] is None and result["warnings"] == []
    assert "trained" not in result  # 04 trains nothing
    card = (distill / "README.md").read_text(encoding="utf-8")
    assert card.startswith(SEED_MARKER)
    assert "seeded" in card and "python -m helpers seed 04" in card and str(checkpoint) in card
    assert "## The original dataset card" in card and "\n### Distillation dataset" in card  # demoted under ours
    assert sha256_of(checkpoint / "train.jsonl") in card


def test_seeding_twice_is_harmless(settings, checkpoint: Path) -> None:
    seed_workspace("04", settings, source=checkpoint)
    again = seed_workspace("4", settings, source=checkpoint)
    assert again["backup"] is None
    assert not list(settings.datasets_dir.glob("before-seed-*"))


def test_a_learners_own_dataset_is_never_replaced_silently(settings, checkpoint: Path) -> None:
    mine = settings.datasets_dir / "distill" / "train.jsonl"
    write_jsonl([_record("My own question?", 7)], mine)
    (mine.with_name("train.sharegpt.jsonl")).write_text("{}\n", encoding="utf-8")
    before = mine.read_bytes()
    with pytest.raises(SeedError, match=r"(?s)differs from the checkpoint.*distill/train.jsonl.*--force"):
        seed_workspace("04", settings, source=checkpoint)
    assert mine.read_bytes() == before
    assert not (mine.parent / "val.jsonl").exists() and not (mine.parent / "README.md").exists()

    result = seed_workspace("04", settings, source=checkpoint, force=True)
    backup = Path(result["backup"])
    assert (backup / "distill" / "train.jsonl").read_bytes() == before  # moved aside, not deleted
    assert (backup / "distill" / "train.sharegpt.jsonl").is_file()
    assert mine.read_bytes() == (checkpoint / "train.jsonl").read_bytes()
    assert not (mine.parent / "train.sharegpt.jsonl").exists()  # no stale file next to the seeded data


def test_a_stale_validation_file_counts_as_the_learners_work(settings, checkpoint: Path) -> None:
    (checkpoint / "val.jsonl").unlink()
    same_train = [_record("What is 1 + 1?", 2), _record("What is 2 + 2?", 4)]
    write_jsonl(same_train, settings.datasets_dir / "distill" / "train.jsonl")
    write_jsonl([_record("Another?", 5)], settings.datasets_dir / "distill" / "val.jsonl")
    with pytest.raises(SeedError, match="val.jsonl"):
        seed_workspace("04", settings, source=checkpoint)
    result = seed_workspace("04", settings, source=checkpoint, force=True)
    assert result["rows"] == {"train.jsonl": 2}
    assert any("no val.jsonl" in w for w in result["warnings"])


def test_a_missing_checkpoint_names_the_path_and_the_refresh_command(settings, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "math"
    with pytest.raises(SeedError) as info:
        seed_workspace("04", settings, source=missing)
    assert str(missing) in str(info.value) and REFRESH_COMMAND in str(info.value)
    assert not (settings.datasets_dir / "distill").exists()


def test_the_default_checkpoint_is_the_tasks_folder(settings) -> None:
    assert seed.checkpoint_dir(settings) == seed.CHECKPOINTS_DIR / "math"


def test_a_broken_checkpoint_file_is_named(settings, checkpoint: Path) -> None:
    with (checkpoint / "val.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"messages": [{"role": "user"}]}\n')
    with pytest.raises(SeedError, match=r"val.jsonl is not a valid training file(?s:.*)line 2"):
        seed_workspace("04", settings, source=checkpoint)


def test_a_hand_edited_checkpoint_is_flagged(settings, checkpoint: Path) -> None:
    (checkpoint / "provenance.json").write_text(json.dumps({"files": {"train.jsonl": {"sha256": "0" * 64}}}),
                                                encoding="utf-8")
    result = seed_workspace("04", settings, source=checkpoint)
    assert any("train.jsonl differs from provenance.json" in w for w in result["warnings"])


def test_seed_06_checks_before_it_trains(settings, checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("seeding must not train here")

    monkeypatch.setattr("helpers.train.runner.train", no_training)
    with pytest.raises(ValueError, match="choose one of"):
        seed_workspace("07", settings, source=checkpoint)
    with pytest.raises(SeedError, match="No skip-ahead checkpoint"):
        seed_workspace("06", settings, source=tmp_path / "missing")
    write_jsonl([_record("My own question?", 7)], settings.datasets_dir / "distill" / "train.jsonl")
    with pytest.raises(SeedError, match="seed 06 --force"):
        seed_workspace("06", settings, source=checkpoint)


@pytest.mark.parametrize("stage", ["05", "06"])
def test_seed_05_and_06_seed_the_data_then_hand_over_to_training(settings, checkpoint: Path, monkeypatch,
                                                                stage: str) -> None:
    calls = []

    def fake_student(s, at, *, force, smoke, on_output):
        assert (s.datasets_dir / "distill" / "train.jsonl").is_file()  # the data comes first
        calls.append((at, force, smoke))
        return {"trained": True, "merged": "somewhere" if at == "06" else None}

    monkeypatch.setattr(seed, "_seed_student", fake_student)
    result = seed_workspace(int(stage), settings, source=checkpoint)
    assert calls == [(stage, False, True)]
    assert result["trained"] and result["rows"]["train.jsonl"] == 2


def _workspace_after_notebook_03(workspace: Path, settings) -> None:
    distill = settings.datasets_dir / "distill"
    write_jsonl([_record("What is 5 + 5?", 10), _record("What is 6 + 6?", 12)], distill / "train.jsonl")
    write_jsonl([_record("What is 7 + 7?", 14)], distill / "val.jsonl")
    write_jsonl([{"prompt_id": "q5"}], settings.datasets_dir / "curation" / "kept.jsonl")
    (distill / "README.md").write_text("# Distillation dataset\n\nCreated 2026-11-22 07:48 UTC.\n", encoding="utf-8")
    run = settings.runs_dir / "course-20261122-070000"
    run.mkdir(parents=True)
    (run / "numbers.json").write_text(json.dumps({"03_curate_dataset": {
        "questions": 64, "verified": 90, "kept": 3, "train_rows": 2, "val_rows": 1}}), encoding="utf-8")


def test_refresh_writes_the_checkpoint_with_its_provenance(settings, tmp_path: Path) -> None:
    _workspace_after_notebook_03(tmp_path / "workspace", settings)
    dest = tmp_path / "shipped" / "math"
    dest.mkdir(parents=True)
    (dest / "notes.txt").write_text("an instructor's note", encoding="utf-8")
    provenance = refresh_checkpoint(settings, dest=dest)
    assert (dest / "notes.txt").is_file()  # only the checkpoint's own files are replaced
    assert provenance == {**read_provenance(dest), "checkpoint": str(dest)}
    files = provenance["files"]
    assert files["train.jsonl"]["rows"] == 2 and files["val.jsonl"]["rows"] == 1 and "kept.jsonl" in files
    assert files["train.jsonl"]["sha256"] == sha256_of(settings.datasets_dir / "distill" / "train.jsonl")
    assert provenance["card_created"] == "2026-11-22 07:48 UTC"
    assert provenance["run"]["folder"] == "course-20261122-070000"
    assert provenance["run"]["numbers_03"]["questions"] == 64
    assert provenance["profile"] == "offline" and provenance["task"] == "math" and provenance["created"]
    assert (dest / "card.md").read_text(encoding="utf-8").startswith("# Distillation dataset")

    other = _settings(tmp_path / "other")  # a second workspace seeded from it: the round trip
    seed_workspace("04", other, source=dest)
    card = (other.datasets_dir / "distill" / "README.md").read_text(encoding="utf-8")
    assert "course-20261122-070000" in card and "2026-11-22 07:48 UTC" in card
    with pytest.raises(SeedError, match="was seeded from a checkpoint"):
        refresh_checkpoint(other, dest=tmp_path / "circular")


def test_refresh_drops_files_the_new_export_lacks(settings, tmp_path: Path) -> None:
    _workspace_after_notebook_03(tmp_path / "workspace", settings)
    dest = tmp_path / "shipped" / "math"
    refresh_checkpoint(settings, dest=dest)
    (settings.datasets_dir / "distill" / "val.jsonl").unlink()
    provenance = refresh_checkpoint(settings, dest=dest)
    assert not (dest / "val.jsonl").exists() and "val.jsonl" not in provenance["files"]
    assert provenance["run"] == {}  # no recorded run with 2 train rows and no validation


def test_refresh_without_an_export_says_what_to_run(settings, tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="run notebooks 02-03"):
        refresh_checkpoint(settings, dest=tmp_path / "dest")


def test_the_seed_command(tmp_path: Path, checkpoint: Path, monkeypatch, capsys) -> None:
    from helpers.course.cli import main

    monkeypatch.setenv("COURSE_WORKSPACE", str(tmp_path / "ws"))
    assert main(["seed", "04", "--from", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "seeded for notebook 04" in out and "train.jsonl 2" in out
    assert (tmp_path / "ws" / "datasets" / "distill" / "train.jsonl").is_file()
    assert main(["seed"]) == 2 and "04, 05 or 06" in capsys.readouterr().err
    assert main(["seed", "04", "--from", str(tmp_path / "nowhere")]) == 2
    assert "No skip-ahead checkpoint" in capsys.readouterr().err
