"""The course's task data: generated word problems, GSM8K, news headlines, extraction texts.

Everything here ends as *prompt rows* (``id``, ``messages``, ``question``,
``reference``, ``task``, ``meta``), the input of teacher generation.

Grade-school word problems (:func:`make_word_problems`, :func:`word_problem_rows`)
    Generated from hand-written templates with exact integer answers and a known
    number of arithmetic steps (1, 2 or 3 of ``+ - * /``). The templates are
    grouped in *families*; families ``A`` and ``B`` are the training phrasings and
    family ``C`` the test phrasings, so the test split measures whether a model
    learned the arithmetic or only memorised wording. Both splits share names,
    objects, units and operations, never a template. Generation is deterministic
    for a seed, and the first ``n`` problems of a split do not depend on how many
    are asked for (a smoke run is a prefix of the full run).

GSM8K (:func:`load_gsm8k`, :func:`gsm8k_rows`)
    Read from a local copy (``shared/datasets/gsm8k`` beside the checkout or
    ``$GSM8K_DIR``); in the ``gpu`` profile it can come from ModelScope instead.

News-headline topics (:func:`load_headlines`, :func:`headline_rows`)
    ``data/classification/headlines.jsonl``: 100 invented headlines, 5 topics,
    a split fixed in the file.

Extraction (:func:`load_extraction_samples`, :func:`extraction_rows`)
    A few short English and Chinese news texts with gold fields.
"""

from __future__ import annotations

import json
import operator
import os
import random
import re
import string
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from .config import REPO_ROOT, get_settings
from .prompts import (
    boxed,
    classification_messages,
    extraction_messages,
    math_messages,
    shot_messages,
)

__all__ = [
    "DatasetUnavailable",
    "Equation",
    "FAMILIES",
    "TEMPLATES",
    "Template",
    "WordProblem",
    "evalscope_gsm8k_path",
    "extraction_rows",
    "fewshot_problems",
    "gsm8k_dir",
    "gsm8k_exemplars",
    "gsm8k_rows",
    "headline_rows",
    "load_extraction_samples",
    "load_gsm8k",
    "load_headlines",
    "load_labels",
    "make_word_problems",
    "match_template",
    "templates_for",
    "word_problem_rows",
    "write_gsm8k_jsonl",
    "write_jsonl",
]

Split = Literal["train", "test"]
Row = dict[str, Any]
DATA_DIR: Path = REPO_ROOT / "data"


# =========================================================================== word problems
#
# A template is a question with {slots}, the calculation as a list of steps
# ("a+b", "r1*c": ``rN`` is the result of step N) and, per step, one short
# sentence that restates the numbers of that step; the gold solution line of a
# step is that sentence followed by its equation ("Tom has 5 apples and buys 3
# more. 5 + 3 = 8."). Operand ranges default by role (factors and divisors stay
# small) and can be overridden per template.

Op = Literal["+", "-", "*", "/"]
_OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv,
}
MAX_VALUE = 999
"""Every result (intermediate and final) stays in 1..MAX_VALUE."""

FAMILIES: dict[str, Split] = {"A": "train", "B": "train", "C": "test"}
"""Which split each template family belongs to."""

NAMES: tuple[tuple[str, str], ...] = (
    ("Tom", "m"), ("Anna", "f"), ("Sam", "m"), ("Lily", "f"), ("Ben", "m"), ("Mia", "f"),
    ("Leo", "m"), ("Emma", "f"), ("Omar", "m"), ("Sara", "f"), ("Jack", "m"), ("Nina", "f"),
    ("Ravi", "m"), ("Zoe", "f"), ("Carlos", "m"), ("Aisha", "f"), ("Ken", "m"), ("Maya", "f"),
    ("Liam", "m"), ("Chloe", "f"), ("Noah", "m"), ("Grace", "f"), ("Hugo", "m"), ("Ivy", "f"),
)
PRONOUNS: dict[str, dict[str, str]] = {
    "m": {"he": "he", "He": "He", "his": "his", "His": "His", "him": "him"},
    "f": {"he": "she", "He": "She", "his": "her", "His": "Her", "him": "her"},
}
ITEMS: tuple[tuple[str, str, str], ...] = (
    # (items, container plural, container singular)
    ("apples", "baskets", "basket"), ("pencils", "boxes", "box"), ("stickers", "packs", "pack"),
    ("cookies", "trays", "tray"), ("eggs", "cartons", "carton"), ("marbles", "bags", "bag"),
    ("cards", "packs", "pack"), ("crayons", "boxes", "box"), ("muffins", "trays", "tray"),
    ("oranges", "crates", "crate"), ("shells", "jars", "jar"), ("beads", "jars", "jar"),
    ("cupcakes", "boxes", "box"), ("balloons", "bags", "bag"), ("candles", "packs", "pack"),
    ("buttons", "jars", "jar"), ("toy cars", "boxes", "box"), ("books", "boxes", "box"),
    ("lemons", "bags", "bag"), ("potatoes", "sacks", "sack"),
)
WORD_SLOTS = ("name", "name2", "he", "He", "his", "His", "him", "items", "boxes", "box")
_STEP_RE = re.compile(r"^\s*(\w+)\s*([-+*/])\s*(\w+)\s*$")
_RESULT_RE = re.compile(r"^r(\d)$")


