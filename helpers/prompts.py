r"""Prompt templates stored as files under ``data/prompts/`` and the chat messages built from them.

Prompts are text a learner should read and change, so none of them is written in
Python: each one is a small file with a YAML header saying what it is for (see
``data/prompts/README.md``). This module loads those files, fills them in and
assembles the chat ``messages`` of the prompt-row schema:

* :func:`list_prompts`, :func:`load_prompt`, :func:`render` - the templates themselves;
* :func:`math_messages` - system prompt, optional few-shot turns, the question;
* :func:`fewshot_exemplars` - worked word problems from the *training* templates,
  as alternating user/assistant turns for a small teacher;
* :func:`classification_messages`, :func:`extraction_messages` - the other tasks.

Templates use :class:`string.Template` placeholders (``$question``) rather than
``str.format`` braces, because the prompts themselves contain braces (``\boxed{}``,
JSON examples). Rendering refuses missing and unknown variables, so a typo fails
loudly instead of sending a half-filled prompt to the teacher.
"""

from __future__ import annotations

import json
import string
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .config import REPO_ROOT

__all__ = [
    "PROMPTS_DIR",
    "PromptTemplate",
    "assistant_reply",
    "boxed",
    "classification_messages",
    "extraction_messages",
    "fewshot_exemplars",
    "list_prompts",
    "load_exemplar",
    "load_prompt",
    "math_messages",
    "render",
    "shot_messages",
]

PROMPTS_DIR: Path = REPO_ROOT / "data" / "prompts"
"""Where the prompt files live."""

TEMPLATE_SUFFIXES: tuple[str, ...] = (".txt", ".md")
"""File types that hold a template (``README.md`` is documentation, not a template)."""

