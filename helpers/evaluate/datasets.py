r"""The evaluation sets: written once per run, the same items and prompts for every model.

Word problems (the test templates) and GSM8K go through evalscope's ``gsm8k``
benchmark on local gsm8k-format files; the headlines and any other task's test split
through ``general_qa`` with chat messages. Every prompt is the student's own training prompt, zero-shot
(:func:`check_zero_shot`): evalscope rewrites assistant turns.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.jsonl import read_jsonl, write_jsonl
from ..tasks.gsm8k import DatasetUnavailable, evalscope_gsm8k_path, gsm8k_rows, write_gsm8k_jsonl
from ..tasks.headlines import headline_rows
from ..tasks.spec import Task, load_task
from ..tasks.word_problems import word_problem_rows
from ..teacher.prompts import load_prompt, render

Row = dict[str, Any]

DATASETS: dict[str, dict[str, str]] = {
    "word_problems": {"benchmark": "gsm8k", "subset": "default", "task": "word_problem",
                      "what": "held-out test split of the generated word problems (other templates than training)"},
    "gsm8k": {"benchmark": "gsm8k", "subset": "default", "task": "gsm8k",
              "what": "GSM8K test (real grade-school problems the student never trained on)"},
    "headlines": {"benchmark": "general_qa", "subset": "headlines", "task": "classification",
                  "what": "news-headline topics of notebook 01 (a skill distillation did not train)"},
}
"""The evaluation sets: evalscope benchmark, subset name, course task and a one-line description."""


@dataclass(frozen=True)
class EvalDataset:
    """One evaluation set as written to disk for evalscope, plus the course's prompt rows.

    ``rows`` are in file order: evalscope's item ``index`` ``i`` is ``rows[i]``.
    """

    name: str
    benchmark: str
    subset: str
    folder: Path
    rows: list[Row] = field(repr=False)
    spec: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The set's description (``dataset.json``): benchmark, subset, what it tells, the task file."""

    @property
    def n(self) -> int:
        return len(self.rows)

    def dataset_args(self) -> dict[str, Any]:
        """The ``dataset_args[benchmark]`` entry of an evalscope ``TaskConfig``."""
        args: dict[str, Any] = {"local_path": str(self.folder), "subset_list": [self.subset], "few_shot_num": 0}
        if self.benchmark == "gsm8k":
            # The student's own prompt: the course system prompt + the math_user template.
            args.update(prompt_template=evalscope_prompt_template("math_user"), system_prompt=render("math_system"))
        else:
            args["metric_list"] = ["Rouge"]  # the chat carries its own system prompt; BLEU needs NLTK data
        return args

    @classmethod
    def load(cls, folder: str | Path) -> "EvalDataset":
        """Read a set back from the folder :func:`prepare_datasets` wrote."""
        folder = Path(folder)
        info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        return cls(info["name"], info["benchmark"], info["subset"], folder, read_jsonl(folder / "items.jsonl"), info)


def evalscope_prompt_template(name: str = "math_user") -> str:
    """A course prompt file as an evalscope ``prompt_template``: ``{question}`` placeholder, braces doubled.

    evalscope fills templates with ``str.format``, so the literal ``\\boxed{}`` of the
    prompt must become ``\\boxed{{}}``. The text itself comes from ``data/prompts/``.
    """
    marker = "\x00QUESTION\x00"
    text = load_prompt(name).render(question=marker)
    return text.replace("{", "{{").replace("}", "}}").replace(marker, "{question}")


def check_zero_shot(messages: Sequence[Mapping[str, str]], what: str = "an evaluation prompt") -> list[dict[str, str]]:
    """Return ``messages`` as plain ``{role, content}`` dicts, refusing any assistant turn.

    Evaluation prompts are zero-shot on purpose, and evalscope 1.14 could not be trusted
    with worked examples anyway: it cuts the ``<think>`` block out of an assistant turn
    given as a string (the checkpoint backend then drops it from the prompt), and over
    the OpenAI API it re-joins the parts of an assistant turn with extra newlines. Only
    system and user turns reach the model exactly as written.
    """
    roles = [m["role"] for m in messages]
    if "assistant" in roles:
        raise ValueError(f"{what} must be zero-shot (system and user turns only), got roles {roles}: evalscope "
                         "rewrites assistant turns (worked examples) before the model sees them.")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