@dataclass(frozen=True)
class Template:
    """One wording of a word problem, with its calculation and solution sentences."""

    id: str
    """``<family><steps>-<nn>``, e.g. ``"A2-03"``."""
    text: str
    calc: tuple[tuple[str, str, str], ...]
    explain: tuple[str, ...]
    ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict, hash=False)

    @property
    def family(self) -> str:
        return self.id[0]

    @property
    def split(self) -> Split:
        return FAMILIES[self.family]

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


def T(id: str, text: str, calc: Sequence[str], explain: Sequence[str],
      **ranges: tuple[int, int]) -> Template:
    """Build a :class:`Template` from compact notation and check it is consistent."""
    steps: list[tuple[str, str, str]] = []
    for i, expr in enumerate(calc, 1):
        m = _STEP_RE.match(expr)
        if not m:
            raise ValueError(f"{id}: step {expr!r} must look like 'a+b' or 'r1*c'.")
        left, op, right = m.groups()
        for x in (left, right):
            r = _RESULT_RE.match(x)
            if r and not 1 <= int(r.group(1)) < i:
                raise ValueError(f"{id}: step {i} uses {x} before it is computed.")
        steps.append((left, op, right))
    template = Template(id=id, text=text, calc=tuple(steps), explain=tuple(explain), ranges=ranges)
    if template.family not in FAMILIES or int(id[1]) != template.steps:
        raise ValueError(f"{id}: the id must be <family in {sorted(FAMILIES)}><steps>-<nn>.")
    if len(template.explain) != template.steps:
        raise ValueError(f"{id}: needs one explanation sentence per step.")
    slots = {f for _, f, _, _ in string.Formatter().parse(text + " ".join(explain)) if f}
    allowed = set(WORD_SLOTS) | set(template.operands) | {f"r{i}" for i in range(1, template.steps)}
    if not slots <= allowed:
        raise ValueError(f"{id}: unknown slots {sorted(slots - allowed)}.")
    return template


