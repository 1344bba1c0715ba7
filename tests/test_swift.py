"""Running swift as a child process: the console printer, streaming, stopping the process group, Ctrl+C."""

from __future__ import annotations

import sys
import textwrap
import time

import psutil
import pytest

from helpers.core.swift import ConsolePrinter, run_swift


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
