"""Grade-school word problems generated from templates, with exact answers and gold solutions.

The templates are data (``data/tasks/word_problems.yaml``): a question with
slots, its calculation in 1-3 steps of ``+ - * /``, and a sentence per step.
Families ``A`` and ``B`` are the training wordings and ``C`` the test wordings,
so the test split measures whether a model learned the arithmetic or only the
wording. Generation is deterministic for a seed, and the first ``n`` problems of
a split do not depend on how many are asked for (a smoke run is a prefix of the full run).
"""

from __future__ import annotations

import operator
import random
import re
import string
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import yaml

from ..core.config import REPO_ROOT
from ..teacher.prompts import shot_messages
from .math import boxed, math_messages

Split = Literal["train", "test"]
Row = dict[str, Any]
TEMPLATES_PATH: Path = REPO_ROOT / "data" / "tasks" / "math" / "word_problems.yaml"
_OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv,
}
WORD_SLOTS = ("name", "name2", "he", "He", "his", "His", "him", "items", "boxes", "box")
_STEP_RE = re.compile(r"^\s*(\w+)\s*([-+*/])\s*(\w+)\s*$")
_RESULT_RE = re.compile(r"^r(\d)$")


@dataclass(frozen=True)
class WordData:
    """Everything in the templates file: families, names, items and the templates."""

    families: Mapping[str, Split]
    max_value: int
    names: tuple[tuple[str, str], ...]
    pronouns: Mapping[str, Mapping[str, str]]
    items: tuple[tuple[str, str, str], ...]
    templates: tuple["Template", ...]


@dataclass(frozen=True)
class Template:
    """One wording of a word problem, with its calculation and solution sentences."""

    id: str
    """``<family><steps>-<nn>``, e.g. ``"A2-03"``."""
    text: str
    calc: tuple[tuple[str, str, str], ...]
    explain: tuple[str, ...]
    ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict, hash=False)
    split: Split = "train"
    """From the family (the id's first letter) in the templates file."""

    @property
    def family(self) -> str:
        return self.id[0]

    @property
    def steps(self) -> int:
        return len(self.calc)

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(op for _, op, _ in self.calc)

    @property
    def operands(self) -> tuple[str, ...]:
        """The number slots the question fills (``a``, ``b``...), in order."""
        names: list[str] = []
        for left, _, right in self.calc:
            for x in (left, right):
                if not _RESULT_RE.match(x) and x not in names:
                    names.append(x)
        return tuple(names)

    def operand_range(self, var: str) -> tuple[int, int]:
        """Sampling range of a number slot: the template's own, else a default by role."""
        if var in self.ranges:
            return self.ranges[var]
        for left, op, right in self.calc:
            if op == "/" and var == right:
                return (2, 9)
            if op == "/" and var == left:
                return (6, 99)
            if op == "*" and var in (left, right):
                return (2, 12)
            if op == "-" and var == left:
                return (20, 99)
        return (2, 60)



def _template(spec: Mapping[str, Any], families: Mapping[str, str], where: str) -> Template:
    """Build a :class:`Template` from one entry of the templates file and check it is consistent."""
    missing = [key for key in ("id", "text", "calc", "explain") if key not in spec]
    if missing:
        raise ValueError(f"{where}: a template needs {', '.join(missing)}.")
    tid, text, explain = str(spec["id"]), str(spec["text"]), [str(e) for e in spec["explain"]]
    steps: list[tuple[str, str, str]] = []
    for i, expr in enumerate(spec["calc"], 1):
        m = _STEP_RE.match(str(expr))
        if not m:
            raise ValueError(f"{where} ({tid}): step {expr!r} must look like 'a+b' or 'r1*c'.")
        left, op, right = m.groups()
        for x in (left, right):
            r = _RESULT_RE.match(x)
            if r and not 1 <= int(r.group(1)) < i:
                raise ValueError(f"{where} ({tid}): step {i} uses {x} before it is computed.")
        steps.append((left, op, right))
    ranges = {str(k): (int(v[0]), int(v[1])) for k, v in (spec.get("ranges") or {}).items()}
    template = Template(id=tid, text=text, calc=tuple(steps), explain=tuple(explain), ranges=ranges,
                        split=families.get(tid[:1], ""))  # type: ignore[arg-type]
    if tid[:1] not in families or not tid[1:2].isdigit() or int(tid[1]) != template.steps:
        raise ValueError(f"{where}: id {tid!r} must be <family in {sorted(families)}><steps>-<nn>.")
    if len(template.explain) != template.steps:
        raise ValueError(f"{where} ({tid}): needs one explanation sentence per step.")
    slots = {f for _, f, _, _ in string.Formatter().parse(text + " ".join(explain)) if f}
    allowed = set(WORD_SLOTS) | set(template.operands) | {f"r{i}" for i in range(1, template.steps)}
    if not slots <= allowed:
        raise ValueError(f"{where} ({tid}): unknown slots {sorted(slots - allowed)}.")
    return template