TEMPLATES: tuple[Template, ...] = (
    # ---------------------------------------------------------------- family A (train): has / buys / gives
    T("A1-01", "{name} has {a} {items}. {He} buys {b} more {items}. How many {items} does {name} have now?",
      ["a+b"], ["{name} has {a} {items} and buys {b} more."]),
    T("A1-02", "{name} had {a} {items}. {He} gave {b} of them to {name2}. How many {items} does {name} have left?",
      ["a-b"], ["{name} had {a} {items} and gave {b} to {name2}."]),
    T("A1-03", "{name} buys {a} {boxes} of {items}. Each {box} holds {b} {items}. How many {items} does {name} buy?",
      ["a*b"], ["{name} buys {a} {boxes} with {b} {items} in each."], a=(2, 9)),
    T("A1-04", "{name} has {a} {items} and shares them equally among {b} friends. How many {items} does each friend get?",
      ["a/b"], ["{name} shares {a} {items} among {b} friends."]),
    T("A1-05", "{name} pays ${a} for a notebook and ${b} for a pen. How many dollars does {name} pay in total?",
      ["a+b"], ["{name} pays ${a} and ${b}."], a=(2, 30), b=(2, 20)),
    T("A1-06", "{name} runs {a} km every day. How many km does {he} run in {b} days?",
      ["a*b"], ["{name} runs {a} km a day for {b} days."], b=(2, 9)),
    # ---------------------------------------------------------------- family B (train): stories, rates, units
    T("B1-01", "A movie lasts {a} minutes. {name} has already watched {b} minutes of it. "
               "How many minutes of the movie are left?",
      ["a-b"], ["The movie lasts {a} minutes and {name} watched {b} minutes."], a=(60, 150), b=(10, 59)),
    T("B1-02", "In the morning {name} picks {a} kg of potatoes, and in the afternoon {he} picks {b} kg. "
               "How many kg of potatoes does {name} pick that day?",
      ["a+b"], ["{name} picks {a} kg and then {b} kg."]),
    T("B1-03", "{name} paid ${a} for {b} tickets that all cost the same. How many dollars did each ticket cost?",
      ["a/b"], ["{b} tickets cost ${a}."]),
    T("B1-04", "{name} practises the piano for {a} minutes every day. How many minutes does {he} practise in {b} days?",
      ["a*b"], ["{name} practises {a} minutes a day for {b} days."], a=(10, 30), b=(2, 6)),
    T("B1-05", "There were {a} {items} on the table. {name} took {b} {items} away. "
               "How many {items} are still on the table?",
      ["a-b"], ["There were {a} {items} and {name} took {b}."]),
    T("B1-06", "{name} collected {a} {items} and {name2} collected {b} {items}. "
               "How many {items} did they collect altogether?",
      ["a+b"], ["{name} collected {a} {items} and {name2} collected {b}."]),
    T("A2-01", "{name} has {a} {items}. {He} buys {b} more and then gives {c} to {name2}. "
               "How many {items} does {name} have now?",
      ["a+b", "r1-c"], ["{name} has {a} {items} and buys {b} more.", "{He} gives {c} to {name2}."]),
    T("A2-02", "{name} buys {a} {boxes} of {items} with {b} {items} in each {box}. {He} already had {c} {items}. "
               "How many {items} does {name} have now?",
      ["a*b", "r1+c"], ["{name} buys {a} {boxes} with {b} {items} in each.", "{He} already had {c} {items}."],
      a=(2, 9)),
    T("A2-03", "{name} has ${a}. {He} buys {b} pens that cost ${c} each. How many dollars does {name} have left?",
      ["b*c", "a-r1"], ["{b} pens cost ${c} each.", "{name} has ${a} and spends ${r1}."], a=(20, 99), b=(2, 6),
      c=(2, 9)),
    T("A2-04", "{name} has {a} {items} and shares them equally among {b} friends. Then each friend gets {c} more "
               "{items}. How many {items} does each friend have?",
      ["a/b", "r1+c"], ["{name} shares {a} {items} among {b} friends.", "Each friend gets {c} more."]),
    T("A2-05", "{name} runs {a} km in the morning and {b} km in the evening every day. "
               "How many km does {he} run in {c} days?",
      ["a+b", "r1*c"], ["{name} runs {a} km and {b} km a day.", "{He} runs {r1} km a day for {c} days."],
      a=(2, 9), b=(2, 9), c=(2, 7)),
    T("A2-06", "{name} had {a} {items}. {He} lost {b} of them and shared the rest equally among {c} friends. "
               "How many {items} does each friend get?",
      ["a-b", "r1/c"], ["{name} had {a} {items} and lost {b}.", "{He} shares {r1} {items} among {c} friends."]),
    T("B2-01", "{name} practises the piano for {a} minutes every day for {b} days, and then for {c} minutes on "
               "the weekend. How many minutes does {he} practise in total?",
      ["a*b", "r1+c"], ["{name} practises {a} minutes a day for {b} days.", "Then {he} practises {c} more minutes."],
      a=(10, 30), b=(2, 5), c=(10, 90)),
    T("B2-02", "{name} earned ${a} on Saturday and ${b} on Sunday. {He} spent ${c} on a gift. "
               "How many dollars does {he} have left?",
      ["a+b", "r1-c"], ["{name} earned ${a} and ${b}.", "{He} spent ${c}."]),
    T("B2-03", "A shop sells {items} in {boxes} of {a}. {name} buys {b} {boxes} every week. "
               "How many {items} does {he} buy in {c} weeks?",
      ["a*b", "r1*c"], ["{name} buys {b} {boxes} of {a} {items} a week.", "{He} buys {r1} {items} a week for {c} weeks."],
      a=(2, 10), b=(2, 6), c=(2, 5)),
    T("B2-04", "{name} paid ${a} for {b} tickets that all cost the same. How many dollars would {c} of these "
               "tickets cost?",
      ["a/b", "r1*c"], ["{b} tickets cost ${a}.", "{c} tickets cost ${r1} each."], c=(2, 9)),
    T("B2-05", "A truck carried {a} kg of apples. It dropped off {b} kg at a shop and then picked up {c} kg at a "
               "farm. How many kg of apples does the truck carry now?",
      ["a-b", "r1+c"], ["The truck carried {a} kg and dropped off {b} kg.", "It picked up {c} kg."]),
    T("B2-06", "There were {a} {boxes} of {items} with {b} {items} in each {box}. {name} took {c} {items} away. "
               "How many {items} are left?",
      ["a*b", "r1-c"], ["There were {a} {boxes} with {b} {items} in each.", "{name} took {c} {items} away."],
      a=(2, 9), c=(2, 40)),
    T("A3-01", "{name} has {a} {items}. {He} buys {b} more, gives {c} to {name2} and then finds {d} more. "
               "How many {items} does {name} have now?",
      ["a+b", "r1-c", "r2+d"],
      ["{name} has {a} {items} and buys {b} more.", "{He} gives {c} to {name2}.", "{He} finds {d} more."]),
    T("A3-02", "{name} buys {a} {boxes} of {items} with {b} {items} in each {box}. {He} already had {c} {items} "
               "and gives {d} to {name2}. How many {items} does {name} have now?",
      ["a*b", "r1+c", "r2-d"],
      ["{name} buys {a} {boxes} with {b} {items} in each.", "{He} already had {c} {items}.",
       "{He} gives {d} to {name2}."], a=(2, 9)),
    T("A3-03", "{name} buys {a} pens that cost ${b} each and {c} notebooks that cost ${d} each. "
               "How many dollars does {name} spend?",
      ["a*b", "c*d", "r1+r2"],
      ["{a} pens cost ${b} each.", "{c} notebooks cost ${d} each.", "{name} spends ${r1} and ${r2}."],
      a=(2, 9), b=(2, 9), c=(2, 9), d=(2, 9)),
    T("A3-04", "{name} runs {a} km in the morning and {b} km in the evening every day for {c} days, "
               "and {d} km on Sunday. How many km does {he} run in total?",
      ["a+b", "r1*c", "r2+d"],
      ["{name} runs {a} km and {b} km a day.", "{He} runs {r1} km a day for {c} days.",
       "{He} runs {d} km on Sunday."], a=(2, 9), b=(2, 9), c=(2, 7), d=(2, 20)),
    T("A3-05", "{name} had {a} {items}. {He} lost {b} of them and shared the rest equally among {c} friends. "
               "One friend already had {d} {items}. How many {items} does that friend have now?",
      ["a-b", "r1/c", "r2+d"],
      ["{name} had {a} {items} and lost {b}.", "{He} shares {r1} {items} among {c} friends.",
       "The friend already had {d} {items}."]),
    T("A3-06", "{name} has {a} envelopes with ${b} in each envelope. {He} spends ${c} and splits the rest equally "
               "among {d} friends. How many dollars does each friend get?",
      ["a*b", "r1-c", "r2/d"],
      ["{name} has {a} envelopes with ${b} in each.", "{He} spends ${c}.", "{He} splits ${r2} among {d} friends."],
      a=(2, 9), b=(5, 20), c=(2, 40)),
    T("B3-01", "{name} practises the piano for {a} minutes every day for {b} days, and then for {c} minutes on "
               "the weekend. {name2} practises {d} minutes less in total. How many minutes does {name2} practise?",
      ["a*b", "r1+c", "r2-d"],
      ["{name} practises {a} minutes a day for {b} days.", "Then {he} practises {c} more minutes.",
       "{name2} practises {d} minutes less."], a=(10, 30), b=(2, 5), c=(10, 90), d=(5, 60)),
    T("B3-02", "{name} earned ${a} on Saturday and ${b} on Sunday and spent ${c} on a gift. {name2} has {d} times "
               "as much money as {name} has left. How many dollars does {name2} have?",
      ["a+b", "r1-c", "r2*d"],
      ["{name} earned ${a} and ${b}.", "{He} spent ${c}.", "{name2} has {d} times ${r2}."], d=(2, 5)),
    T("B3-03", "A shop sells {items} in {boxes} of {a}. {name} buys {b} {boxes} every week for {c} weeks and "
               "gives away {d} {items}. How many {items} does {he} keep?",
      ["a*b", "r1*c", "r2-d"],
      ["{name} buys {b} {boxes} of {a} {items} a week.", "{He} buys {r1} {items} a week for {c} weeks.",
       "{He} gives away {d} {items}."], a=(2, 10), b=(2, 6), c=(2, 5), d=(2, 40)),
    T("B3-04", "{name} paid ${a} for {b} tickets that all cost the same. How many dollars would {c} of these "
               "tickets and a ${d} snack cost?",
      ["a/b", "r1*c", "r2+d"],
      ["{b} tickets cost ${a}.", "{c} tickets cost ${r1} each.", "The snack costs ${d}."], c=(2, 9), d=(2, 9)),
    T("B3-05", "A truck carried {a} kg of apples. It dropped off {b} kg at a shop and picked up {c} kg at a farm. "
               "Then all the apples were shared equally among {d} markets. How many kg did each market get?",
      ["a-b", "r1+c", "r2/d"],
      ["The truck carried {a} kg and dropped off {b} kg.", "It picked up {c} kg.",
       "{r2} kg are shared among {d} markets."]),
    T("B3-06", "There were {a} {boxes} of {items} with {b} {items} in each {box}. {name} took {c} {items} away and "
               "{name2} put {d} {items} back. How many {items} are there now?",
      ["a*b", "r1-c", "r2+d"],
      ["There were {a} {boxes} with {b} {items} in each.", "{name} took {c} {items} away.",
       "{name2} put {d} {items} back."], a=(2, 9), c=(2, 40)),
    # ---------------------------------------------------------------- family C (test): new phrasings only
    T("C1-01", "On Monday {name} read {a} pages. On Tuesday {he} read {b} pages. "
               "What is the total number of pages {name} read on the two days?",
      ["a+b"], ["{name} read {a} pages and {b} pages."]),
    T("C1-02", "{name} needs {a} {items} for a party but only has {b}. How many more {items} does {he} need?",
      ["a-b"], ["{name} needs {a} {items} and has {b}."]),
    T("C1-03", "Every {box} contains {a} {items}. If {name} opens {b} {boxes}, what is the number of {items} "
               "{he} finds?",
      ["a*b"], ["{b} {boxes} contain {a} {items} each."], b=(2, 9)),
    T("C1-04", "{a} {items} are packed into {boxes} of {b}. How many {boxes} are filled?",
      ["a/b"], ["{a} {items} are packed {b} to a {box}."]),
    T("C1-05", "{name} cycles {a} km to the lake and then {b} km to the village. "
               "How far does {he} cycle altogether, in km?",
      ["a+b"], ["{name} cycles {a} km and {b} km."]),
    T("C1-06", "{name} had ${a} in {his} wallet and spent ${b} on lunch. How much money, in dollars, "
               "remains in the wallet?",
      ["a-b"], ["{name} had ${a} and spent ${b}."], b=(2, 19)),
    T("C1-07", "{name} wants {b} tickets to the zoo, and one ticket is ${a}. What do the tickets cost in dollars?",
      ["a*b"], ["One ticket is ${a} and {name} wants {b}."], b=(2, 9)),
    T("C1-08", "{name} spends {a} minutes on {b} equally long phone calls. How long is each call in minutes?",
      ["a/b"], ["{a} minutes are spread over {b} calls."]),
    T("C1-09", "{name}'s bag held {a} kg of rice. After some cooking, {b} kg were gone. "
               "What weight of rice, in kg, is in the bag now?",
      ["a-b"], ["The bag held {a} kg and {b} kg were used."]),
    T("C1-10", "{name} fills {a} sacks with {b} kg of flour in each. What is the total weight of the flour in kg?",
      ["a*b"], ["{a} sacks hold {b} kg each."], a=(2, 9)),
    T("C1-11", "{name}'s bus ride takes {a} minutes and the walk after it takes {b} minutes. "
               "How many minutes does the whole trip take?",
      ["a+b"], ["The ride takes {a} minutes and the walk {b} minutes."]),
    T("C1-12", "A path of {a} km is split into {b} equal parts. How long is each part, in km?",
      ["a/b"], ["{a} km are split into {b} parts."]),
    T("C2-01", "On Monday {name} read {a} pages, on Tuesday {b} pages and on Wednesday {c} pages. "
               "What is the total number of pages {name} read?",
      ["a+b", "r1+c"], ["{name} read {a} pages and {b} pages.", "Then {he} read {c} pages."]),
    T("C2-02", "{name} wants {a} tickets to the zoo at ${b} each and a map for ${c}. What is the total cost "
               "in dollars?",
      ["a*b", "r1+c"], ["{a} tickets are ${b} each.", "The map is ${c}."], a=(2, 9), c=(2, 15)),
    T("C2-03", "{name} needs {a} {items} for a party. {He} has {b} and {name2} brings {c}. "
               "How many more {items} are still needed?",
      ["a-b", "r1-c"], ["{name} needs {a} {items} and has {b}.", "{name2} brings {c}."]),
    T("C2-04", "Every {box} contains {a} {items}. {name} opens {b} {boxes} and splits all the {items} evenly "
               "among {c} children. What is the number of {items} each child receives?",
      ["a*b", "r1/c"], ["{b} {boxes} contain {a} {items} each.", "{r1} {items} are split among {c} children."]),
    T("C2-05", "Each day {name} cycles {a} km to the lake and {b} km back home. Find the distance {he} cycles "
               "over {c} days, in km.",
      ["a+b", "r1*c"], ["{name} cycles {a} km and {b} km each day.", "{He} cycles {r1} km a day for {c} days."],
      a=(2, 15), b=(2, 15), c=(2, 7)),
    T("C2-06", "A toy that used to cost ${a} is now ${b} cheaper. What must {name} pay in dollars for {c} of "
               "these toys?",
      ["a-b", "r1*c"], ["The toy cost ${a} and is ${b} cheaper.", "{name} buys {c} toys at ${r1}."],
      a=(10, 40), b=(2, 9), c=(2, 9)),
    T("C2-07", "{name} has {a} minutes of homework split equally over {b} subjects. {He} has already done {c} "
               "minutes of the maths part. How many minutes of maths homework remain?",
      ["a/b", "r1-c"], ["{a} minutes are split over {b} subjects.", "{He} has done {c} minutes of maths."],
      a=(30, 99), c=(2, 15)),
    T("C2-08", "{name} fills {a} sacks with {b} kg of flour each and then sells {c} kg. "
               "What weight of flour in kg remains unsold?",
      ["a*b", "r1-c"], ["{a} sacks hold {b} kg each.", "{name} sells {c} kg."], a=(2, 9), c=(2, 40)),
    T("C2-09", "{name} gathered {a} {items} and {name2} gathered {b}. Together they pack all of them into "
               "{boxes} of {c}. Find the number of {boxes} they fill.",
      ["a+b", "r1/c"], ["{name} gathered {a} {items} and {name2} gathered {b}.", "{r1} {items} go {c} to a {box}."]),
    T("C2-10", "A path of {a} km is split into {b} equal parts. {name} walks one part and then another {c} km "
               "along the road. What distance does {he} walk in km?",
      ["a/b", "r1+c"], ["{a} km are split into {b} parts.", "{name} walks one part and {c} km more."]),
    T("C2-11", "Each song on an album lasts {a} minutes and the album has {b} songs. {name} plays the whole album "
               "{c} times. For how many minutes does the music play?",
      ["a*b", "r1*c"], ["{b} songs last {a} minutes each.", "The album plays {c} times."],
      a=(2, 6), b=(5, 12), c=(2, 5)),
    T("C3-01", "On Monday {name} read {a} pages, on Tuesday {b} pages and on Wednesday {c} pages. "
               "The book has {d} pages. How many pages are still unread?",
      ["a+b", "r1+c", "d-r2"],
      ["{name} read {a} pages and {b} pages.", "Then {he} read {c} pages.", "The book has {d} pages."],
      a=(5, 40), b=(5, 40), c=(5, 40), d=(100, 300)),
    T("C3-02", "{name} wants {a} tickets to the zoo at ${b} each and {c} drinks at ${d} each. "
               "What is the total cost in dollars?",
      ["a*b", "c*d", "r1+r2"],
      ["{a} tickets are ${b} each.", "{c} drinks are ${d} each.", "The total is ${r1} and ${r2}."],
      a=(2, 9), b=(5, 20), c=(2, 9), d=(2, 5)),
    T("C3-03", "Every {box} contains {a} {items}. {name} opens {b} {boxes}, keeps {c} {items} for {him}self and "
               "splits the rest evenly among {d} children. What is the number of {items} each child receives?",
      ["a*b", "r1-c", "r2/d"],
      ["{b} {boxes} contain {a} {items} each.", "{name} keeps {c} {items}.", "{r2} {items} are split among {d} children."],
      c=(2, 20)),
    T("C3-04", "Each day for {c} days, {name} cycles {a} km to the lake and {b} km back home. On the last evening "
               "{he} also cycles {d} km around the lake. Find the total distance {he} cycles, in km.",
      ["a+b", "r1*c", "r2+d"],
      ["{name} cycles {a} km and {b} km each day.", "{He} cycles {r1} km a day for {c} days.",
       "{He} also cycles {d} km."], a=(2, 15), b=(2, 15), c=(2, 7), d=(2, 15)),
    T("C3-05", "A toy that used to cost ${a} is now ${b} cheaper. {name} buys {c} of these toys and a ${d} gift "
               "bag. What must {he} pay in dollars?",
      ["a-b", "r1*c", "r2+d"],
      ["The toy cost ${a} and is ${b} cheaper.", "{name} buys {c} toys at ${r1}.", "The gift bag is ${d}."],
      a=(10, 40), b=(2, 9), c=(2, 9), d=(2, 9)),
    T("C3-06", "{name} fills {a} sacks with {b} kg of flour each and adds {c} kg from an open bag. The flour is "
               "then divided equally between {d} bakeries. What weight of flour in kg does each bakery get?",
      ["a*b", "r1+c", "r2/d"],
      ["{a} sacks hold {b} kg each.", "{name} adds {c} kg.", "{r2} kg are divided between {d} bakeries."],
      a=(2, 9), b=(5, 20)),
    T("C3-07", "{name} pays ${a} for {b} identical notebooks. Later {he} buys {c} more of them with a coupon "
               "worth ${d}. What does {he} pay for the second purchase, in dollars?",
      ["a/b", "r1*c", "r2-d"],
      ["{b} notebooks cost ${a}.", "{name} buys {c} more at ${r1} each.", "The coupon is worth ${d}."],
      c=(2, 9), d=(2, 9)),
    T("C3-08", "{name} gathered {a} {items}, {name2} gathered {b} and a neighbour gathered {c}. They pack all of "
               "them into {boxes} of {d}. Find the number of {boxes} they fill.",
      ["a+b", "r1+c", "r2/d"],
      ["{name} gathered {a} {items} and {name2} gathered {b}.", "A neighbour gathered {c}.",
       "{r2} {items} go {d} to a {box}."]),
    T("C3-09", "Each song on an album lasts {a} minutes and the album has {b} songs. {name} plays the whole album "
               "{c} times but skips {d} minutes in total. For how many minutes does the music play?",
      ["a*b", "r1*c", "r2-d"],
      ["{b} songs last {a} minutes each.", "The album plays {c} times.", "{name} skips {d} minutes."],
      a=(2, 6), b=(5, 12), c=(2, 5), d=(2, 30)),
    T("C3-10", "A path of {a} km is split into {b} equal parts. Every day {name} walks one part plus {c} km "
               "along the road. What distance does {he} walk in {d} days, in km?",
      ["a/b", "r1+c", "r2*d"],
      ["{a} km are split into {b} parts.", "{name} walks one part and {c} km more.", "{He} walks {r2} km a day for {d} days."],
      c=(2, 9), d=(2, 7)),
    T("C3-11", "{name} needs {a} {items} for a party. {He} has {b}, {name2} brings {c} and a neighbour gives {d}. "
               "How many more {items} are still needed?",
      ["a-b", "r1-c", "r2-d"],
      ["{name} needs {a} {items} and has {b}.", "{name2} brings {c}.", "A neighbour gives {d}."],
      a=(40, 99), b=(2, 25), c=(2, 25), d=(2, 25)),
)


