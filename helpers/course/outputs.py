"""Committed notebook outputs: results a learner sees on the code host before running anything.

``refresh`` copies the executed notebooks of a course run (``make course`` keeps them in
``workspace/runs/course-*/``) over the English notebooks, keeping the code as committed, dropping
outputs too big for a repository and widget state that only a live kernel can show, and stamping
each notebook with the fingerprint of its code. ``check`` fails when a notebook's code changed
since its outputs were made: outputs are refreshed from a run, never edited by hand.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import NOTEBOOKS_DIR, list_notebooks

STAMP_KEY = "course_outputs"
MAX_OUTPUT_BYTES = 150_000
"""Larger single outputs (a huge table, a big image) are replaced by a note: notebooks stay small."""


def code_fingerprint(nb: dict[str, Any]) -> str:
    """sha256 of every code cell's source, in order: what the outputs were computed from."""
    digest = hashlib.sha256()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            digest.update(("".join(source) if isinstance(source, list) else source).encode("utf-8"))
            digest.update(b"\x00")
    return digest.hexdigest()


def _has_outputs(nb: dict[str, Any]) -> bool:
    return any(c.get("outputs") for c in nb.get("cells", []) if c.get("cell_type") == "code")


PALETTE_ABOVE = 30_000
"""PNG outputs larger than this (base64 bytes) are stored with a 256-colour palette: plots look the same."""


def smaller_png(b64: str) -> str:
    """The PNG re-encoded with an adaptive 256-colour palette when that is smaller (plots lose nothing visible)."""
    import base64
    import io

    from PIL import Image

    raw = base64.b64decode(b64)
    with Image.open(io.BytesIO(raw)) as image:
        out = io.BytesIO()
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, format="PNG",
                                                                                        optimize=True)
    packed = base64.b64encode(out.getvalue()).decode("ascii")
    return packed + "\n" if len(packed) < len(b64) else b64


def _slim(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = []
    for out in outputs:
        data = out.get("data") or {}
        png = data.get("image/png")
        if isinstance(png, str) and len(png) > PALETTE_ABOVE:
            out = {**out, "data": {**data, "image/png": smaller_png(png)}}
            data = out["data"]
        if "application/vnd.jupyter.widget-view+json" in data:  # a widget: only a live kernel can draw it
            text = data.get("text/plain", "")
            out = {**out, "data": {"text/plain": f"{''.join(text)}  (an interactive widget: run the notebook)"}}
        if len(json.dumps(out)) > MAX_OUTPUT_BYTES:
            out = {"output_type": "stream", "name": "stdout",
                   "text": [f"[output of {len(json.dumps(out)) // 1000} kB left out of the repository: run the cell]\n"]}
        last = kept[-1] if kept else None
        if last and out.get("output_type") == "stream" and last.get("output_type") == "stream" \
                and last.get("name") == out.get("name"):  # one block per run of printed lines, as Jupyter shows it
            last["text"] = ["".join(last["text"]) + "".join(out.get("text", []))]
            continue
        kept.append(dict(out))
    return kept


def _secrets() -> list[str]:
    """API keys from the environment that must never reach a committed notebook."""
    import os

    return [v for k, v in os.environ.items() if k.endswith(("API_KEY", "_TOKEN")) and len(v) >= 8]


@dataclass
class Refreshed:
    notebook: str
    kilobytes: float
    outputs: int


def refresh(run_dir: str | Path, notebooks_dir: Path = NOTEBOOKS_DIR, names: list[str] | None = None) -> list[Refreshed]:
    """Copy the outputs of ``run_dir``'s executed notebooks into the committed ones (same code only).

    ``names`` (e.g. ``["06"]`` or ``["06_evaluate.ipynb"]``) limits it to those notebooks:
    after one notebook's code changed, run that one again and refresh it alone.
    """
    run_dir = Path(run_dir)
    done = []
    for path in list_notebooks(notebooks_dir):
        if names and not any(path.name.startswith(n) for n in names):
            continue
        executed = run_dir / path.name
        if not executed.is_file():
            continue
        nb, ran = json.loads(path.read_text(encoding="utf-8")), json.loads(executed.read_text(encoding="utf-8"))
        if code_fingerprint(nb) != code_fingerprint(ran):
            raise ValueError(f"{executed} ran other code than {path}: run the course again, then refresh.")
        count = 0
        for cell, ran_cell in zip(nb["cells"], ran["cells"]):
            if cell.get("cell_type") == "code":
                cell["outputs"] = _slim(ran_cell.get("outputs", []))
                cell["execution_count"] = ran_cell.get("execution_count")
                count += len(cell["outputs"])
        leaked = [k for k in _secrets() if k in json.dumps(nb)]
        if leaked:
            raise ValueError(f"{executed} shows a secret (an API key) in its outputs: not copied. Fix the cell.")
        nb.setdefault("metadata", {}).pop("widgets", None)
        nb["metadata"][STAMP_KEY] = {"code_sha256": code_fingerprint(nb), "run": run_dir.name}
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
        done.append(Refreshed(path.name, round(len(text.encode()) / 1000, 1), count))
    return done


def stale(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[str]:
    """Notebooks whose outputs were made from other code (or carry outputs with no stamp)."""
    problems = []
    for path in list_notebooks(notebooks_dir):
        nb = json.loads(path.read_text(encoding="utf-8"))
        stamp = nb.get("metadata", {}).get(STAMP_KEY)
        if stamp is None:
            if _has_outputs(nb):
                problems.append(f"{path.name}: outputs without a stamp (edited by hand?): "
                                "python -m helpers outputs refresh <run folder>")
            continue
        if stamp.get("code_sha256") != code_fingerprint(nb):
            problems.append(f"{path.name}: code changed since its outputs were made in {stamp.get('run')}: run "
                            f"`make course`, then `python -m helpers outputs refresh workspace/runs/course-...`")
    return problems


def clear(notebooks_dir: Path = NOTEBOOKS_DIR, names: list[str] | None = None) -> list[str]:
    """Remove the outputs (and the stamp) of the named notebooks, or of every stale one."""
    names = names or [p.split(":")[0] for p in stale(notebooks_dir)]
    for name in names:
        path = notebooks_dir / name
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell.get("cell_type") == "code":
                cell["outputs"], cell["execution_count"] = [], None
        nb.get("metadata", {}).pop(STAMP_KEY, None)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return names
