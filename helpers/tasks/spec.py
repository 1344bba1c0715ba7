"""A task is a small file: where its data comes from, its prompts, its reply format and how answers are checked.

``load_task("headlines")`` reads ``data/tasks/headlines/task.yaml``; ``load_task(path)``
reads a learner's own task file, so a new task needs no code. A task gives every stage
what it needs: prompt rows for the teacher (:meth:`Task.prompt_rows`), the zero-shot
prompt the student learns and is evaluated with (:meth:`Task.student_messages`), the
reply it learns to write (:meth:`Task.assistant_text`), and a ``check`` spec stored in
every row's ``meta`` so that curation and evaluation check answers the same way
(:mod:`helpers.tasks.checks`). The README's "Your own task" section documents the file.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.config import REPO_ROOT
from ..core.jsonl import iter_jsonl
from ..teacher.prompts import PROMPTS_DIR, load_prompt
from .checks import FORMATS, VERIFIERS, answer_text_for

TASKS_DIR: Path = REPO_ROOT / "data" / "tasks"
BUILT_IN = ("math", "headlines", "extraction")
SOURCES = ("file", "word_problems", "contracts", "hub")
_KEYS: dict[str, set[str]] = {
    "": {"name", "description", "data", "prompt", "reply", "check", "group_by", "evaluation"},
    "data": {"source", "file", "input", "reference", "id", "split", "test_fraction", "fields", "dataset",
             "subset", "thinking", "answer", "hub_split", "offline_langs"},
    "prompt": {"system", "user", "shots", "exemplars", "exemplar_thinking"},
    "reply": {"format", "markers", "max_tokens"},
    "check": {"verifier", "labels", "fields"},
    "evaluation": {"gsm8k", "test_size", "decontam_share"},
}
Row = dict[str, Any]


class TaskFileError(ValueError):
    """A task file that cannot be used; the message names the file, the key and the fix."""


def _check_keys(raw: Mapping[str, Any], section: str, where: Path) -> None:
    for key in raw:
        if key not in _KEYS[section]:
            close = difflib.get_close_matches(str(key), _KEYS[section], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known keys: {sorted(_KEYS[section])}."
            name = f"{section}.{key}" if section else str(key)
            raise TaskFileError(f"{where}: unknown key {name!r}.{hint}")


def _need(raw: Mapping[str, Any], key: str, section: str, where: Path) -> Any:
    if raw.get(key) in (None, ""):
        name = f"{section}.{key}" if section else key
        raise TaskFileError(f"{where}: the key {name!r} is missing (see the README, section 'Your own task').")
    return raw[key]


def _per_lang(value: Any) -> dict[str, Any]:
    """``x`` or ``{en: x, zh: y}`` -> ``{lang or "": value}``."""
    return dict(value) if isinstance(value, Mapping) and value and set(value) <= {"en", "zh", ""} else {"": value}


@dataclass(frozen=True)
class Task:
    """One task, read from its file by :func:`load_task`."""

    name: str
    path: Path
    description: str
    data: Mapping[str, Any]
    prompt: Mapping[str, Any]
    reply_format: str
    markers: Mapping[str, tuple[str, str]]
    """Per language (``""`` for all): the thinking and answer section markers of the ``sections`` format."""
    verifier: str
    labels: Mapping[str, Any] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    group_by: str | None = None
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    reply: Mapping[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def max_tokens(self) -> int | None:
        """A reply length that fits the task (``reply.max_tokens``), or ``None`` for the notebooks' default."""
        value = self.reply.get("max_tokens")
        return int(value) if value else None

    @property
    def distilled(self) -> bool:
        """A published distilled dataset (``data.thinking`` and ``data.answer`` hold the teacher's reply):
        curation reads it directly (:func:`helpers.tasks.sources.distilled_samples`), no teacher is asked."""
        return bool(self.data.get("thinking") and self.data.get("answer"))

    def langs_for(self, profile: str) -> tuple[str, ...] | None:
        """The languages a run uses: all (``None``), or on the offline profile ``data.offline_langs``
        (the bundled 135M model is an English model and garbles some tasks in Chinese)."""
        offline = self.data.get("offline_langs")
        return tuple(offline) if profile == "offline" and offline else None

    @property
    def default_shots(self) -> int:
        """Worked examples in the teacher's prompt unless a notebook says otherwise (``prompt.shots``)."""
        return int(self.prompt.get("shots", 0))

    @property
    def source(self) -> str:
        return str(self.data.get("source", "file"))

    # ------------------------------------------------------------------ data
    def items(self, split: str, n: int | None = None, *, seed: int = 0,
              langs: Sequence[str] | None = None) -> list[Row]:
        """The task's inputs of one split: ``id``, ``input``, ``reference``, ``split``, ``meta``.

        All of them in file order, or ``n`` drawn at random (deterministic for ``seed``).
        ``langs`` keeps only inputs in those languages (``meta["lang"]``, else guessed from the text).
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        langs = tuple(langs) if langs else None
        if self.source == "contracts":
            from .contracts import make_contracts

            lang = langs[0] if langs and len(langs) == 1 else None
            return [{"id": c["id"], "input": c["text"], "reference": c["gold"], "split": split,
                     "meta": {"lang": c["lang"], "template_id": c["template_id"], "family": c["family"]}}
                    for c in make_contracts(split, 0 if n is None else n, seed=seed, lang=lang)]  # type: ignore[arg-type]
        if self.source == "word_problems":
            from .word_problems import word_problem_rows

            if n is None:
                raise ValueError(f"{self.name}: word problems are generated: ask for a number of items (n).")
            return [{"id": r["id"], "input": r["question"], "reference": r["reference"], "split": split,
                     "meta": r["meta"]} for r in word_problem_rows(split, n, seed=seed, shots=0)]  # type: ignore[arg-type]
        if self.source == "hub":
            from .sources import hub_items

            rows = hub_items(self, split)
        else:
            rows = self._file_items(split)
        if langs:
            rows = [r for r in rows if (r["meta"].get("lang") or guess_lang(r["input"])) in langs]
        if n is None:
            return rows
        # a file is often sorted (by label, by language): the first n of a seeded shuffle are a fair sample,
        # and asking for more only appends
        return random.Random(f"items|{self.name}|{split}|{seed}").sample(rows, len(rows))[:n]

    def _file_items(self, split: str) -> list[Row]:
        path = self.folder / str(self.data["file"])
        if not path.is_file():
            raise TaskFileError(f"{self.path}: data.file {path.name!r} not found in {self.folder}.")
        d = self.data
        out = []
        for lineno, raw in iter_jsonl(path):
            where = f"{path}:{lineno}"
            if not isinstance(raw, dict):
                raise TaskFileError(f"{where}: a data row must be a JSON object.")
            text = raw.get(d.get("input", "input"))
            if not isinstance(text, str) or not text.strip():
                raise TaskFileError(f"{where}: no text in the field {d.get('input', 'input')!r} (data.input); "
                                    f"this row has the fields {sorted(raw)}.")
            reference = raw.get(d.get("reference", "reference"))
            rid = str(raw.get(d.get("id", "id")) or f"{self.name}-{lineno:05d}")
            row_split = raw.get(d.get("split", "split"))
            if row_split is None:  # a stable split by id: the same rows are test on every run
                digest = int(hashlib.sha1(rid.encode()).hexdigest()[:8], 16) / 16**8
                row_split = "test" if digest < float(d.get("test_fraction", 0.3)) else "train"
            if row_split not in ("train", "test"):
                raise TaskFileError(f"{where}: split must be 'train' or 'test', got {row_split!r}.")
            self._check_reference(reference, where)
            meta = {k: v for k, v in raw.items() if k not in {d.get("input", "input"), d.get("id", "id"),
                                                           d.get("split", "split"), d.get("reference", "reference")}}
            out.append({"id": rid, "input": text, "reference": reference, "split": row_split, "meta": meta})
        return [r for r in out if r["split"] == split]

    def _check_reference(self, reference: Any, where: str) -> None:
        if reference is None:
            return
        if self.verifier == "label" and self.labels and reference not in self.labels:
            raise TaskFileError(f"{where}: reference {reference!r} is not one of the labels {sorted(self.labels)}.")
        if self.verifier == "fields" and (not isinstance(reference, dict) or set(reference) != set(self.fields)):
            raise TaskFileError(f"{where}: the reference must be an object with exactly the fields {list(self.fields)}.")

    # ------------------------------------------------------------------ prompts
    def _template(self, part: str, lang: str) -> Any:
        names = _per_lang(self.prompt.get(part))
        name = names.get(lang, names.get("", names.get("en")))
        if name is None:
            return None
        if (self.folder / str(name)).is_file():
            return load_prompt(str(name), self.folder)
        if Path(str(name)).suffix or "/" in str(name):  # a file name: it belongs beside the task file
            raise TaskFileError(f"{self.path}: prompt.{part} {str(name)!r} not found: create "
                                f"{self.folder / str(name)} beside the task file, or fix the name.")
        return load_prompt(str(name), PROMPTS_DIR)  # a course prompt by name (math_system)

    def _fill(self, template: Any, lang: str, **values: Any) -> str:
        extra = {"labels": self.labels_block(lang), "fields": self.fields_block(lang)}
        return template.render(**{**{k: v for k, v in extra.items() if k in template.variables}, **values})

    def labels_block(self, lang: str = "en") -> str:
        lines = []
        for name, desc in self.labels.items():
            text = desc.get(lang, desc.get("en", "")) if isinstance(desc, Mapping) else desc
            lines.append(f"- {name}: {text}" if text else f"- {name}")
        return "\n".join(lines)

    def fields_block(self, lang: str = "en") -> str:
        if self.source == "contracts":
            from .contracts import field_definitions

            return "\n".join(f"- {k}: {v}" for k, v in field_definitions(lang if lang == "zh" else "en").items())
        return "\n".join(f"- {f}" for f in self.fields)

    def student_messages(self, text: str, lang: str | None = None) -> list[dict[str, str]]:
        """The zero-shot prompt (system + user): what the student is trained and evaluated with.

        ``lang`` picks the prompt files of a bilingual task; by default Chinese text gets the Chinese ones.
        """
        lang = lang or guess_lang(text)
        if self.source == "word_problems":
            from .math import math_messages

            return math_messages(text)
        messages = []
        system = self._template("system", lang)
        if system is not None:
            messages.append({"role": "system", "content": self._fill(system, lang)})
        messages.append({"role": "user", "content": self._fill(self._template("user", lang), lang, input=text)})
        return messages

    def answer_text(self, reference: Any) -> str:
        """The answer part of a worked reply whose answer is ``reference``."""
        return answer_text_for(self.verifier, reference)

    def assistant_text(self, thinking: str, answer: str, lang: str = "en") -> str:
        """The full reply in the task's format: ``<think>`` then the answer, or the two sections."""
        thinking, answer = thinking.strip(), answer.strip()
        if self.reply_format == "sections":
            think_marker, answer_marker = self.markers.get(lang) or self.markers[""]
            return f"{think_marker}\n{thinking}\n{answer_marker}\n{answer}"
        return f"<think>\n{thinking}\n</think>\n\n{answer}"

    def check_spec(self, lang: str = "en") -> dict[str, Any]:
        """How an answer of this task is checked; stored in every row's ``meta["check"]``."""
        spec: dict[str, Any] = {"verifier": self.verifier, "format": self.reply_format}
        if self.reply_format == "sections":
            spec["markers"] = list(self.markers.get(lang) or self.markers[""])
        if self.verifier == "label":
            spec["labels"] = list(self.labels)
        if self.verifier == "fields":
            spec["fields"] = list(self.fields)
        return spec

    # ------------------------------------------------------------------ exemplars
    def exemplars(self, lang: str = "en") -> list[Row]:
        """Worked examples (``input``, ``thinking``, ``answer``) from the task's exemplar file, if any."""
        name = self.prompt.get("exemplars")
        if not name:
            return []
        rows = [r for _, r in iter_jsonl(self.folder / str(name))]
        return [r for r in rows if r.get("lang", lang) == lang] or rows

    def _thinking_for(self, item: Row, lang: str) -> str:
        templates = _per_lang(self.prompt.get("exemplar_thinking"))
        template = templates.get(lang, templates.get(""))
        if template is None:
            return ""
        values = {**self.thinking_placeholders(item["reference"]), "input": item["input"]}
        return str(template).format(**values)

    def thinking_placeholders(self, reference: Any = None) -> dict[str, Any]:
        """What ``prompt.exemplar_thinking`` may use: ``{input}``, ``{reference}``, and for ``fields`` each field."""
        if self.verifier == "fields":
            return {field: (reference or {}).get(field, "") for field in self.fields}
        return {"reference": reference}

    def shots_for(self, item: Row, pool: Sequence[Row], k: int, rng: random.Random) -> list[dict[str, str]]:
        """``k`` worked user/assistant turns for ``item``: written exemplars, else retrieved train items.

        Retrieval prefers train items of the same template (generated data), then of
        other references, so the examples cover the answers.
        """
        if k <= 0:
            return []
        lang = item["meta"].get("lang", "en")
        written = self.exemplars(lang)
        if written:
            picked = [(e["input"], e["thinking"], e["answer"]) for e in written[:k]]
        else:
            candidates = [p for p in pool if p["id"] != item["id"] and p["input"] != item["input"]
                          and p["meta"].get("lang", "en") == lang]
            same = [p for p in candidates if item["meta"].get("template_id") is not None
                    and p["meta"].get("template_id") == item["meta"].get("template_id")]
            ordered = rng.sample(same, len(same)) + rng.sample(candidates, len(candidates))
            chosen, seen_refs, ids = [], set(), set()
            for p in ordered:  # first pass: different references; then anything left
                key = json.dumps(p["reference"], sort_keys=True, ensure_ascii=False)
                if p["id"] not in ids and (key not in seen_refs or len(seen_refs) >= len(self.labels or [0])):
                    chosen.append(p)
                    ids.add(p["id"])
                    seen_refs.add(key)
                if len(chosen) == k:
                    break
            picked = [(p["input"], self._thinking_for(p, lang), self.answer_text(p["reference"])) for p in chosen]
        turns = []
        for text, thinking, answer in picked:
            turns += [{"role": "user", "content": self.student_messages(text, lang)[-1]["content"]},
                      {"role": "assistant", "content": self.assistant_text(thinking, answer, lang)}]
        return turns

    def prompt_rows(self, split: str, n: int | None = None, *, shots: int = 0, seed: int = 0,
                    langs: Sequence[str] | None = None, **options: Any) -> list[Row]:
        """Prompt rows (``id``, ``messages``, ``question``, ``reference``, ``task``, ``meta``) for the engine.

        ``shots`` worked examples come before the question (the teacher's prompt;
        ``shots=0`` is the student's zero-shot prompt). ``options`` go to a generated
        source (for math: ``steps``, ``exemplars``).
        """
        if self.source == "word_problems":
            from .word_problems import word_problem_rows

            rows = word_problem_rows(split, 0 if n is None else n, seed=seed, shots=shots, **options)  # type: ignore[arg-type]
            for row in rows:
                row["meta"]["check"] = self.check_spec()
            return rows
        items = self.items(split, n, seed=seed, langs=langs)
        pool = self.items("train", max(4 * shots, 40), seed=seed + 1, langs=langs) if shots and \
            self.source == "contracts" else (self.items("train", langs=langs) if shots else [])
        rng = random.Random(f"shots|{self.name}|{seed}")
        rows = []
        for item in items:
            lang = item["meta"].get("lang", "en")
            messages = self.student_messages(item["input"], lang)
            messages[-1:-1] = self.shots_for(item, pool, shots, rng)
            rows.append({"id": item["id"], "messages": messages, "question": item["input"],
                         "reference": item["reference"], "task": self.name,
                         "meta": {**item["meta"], "split": split, "shots": shots, "check": self.check_spec(lang)}})
        return rows

    def summary(self) -> dict[str, Any]:
        return {"task": self.name, "description": self.description, "source": self.source,
                "verifier": self.verifier, "reply format": self.reply_format, "file": str(self.path)}