def _check_template_ids() -> None:
    ids = [t.id for t in TEMPLATES]
    if len(set(ids)) != len(ids):
        raise ValueError("Duplicate word-problem template ids.")


_check_template_ids()


def templates_for(split: Split, steps: int | None = None) -> list[Template]:
    """The templates of one split (optionally with exactly ``steps`` operations)."""
    _check_split(split)
    return [t for t in TEMPLATES if t.split == split and (steps is None or t.steps == steps)]


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
    (name, gender), (name2, _) = rng.sample(NAMES, 2)
    items, boxes, box = rng.choice(ITEMS)
    words = {"name": name, "name2": name2, **PRONOUNS[gender], "items": items, "boxes": boxes, "box": box}
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
            if not 1 <= result <= MAX_VALUE:
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
    for template in TEMPLATES:
        if _template_regex(template).fullmatch(question.strip()):
            return template
    return None


# =========================================================================== files


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write records as JSON lines, atomically (a half-written file never appears)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno} is not valid JSON: {exc}") from exc
    return rows


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


# =========================================================================== gsm8k

GSM8K_ENV = "GSM8K_DIR"


class DatasetUnavailable(RuntimeError):
    """A dataset has no local copy and the active profile may not download it."""


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
    _check_split(split)
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
    rows = _read_jsonl(path)
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


