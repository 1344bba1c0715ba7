"""GKD with ms-swift: the `swift rlhf --rlhf_type gkd` command for both profiles, its validation,
the SFT baseline, the dependency check, and that helpers.train.runner.train starts swift rlhf for it.

The gpu profile cannot run here; its command is checked by construction, flag by flag against
ms-swift's own RLHFArguments.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from helpers.core.config import get_settings
from helpers.core.swift import ProcessRun
from helpers.tasks.math import math_messages
from helpers.teacher.prompts import assistant_reply
from helpers.techniques.gkd import (
    GPU_TEACHER_MODEL,
    GKDConfig,
    gkd_config,
    gkd_dependencies,
    gkd_memory_estimate,
    require_gkd_dependencies,
    same_vocabulary,
)
from helpers.train.config import TrainConfig
from helpers.train.runner import train


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _settings(tmp_path: Path, profile: str, size: str):
    return get_settings({"COURSE_PROFILE": profile, "COURSE_SIZE": size, "COURSE_WORKSPACE": str(tmp_path)},
                        apply_env=False)


@pytest.fixture
def train_file(tmp_path):
    import json

    path = tmp_path / "datasets" / "distill" / "train.jsonl"
    path.parent.mkdir(parents=True)
    rows = [{"messages": math_messages(f"What is {i} + 1?") + [
        {"role": "assistant", "content": assistant_reply(f"{i} + 1 = {i + 1}", f"\\boxed{{{i + 1}}}")}]}
        for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path.parent / "val.jsonl").write_text(path.read_text())  # GKD must not pick it up
    return path


def test_offline_full_command(tmp_path, train_file):
    settings = _settings(tmp_path, "offline", "full")
    teacher = tmp_path / "runs" / "teacher-merged"
    config = gkd_config(settings, teacher_model=teacher)
    args = config.args()
    assert args[:2] == ["--rlhf_type", "gkd"]
    assert config.shell().startswith("swift rlhf \\")
    assert config.command()[:3] == ["swift", "rlhf", "--rlhf_type"]
    assert _flag(args, "--teacher_model") == str(teacher)
    assert _flag(args, "--teacher_model_type") == "llama"              # SmolLM2 is not in swift's registry
    assert _flag(args, "--model_type") == "llama" and _flag(args, "--template") == "chatml"
    assert (_flag(args, "--beta"), _flag(args, "--lmbda"), _flag(args, "--temperature")) == ("0.5", "0.5", "0.9")
    assert _flag(args, "--max_completion_length") == "64"
    assert _flag(args, "--torch_dtype") == "float32" and _flag(args, "--bf16") == "false"
    assert _flag(args, "--check_model") == "false"
    assert _flag(args, "--tuner_type") == "lora"
    # swift's default accumulation would be 16 / batch, and a generation batch bigger than the data means 0 steps
    assert _flag(args, "--gradient_accumulation_steps") == "1"
    assert _flag(args, "--max_steps") == "8" and _flag(args, "--per_device_train_batch_size") == "1"
    assert _flag(args, "--save_steps") == "8"
    assert "--val_dataset" not in args and "--seq_kd" not in args and "--use_vllm" not in args
    assert _flag(args, "--output_dir") == str(tmp_path / "runs" / "gkd-offline" / "gkd")


def test_smoke_sizing(tmp_path, train_file):
    args = gkd_config(_settings(tmp_path, "offline", "smoke"), teacher_model=tmp_path / "t").args()
    assert _flag(args, "--max_steps") == "3" and _flag(args, "--per_device_train_batch_size") == "1"
    assert _flag(args, "--max_completion_length") == "32"


def test_gpu_command(tmp_path, train_file):
    settings = _settings(tmp_path, "gpu", "full")
    config = gkd_config(settings)
    args = config.args()
    assert _flag(args, "--teacher_model") == GPU_TEACHER_MODEL
    assert _flag(args, "--teacher_model_type") == "qwen2" and _flag(args, "--model_type") == "qwen2"  # by name
    assert "--check_model" not in args
    assert _flag(args, "--torch_dtype") == "bfloat16" and "--bf16" not in args
    assert _flag(args, "--model") == str(tmp_path / "models" / "Qwen2.5-1.5B-Instruct")
    assert _flag(args, "--max_completion_length") == "512" and _flag(args, "--max_length") == "2048"
    assert _flag(args, "--gradient_accumulation_steps") == "16" and _flag(args, "--gradient_checkpointing") == "true"
    assert _flag(args, "--max_steps") == "300"
    # Qwen2.5-1.5B student (hidden 1536, 28 layers) and the 3B teacher: under a 24 GB card; the old 7B teacher
    # with 4,096-token rows in pairs was not.
    sizes = dict(student_b=1.54, vocab=151_936, hidden=1536, layers=28)
    assert gkd_memory_estimate(config, teacher_b=3.09, **sizes).loc["total", "GiB"] < 22
    old = replace(config, max_length=4096, per_device_train_batch_size=2)
    assert gkd_memory_estimate(old, teacher_b=7.62, **sizes).loc["total", "GiB"] > 24
    fast = config.with_vllm("colocate", 0.4).args()
    assert (_flag(fast, "--use_vllm"), _flag(fast, "--vllm_mode"), _flag(fast, "--vllm_gpu_memory_utilization")) == \
        ("true", "colocate", "0.4")
    big = dataclasses.replace(config, offload_teacher_model=True, teacher_deepspeed="zero3", gkd_logits_topk=64,
                              sft_alpha=0.1).args()
    assert _flag(big, "--offload_teacher_model") == "true" and _flag(big, "--teacher_deepspeed") == "zero3"
    assert _flag(big, "--gkd_logits_topk") == "64" and _flag(big, "--sft_alpha") == "0.1"


def test_logit_teacher_is_configuration(tmp_path, train_file):
    settings = get_settings({"COURSE_PROFILE": "gpu", "COURSE_WORKSPACE": str(tmp_path),
                             "COURSE_LOGIT_TEACHER": "Qwen/Qwen2.5-7B-Instruct"}, apply_env=False)
    args = gkd_config(settings).args()
    assert _flag(args, "--teacher_model") == "Qwen/Qwen2.5-7B-Instruct"


def test_every_flag_is_a_swift_rlhf_argument(tmp_path, train_file):
    from swift.arguments import RLHFArguments

    known = {f.name for f in dataclasses.fields(RLHFArguments)}
    offline = gkd_config(_settings(tmp_path, "offline", "full"), teacher_model=tmp_path / "t")
    gpu = gkd_config(_settings(tmp_path, "gpu", "full"))
    served = dataclasses.replace(gpu, teacher_model=None, teacher_model_server="http://127.0.0.1:8000",
                                 gkd_logits_topk=20)
    for config in (offline, gpu.with_vllm(), served, dataclasses.replace(gpu, offload_teacher_model=True,
                                                                         teacher_deepspeed="zero3", sft_alpha=0.2)):
        flags = [a[2:] for a in config.args() if a.startswith("--")]
        assert set(flags) <= known, f"not swift rlhf arguments: {sorted(set(flags) - known)}"


def test_overrides_and_beta_lmbda_edges(tmp_path, train_file):
    settings = _settings(tmp_path, "offline", "full")
    forward = gkd_config(settings, teacher_model=tmp_path / "t", beta=0.0, lmbda=1.0).args()
    assert (_flag(forward, "--beta"), _flag(forward, "--lmbda")) == ("0", "1")
    reverse = gkd_config(settings, teacher_model=tmp_path / "t", beta=1.0, lmbda=0.0, max_steps=4).args()
    assert (_flag(reverse, "--beta"), _flag(reverse, "--lmbda"), _flag(reverse, "--save_steps")) == ("1", "0", "4")


@pytest.mark.parametrize("changes, message", [
    ({"beta": -0.1}, "beta"), ({"beta": 1.5}, "beta"), ({"lmbda": 1.01}, "lmbda"), ({"lmbda": -1.0}, "lmbda"),
    ({"temperature": 0.0}, "temperature"), ({"max_completion_length": 0}, "max_completion_length"),
    ({"seq_kd": True}, "notebooks 02-04"), ({"sft_alpha": -1.0}, "sft_alpha"), ({"gkd_logits_topk": 0}, "topk"),
    ({"use_vllm": True}, "vllm_mode"), ({"vllm_mode": "colocate"}, "use_vllm"),
    ({"teacher_model": None}, "exactly one"),
    ({"teacher_model_server": "http://127.0.0.1:8000", "gkd_logits_topk": 20}, "exactly one"),
    ({"teacher_model": None, "teacher_model_server": "http://127.0.0.1:8000"}, "gkd_logits_topk"),
])
def test_validation(tmp_path, train_file, changes, message):
    config = gkd_config(_settings(tmp_path, "offline", "full"), teacher_model=tmp_path / "t")
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(config, **changes)


def test_teacher_cannot_be_the_student(tmp_path, train_file):
    settings = _settings(tmp_path, "offline", "full")
    config = gkd_config(settings, teacher_model=tmp_path / "t")
    with pytest.raises(ValueError, match="student itself"):
        dataclasses.replace(config, teacher_model=config.model)


def test_missing_merged_model_names_notebook_05(tmp_path, train_file):
    with pytest.raises(FileNotFoundError, match="05_merge_and_chat"):
        gkd_config(_settings(tmp_path, "offline", "smoke"))


def test_sft_baseline_shares_everything_but_the_gkd_flags(tmp_path, train_file):
    config = gkd_config(_settings(tmp_path, "offline", "full"), teacher_model=tmp_path / "t")
    baseline = config.sft_baseline(tmp_path / "sft")
    assert type(baseline) is TrainConfig and baseline.subcommand == "sft"
    assert baseline.shell().startswith("swift sft")
    gkd_shared = config.args()[2:2 + len(baseline.args())]
    differing = [(a, b) for a, b in zip(gkd_shared, baseline.args()) if a != b]
    assert differing == [(config.output_dir, str(tmp_path / "sft"))]
    assert "--teacher_model" not in baseline.args()


def test_train_runs_swift_rlhf_for_a_gkd_config(tmp_path, train_file, monkeypatch):
    import helpers.train.runner as train_module

    seen = {}

    def fake_run_swift(argv, **kwargs):
        seen["argv"] = argv
        return ProcessRun(list(argv), 0, 0.1, kwargs["log_path"])

    monkeypatch.setattr(train_module, "run_swift", fake_run_swift)
    settings = _settings(tmp_path, "offline", "smoke")
    config = gkd_config(settings, teacher_model=tmp_path / "t")
    result = train(config, settings=settings)
    assert seen["argv"][1:3] == ["-m", "swift.cli.rlhf"] and seen["argv"][3:5] == ["--rlhf_type", "gkd"]
    assert importlib.util.find_spec("swift.cli.rlhf") is not None
    assert result.command.startswith("swift rlhf") and "swift-rlhf-" in result.console_log.name
    train(config.sft_baseline(tmp_path / "sft"), settings=settings)
    assert seen["argv"][1:3] == ["-m", "swift.cli.sft"]


def test_dependency_report_and_check(monkeypatch):
    table = gkd_dependencies()
    assert list(table["package"]) == ["msgspec", "vllm", "deepspeed", "liger-kernel"]
    assert table.loc[table.package == "msgspec", "required"].item() == "yes"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "msgspec" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match="pip install msgspec"):
        require_gkd_dependencies()
    assert gkd_dependencies().set_index("package").loc["msgspec", "installed"] == "missing"


def test_same_vocabulary(student, tmp_path):
    from transformers import AutoTokenizer

    ok, why = same_vocabulary(student, student)
    assert ok and "identical" in why
    other = AutoTokenizer.from_pretrained(student)
    other.add_tokens(["<course_new_token>"])
    other.save_pretrained(tmp_path / "other")
    ok, why = same_vocabulary(student, tmp_path / "other")
    assert not ok and "different vocabularies" in why


def test_gkd_config_is_a_train_config():
    assert issubclass(GKDConfig, TrainConfig) and GKDConfig.subcommand == "rlhf"


def test_log_completions_flag_and_reader(tmp_path, train_file):
    import json

    from helpers.techniques.gkd import read_completions

    config = gkd_config(_settings(tmp_path, "offline", "full"), teacher_model=tmp_path / "t", log_completions=True)
    assert _flag(config.args(), "--log_completions") == "true"
    run = tmp_path / "run"
    run.mkdir()
    assert read_completions(run).empty  # no on-policy step yet: no file
    # swift's format: one JSON object of columns per logging step (steps as strings), a torn last line skipped
    lines = [{"step": ["2", "2"], "prompt": ["p1", "p2"], "completion": ["c1", "c2"]},
             {"step": ["5"], "prompt": ["p3"], "completion": ["c3"]}]
    (run / "completions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": ["7"')
    table = read_completions(run)
    assert table["step"].tolist() == [2, 2, 5] and table["completion"].tolist() == ["c1", "c2", "c3"]


def test_plot_runs_marks_on_policy_steps():
    import pandas as pd

    from helpers.techniques.gkd import plot_runs

    history = pd.DataFrame({"step": [1, 2, 3], "loss": [0.3, 0.2, 0.25]})
    fig = plot_runs({"GKD": history, "SFT": history}, on_policy={"GKD": [2, 3]})
    gkd_axis, sft_axis = fig.axes
    assert [len(line.get_xdata()) for line in gkd_axis.get_lines()] == [3, 2]
    assert len(sft_axis.get_lines()) == 1


def test_forward_kl_covers_and_reverse_kl_seeks_a_mode():
    from helpers.techniques.gkd import bimodal_teacher, fit_one_bump

    teacher = bimodal_teacher(12)
    left, right = slice(0, 6), slice(6, 12)
    assert teacher[left].sum() > 0.5 and teacher[right].sum() > 0.3
    forward, reverse = fit_one_bump(teacher, 0.0), fit_one_bump(teacher, 1.0)
    assert abs(forward.sum() - 1) < 1e-5 and abs(reverse.sum() - 1) < 1e-5
    assert forward[right].sum() > 0.25          # mass on both modes
    assert reverse[left].sum() > 0.95           # all of it on the larger one
    assert reverse.max() > 1.5 * teacher.max()  # and sharper than the teacher
