"""Committed notebook outputs: refreshed from a run, stamped with the code they came from, never stale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.course.outputs import MAX_OUTPUT_BYTES, STAMP_KEY, clear, code_fingerprint, refresh, stale


def _nb(code: list[str], outputs: list[list[dict]] | None = None) -> dict:
    cells = [{"cell_type": "markdown", "id": "m0", "metadata": {}, "source": "# title"}]
    for i, src in enumerate(code):
        cells.append({"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": src, "execution_count": None,
                      "outputs": (outputs or [[] for _ in code])[i]})
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _write(path: Path, nb: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_refresh_copies_outputs_slims_and_stamps(tmp_path):
    committed, run = tmp_path / "notebooks", tmp_path / "runs" / "course-1"
    _write(committed / "01_a.ipynb", _nb(["print(1)", "show()"]))
    widget = {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                                      "text/plain": "VBox()"}, "metadata": {}}
    huge = {"output_type": "stream", "name": "stdout", "text": ["x" * (MAX_OUTPUT_BYTES + 10)]}
    _write(run / "01_a.ipynb", _nb(["print(1)", "show()"], [[{"output_type": "stream", "name": "stdout",
                                                               "text": ["1\n"]}, huge], [widget]]))
    (item,) = refresh(run, committed)
    assert item.notebook == "01_a.ipynb" and item.outputs == 2  # printed lines in a row: one block, as Jupyter shows
    nb = json.loads((committed / "01_a.ipynb").read_text())
    first, second = nb["cells"][1]["outputs"], nb["cells"][2]["outputs"]
    assert len(first) == 1 and first[0]["text"][0].startswith("1\n[output of")
    assert "left out of the repository" in first[0]["text"][0]
    assert "interactive widget" in second[0]["data"]["text/plain"]
    assert nb["metadata"][STAMP_KEY] == {"code_sha256": code_fingerprint(nb), "run": "course-1"}
    assert stale(committed) == []


def test_a_secret_in_the_outputs_is_never_copied(tmp_path, monkeypatch):
    monkeypatch.setenv("TEACHER_API_KEY", "sk-test-0123456789abcdef")
    committed, run = tmp_path / "notebooks", tmp_path / "course-3"
    _write(committed / "01_a.ipynb", _nb(["print(key)"]))
    _write(run / "01_a.ipynb", _nb(["print(key)"], [[{"output_type": "stream", "name": "stdout",
                                                       "text": ["sk-test-0123456789abcdef"]}]]))
    with pytest.raises(ValueError, match="secret"):
        refresh(run, committed)
    assert json.loads((committed / "01_a.ipynb").read_text())["cells"][1]["outputs"] == []


def test_changed_code_makes_outputs_stale_and_clear_removes_them(tmp_path):
    committed, run = tmp_path / "notebooks", tmp_path / "course-2"
    _write(committed / "01_a.ipynb", _nb(["x = 1"]))
    _write(run / "01_a.ipynb", _nb(["x = 1"], [[{"output_type": "stream", "name": "stdout", "text": ["ok"]}]]))
    refresh(run, committed)
    nb = json.loads((committed / "01_a.ipynb").read_text())
    nb["cells"][1]["source"] = "x = 2"
    _write(committed / "01_a.ipynb", nb)
    (problem,) = stale(committed)
    assert "code changed since its outputs were made in course-2" in problem
    assert clear(committed) == ["01_a.ipynb"] and stale(committed) == []
    _write(committed / "02_b.ipynb", _nb(["y"], [[{"output_type": "stream", "name": "stdout", "text": ["hand"]}]]))
    assert "without a stamp" in stale(committed)[0]
    _write(run / "01_a.ipynb", _nb(["x = 3"]))
    with pytest.raises(ValueError, match="ran other code"):
        refresh(run, committed)


def test_committed_notebooks_outputs_match_their_code():
    """The English notebooks' outputs came from a run of exactly their current code."""
    problems = stale()
    assert not problems, "\n".join(problems)


def test_big_plots_get_a_palette_and_one_notebook_can_be_refreshed_alone(tmp_path):
    import base64
    import io

    import numpy as np
    from PIL import Image

    from helpers.course.outputs import PALETTE_ABOVE, smaller_png

    rng = np.random.default_rng(0)
    pixels = (rng.random((300, 400, 3)) * 4).astype("uint8") * 64  # 64 colours (a plot has fewer), but large
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    assert len(png) > PALETTE_ABOVE
    packed = smaller_png(png)
    assert len(packed) < len(png)
    with Image.open(io.BytesIO(base64.b64decode(packed))) as image:
        assert image.size == (400, 300)
        assert (np.asarray(image.convert("RGB")) == pixels).mean() > 0.99  # the same picture

    committed, run = tmp_path / "notebooks", tmp_path / "runs" / "course-2"
    for name in ("01_a.ipynb", "02_b.ipynb"):
        _write(committed / name, _nb(["print(1)"]))
        _write(run / name, _nb(["print(2)" if name == "01_a.ipynb" else "print(1)"],
                               [[{"output_type": "stream", "name": "stdout", "text": ["1\n"]}]]))
    with pytest.raises(ValueError, match="ran other code"):
        refresh(run, committed)
    assert [r.notebook for r in refresh(run, committed, names=["02"])] == ["02_b.ipynb"]