# =========================================================================== classification

HEADLINES_PATH: Path = DATA_DIR / "classification" / "headlines.jsonl"
LABELS_PATH: Path = DATA_DIR / "classification" / "labels.json"


def load_labels() -> dict[str, str]:
    """The topic labels and their one-line descriptions (``data/classification/labels.json``)."""
    return json.loads(LABELS_PATH.read_text(encoding="utf-8"))


def load_headlines(split: Literal["train", "test", "all"] = "all") -> list[dict[str, str]]:
    """The labelled headlines (``id``, ``text``, ``label``, ``split``) of one split or all."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}.")
    rows = _read_jsonl(HEADLINES_PATH)
    labels = load_labels()
    for r in rows:
        if r.get("label") not in labels or r.get("split") not in ("train", "test"):
            raise ValueError(f"{HEADLINES_PATH}: bad row {r!r} (label must be one of {sorted(labels)}).")
    return rows if split == "all" else [r for r in rows if r["split"] == split]


def headline_rows(split: Literal["train", "test", "all"], exemplar: bool = True) -> list[Row]:
    """Prompt rows (task ``"classification"``, reference = the label) for the headlines."""
    labels = load_labels()
    return [
        {
            "id": h["id"],
            "messages": classification_messages(h["text"], labels, exemplar=exemplar),
            "question": h["text"],
            "reference": h["label"],
            "task": "classification",
            "meta": {"split": h["split"], "labels": list(labels)},
        }
        for h in load_headlines(split)
    ]


# =========================================================================== extraction

EXTRACTION_PATH: Path = DATA_DIR / "extraction" / "samples.jsonl"


def load_extraction_samples(lang: Literal["en", "zh"] | None = None) -> list[dict[str, Any]]:
    """The extraction texts (``id``, ``lang``, ``text``, ``gold``), optionally one language."""
    if lang not in (None, "en", "zh"):
        raise ValueError(f"lang must be 'en', 'zh' or None, got {lang!r}.")
    rows = _read_jsonl(EXTRACTION_PATH)
    return [r for r in rows if lang is None or r["lang"] == lang]


def extraction_rows(lang: Literal["en", "zh"] | None = None) -> list[Row]:
    """Prompt rows (task ``"extraction"``) for the sample texts.

    ``reference`` is ``None`` (the answer is a JSON object, not a number or label,
    so answer checking treats it as unverifiable); the gold fields are in
    ``meta["gold"]``.
    """
    return [
        {
            "id": s["id"],
            "messages": extraction_messages(s["text"], s["lang"]),
            "question": s["text"],
            "reference": None,
            "task": "extraction",
            "meta": {"lang": s["lang"], "gold": s["gold"]},
        }
        for s in load_extraction_samples(lang)
    ]