@cache
def word_data(path: Path = TEMPLATES_PATH) -> WordData:
    """The templates file, read and checked once."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    families = {str(k): str(v) for k, v in raw["families"].items()}
    templates = tuple(_template(spec, families, f"{path} template {i + 1}") for i, spec in enumerate(raw["templates"]))
    ids = [t.id for t in templates]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate template ids.")
    return WordData(families=families, max_value=int(raw["max_value"]),  # type: ignore[arg-type]
                    names=tuple((str(n), str(g)) for n, g in raw["names"]), pronouns=raw["pronouns"],
                    items=tuple(tuple(map(str, it)) for it in raw["items"]), templates=templates)  # type: ignore[misc]


def templates_for(split: Split, steps: int | None = None) -> list[Template]:
    """The templates of one split (optionally with exactly ``steps`` operations)."""
    _check_split(split)
    return [t for t in word_data().templates if t.split == split and (steps is None or t.steps == steps)]


@dataclass(frozen=True)
class Equation:
    """One step of a gold solution: ``left op right = result``."""

    left: int
    op: str
    right: int
    result: int

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right} = {self.result}"


@dataclass(frozen=True)
class WordProblem:
    """A generated problem with its exact answer and gold step-by-step solution."""

    id: str
    split: Split
    question: str
    answer: int
    steps: int
    ops: tuple[str, ...]
    template_id: str
    family: str
    equations: tuple[Equation, ...]
    solution: tuple[str, ...]
    """One line per step: a sentence restating the numbers, then the equation."""

    @property
    def thinking(self) -> str:
        """The solution as one short paragraph (the ``<think>`` of a few-shot exemplar)."""
        return " ".join(self.solution)

    @property
    def solution_text(self) -> str:
        return "\n".join(self.solution)

    def gsm8k_answer(self) -> str:
        """The answer field of the gsm8k format: solution lines, then ``#### n``."""
        return f"{self.solution_text}\n#### {self.answer}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ops"] = list(self.ops)
        d["solution"] = list(self.solution)
        return d


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")


