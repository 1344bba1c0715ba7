"""From a topic to questions: a teacher-built tag tree, questions at its leaves, prompt rows to answer.

When there is only a topic (as in Easy Dataset), the teacher writes the questions too:

1. **Tag tree** (:func:`build_tree`): the teacher splits the topic into subtopics,
   level by level, with the node's full path in every prompt; a person reviews and
   edits the tree (:mod:`helpers.techniques.tagtree`) before anything is generated.
2. **Questions at the leaves** (:func:`generate_questions`): the prompt holds the
   **full tag path**, which keeps "halves" about arithmetic and not about football.

A small teacher's lists are messy (numbering of every kind, a chatty first line,
copies of the example, duplicates, one endless line): :func:`parse_list` cleans what
it can and drops the rest **with a reason**. :func:`dedup_questions` removes the same
question asked at two leaves, and :func:`question_rows` makes prompt rows for the
batch engine. The teacher is a batch chat function (the engine's
:func:`~helpers.teacher.engine.batch_chat`, or a scripted fake in tests); the prompts
are ``data/prompts/domain_*.txt``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from ..core.rows import Row
from ..core.text import normalise_text, snippet, words
from ..curate.dedup import dedup_stage, jaccard, shingles
from ..curate.funnel import StageResult
from ..teacher.client import TeacherReply, reply_text
from ..teacher.engine import BatchChat
from ..teacher.prompts import load_exemplar, render, shot_messages
from .tagtree import TagTree, show_path

Kind = Literal["tag", "question"]
Message = dict[str, str]

EXAMPLES_NAME = "domain_examples"
"""``data/prompts/domain_examples.json``: few-shot examples for tags, questions and answers."""

LIMITS: dict[str, tuple[int, int]] = {"tag": (6, 60), "question": (60, 400)}
"""Longest accepted item per kind: (words, characters). Longer lines are dropped as ``too_long``."""

COPY_SIMILARITY = 0.6
"""A question whose word-3-gram Jaccard with a few-shot example reaches this is a copy of it."""

DROP_REASONS: dict[str, str] = {
    "empty": "nothing left after removing numbering, bullets and markup",
    "echoes_prompt": "repeats a line of the prompt",
    "preamble": "a lead-in such as 'Here are 3 subtopics:', not an item",
    "no_text": "no letters at all",
    "too_long": "longer than an item may be (a runaway line or a paragraph)",
    "not_a_question": "a question must end with '?'",
    "repeats_path": "the parent tag or another tag of the path again",
    "copies_example": "copied from the few-shot examples in the prompt",
    "duplicate": "the same item again in this reply",
    "over_limit": "more items than asked for (the first ones are kept)",
    "cut_off": "the last line of a reply that hit the token limit (it may be incomplete)",
    "empty_reply": "the whole reply held no line to read",
    "call_failed": "the teacher call failed (the error is in the detail)",
}
"""Why a line is dropped: :func:`parse_list`'s reasons in the order its checks run, then the two
whole-reply statuses the logs of :func:`build_tree` and :func:`generate_questions` add."""

# --------------------------------------------------------------------------- parsing lists

_THINK_RE = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_MARKER_RE = re.compile(r"^\s*(?:[-*+•·▪●◦–—>#]+|\(?\d{1,3}\s*[.):\]]|\(?[a-zA-Z][.)](?=\s)|"
                        r"(?:q|question|item|tag|subtopic)\s*\d{0,3}\s*[:.)-])\s*", re.IGNORECASE)
_INLINE_NUMBER_RE = re.compile(r"\s+(?=\(?\d{1,2}[.)]\s+\S)")
_QUESTION_SPLIT_RE = re.compile(r"(?<=\?)\s+(?=\S)")
_DESCRIPTION_RE = re.compile(r"\s+[-–—:]\s+|:\s+")
_PAREN_RE = re.compile(r"\s*[(\[][^)\]]*[)\]]")
_MARKUP_RE = re.compile(r"\*\*|__|`|<[^>]{1,20}>")
_QUOTES = "\"'“”‘’«»「」"
_PREAMBLE_RE = re.compile(r"^(?:sure|certainly|okay|ok|of course|here (?:are|is)|below (?:are|is)|"
                          r"the following|subtopics?|tags?|questions?|answer|list)\b", re.IGNORECASE)
_ECHO_RE = re.compile(r"^(?:topic path\b|(?:list|write) \d+ )", re.IGNORECASE)


@dataclass
class ParsedList:
    """What :func:`parse_list` made of one reply: the kept items and every line's fate."""

    items: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)
    """One entry per non-blank line: ``line``, cleaned ``item``, ``status`` (``kept`` or a reason), ``detail``."""

    @property
    def dropped(self) -> list[dict[str, str]]:
        return [r for r in self.rows if r["status"] != "kept"]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["line", "item", "status", "detail"])