Message = dict[str, str]
ROLES = ("system", "user", "assistant")


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt file: its body, the description from its header and its variables."""

    name: str
    text: str
    """The template body, after the header; ``$name`` placeholders not yet filled."""
    description: str = ""
    path: Path | None = None
    header: Mapping[str, Any] = field(default_factory=dict)
    """Everything in the YAML header (``description``, ``variables``, ``used_by``...)."""

    @property
    def variables(self) -> tuple[str, ...]:
        """The placeholder names the body really uses, in order of appearance."""
        seen: list[str] = []
        for name in string.Template(self.text).get_identifiers():
            if name not in seen:
                seen.append(name)
        return tuple(seen)

    def render(self, **values: object) -> str:
        """Fill every placeholder; refuse missing or unknown variables."""
        wanted = set(self.variables)
        missing = sorted(wanted - values.keys())
        unknown = sorted(values.keys() - wanted)
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown {', '.join(unknown)}")
            raise ValueError(
                f"Prompt {self.name!r} takes variables {sorted(wanted) or 'none'}: "
                f"{'; '.join(problems)}."
            )
        try:
            return string.Template(self.text).substitute({k: str(v) for k, v in values.items()})
        except ValueError as exc:  # a stray '$' in the file
            raise ValueError(
                f"Prompt {self.name!r} ({self.path}) has a '$' that is not a placeholder: {exc}. "
                "Write '$$' for a literal dollar sign."
            ) from exc


def _split_header(raw: str, path: Path) -> tuple[dict[str, Any], str]:
    """Separate an optional ``---`` YAML header from the body of a prompt file."""
    if not raw.startswith("---\n"):
        return {}, raw
    end = raw.find("\n---\n", 3)
    if end < 0:
        raise ValueError(f"{path}: the header starts with '---' but has no closing '---' line.")
    try:
        header = yaml.safe_load(raw[4:end]) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: the YAML header cannot be read: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header must be 'key: value' lines, got {type(header).__name__}.")
    return header, raw[end + len("\n---\n"):]


def _prompt_files(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"No prompt folder at {directory}.")
    return {
        p.stem: p
        for p in sorted(directory.iterdir())
        if p.suffix in TEMPLATE_SUFFIXES and p.name.lower() != "readme.md" and p.is_file()
    }


def list_prompts(directory: Path | None = None) -> list[str]:
    """Names of the template files (without suffix), sorted."""
    return sorted(_prompt_files(directory or PROMPTS_DIR))


def load_prompt(name: str, directory: Path | None = None) -> PromptTemplate:
    """Read one template by name (``"math_user"`` or ``"math_user.txt"``).

    Files are read on every call (they are tiny), so a prompt edited in a
    notebook session is picked up without restarting the kernel.
    """
    directory = directory or PROMPTS_DIR
    files = _prompt_files(directory)
    stem = Path(name).stem if Path(name).suffix in TEMPLATE_SUFFIXES else name
    if stem not in files:
        raise FileNotFoundError(
            f"No prompt named {name!r} in {directory}; available: {', '.join(sorted(files)) or 'none'}."
        )
    path = files[stem]
    header, body = _split_header(path.read_text(encoding="utf-8"), path)
    # One trailing newline is the file's end, not part of the prompt.
    body = body[:-1] if body.endswith("\n") else body
    description = str(header.get("description", "")).strip()
    return PromptTemplate(name=stem, text=body, description=description, path=path, header=header)


def render(name: str, **values: object) -> str:
    """Load the template ``name`` and fill it in: ``render("math_user", question="1+1?")``."""
    return load_prompt(name).render(**values)


def load_exemplar(name: str, directory: Path | None = None) -> dict[str, Any]:
    """Read a worked exemplar stored as JSON (e.g. ``"classification_exemplar"``)."""
    directory = directory or PROMPTS_DIR
    path = directory / (name if name.endswith(".json") else f"{name}.json")
    if not path.is_file():
        available = sorted(p.stem for p in directory.glob("*.json"))
        raise FileNotFoundError(f"No exemplar {path.name} in {directory}; available: {available or 'none'}.")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an exemplar must be a JSON object.")
    return data


# --------------------------------------------------------------------------- building blocks


def boxed(value: object) -> str:
    r"""``\boxed{value}``: the final-answer convention of the math prompts."""
    return "\\boxed{" + str(value) + "}"


def assistant_reply(thinking: str, answer: str) -> str:
    """An exemplar reply in the course format (``reply_format.txt``)."""
    return render("reply_format", thinking=thinking.strip(), answer=answer.strip())


def _check_messages(messages: Sequence[Mapping[str, str]], what: str) -> None:
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(
                f"{what}[{i}] must be a dict with 'role' in {ROLES} and a string 'content', got {m!r}."
            )


def _check_shots(shots: Sequence[Mapping[str, str]]) -> list[Message]:
    """Few-shot turns must be complete user/assistant pairs."""
    shots = list(shots)
    _check_messages(shots, "shots")
    roles = [m["role"] for m in shots]
    expected = ["user", "assistant"] * (len(shots) // 2)
    if len(shots) % 2 or roles != expected:
        raise ValueError(
            f"Few-shot turns must alternate user/assistant, starting with user; got roles {roles}."
        )
    return [{"role": m["role"], "content": m["content"]} for m in shots]


def shot_messages(pairs: Iterable[tuple[str, str, str]], *, user_template: str = "math_user") -> list[Message]:
    """Turn ``(question, thinking, answer)`` triples into alternating user/assistant messages."""
    messages: list[Message] = []
    for question, thinking, answer in pairs:
        messages.append({"role": "user", "content": render(user_template, question=question)})
        messages.append({"role": "assistant", "content": assistant_reply(thinking, answer)})
    return messages


def _require_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}.")
    return value.strip()


# --------------------------------------------------------------------------- math


def math_messages(question: str, *, shots: Sequence[Mapping[str, str]] = (),
                  system: bool = True) -> list[Message]:
    """The chat for one math question: system prompt, few-shot turns, then the question.

    ``shots`` are alternating user/assistant messages, e.g. from
    :func:`fewshot_exemplars`; leave them out for the zero-shot prompt the student
    is trained and evaluated with.
    """
    question = _require_text(question, "question")
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": render("math_system")})
    messages.extend(_check_shots(shots))
    messages.append({"role": "user", "content": render("math_user", question=question)})
    return messages


def fewshot_exemplars(k: int, *, seed: int = 0, steps: int | None = None,
                      exclude: Collection[str] = ()) -> list[Message]:
    """``k`` worked word problems as user/assistant turns, from TRAIN templates only.

    Each reply is the problem's gold solution, short and regular (one equation per
    step, numbers restated from the question), which is what a 135M teacher needs
    to copy the format. ``steps`` picks problems with that many operations (the
    same as the question's works best); ``exclude`` lists question texts that must
    not be used (the question being asked). See :func:`helpers.tasks.fewshot_problems`.
    """
    from .tasks import fewshot_problems  # tasks builds on this module, so import late

    problems = fewshot_problems(k, seed=seed, steps=steps, exclude=exclude)
    return shot_messages((p.question, p.thinking, boxed(p.answer)) for p in problems)


# --------------------------------------------------------------------------- classification


def _format_labels(labels: Sequence[str] | Mapping[str, str]) -> tuple[list[str], str]:
    if isinstance(labels, Mapping):
        names = [str(k) for k in labels]
        lines = [f"- {k}: {v}" if v else f"- {k}" for k, v in labels.items()]
    else:
        names = [str(x) for x in labels]
        lines = [f"- {x}" for x in names]
    if not names or any(not n.strip() for n in names):
        raise ValueError(f"labels must be a non-empty list of label names, got {labels!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"labels contain duplicates: {names}.")
    return names, "\n".join(lines)


def classification_messages(headline: str, labels: Sequence[str] | Mapping[str, str], *,
                            exemplar: bool = True) -> list[Message]:
    """The chat for classifying one headline into one of ``labels``.

    ``labels`` is a list of names or a ``{name: description}`` mapping (the
    descriptions are shown to the model). With ``exemplar`` the one worked example
    of ``classification_exemplar.json`` comes before the real headline.
    """
    headline = _require_text(headline, "headline")
    names, label_block = _format_labels(labels)
    messages: list[Message] = [
        {"role": "system", "content": render("classification_system", labels=label_block)}
    ]
    if exemplar:
        ex = load_exemplar("classification_exemplar")
        if ex["label"] not in names:
            raise ValueError(
                f"The classification exemplar's label {ex['label']!r} is not one of {names}; "
                "pass exemplar=False or edit data/prompts/classification_exemplar.json."
            )
        messages.append({"role": "user", "content": render("classification_user", headline=ex["headline"])})
        messages.append({"role": "assistant", "content": assistant_reply(ex["thinking"], ex["label"])})
    messages.append({"role": "user", "content": render("classification_user", headline=headline)})
    return messages


# --------------------------------------------------------------------------- extraction

EXTRACTION_FIELDS: tuple[str, ...] = ("person", "organisation", "date", "amount")
"""The JSON keys the extraction prompts ask for (same keys in every language)."""


def extraction_messages(text: str, lang: Literal["en", "zh"] = "en") -> list[Message]:
    """The chat for extracting :data:`EXTRACTION_FIELDS` from a short text.

    The reply is expected in two sections, ``Thinking process:`` / ``Final answer:``
    (``思考过程：`` / ``最终答案：`` for ``lang="zh"``), read back by
    :func:`helpers.parsing.parse_sections`.
    """
    text = _require_text(text, "text")
    if lang not in ("en", "zh"):
        raise ValueError(f"lang must be 'en' or 'zh', got {lang!r}.")
    return [{"role": "user", "content": render(f"extraction_{lang}", text=text)}]
