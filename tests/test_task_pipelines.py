"""Other tasks through notebooks 02 -> 06, on the API-teacher path (issues 17 and 19).

The teacher is reached only through ``TEACHER_BASE_URL``: the course's own local server, started
here and addressed as an external API would be. The student is a local folder given by
``COURSE_STUDENT``. Everything is written to a fresh workspace, so the run proves the task alone
carries the pipeline. headlines runs in CI at smoke size (about 4 minutes); extraction (long
contracts, about 8 minutes with 3 test items) with ``COURSE_TEST_TASKS=headlines,extraction``.
"""

from __future__ import annotations

import json
import os

import pytest

from helpers.course.runner import NOTEBOOKS_DIR, RUN_DIR_ENV, run_course
from helpers.teacher.server import SERVER_THREADS_ENV, LocalServer

TASKS = os.environ.get("COURSE_TEST_TASKS", "headlines").split(",")
SMALLER = {"extraction": {"EVAL_TEST": "3"}}  # contracts are long: 3 test items x 3 models is enough to prove it


@pytest.mark.slow
@pytest.mark.parametrize("task", [pytest.param(t, marks=pytest.mark.skipif(
    t not in TASKS, reason=f"COURSE_TEST_TASKS={','.join(TASKS)}")) for t in ("headlines", "extraction")])
def test_task_runs_02_to_06_with_an_api_teacher_and_a_student_folder(task, student, settings, tmp_path,
                                                                     monkeypatch):
    workspace = tmp_path / "ws"
    for name in (RUN_DIR_ENV, SERVER_THREADS_ENV):  # run_course sets them; undone after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))
    monkeypatch.setenv(SERVER_THREADS_ENV, os.environ.get(SERVER_THREADS_ENV) or str(os.cpu_count() or 1))
    with LocalServer(student, settings=settings) as server:
        endpoint = server.endpoint
        for name, value in {"COURSE_TASK": task, "COURSE_STUDENT": str(student), "COURSE_WORKSPACE": str(workspace),
                            "TEACHER_BASE_URL": endpoint.base_url, "TEACHER_MODEL": endpoint.model,
                            "TEACHER_API_KEY": endpoint.api_key.reveal(), "COURSE_SIZE": "smoke",
                            **SMALLER.get(task, {})}.items():
            monkeypatch.setenv(name, value)
        notebooks = [NOTEBOOKS_DIR / f"{n}.ipynb" for n in
                     ("02_generate_data", "03_curate_dataset", "04_lora_sft", "05_merge_and_chat", "06_evaluate")]
        run = run_course(notebooks, timeout=1200)
    failed = [r for r in run.results if not r.ok]
    assert not failed, f"{failed[0].name}: {failed[0].error}"
    assert [r.name for r in run.results] == [p.name for p in notebooks]
    numbers = json.loads((run.folder / "numbers.json").read_text())
    assert numbers["02_generate_data"]["teacher_url"] == endpoint.base_url  # the API path, no server of its own
    assert numbers["05_merge_and_chat"]["equivalence_ok"] is True
    main = numbers["06_evaluate"]["main_set"]
    assert main == task and (workspace / "tasks" / task / "datasets" / "distill" / "train.jsonl").is_file()
