"""GSM8K (MIT, openai/grade-school-math): a local copy, or ModelScope in the gpu profile.

Looked for in ``$GSM8K_DIR``, ``shared/datasets/gsm8k`` beside (or inside) the
checkout, or a copy downloaded earlier into the workspace; never copied into the
repository. Also writes rows in the gsm8k format that evalscope reads.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from ..core.config import REPO_ROOT, get_settings
from ..core.jsonl import read_jsonl, write_jsonl
from ..teacher.prompts import shot_messages
from .math import boxed, math_messages
from .word_problems import WordProblem

Split = Literal["train", "test"]
Row = dict[str, Any]
GSM8K_ENV = "GSM8K_DIR"


class DatasetUnavailable(RuntimeError):
    """A dataset has no local copy and the active profile may not download it."""


def _gsm8k_record(item: WordProblem | Mapping[str, Any]) -> dict[str, str]:
    if isinstance(item, WordProblem):
        return {"question": item.question, "answer": item.gsm8k_answer()}
    if not isinstance(item, Mapping) or not item.get("question"):
        raise ValueError(f"Cannot export {item!r}: need a WordProblem or a row with a 'question'.")
    answer = item.get("answer")
    if isinstance(answer, str) and "####" in answer:  # already in gsm8k form
        return {"question": item["question"], "answer": answer}
    reference = item.get("reference")
    if reference in (None, ""):
        raise ValueError(f"Row {item.get('id', item['question'][:40])!r} has no reference to export.")
    solution = str((item.get("meta") or {}).get("solution") or "").strip()
    return {"question": item["question"], "answer": f"{solution}\n#### {reference}".lstrip("\n")}


def write_gsm8k_jsonl(items: Iterable[WordProblem | Mapping[str, Any]], path: str | Path) -> Path:
    """Export problems or prompt rows as ``{"question", "answer": "<solution>\\n#### <n>"}`` lines.

    That is the format of evalscope's ``gsm8k`` benchmark; see
    :func:`evalscope_gsm8k_path` for the file name it looks for in a folder.
    """
    return write_jsonl((_gsm8k_record(x) for x in items), path)


def evalscope_gsm8k_path(directory: str | Path, split: Split = "test", subset: str = "main") -> Path:
    """Where evalscope's local loader looks for a gsm8k split: ``<dir>/<subset>_<split>.jsonl``."""
    return Path(directory) / f"{subset}_{split}.jsonl"


def _gsm8k_file(directory: Path, split: str) -> Path | None:
    for name in (f"{split}.jsonl", f"main_{split}.jsonl"):
        if (directory / name).is_file():
            return directory / name
    return None


def _gsm8k_candidates() -> list[Path]:
    candidates = []
    if os.environ.get(GSM8K_ENV):
        candidates.append(Path(os.environ[GSM8K_ENV]).expanduser())
    candidates += [REPO_ROOT.parent / "shared" / "datasets" / "gsm8k",
                   REPO_ROOT / "shared" / "datasets" / "gsm8k",
                   get_settings(apply_env=False).datasets_dir / "gsm8k"]
    return candidates


def gsm8k_dir() -> Path | None:
    """The first folder holding gsm8k ``train.jsonl``/``test.jsonl``: ``$GSM8K_DIR``,
    ``shared/datasets/gsm8k`` beside (or inside) the checkout, or a copy the course
    downloaded earlier into the workspace. ``None`` when there is none."""
    for directory in _gsm8k_candidates():
        if _gsm8k_file(directory, "test") or _gsm8k_file(directory, "train"):
            return directory
    return None