def _split_lines(text: str, kind: Kind) -> list[str]:
    """Lines of a reply, with lists written on one line split into their items."""
    text = _THINK_RE.sub("", text or "")
    if "</think>" in text.lower():  # the opening tag was stripped by the server
        text = re.split(r"</think>", text, flags=re.IGNORECASE)[-1]
    pieces: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [line]
        if _MARKER_RE.match(line) and len(_INLINE_NUMBER_RE.split(line.strip())) > 1:
            parts = _INLINE_NUMBER_RE.split(line.strip())  # "1. a 2. b 3. c"
        elif kind == "question" and line.count("?") > 1:
            parts = _QUESTION_SPLIT_RE.split(line.strip())  # "What is...? How many...?"
        elif kind == "tag" and not _MARKER_RE.match(line) and re.search(r"[,;]", line) \
                and not line.rstrip().endswith(":"):
            parts = re.split(r"\s*[,;]\s*(?:and\s+)?", line.strip())  # "Fractions, Percentages, Money"
        pieces += [p for p in parts if p.strip()]
    return pieces


def clean_item(line: str, kind: Kind = "tag") -> str:
    """One list line without its numbering, bullets, markup and quotes.

    Tags also lose a trailing description (``"Budgeting - planning money"`` ->
    ``"Budgeting"``), a parenthesis and end punctuation; ``/`` and ``>`` (path
    separators) become ``" or "``. Questions keep their words.
    """
    text = line.strip()
    for _ in range(3):  # "- 1. foo", "**1.** foo"
        text = _MARKUP_RE.sub("", text).strip()
        stripped = _MARKER_RE.sub("", text, count=1).strip()
        if stripped == text:
            break
        text = stripped
    text = text.strip(_QUOTES + " ")
    if kind == "tag":
        head = _DESCRIPTION_RE.split(text, maxsplit=1)[0].strip()
        text = head or text
        text = _PAREN_RE.sub("", text)
        text = re.sub(r"\s*[/>]\s*", " or ", text)
        text = text.strip(_QUOTES + " .,;:!?")
    return " ".join(text.split())


def _is_preamble(line: str, item: str, kind: Kind) -> bool:
    """A lead-in line: it ends with ':' or opens like "Here are..." (a short tag may be "Taxes")."""
    if line.rstrip().rstrip("*").endswith(":"):
        return True
    match = _PREAMBLE_RE.match(item)
    if match is None or item.endswith("?"):
        return False
    return kind == "question" or len(words(item)) > 2 or match.end() == len(item)


def _copied(item: str, examples: Sequence[str], kind: Kind) -> str | None:
    key = normalise_text(item)
    for example in examples:
        if key == normalise_text(example):
            return example
        if kind == "question":
            score = jaccard(shingles(item, 3), shingles(example, 3))
            if score >= COPY_SIMILARITY:
                return example
    return None


