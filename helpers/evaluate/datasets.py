r"""The evaluation sets: written once per run, the same items and prompts for every model.

Word problems (the test templates) and GSM8K go through evalscope's ``gsm8k``
benchmark on local gsm8k-format files, the headlines through ``general_qa`` with
chat messages. Every prompt is the student's own training prompt, zero-shot
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
        return cls(info["name"], info["benchmark"], info["subset"], folder, read_jsonl(folder / "items.jsonl"))


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


def _write_dataset(folder: Path, name: str, rows: list[Row]) -> EvalDataset:
    spec = DATASETS[name]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if spec["benchmark"] == "gsm8k":
        write_gsm8k_jsonl(rows, evalscope_gsm8k_path(folder))
    else:
        write_jsonl(({"messages": check_zero_shot(r["messages"]), "answer": r["reference"]} for r in rows),
                    folder / f"{spec['subset']}.jsonl")
    write_jsonl(rows, folder / "items.jsonl")
    (folder / "dataset.json").write_text(json.dumps({"name": name, **spec}, indent=2), encoding="utf-8")
    return EvalDataset(name, spec["benchmark"], spec["subset"], folder, rows)


def prepare_datasets(data_dir: str | Path, *, word_problems: int, gsm8k: int, headlines: int,
                     seed: int = 0) -> dict[str, EvalDataset]:
    """Write the evaluation sets under ``data_dir`` and return them by name.

    * ``word_problems``: the first n TEST problems (balanced over 1/2/3 steps), zero-shot;
    * ``gsm8k``: the first n GSM8K test problems, zero-shot (skipped with a warning
      when there is no local copy and the profile may not download);
    * ``headlines``: the first n test headlines with the classification prompt of notebook 01
      (its system prompt and user template), zero-shot like the math sets.

    A count of 0 leaves a set out. Every model sees exactly these items.
    """
    data_dir = Path(data_dir)
    sets: dict[str, EvalDataset] = {}
    if word_problems:
        rows = word_problem_rows("test", word_problems, seed=seed, shots=0)
        sets["word_problems"] = _write_dataset(data_dir / "word_problems", "word_problems", rows)
    if gsm8k:
        try:
            rows = gsm8k_rows("test", gsm8k, shots=0)
        except DatasetUnavailable as exc:
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
    model made stronger by examples; an API teacher needs none): math questions get
    ``shots`` solved problems, headlines (with any ``shots > 0``) the one worked example
    of notebook 01.
    """
    if dataset.name == "word_problems":
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