def _gsm8k_reference(answer: str) -> str:
    if "####" not in answer:
        raise ValueError(f"A gsm8k answer must end with '#### <number>': {answer[-80:]!r}")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def _download_gsm8k(split: Split) -> Path:
    """gpu profile only: fetch a split from ModelScope and keep it in the workspace."""
    target = get_settings(apply_env=False).datasets_dir / "gsm8k" / f"{split}.jsonl"
    try:
        from modelscope.msdatasets import MsDataset

        dataset = MsDataset.load("modelscope/gsm8k", subset_name="main", split=split)
        records = [{"question": r["question"], "answer": r["answer"]} for r in dataset]
    except Exception as exc:  # network, hub or package problem: say what to do instead
        raise DatasetUnavailable(
            f"Could not download gsm8k ({split}) from ModelScope: {exc}. "
            f"Put train.jsonl/test.jsonl in a folder and set {GSM8K_ENV} to it."
        ) from exc
    return write_jsonl(records, target)


def load_gsm8k(split: Split, limit: int | None = None) -> list[dict[str, Any]]:
    """GSM8K problems: ``id``, ``question``, ``answer`` (the solution text) and ``reference``.

    ``reference`` is the number after ``####`` with thousands separators removed.
    The local copy is preferred; without one, the ``gpu`` profile downloads from
    ModelScope and the ``offline`` profile raises :class:`DatasetUnavailable`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}.")
    directory = gsm8k_dir()
    path = _gsm8k_file(directory, split) if directory else None
    if path is None:
        if get_settings(apply_env=False).profile.hub_offline:
            raise DatasetUnavailable(
                f"No local gsm8k {split}.jsonl found (looked in: "
                f"{', '.join(str(p) for p in _gsm8k_candidates())}). Set {GSM8K_ENV} to a folder with "
                "train.jsonl/test.jsonl, or use COURSE_PROFILE=gpu to download it from ModelScope."
            )
        path = _download_gsm8k(split)
    rows = read_jsonl(path)
    if limit is not None:
        rows = rows[:limit]
    return [
        {"id": f"gsm8k-{split}-{i:05d}", "question": r["question"], "answer": r["answer"],
         "reference": _gsm8k_reference(r["answer"])}
        for i, r in enumerate(rows)
    ]


_CALC_RE = re.compile(r"<<[^>]*>>")


def gsm8k_exemplars(k: int, *, seed: int = 0, exclude: Collection[str] = ()) -> list[dict[str, str]]:
    """``k`` gsm8k TRAIN problems as few-shot user/assistant turns in the course format.

    The solution (calculator annotations ``<<...>>`` removed) becomes the
    ``<think>`` part and the reference the ``\\boxed{}`` answer.
    """
    pool = [r for r in load_gsm8k("train") if r["question"] not in set(exclude)]
    if k > len(pool):
        raise ValueError(f"Asked for {k} gsm8k exemplars but only {len(pool)} are available.")
    picked = random.Random(f"gsm8k-exemplars|{seed}").sample(pool, k)
    return shot_messages(
        (r["question"], " ".join(_CALC_RE.sub("", r["answer"].rsplit("####", 1)[0]).split()), boxed(r["reference"]))
        for r in picked
    )


def gsm8k_rows(split: Split, limit: int | None = None, *, shots: int = 0, seed: int = 0,
               system: bool = True) -> list[Row]:
    """Prompt rows (task ``"gsm8k"``) for GSM8K problems; ``shots`` exemplars from gsm8k train."""
    problems = load_gsm8k(split, limit)
    shared = gsm8k_exemplars(shots, seed=seed) if shots else []
    shared_questions = {m["content"] for m in shared if m["role"] == "user"}
    rows = []
    for p in problems:
        turns = shared
        if shots and any(p["question"] in q for q in shared_questions):
            turns = gsm8k_exemplars(shots, seed=seed, exclude={p["question"]})
        rows.append({
            "id": p["id"],
            "messages": math_messages(p["question"], shots=turns, system=system),
            "question": p["question"],
            "reference": p["reference"],
            "task": "gsm8k",
            "meta": {"split": split, "shots": shots, "solution": p["answer"].rsplit("####", 1)[0].strip()},
        })
    return rows

