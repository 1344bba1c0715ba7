"""Training with ms-swift: the config and command lines, the log parser, runs and checkpoints,
the streaming runner, and one real smoke SFT on CPU (train, interrupt, resume).

The real run is a session fixture (``sft_run``) that ``test_merge.py`` reuses, so
the ~40 s of training happen once per test session.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from helpers.core.config import get_settings
from helpers.core.jsonl import count_lines as count_rows
from helpers.core.swift import SwiftError as TrainingError
from helpers.core.swift import format_command, swift_module_argv
from helpers.tasks.math import boxed, math_messages
from helpers.tasks.word_problems import make_word_problems
from helpers.teacher.prompts import assistant_reply
from helpers.train.checkpoints import (
    final_checkpoint,
    latest_checkpoint,
    list_runs,
)
from helpers.train.config import (
    TrainConfig,
    default_config,
    default_output_dir,
    env_overrides,
    token_lengths,
    tracking_overrides,
)
from helpers.train.loss_scale import THINK_LOSS_SCALE, THINK_SPAN_PATTERN, loss_scale_parts
from helpers.train.runlog import (
    read_log,
)
from helpers.train.runner import train

FIXTURES = Path(__file__).parent / "fixtures"
RESUMED_LOG = FIXTURES / "sft_logging_resumed.jsonl"
INTERRUPTED_LOG = FIXTURES / "sft_logging_interrupted.jsonl"


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.fixture
def offline_smoke():
    return get_settings({"COURSE_PROFILE": "offline", "COURSE_SIZE": "smoke", "COURSE_WORKSPACE": "/tmp/ws"},
                        apply_env=False)


@pytest.fixture
def offline_full():
    return get_settings({"COURSE_PROFILE": "offline", "COURSE_SIZE": "full", "COURSE_WORKSPACE": "/tmp/ws"},
                        apply_env=False)


@pytest.fixture
def gpu_full():
    return get_settings({"COURSE_PROFILE": "gpu", "COURSE_SIZE": "full", "COURSE_WORKSPACE": "/tmp/ws"},
                        apply_env=False)


def _write_rows(path: Path, n: int, seed: int = 0) -> Path:
    rows = [{"messages": math_messages(p.question)
             + [{"role": "assistant", "content": assistant_reply(p.thinking, boxed(p.answer))}]}
            for p in make_word_problems("train", n, seed=seed)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- config and commands


def test_offline_command_has_profile_flags_and_lora(offline_full, tmp_path):
    train_file = _write_rows(tmp_path / "train.jsonl", 40)
    config = default_config(offline_full, train_file=train_file, model="/m")
    args = config.args()
    assert _flag(args, "--tuner_type") == "lora" and "--train_type" not in args  # ms-swift 4.x name
    assert _flag(args, "--model_type") == "llama" and _flag(args, "--template") == "chatml"
    assert _flag(args, "--torch_dtype") == "float32"
    assert _flag(args, "--fp16") == "false" and _flag(args, "--bf16") == "false"
    assert _flag(args, "--check_model") == "false"
    assert (_flag(args, "--lora_rank"), _flag(args, "--lora_alpha")) == ("16", "32")
    assert _flag(args, "--target_modules") == "all-linear"
    assert _flag(args, "--learning_rate") == "0.0002" and _flag(args, "--num_train_epochs") == "3"
    assert _flag(args, "--dataset") == str(train_file) and _flag(args, "--dataset_num_proc") == "1"
    # No val.jsonl next to the training file: nothing held out, no evaluation flags.
    assert _flag(args, "--split_dataset_ratio") == "0" and "--val_dataset" not in args
    assert "--eval_steps" not in args
    assert _flag(args, "--loss_scale") == "default" and "--external_plugins" not in args
    assert _flag(args, "--report_to") == "swanlab" and _flag(args, "--swanlab_mode") == "local"
    assert _flag(args, "--output_dir") == str(default_output_dir(offline_full))
    assert "--max_steps" not in args and "--deepspeed" not in args
    # about four checkpoints per run: 40 rows / (4 x 1) = 10 steps per epoch, 30 steps
    assert config.total_steps(40) == 30 and config.save_steps == 8
    assert config.env() == {"SWANLAB_LOG_DIR": str(default_output_dir(offline_full) / "swanlog")}


def test_smoke_size_is_a_handful_of_steps_with_validation(offline_smoke, tmp_path):
    train_file = _write_rows(tmp_path / "train.jsonl", 4)
    _write_rows(tmp_path / "val.jsonl", 2, seed=1)
    config = default_config(offline_smoke, train_file=train_file, model="/m")
    args = config.args()
    assert _flag(args, "--max_steps") == "6" and _flag(args, "--per_device_train_batch_size") == "1"
    assert _flag(args, "--val_dataset") == str(tmp_path / "val.jsonl")
    assert _flag(args, "--eval_steps") == _flag(args, "--save_steps") == "3"  # a checkpoint to resume from


def test_gpu_command_is_the_documented_starting_point(gpu_full, tmp_path):
    train_file = _write_rows(tmp_path / "train.jsonl", 400)
    config = default_config(gpu_full, train_file=train_file)
    args = config.args()
    assert _flag(args, "--model") == "/tmp/ws/models/Qwen2.5-1.5B-Instruct"  # downloaded by notebook 00
    assert _flag(args, "--torch_dtype") == "bfloat16"
    for cpu_only in ("--fp16", "--bf16", "--check_model"):
        assert cpu_only not in args, cpu_only
    assert (_flag(args, "--model_type"), _flag(args, "--template")) == ("qwen2", "qwen2_5")  # by name
    assert (_flag(args, "--lora_rank"), _flag(args, "--target_modules")) == ("16", "all-linear")
    assert _flag(args, "--max_length") == "4096"
    assert _flag(args, "--gradient_accumulation_steps") == "8"
    assert _flag(args, "--gradient_checkpointing") == "true"
    assert config.effective_batch_size == 16
    assert config.total_steps(400) == 50  # 400 rows / 16 per step x 2 epochs


def test_multi_gpu_command(gpu_full, tmp_path):
    config = default_config(gpu_full, train_file=_write_rows(tmp_path / "train.jsonl", 8))
    multi = config.multi_gpu(4, "zero2")
    assert multi.env()["NPROC_PER_NODE"] == "4" and multi.env()["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert _flag(multi.args(), "--deepspeed") == "zero2"
    assert multi.gradient_accumulation_steps == 2 and multi.effective_batch_size == config.effective_batch_size
    assert multi.shell().startswith("NPROC_PER_NODE=4 CUDA_VISIBLE_DEVICES=0,1,2,3 ")
    assert _flag(config.multi_gpu(8, "zero3").args(), "--deepspeed") == "zero3"
    assert config.multi_gpu(8, "zero3").gradient_accumulation_steps == 1
    # Several processes go through the `swift` launcher (torchrun); one process runs the module directly.
    assert swift_module_argv("sft", ["--x"], 4)[1:4] == ["-m", "swift.cli.main", "sft"]
    assert swift_module_argv("sft", ["--x"], 1)[1:3] == ["-m", "swift.cli.sft"]
    assert swift_module_argv("sft", [], 1)[0] == sys.executable
    with pytest.raises(ValueError, match="2 GPUs"):
        config.multi_gpu(1)
    with pytest.raises(ValueError, match="deepspeed"):
        config.with_overrides(deepspeed="zero9")


def test_shell_command_round_trips(offline_smoke, tmp_path):
    config = default_config(offline_smoke, train_file=_write_rows(tmp_path / "t r.jsonl", 2), model="/m",
                            output_dir=tmp_path / "out dir")
    one_line = shlex.split(config.shell(multiline=False))
    assert one_line[0].startswith("SWANLAB_LOG_DIR=") and one_line[1:3] == ["swift", "sft"]
    assert one_line[3:] == config.args()
    multi = config.shell()
    assert multi.count(" \\\n    --") == len([a for a in config.args() if a.startswith("--")])
    assert shlex.split(multi.replace(" \\\n", " ")) == one_line  # paths with spaces stay quoted
    assert format_command("swift export", ["--adapters", "a b"], multiline=False) == "swift export --adapters 'a b'"


def test_resume_and_think_loss_flags(offline_smoke, tmp_path):
    config = default_config(offline_smoke, train_file=_write_rows(tmp_path / "train.jsonl", 2), model="/m",
                            output_dir=tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="trainer_state"):
        config.resumed(tmp_path)
    ckpt = tmp_path / "out" / "v0-20260101-000000" / "checkpoint-3"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    assert _flag(config.resumed(ckpt).args(), "--resume_from_checkpoint") == str(ckpt)
    ignore = config.with_overrides(think_loss="ignore")
    assert _flag(ignore.args(), "--loss_scale") == "ignore_think"
    assert _flag(ignore.args(), "--external_plugins") == str(tmp_path / "out" / "course_plugins.py")
    assert _flag(config.with_overrides(think_loss="ignore_empty").args(), "--loss_scale") == "ignore_empty_think"
    with pytest.raises(ValueError, match="think_loss"):
        config.with_overrides(think_loss="skip")
    assert set(THINK_LOSS_SCALE) == {"train", "ignore_empty", "ignore"}


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="training file"):
        TrainConfig(model="m", dataset=(), output_dir="o")
    for bad in ({"lora_rank": 0}, {"max_steps": 0}, {"nproc_per_node": 0}, {"swanlab_mode": "online"},
                {"split_dataset_ratio": 1.0}):
        with pytest.raises(ValueError):
            TrainConfig(model="m", dataset=("d",), output_dir="o", **bad)


def test_env_overrides_are_typed_and_checked():
    env = {"SFT_LORA_RANK": "8", "SFT_LEARNING_RATE": "1e-4", "SFT_GRADIENT_CHECKPOINTING": "yes",
           "SFT_REPORT_TO": "tensorboard,swanlab", "SFT_EVAL_STEPS": "none", "SFT_THINK_LOSS": "ignore",
           "SFT_MAX_STEPS": "20", "SFT_EXTRA_ARGS": "--weight_decay 0.1 --system 'be brief'", "OTHER": "x"}
    assert env_overrides(env) == {"lora_rank": 8, "learning_rate": 1e-4, "gradient_checkpointing": True,
                                  "report_to": ("tensorboard", "swanlab"), "eval_steps": None,
                                  "think_loss": "ignore", "max_steps": 20,
                                  "extra_args": ("--weight_decay", "0.1", "--system", "be brief")}
    with pytest.raises(ValueError, match="SFT_LORA_RANK"):
        env_overrides({"SFT_LORA_RANKK": "8"})
    with pytest.raises(ValueError, match="must be one of"):
        env_overrides({"SFT_SWANLAB_MODE": "online"})
    with pytest.raises(ValueError, match="boolean"):
        env_overrides({"SFT_GRADIENT_CHECKPOINTING": "maybe"})


def test_tracking_falls_back_without_swanlab(monkeypatch):
    overrides, why = tracking_overrides(["swanlab"])
    assert overrides == {"report_to": ("swanlab",)} and "local mode" in why
    monkeypatch.setattr("helpers.train.config.swanlab_available", lambda: (False, "swanlab is not installed"))
    overrides, why = tracking_overrides(["swanlab"])
    assert overrides == {"report_to": ("none",)} and "not installed" in why
    assert tracking_overrides([])[0] == {"report_to": ("none",)}


def test_token_lengths_use_the_chat_template(student, tmp_path):
    from transformers import AutoTokenizer

    path = _write_rows(tmp_path / "train.jsonl", 3)
    lengths = token_lengths(path, AutoTokenizer.from_pretrained(student))
    assert len(lengths) == count_rows(path) == 3 and (lengths > 50).all()


# --------------------------------------------------------------------------- thinking loss

REPLY = "<think>\nTom has 3 apples and buys 4 more: 3 + 4 = 7.\n</think>\n\n<answer>\\boxed{7}</answer>"


def test_loss_scale_parts():
    assert loss_scale_parts(REPLY, "train") == [(REPLY, 1.0)]
    masked, kept = loss_scale_parts(REPLY, "ignore")
    assert masked[1] == 0.0 and masked[0].startswith("<think>") and masked[0].endswith("</think>\n\n")
    assert kept == ("<answer>\\boxed{7}</answer>", 1.0)
    # ms-swift's own preset only masks an EMPTY think block.
    assert loss_scale_parts(REPLY, "ignore_empty") == [(REPLY, 1.0)]
    assert loss_scale_parts("<think>\n\n</think>\n\nHi", "ignore_empty") == [("<think>\n\n</think>\n\n", 0.0),
                                                                              ("Hi", 1.0)]
    assert "(" not in THINK_SPAN_PATTERN.replace("(?", "")  # no capturing group: swift joins patterns


@pytest.mark.slow
def test_registered_loss_scale_matches_swift():
    """The plugin's loss scale, run by swift's own machinery, masks exactly the <think> span."""
    from swift.loss_scale import get_loss_scale

    from helpers.train.loss_scale import register_loss_scales

    register_loss_scales()
    register_loss_scales()  # idempotent
    for option in ("ignore", "ignore_empty"):
        scale = get_loss_scale(THINK_LOSS_SCALE[option])
        for text in (REPLY, "<think>\n\n</think>\n\nHi", "no thinking at all"):
            parts, weights = scale.get_loss_scale(text)
            assert list(zip(parts, weights)) == loss_scale_parts(text, option), (option, text)
    assert get_loss_scale("ignore_think").is_binary_loss_scale  # 0/1 weights: plain label masking


# --------------------------------------------------------------------------- logging.jsonl


# --------------------------------------------------------------------------- a real smoke SFT


_SFT_RUNS: dict[str, tuple] = {}
"""The smoke run, trained once per session: ``test_merge.py`` imports the fixture, and pytest
gives an imported fixture its own definition (it would otherwise train a second time)."""


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, student):
    """A real LoRA SFT of the bundled student on CPU: stopped at its first checkpoint, then resumed.

    4 training rows, 2 validation rows, 2 steps with a checkpoint after each,
    ``think_loss="ignore"`` so the course's loss-scale plugin is exercised too.
    """
    if "smoke" not in _SFT_RUNS:
        _SFT_RUNS["smoke"] = _smoke_sft(tmp_path_factory, student)
    return _SFT_RUNS["smoke"]


def _smoke_sft(tmp_path_factory, student):
    settings = get_settings()
    root = tmp_path_factory.mktemp("sft")
    train_file = _write_rows(root / "data" / "train.jsonl", 4)
    _write_rows(root / "data" / "val.jsonl", 2, seed=1)
    config = default_config(settings, train_file=train_file, model=student, output_dir=root / "out",
                            max_steps=2, save_steps=1, think_loss="ignore", report_to=("swanlab",),
                            swanlab_exp_name="pytest")
    quiet = lambda text, transient: None  # noqa: E731
    first = train(config, settings=settings, stop_after_checkpoint=True, on_output=quiet, poll_seconds=0.5)
    resumed = train(config.resumed(latest_checkpoint(config.output_dir)), settings=settings, on_output=quiet)
    return config, first, resumed


@pytest.mark.slow
def test_real_smoke_sft_interrupt_and_resume(sft_run):
    config, first, resumed = sft_run
    assert first.interrupted and first.run_dir is not None
    assert first.last_checkpoint == first.run_dir / "checkpoint-1"
    assert (Path(config.output_dir) / "course_plugins.py").is_file()
    assert not resumed.interrupted and resumed.returncode == 0
    assert resumed.run_dir != first.run_dir and list_runs(config.output_dir) == [first.run_dir, resumed.run_dir]
    assert resumed.last_checkpoint == resumed.run_dir / "checkpoint-2"
    assert final_checkpoint(config.output_dir) == resumed.run_dir / "checkpoint-2"
    args = json.loads((resumed.run_dir / "args.json").read_text())
    assert args["loss_scale"] == "ignore_think" and args["tuner_type"] == "lora"
    assert args["resume_from_checkpoint"] == str(first.run_dir / "checkpoint-1")
    # The resumed run logs only step 2; the whole history comes from the restored trainer state.
    assert read_log(resumed.run_dir).dropna(subset=["loss"])["step"].tolist() == [2]
    history = resumed.history()
    assert history.dropna(subset=["loss"])["step"].tolist() == [1, 2]
    assert history.dropna(subset=["eval_loss"])["step"].tolist() == [1, 2]
    assert history["loss"].dropna().gt(0).all() and history["token_acc"].dropna().between(0, 1).all()
    summary = resumed.summary()
    assert summary["steps"] == 2 and summary["steps_this_run"] == 1 and summary["seconds_per_step"] > 0
    assert any((Path(config.output_dir) / "swanlog").glob("run-*"))  # SwanLab logged locally, offline


@pytest.mark.slow
def test_failing_sft_raises_with_the_log_tail(student, tmp_path):
    settings = get_settings()
    config = default_config(settings, train_file=_write_rows(tmp_path / "train.jsonl", 1), model=student,
                            output_dir=tmp_path / "out", report_to=("none",),
                            extra_args=("--no_such_flag", "1"))
    with pytest.raises(TrainingError, match="exited with code") as error:
        train(config, settings=settings, on_output=lambda text, transient: None)
    assert "no_such_flag" in str(error.value)


def test_sft_model_from_the_environment_wins_without_a_crash(offline_smoke, tmp_path):
    from helpers.train.config import env_overrides

    overrides = env_overrides({"SFT_MODEL": "/my/student", "SFT_MAX_STEPS": "2"})
    train_file = _write_rows(tmp_path / "train.jsonl", 2)
    # notebook 04's call: its own model, then the environment's overrides on top
    config = default_config(offline_smoke, train_file=train_file, **{"model": "/prepared", **overrides})
    assert config.model == "/my/student" and config.max_steps == 2
    assert _flag(config.args(), "--model") == "/my/student"
