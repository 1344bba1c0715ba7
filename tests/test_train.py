"""Training with ms-swift: the config and command lines, the log parser, runs and checkpoints,
the streaming runner, and one real smoke SFT on CPU (train, interrupt, resume).

The real run is a session fixture (``sft_run``) that ``test_merge.py`` reuses, so
the ~40 s of training happen once per test session.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from helpers.core.config import get_settings
from helpers.core.jsonl import count_lines as count_rows
from helpers.core.swift import ConsolePrinter, format_command, run_swift, swift_module_argv
from helpers.core.swift import SwiftError as TrainingError
from helpers.tasks.math import boxed, math_messages
from helpers.tasks.word_problems import make_word_problems
from helpers.teacher.prompts import assistant_reply
from helpers.train.checkpoints import (
    describe_layout,
    final_checkpoint,
    latest_checkpoint,
    latest_run,
    list_runs,
    prune_runs,
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
    LivePlot,
    final_record,
    full_history,
    plot_history,
    read_log,
    save_plot,
    summarize_history,
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
    for cpu_only in ("--fp16", "--bf16", "--check_model", "--model_type", "--template"):
        assert cpu_only not in args, cpu_only
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


def test_read_log_of_a_real_resumed_run():
    own = read_log(RESUMED_LOG)
    train_rows = own.dropna(subset=["loss"])
    assert list(train_rows["step"]) == [3, 4]  # a resumed run logs only its own steps
    assert set(own["max_steps"]) == {4}
    assert own.dropna(subset=["eval_loss"])["step"].tolist() == [4]
    assert train_rows["elapsed_s"].tolist() == [2.0, 4.0]


def test_full_history_includes_steps_before_the_resume(tmp_path):
    run = tmp_path / "v1-20260101-000000"
    run.mkdir()
    (run / "logging.jsonl").write_bytes(RESUMED_LOG.read_bytes())
    history = full_history(run)
    assert history.dropna(subset=["loss"])["step"].tolist() == [1, 2, 3, 4]
    assert history.dropna(subset=["eval_loss"])["step"].tolist() == [2, 4]
    summary = summarize_history(history)
    assert summary["steps"] == 4 and summary["loss_first"] == pytest.approx(1.2529, abs=1e-4)
    assert summary["loss_last"] == pytest.approx(1.0849, abs=1e-4)
    assert 0 < summary["token_acc_last"] <= 1 and "eval_loss_last" in summary
    final = final_record(run)
    assert final["global_step"] == 4 and final["last_model_checkpoint"].endswith("checkpoint-4")


def test_read_log_of_an_interrupted_run_and_a_torn_line(tmp_path):
    path = tmp_path / "logging.jsonl"
    text = INTERRUPTED_LOG.read_text(encoding="utf-8")
    path.write_text(text + '{"loss": 0.9, "global_st', encoding="utf-8")  # swift is mid-write
    history = read_log(path)
    assert history.dropna(subset=["loss"])["step"].tolist() == [1, 2]
    assert final_record(path) is None
    assert read_log(tmp_path / "missing.jsonl").empty


def test_plots(tmp_path):
    history = full_history_from_fixture(tmp_path)
    fig = plot_history(history, title="t")
    assert len(fig.axes) == 2 and all(ax.has_data() for ax in fig.axes)
    png = save_plot(history, tmp_path / "run" / "loss_curve.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    LivePlot().update(history)  # outside IPython: a no-op, no error


def full_history_from_fixture(tmp_path: Path) -> pd.DataFrame:
    run = tmp_path / "v0-20260101-000000"
    run.mkdir(exist_ok=True)
    (run / "logging.jsonl").write_bytes(RESUMED_LOG.read_bytes())
    return full_history(run)


# --------------------------------------------------------------------------- runs and checkpoints


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


# --------------------------------------------------------------------------- streaming


def test_console_printer_folds_dumps_and_throttles_progress():
    shown: list[str] = []
    printer = ConsolePrinter(progress_every=3600, write=shown.append, fold_over=3, max_line=120)
    lines = ["[INFO:swift] output_dir: /x",
             "[INFO:swift] args: SftArguments(", "a=1,", "b=[2],", "c={'d': 3},", ")",   # long dump: folded
             "[INFO:swift] train_dataset: Dataset({", "    num_rows: 1", "})",            # short dump: shown
             "[INFO:swift] model: Broken(", "never closed",                              # ended by the next message
             "[INFO:swift] [INPUT_IDS] [" + ", ".join(["1"] * 100) + "]",
             "    {'loss': '1.0'}"]
    for line in lines:
        printer(line, False)
    printer("Train:  10%", True)
    printer("Train:  20%", True)  # within progress_every: not shown
    for line in ["Train: 100%2026-01-01 | ERROR    | swanlab.sdk.internal.pkg.safe:block:101 -",
                 "Error when parsing metric 'train/elapsed_time': build_scalar_or_media:104 ->",
                 "transform:70 -> TypeError: Unsupported scalar string value: '10s'.",
                 "[INFO:swift] done"]:
        printer(line, False)
    printer.finish()
    assert shown[0] == "[INFO:swift] output_dir: /x"
    assert shown[1] == "[INFO:swift] args: SftArguments( … 4 more lines folded"
    assert shown[2:5] == ["[INFO:swift] train_dataset: Dataset({", "    num_rows: 1", "})"]
    assert shown[5:7] == ["[INFO:swift] model: Broken(", "never closed"]
    assert shown[7].startswith("[INFO:swift] [INPUT_IDS] [1, 1") and "(325 characters" in shown[7]
    assert shown[8] == "{'loss': '1.0'}" and shown[9] == "Train:  10%"
    assert shown[10] == "[INFO:swift] done" and "1 SwanLab complaint" in shown[11] and len(shown) == 12


SCRIPT = textwrap.dedent("""
    import subprocess, sys, time
    print("hello", flush=True)
    for i in range(3):
        sys.stdout.write(f"\\rprogress {i}"); sys.stdout.flush()
    print("\\nline two", flush=True)
    if sys.argv[1] == "fail":
        print("boom", flush=True); sys.exit(3)
    if sys.argv[1] == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"child {child.pid}", flush=True)
        time.sleep(600)