def parse_list(text: str, *, kind: Kind = "tag", limit: int | None = None,
               path: Sequence[str] = (), examples: Sequence[str] = (),
               truncated: bool = False) -> ParsedList:
    """Read a numbered/bulleted list from a model reply, dropping junk with a reason.

    ``kind`` is ``"tag"`` (short names) or ``"question"`` (must end with ``?``).
    ``limit`` keeps at most that many items (``over_limit`` for the rest);
    ``path`` are the tags above (an item equal to one of them is
    ``repeats_path``); ``examples`` are the few-shot items of the prompt (a
    copy is ``copies_example``). When the reply hit the token limit
    (``truncated``: the teacher stopped at its token limit), its last
    line may be cut in the middle ("Trigon") and is dropped as ``cut_off``.
    See :data:`DROP_REASONS` for every reason.
    """
    if kind not in LIMITS:
        raise ValueError(f"kind must be 'tag' or 'question', got {kind!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (or None), got {limit}")
    max_words, max_chars = LIMITS[kind]
    path_keys = {normalise_text(p) for p in path}
    seen: set[str] = set()
    result = ParsedList(items=[])

    def verdict(line: str, item: str) -> tuple[str, str]:
        key = normalise_text(item)
        if not item:
            return "empty", ""
        if _ECHO_RE.match(item):
            return "echoes_prompt", ""
        if _is_preamble(line, item, kind):
            return "preamble", ""
        if not re.search(r"[^\W\d_]", item):
            return "no_text", ""
        n_words = len(words(item))
        if n_words > max_words or len(item) > max_chars:
            return "too_long", f"{n_words} words, {len(item)} characters (max {max_words} / {max_chars})"
        if kind == "question" and not item.endswith("?"):
            return "not_a_question", ""
        if key in path_keys:
            return "repeats_path", f"{item!r} is already in the path"
        copied = _copied(item, examples, kind)
        if copied is not None:
            return "copies_example", f"example: {snippet(copied, 60)!r}"
        if key in seen:
            return "duplicate", ""
        if limit is not None and len(result.items) >= limit:
            return "over_limit", f"only {limit} asked for"
        return "kept", ""

    lines = _split_lines(text, kind)
    for number, line in enumerate(lines, 1):
        item = clean_item(line, kind)
        status, detail = verdict(line, item)
        if truncated and number == len(lines) and status in ("kept", "over_limit", "duplicate"):
            status, detail = "cut_off", "the reply stopped at the token limit here"
        if status == "kept":
            seen.add(normalise_text(item))
            result.items.append(item)
        result.rows.append({"line": snippet(line, 120), "item": item, "status": status, "detail": detail})
    return result


# --------------------------------------------------------------------------- prompts


def load_examples() -> dict[str, Any]:
    """The few-shot examples (``tags``, ``questions``, ``answers``) from ``domain_examples.json``."""
    data = load_exemplar(EXAMPLES_NAME)
    for key in ("tags", "questions", "answers"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{EXAMPLES_NAME}.json needs a list {key!r}")
    return data


def _numbered(items: Sequence[str]) -> str:
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))


def tag_prompt(path: Sequence[str], n: int) -> str:
    """The user turn asking for ``n`` subtopics of the last tag of ``path`` (full path shown)."""
    return render("domain_tags", path=show_path(path), tag=path[-1], n=n)


def question_prompt(path: Sequence[str], n: int) -> str:
    """The user turn asking for ``n`` questions at the leaf ``path`` (full path shown)."""
    return render("domain_questions", path=show_path(path), leaf=path[-1], n=n)


def list_messages(kind: Kind, path: Sequence[str], n: int,
                  examples: Mapping[str, Any] | None = None) -> list[Message]:
    """System prompt, the few-shot examples of ``kind`` as chat turns, then the request for ``path``."""
    if not path:
        raise ValueError("path must hold at least the root topic")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    examples = load_examples() if examples is None else examples
    build = tag_prompt if kind == "tag" else question_prompt
    messages: list[Message] = [{"role": "system", "content": render("domain_list_system")}]
    for example in examples["tags" if kind == "tag" else "questions"]:
        messages.append({"role": "user", "content": build(example["path"], len(example["items"]))})
        messages.append({"role": "assistant", "content": _numbered(example["items"])})
    messages.append({"role": "user", "content": build(path, n)})
    return messages


def example_items(kind: Kind, examples: Mapping[str, Any] | None = None) -> list[str]:
    """Every item of the few-shot examples of ``kind`` (what a copy is checked against)."""
    examples = load_examples() if examples is None else examples
    return [item for ex in examples["tags" if kind == "tag" else "questions"] for item in ex["items"]]


def answer_exemplars(k: int, examples: Mapping[str, Any] | None = None) -> list[Message]:
    """The first ``k`` worked answers of the examples file as user/assistant turns."""
    examples = load_examples() if examples is None else examples
    chosen = examples["answers"][:k]
    if k > len(chosen):
        raise ValueError(f"{EXAMPLES_NAME}.json has {len(chosen)} worked answers, {k} asked for")
    return shot_messages((a["question"], a["thinking"], a["answer"]) for a in chosen)