def _fill(template: Template, rng: random.Random, max_tries: int = 5000) -> tuple[str, int, list[Equation], list[str]]:
    """Draw words and numbers for ``template`` until every constraint holds."""
    data = word_data()
    (name, gender), (name2, _) = rng.sample(data.names, 2)
    items, boxes, box = rng.choice(data.items)
    words = {"name": name, "name2": name2, **data.pronouns[gender], "items": items, "boxes": boxes, "box": box}
    operands = template.operands
    for _ in range(max_tries):
        values = {v: rng.randint(*template.operand_range(v)) for v in operands}
        if len(set(values.values())) != len(values):
            continue  # distinct numbers keep the restated solution unambiguous
        env: dict[str, int] = dict(values)
        equations: list[Equation] = []
        for i, (left, op, right) in enumerate(template.calc, 1):
            x, y = env[left], env[right]
            if op == "/" and (x % y or x // y < 2):
                break
            result = _OPS[op](x, y)
            if not 1 <= result <= data.max_value:
                break
            env[f"r{i}"] = result
            equations.append(Equation(x, op, y, result))
        else:
            slots = {**words, **{k: str(v) for k, v in env.items()}}
            question = template.text.format(**slots)
            solution = [f"{sentence.format(**slots)} {eq}." for sentence, eq in zip(template.explain, equations)]
            return question, equations[-1].result, equations, solution
    raise RuntimeError(
        f"Template {template.id} found no valid numbers in {max_tries} tries; widen its ranges."
    )


def _stream(split: Split, steps: int, key: str,
            template_id: str | None = None) -> Iterator[tuple[Template, str, int, list[Equation], list[str]]]:
    """Endless unique problems of one split and step count, deterministic for ``key``.

    Templates are used in shuffled rounds, so every template appears equally often.
    ``template_id`` restricts the stream to that one template.
    """
    templates = [t for t in templates_for(split, steps) if template_id in (None, t.id)]
    if not templates:
        raise ValueError(f"No {split} templates with {steps} steps" + (f" and id {template_id}." if template_id else "."))
    rng = random.Random(f"word-problems|{split}|{steps}|{key}" + (f"|{template_id}" if template_id else ""))
    seen: set[str] = set()
    while True:
        produced = False
        for template in rng.sample(templates, len(templates)):
            for _ in range(50):
                question, answer, equations, solution = _fill(template, rng)
                if question not in seen:
                    seen.add(question)
                    produced = True
                    yield template, question, answer, equations, solution
                    break
        if not produced:
            raise RuntimeError(f"The {split} templates with {steps} steps ran out of distinct problems.")


def _problem(pid: str, split: Split, t: Template, question: str, answer: int,
             equations: list[Equation], solution: list[str]) -> WordProblem:
    return WordProblem(id=pid, split=split, question=question, answer=answer, steps=t.steps, ops=t.ops,
                       template_id=t.id, family=t.family, equations=tuple(equations), solution=tuple(solution))


def _check_steps(steps: Iterable[int]) -> tuple[int, ...]:
    steps = tuple(steps)
    if not steps or not set(steps) <= {1, 2, 3}:
        raise ValueError(f"steps must be a non-empty sequence of 1, 2 and 3, got {steps!r}.")
    return steps


def make_word_problems(split: Split, n: int, *, seed: int = 0,
                       steps: Sequence[int] = (1, 2, 3)) -> list[WordProblem]:
    """``n`` unique word problems of ``split``, balanced over ``steps``.

    Problem ``i`` has ``steps[i % len(steps)]`` operations, so step counts differ
    by at most one, and asking for more problems only appends to the list. A
    value may repeat to weight the mix: ``steps=(1, 1, 2, 3)`` gives half
    one-step problems.
    Ids are ``wp-<split>-<index>``.
    """
    _check_split(split)
    steps = _check_steps(steps)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}.")
    streams = {s: _stream(split, s, str(seed)) for s in set(steps)}
    return [_problem(f"wp-{split}-{i:06d}", split, *next(streams[steps[i % len(steps)]]))
            for i in range(n)]