def guess_lang(text: str) -> str:
    """``"zh"`` when a fifth or more of the letters are CJK characters, else ``"en"``."""
    letters = [c for c in text if c.isalpha()]
    cjk = sum("\u3400" <= c <= "\u9fff" for c in letters)
    return "zh" if letters and cjk / len(letters) >= 0.2 else "en"


def list_tasks() -> list[str]:
    """The built-in tasks and any other task folder under ``data/tasks``."""
    found = sorted(p.parent.name for p in TASKS_DIR.glob("*/task.yaml"))
    return [t for t in BUILT_IN if t in found] + [t for t in found if t not in BUILT_IN]


def task_path(name_or_path: str | Path) -> Path:
    """``"headlines"`` -> ``data/tasks/headlines/task.yaml``; a path to a file or folder as it is."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        candidate = candidate / "task.yaml"
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise FileNotFoundError(f"No task file at {candidate}.")
        return candidate.resolve()
    builtin = TASKS_DIR / str(name_or_path) / "task.yaml"
    if builtin.is_file():
        return builtin
    raise FileNotFoundError(f"No task {str(name_or_path)!r}: use one of {list_tasks()} or the path of a task file "
                            "(COURSE_TASK=path/to/task.yaml).")


def load_task(name_or_path: str | Path = "math") -> Task:
    """Read and check a task file; every problem is an error naming the file and the key."""
    path = task_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise TaskFileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise TaskFileError(f"{path}: a task file is a mapping of keys (name, data, prompt, reply, check).")
    _check_keys(raw, "", path)
    for section in ("data", "prompt", "reply", "check", "evaluation"):
        if section in raw:
            if not isinstance(raw[section], dict):
                raise TaskFileError(f"{path}: {section!r} must be a mapping of keys.")
            _check_keys(raw[section], section, path)
    name = str(_need(raw, "name", "", path))
    data, prompt = _need(raw, "data", "", path), _need(raw, "prompt", "", path)
    check, reply = _need(raw, "check", "", path), raw.get("reply") or {}
    source = data.get("source", "file")
    if source not in SOURCES:
        raise TaskFileError(f"{path}: data.source must be one of {list(SOURCES)}, got {source!r}.")
    if source == "file":
        _need(data, "file", "data", path)
    if source == "hub":
        _need(data, "dataset", "data", path)
    if source != "word_problems":
        _need(prompt, "user", "prompt", path)
    verifier = str(_need(check, "verifier", "check", path))
    if verifier not in VERIFIERS:
        raise TaskFileError(f"{path}: check.verifier must be one of {list(VERIFIERS)}, got {verifier!r}.")
    fmt = str(reply.get("format", "think"))
    if fmt not in FORMATS:
        raise TaskFileError(f"{path}: reply.format must be one of {list(FORMATS)}, got {fmt!r}.")
    markers = {lang: tuple(pair) for lang, pair in _per_lang(reply.get("markers") or {}).items() if pair}
    if fmt == "sections" and (not markers or any(len(m) != 2 for m in markers.values())):
        raise TaskFileError(f"{path}: reply.format 'sections' needs reply.markers: [thinking marker, answer marker].")
    labels = check.get("labels") or {}
    if isinstance(labels, str):
        labels = json.loads((path.parent / labels).read_text(encoding="utf-8"))
    if isinstance(labels, list):
        labels = {str(x): "" for x in labels}
    if verifier == "label" and not labels:
        raise TaskFileError(f"{path}: check.verifier 'label' needs check.labels (a list, a mapping or a JSON file).")
    fields: tuple[str, ...] = tuple(check.get("fields") or ())
    if source == "contracts" and not fields:
        from .contracts import FIELDS

        fields = FIELDS
    if verifier == "fields" and not fields:
        raise TaskFileError(f"{path}: check.verifier 'fields' needs check.fields (the JSON keys of the answer).")
    task = Task(name=name, path=path, description=str(raw.get("description", "")).strip(), data=data,
                prompt=prompt, reply_format=fmt, markers=markers, verifier=verifier, labels=labels, fields=fields,
                group_by=raw.get("group_by"), evaluation=raw.get("evaluation") or {}, reply=reply)
    for lang, template in _per_lang(prompt.get("exemplar_thinking")).items():  # unknown {names} fail now
        allowed = {"input", *task.thinking_placeholders()}
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(str(template)) if f is not None}
        except ValueError as exc:
            raise TaskFileError(f"{path}: prompt.exemplar_thinking{f'.{lang}' if lang else ''}: {exc} (write a "
                                "literal brace as {{ or }}).") from None
        if unknown := sorted(f for f in used if f.split(".")[0].split("[")[0] not in allowed):
            raise TaskFileError(f"{path}: prompt.exemplar_thinking uses {', '.join('{' + f + '}' for f in unknown)}; "
                                f"it may use only {', '.join('{' + a + '}' for a in sorted(allowed))}.")
    for part in ("system", "user") if source != "word_problems" else ():  # a missing file fails now
        for lang in _per_lang(prompt.get(part)):
            template = task._template(part, lang or "en")
            if template is not None and part == "user" and "input" not in template.variables:
                raise TaskFileError(f"{path}: the user prompt {template.path} must contain $input.")
    return task