def answer_messages(question: str, shots: Sequence[Message] = ()) -> list[Message]:
    """The chat that answers one domain question: system prompt, optional shots, the question.

    Without ``shots`` this is the zero-shot prompt the student is trained with.
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}")
    return [{"role": "system", "content": render("domain_answer_system")}, *shots,
            {"role": "user", "content": render("math_user", question=question.strip())}]


# --------------------------------------------------------------------------- the teacher


def _ask_all(chat: BatchChat, jobs: list[tuple[Any, list[Message]]],
             what: str) -> list[tuple[Any, str | None, str, bool]]:
    """Send every job's messages in one batch: ``(job, answer text or None, error, truncated)``.

    One failed call never stops the others; if every call fails the teacher is
    unreachable and the error is raised. The answer is the reply without its thinking.
    """
    out = []
    for (job, _), item in zip(jobs, chat([messages for _, messages in jobs]) if jobs else []):
        if isinstance(item, TeacherReply):
            out.append((job, item.answer, "", item.truncated))
        else:
            text, error = reply_text(item)
            out.append((job, text, error, False))
    if out and all(text is None for _, text, _, _ in out):
        raise RuntimeError(f"every teacher call failed ({what}); first error: {out[0][2]}")
    return out


def _log_rows(parsed: ParsedList | None, error: str, **where: Any) -> list[dict[str, Any]]:
    if parsed is None:
        return [{**where, "line": "", "item": "", "status": "call_failed", "detail": error}]
    if not parsed.rows:
        return [{**where, "line": "", "item": "", "status": "empty_reply", "detail": "no list in the reply"}]
    return [{**where, **row} for row in parsed.rows]


# --------------------------------------------------------------------------- the tag tree


@dataclass
class TreeBuild:
    """The tree the teacher built and the fate of every line it wrote."""

    tree: TagTree
    log: pd.DataFrame
    """``level, parent, line, item, status, detail``: ``status`` is ``kept`` or a drop reason."""
    calls: int

    def summary(self) -> str:
        counts = self.log["status"].value_counts().to_dict()
        kept = counts.pop("kept", 0)
        dropped = ", ".join(f"{k} {v}" for k, v in counts.items())
        return (f"{self.calls} teacher calls, {kept} tags kept" + (f", dropped: {dropped}" if dropped else "")
                + f" -> {len(self.tree.leaves())} leaves")


def build_tree(chat: BatchChat, root: str, levels: int = 2, per_level: int = 3, *, extra: int = 1,
               examples: Mapping[str, Any] | None = None) -> TreeBuild:
    """Let the teacher grow a tag tree from ``root``: ``levels`` deep, ``per_level`` tags per node.

    Level by level, every node of the level is sent to the teacher in one batch
    (``chat`` is the engine's :func:`~helpers.teacher.engine.batch_chat`). Each prompt holds the node's full path and
    asks for ``per_level + extra`` tags: a few spare ones replace what the
    parser drops. A node that gets no usable tag stays a leaf (logged as such),
    so the tree can be shallower in places.
    """
    if levels < 1 or per_level < 1 or extra < 0:
        raise ValueError(f"need levels >= 1, per_level >= 1, extra >= 0; got {levels}, {per_level}, {extra}")
    examples = load_examples() if examples is None else examples
    copies = example_items("tag", examples)
    tree = TagTree.new(root, levels=levels, per_level=per_level)
    frontier: list[tuple[str, ...]] = [(tree.topic,)]
    records: list[dict[str, Any]] = []
    calls = 0
    for level in range(1, levels + 1):
        if not frontier:
            break
        jobs = [(path, list_messages("tag", path, per_level + extra, examples)) for path in frontier]
        calls += len(jobs)
        frontier = []
        for path, reply, error, cut in _ask_all(chat, jobs, f"tags, level {level}/{levels}"):
            parsed = None if reply is None else parse_list(reply, kind="tag", limit=per_level,
                                                           path=path, examples=copies, truncated=cut)
            records += _log_rows(parsed, error, level=level, parent=show_path(path))
            for item in parsed.items if parsed else []:
                frontier.append(tree.add(path[1:], item, source="teacher"))
    log = pd.DataFrame(records, columns=["level", "parent", "line", "item", "status", "detail"])
    return TreeBuild(tree, log, calls)


# --------------------------------------------------------------------------- questions


def question_id(path: Sequence[str], question: str) -> str:
    """A stable id from the leaf path and the question text.

    Content-based on purpose: the answers file is keyed by prompt id, so an id
    must never be reused for another question after the tree was edited.
    """
    digest = hashlib.sha1(f"{show_path(path)}\n{normalise_text(question)}".encode("utf-8")).hexdigest()
    return f"dq-{digest[:10]}"


@dataclass
class QuestionBatch:
    """The questions written at the leaves, and the fate of every line the teacher wrote."""

    questions: list[Row]
    """``id, question, path`` (the full path as a list) and ``leaf`` (the path as text)."""
    log: pd.DataFrame
    """``leaf, line, item, status, detail``."""
    calls: int

    def summary(self) -> str:
        counts = self.log["status"].value_counts().to_dict()
        counts.pop("kept", None)
        dropped = ", ".join(f"{k} {v}" for k, v in counts.items())
        leaves = len({q["leaf"] for q in self.questions})
        return (f"{self.calls} teacher calls, {len(self.questions)} questions at {leaves} of {self.calls} "
                "leaves" + (f", dropped: {dropped}" if dropped else ""))

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"id": q["id"], "leaf": q["leaf"], "question": q["question"]}
                             for q in self.questions], columns=["id", "leaf", "question"])


def generate_questions(chat: BatchChat, tree: TagTree, per_leaf: int = 2, *, extra: int = 1,
                       examples: Mapping[str, Any] | None = None) -> QuestionBatch:
    """Ask the teacher for ``per_leaf`` questions at every leaf of ``tree`` (full path in each prompt)."""
    if per_leaf < 1 or extra < 0:
        raise ValueError(f"need per_leaf >= 1 and extra >= 0; got {per_leaf}, {extra}")
    examples = load_examples() if examples is None else examples
    copies = example_items("question", examples)
    leaves = tree.leaves()
    jobs = [(path, list_messages("question", path, per_leaf + extra, examples)) for path in leaves]
    questions: list[Row] = []
    records: list[dict[str, Any]] = []
    for path, reply, error, cut in _ask_all(chat, jobs, "questions"):
        parsed = None if reply is None else parse_list(reply, kind="question", limit=per_leaf,
                                                       path=path, examples=copies, truncated=cut)
        records += _log_rows(parsed, error, leaf=show_path(path))
        for item in parsed.items if parsed else []:
            questions.append({"id": question_id(path, item), "question": item, "path": list(path),
                              "leaf": show_path(path)})
    log = pd.DataFrame(records, columns=["leaf", "line", "item", "status", "detail"])
    return QuestionBatch(questions, log, len(jobs))


def dedup_questions(questions: Sequence[Row], *, threshold: float = 0.6, shingle_size: int = 3,
                    progress: bool = False) -> StageResult:
    """Drop questions that repeat another one, across all leaves (exact, then MinHash near-duplicates).

    The same stage as notebook 03 (:func:`helpers.curate.dedup.dedup_stage`) on the
    question text alone. Questions are short, so the shingles are word 3-grams
    (5-grams would make one changed word hide a copy); the first question of a
    group is kept and each dropped one names the question it matched. The LSH
    looks for candidates 0.2 below ``threshold``: it finds a pair just above its
    own threshold only part of the time, and a few hundred questions are cheap
    to compare exactly.
    """
    return dedup_stage(list(questions), threshold=threshold, shingle_size=shingle_size,
                       fields=("question",), stage="question_dedup", progress=progress)


def question_rows(questions: Sequence[Row], shots: Sequence[Message] = ()) -> list[Row]:
    """Prompt rows for :func:`helpers.teacher.engine.generate`: one per question, its tag path in ``meta``.

    There is no ``reference``: nobody knows the right answers of synthesized questions.
    """
    rows = []
    for q in questions:
        path = list(q["path"])
        rows.append({"id": q["id"], "messages": answer_messages(q["question"], shots),
                     "question": q["question"], "task": "domain",
                     "meta": {"path": show_path(path), "leaf": path[-1], "level": len(path) - 1,
                              "branch": path[1] if len(path) > 1 else path[0]}})
    return rows
