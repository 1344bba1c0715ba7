r"""Prompt templates stored as files under ``data/prompts/``, and few-shot turns built from them.

Prompts are text a learner should read and change, so none of them is written in
Python: each one is a small file with a YAML header saying what it is for (see
``data/prompts/README.md``). Each task (:mod:`helpers.tasks`) builds its chat
messages from these files.

Templates use :class:`string.Template` placeholders (``$question``) rather than
``str.format`` braces, because the prompts themselves contain braces (``\boxed{}``,
JSON examples). Rendering refuses missing and unknown variables, so a typo fails
loudly instead of sending a half-filled prompt to the teacher.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.config import REPO_ROOT

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


def assistant_reply(thinking: str, answer: str) -> str:
    """An exemplar reply in the course format (``reply_format.txt``)."""
    return render("reply_format", thinking=thinking.strip(), answer=answer.strip())


def _check_messages(messages: Sequence[Mapping[str, str]], what: str) -> None:
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(
                f"{what}[{i}] must be a dict with 'role' in {ROLES} and a string 'content', got {m!r}."
            )


def check_shots(shots: Sequence[Mapping[str, str]]) -> list[Message]:
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


def require_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}.")
    return value.strip()