class EvalSets(dict):
    """The evaluation sets by name, and the sets that were left out with the reason (``skipped``)."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[str, str] = {}

    def table(self) -> "Any":
        """One line per set, the skipped ones included with why: what a results table must not hide."""
        import pandas as pd

        lines = [{"set": name, "items": ds.n, "evalscope benchmark": ds.benchmark, "what": ds.spec.get("what", ""),
                  "skipped": ""} for name, ds in self.items()]
        lines += [{"set": name, "items": 0, "evalscope benchmark": DATASETS.get(name, {}).get("benchmark", ""),
                   "what": DATASETS.get(name, {}).get("what", ""), "skipped": why} for name, why in self.skipped.items()]
        return pd.DataFrame(lines).set_index("set")


def task_dataset_spec(task: Task) -> dict[str, str]:
    """How a task's own test split is evaluated: evalscope's ``general_qa`` with the task's chat messages."""
    return {"benchmark": "general_qa", "subset": task.name, "task": task.name, "task_path": str(task.path),
            "what": f"held-out test split of the {task.name} task: {task.description}"}


def _write_dataset(folder: Path, name: str, rows: list[Row], spec: Mapping[str, str] | None = None) -> EvalDataset:
    spec = dict(spec or DATASETS[name])
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if spec["benchmark"] == "gsm8k":
        write_gsm8k_jsonl(rows, evalscope_gsm8k_path(folder))
    else:
        write_jsonl(({"messages": check_zero_shot(r["messages"]),
                      "answer": r["reference"] if isinstance(r["reference"], str)
                      else json.dumps(r["reference"], ensure_ascii=False)} for r in rows),
                    folder / f"{spec['subset']}.jsonl")
    write_jsonl(rows, folder / "items.jsonl")
    (folder / "dataset.json").write_text(json.dumps({"name": name, **spec}, indent=2), encoding="utf-8")
    return EvalDataset(name, spec["benchmark"], spec["subset"], folder, rows, spec)


def prepare_datasets(data_dir: str | Path, task: Task | None = None, *, n: int = 0, word_problems: int = 0,
                     gsm8k: int = 0, headlines: int = 0, seed: int = 0,
                     langs: Sequence[str] | None = None) -> EvalSets:
    """Write the evaluation sets under ``data_dir`` and return them by name.

    * the task's test split, first ``n`` items, zero-shot: for math (the default) the
      ``word_problems`` set, balanced over 1/2/3 steps (``word_problems=`` says the same);
      for any other task a set named after it;
    * ``gsm8k``: the first n GSM8K test problems (left out, with the reason in
      ``skipped``, when there is no local copy and the profile may not download);
    * ``headlines``: the first n English test headlines (math: a skill it did not train).

    A count of 0 leaves a set out. Every model sees exactly these items.
    """
    data_dir = Path(data_dir)
    sets = EvalSets()
    n = n or word_problems
    if task is not None and task.source != "word_problems":
        if n:
            rows = task.prompt_rows("test", n, seed=seed, shots=0, langs=langs)
            spec = {**task_dataset_spec(task), "langs": list(langs) if langs else None, "seed": seed}
            sets[task.name] = _write_dataset(data_dir / task.name, task.name, rows, spec)
    elif n:
        rows = word_problem_rows("test", n, seed=seed, shots=0)
        sets["word_problems"] = _write_dataset(data_dir / "word_problems", "word_problems", rows)
    if gsm8k:
        try:
            rows = gsm8k_rows("test", gsm8k, shots=0)
        except DatasetUnavailable as exc:
            sets.skipped["gsm8k"] = str(exc)
            warnings.warn(f"GSM8K left out of the evaluation: {exc}", stacklevel=2)
        else:
            sets["gsm8k"] = _write_dataset(data_dir / "gsm8k", "gsm8k", rows)
    if headlines:
        rows = headline_rows("test", exemplar=False)[:headlines]
        sets["headlines"] = _write_dataset(data_dir / "headlines", "headlines", rows)
    return sets


def teacher_prompt_rows(dataset: EvalDataset, *, shots: int = 0, seed: int = 0) -> list[Row]:
    """The teacher's prompts for exactly the items of ``dataset`` (same ids, same order).

    ``shots`` worked examples go before each question (the offline teacher is the small
    model made stronger by examples; an API teacher needs none).
    """
    if dataset.spec.get("task_path"):  # a task's own set (the headlines task too): the task's prompts
        task = load_task(dataset.spec["task_path"])  # drawn as the students' set was: same seed, same languages
        rows = task.prompt_rows("test", dataset.n, seed=dataset.spec.get("seed", seed), shots=shots,
                                langs=dataset.spec.get("langs"))
    elif dataset.name == "word_problems":
        rows = word_problem_rows("test", dataset.n, seed=seed, shots=shots)
    elif dataset.name == "gsm8k":
        rows = gsm8k_rows("test", dataset.n, shots=shots, seed=seed)
    elif dataset.name == "headlines":
        rows = headline_rows("test", exemplar=shots > 0)[:dataset.n]
    else:
        rows = list(dataset.rows)
    if [r["id"] for r in rows] != [r["id"] for r in dataset.rows]:
        raise ValueError(f"The teacher's {dataset.name} items are not the evaluated ones.")
    return rows