""")


def test_run_swift_streams_lines_and_redraws(tmp_path):
    seen: list[tuple[str, bool]] = []
    run = run_swift([sys.executable, "-c", SCRIPT, "ok"], log_path=tmp_path / "log.txt",
                    on_output=lambda text, transient: seen.append((text, transient)))
    assert run.returncode == 0 and not run.stopped
    assert ("hello", False) in seen and ("progress 0", True) in seen and ("line two", False) in seen
    assert run.lines == ["hello", "progress 2", "line two"]  # the last redraw ends with the newline
    assert "line two" in (tmp_path / "log.txt").read_text()
    failed = run_swift([sys.executable, "-c", SCRIPT, "fail"], log_path=tmp_path / "log2.txt")
    assert failed.returncode == 3 and "boom" in failed.tail()


def test_run_swift_stop_kills_the_whole_process_group(tmp_path):
    pids: list[int] = []

    def on_output(text: str, transient: bool) -> None:
        if text.startswith("child "):
            pids.append(int(text.split()[1]))

    run = run_swift([sys.executable, "-c", SCRIPT, "hang"], log_path=tmp_path / "log.txt", on_output=on_output,
                    on_poll=lambda: bool(pids), poll_seconds=0.2)
    assert run.stopped and run.returncode != 0 and run.seconds < 60
    assert pids and not _alive(pids[0])  # the grandchild went with the group


def test_run_swift_ctrl_c_stops_everything_and_reraises(tmp_path):
    pids: list[int] = []

    def on_output(text: str, transient: bool) -> None:
        if text.startswith("child "):
            pids.append(int(text.split()[1]))
            raise KeyboardInterrupt  # what the notebook's stop button raises in the kernel

    with pytest.raises(KeyboardInterrupt):
        run_swift([sys.executable, "-c", SCRIPT, "hang"], log_path=tmp_path / "log.txt", on_output=on_output)
    assert pids and not _alive(pids[0])


def _alive(pid: int, grace: float = 5.0) -> bool:
    """Still running after ``grace`` seconds (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + grace
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)


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