def fewshot_problems(k: int, *, seed: int = 0, steps: int | None = None,
                     exclude: Collection[str] = (), template_id: str | None = None) -> list[WordProblem]:
    """``k`` worked examples for few-shot prompts, from TRAIN templates only.

    They come from their own random stream (not the training rows of the same
    seed), each from a different template, and never one of the ``exclude``
    question texts. With ``steps=None`` the step counts cycle 1, 2, 3.

    ``template_id`` (a TRAIN template) instead gives ``k`` examples worded like
    that template with other names and numbers: the "retrieve the most similar
    solved problems" prompt that makes a tiny teacher far more reliable.
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}.")
    if template_id is not None:
        template = next((t for t in templates_for("train") if t.id == template_id), None)
        if template is None:
            raise ValueError(f"{template_id!r} is not a train template: retrieved exemplars come from training "
                             "wording only, so test questions never leak into prompts.")
        stream = _stream("train", template.steps, f"exemplars|{seed}", template_id=template_id)
        excluded = set(exclude)
        picked = [item for item in islice((x for x in stream if x[1] not in excluded), k)]
        return [_problem(f"wp-shot-{seed}-{template_id}-{i}", "train", *item) for i, item in enumerate(picked)]
    step_cycle = _check_steps((steps,)) if steps is not None else (1, 2, 3)
    streams = {s: _stream("train", s, f"exemplars|{seed}") for s in step_cycle}
    excluded = set(exclude)
    chosen: list[WordProblem] = []
    used_templates: set[str] = set()
    for i in range(k):
        s = step_cycle[i % len(step_cycle)]
        n_templates = len(templates_for("train", s))
        fresh = sum(1 for tid in used_templates if int(tid[1]) == s) < n_templates
        for _ in range(20 * n_templates):
            t, question, answer, equations, solution = next(streams[s])
            if question not in excluded and not (fresh and t.id in used_templates):
                break
        else:
            raise RuntimeError(f"Could not find {k} distinct few-shot problems with {s} steps.")
        used_templates.add(t.id)
        chosen.append(_problem(f"wp-shot-{seed}-{i}", "train", t, question, answer, equations, solution))
    return chosen



def fewshot_exemplars(k: int, *, seed: int = 0, steps: int | None = None,
                      exclude: Collection[str] = (), template_id: str | None = None) -> list[dict[str, str]]:
    """``k`` worked problems of :func:`fewshot_problems` as alternating user/assistant turns.

    Each reply is the gold solution, short and regular (one equation per step),
    which is what a 135M teacher needs to copy the format.
    """
    problems = fewshot_problems(k, seed=seed, steps=steps, exclude=exclude, template_id=template_id)
    return shot_messages((p.question, p.thinking, boxed(p.answer)) for p in problems)


ExemplarMode = Literal["steps", "template", "any"]


def word_problem_rows(split: Split, n: int, *, seed: int = 0, shots: int = 3, system: bool = True,
                      steps: Sequence[int] = (1, 2, 3), match_steps: bool = True,
                      exemplars: ExemplarMode | None = None) -> list[Row]:
    """Prompt rows (task ``"word_problem"``) for ``n`` generated problems.

    ``shots`` worked TRAIN examples come before each question (``shots=0`` gives
    the zero-shot prompt used for the student and for evaluation). How they are
    picked (``exemplars``):

    * ``"steps"`` (default): examples with as many steps as the question, which
      helps a tiny teacher copy the right shape of solution;
    * ``"any"``: examples of 1, 2 and 3 steps (``match_steps=False`` means this);
    * ``"template"``: for TRAIN questions, examples worded like the question
      itself (retrieval of similar solved problems); test questions fall back to
      ``"steps"`` because their wording never appears in training.

    ``meta`` carries steps, family, template id, operations, the gold solution
    and the exemplar mode.
    """
    mode: ExemplarMode = exemplars or ("steps" if match_steps else "any")
    if mode not in ("steps", "template", "any"):
        raise ValueError(f"exemplars must be 'steps', 'template' or 'any', got {exemplars!r}.")
    problems = make_word_problems(split, n, seed=seed, steps=steps)
    shot_cache: dict[object, list[dict[str, str]]] = {}
    shot_questions: dict[object, set[str]] = {}

    def shots_for(p: WordProblem) -> list[dict[str, str]]:
        if shots == 0:
            return []
        if mode == "template" and p.split == "train":
            picked = fewshot_problems(shots, seed=seed, template_id=p.template_id, exclude={p.question})
            return shot_messages((q.question, q.thinking, boxed(q.answer)) for q in picked)
        key = p.steps if mode != "any" else None
        if key not in shot_cache:
            picked = fewshot_problems(shots, seed=seed, steps=key)
            shot_cache[key] = shot_messages((q.question, q.thinking, boxed(q.answer)) for q in picked)
            shot_questions[key] = {q.question for q in picked}
        if p.question in shot_questions[key]:  # never show a row its own answer
            picked = fewshot_problems(shots, seed=seed, steps=key, exclude={p.question})
            return shot_messages((q.question, q.thinking, boxed(q.answer)) for q in picked)
        return shot_cache[key]

    return [
        {
            "id": p.id,
            "messages": math_messages(p.question, shots=shots_for(p), system=system),
            "question": p.question,
            "reference": str(p.answer),
            "task": "word_problem",
            "meta": {"steps": p.steps, "family": p.family, "template_id": p.template_id, "ops": list(p.ops),
                     "split": p.split, "shots": shots, "exemplars": mode if shots else None,
                     "solution": p.solution_text},
        }
        for p in problems
    ]


_SLOT_RE = re.compile(r"\{(\w+)\}")


@cache
def _template_regex(template: Template) -> re.Pattern[str]:
    parts: list[str] = []
    last = 0
    for m in _SLOT_RE.finditer(template.text):
        parts.append(re.escape(template.text[last:m.start()]))
        parts.append(r"\d+" if m.group(1) in template.operands else r".+?")
        last = m.end()
    parts.append(re.escape(template.text[last:]))
    return re.compile("".join(parts))


def match_template(question: str) -> Template | None:
    """The template a question was generated from, if any (used to audit splits)."""
    for template in word_data().templates:
        if _template_regex(template).fullmatch(question.strip()):
            return template
    return None

