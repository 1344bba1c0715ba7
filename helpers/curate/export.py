r"""Export curated rows as training files for ms-swift, check them, and write a dataset card.

The user turn is the *zero-shot* prompt (the student learns to answer the bare
question, whatever exemplars the teacher saw); the prompt builder is a parameter,
``lambda row: helpers.tasks.math.math_messages(row["question"])`` gives the course's
math prompt. The assistant turn is the thinking inline, then the answer::

    <think>
    ...reasoning...
    </think>

    <answer>\boxed{8}</answer>

Formats: ms-swift ``messages`` JSONL (default), ShareGPT or Alpaca; train and
validation are split *by question*. :func:`validate_jsonl` lists every bad line of
a file with its number (:func:`export_dataset` runs it on every file it writes), and
:func:`dataset_card` writes the README beside the data: source, teacher, funnel,
token statistics, difficulty and task mix.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ..core.jsonl import scan_jsonl, write_jsonl
from ..core.rows import Row, answer_of, field_of, natural_key, question_key, row_id, thinking_of
from .funnel import Funnel

Message = dict[str, str]
PromptBuilder = Callable[[Row], list[Message]]
Format = Literal["messages", "sharegpt", "alpaca"]
FORMATS: tuple[str, ...] = ("messages", "sharegpt", "alpaca")

_SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


class DatasetFormatError(ValueError):
    """A training file does not match its format; ``errors`` lists ``(line number, problem)``."""

    def __init__(self, path: Path, fmt: str, errors: list[tuple[int, str]], n_lines: int,
                 shown: int = 20) -> None:
        self.path, self.fmt, self.errors = path, fmt, errors
        lines = "\n".join(f"  line {n}: {problem}" for n, problem in errors[:shown])
        more = f"\n  ... and {len(errors) - shown} more" if len(errors) > shown else ""
        super().__init__(f"{path} is not valid {fmt!r} JSONL: {len(errors)} problem(s) in "
                         f"{n_lines} line(s):\n{lines}{more}")


# --------------------------------------------------------------------------- building rows


def bare_question_prompt(row: Row) -> list[Message]:
    """The default zero-shot prompt: one user turn holding the bare question."""
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"Row {row_id(row)} has no question text to build a prompt from.")
    return [{"role": "user", "content": question.strip()}]


def assistant_text(row: Row) -> str:
    """The training target: ``<think>\\n...\\n</think>\\n\\n`` + answer (answer only if no thinking)."""
    thinking, answer = thinking_of(row).strip(), answer_of(row).strip()
    if not answer:
        raise ValueError(f"Row {row_id(row)} has no answer to train on.")
    return f"<think>\n{thinking}\n</think>\n\n{answer}" if thinking else answer


def _prompt(row: Row, build_prompt: PromptBuilder, system: str | None) -> list[Message]:
    messages = [dict(m) for m in build_prompt(row)]
    if not messages or messages[-1].get("role") != "user":
        raise ValueError(f"The prompt builder must return messages ending with a user turn; "
                         f"got {[m.get('role') for m in messages]} for row {row_id(row)}.")
    if system is not None:
        if messages[0].get("role") == "system":
            raise ValueError("Both the prompt builder and system= give a system prompt; use one.")
        messages.insert(0, {"role": "system", "content": system})
    return messages


def to_messages(row: Row, build_prompt: PromptBuilder = bare_question_prompt,
                system: str | None = None) -> dict[str, Any]:
    """One ms-swift ``{"messages": [...]}`` record."""
    return {"messages": _prompt(row, build_prompt, system)
            + [{"role": "assistant", "content": assistant_text(row)}]}


def to_sharegpt(row: Row, build_prompt: PromptBuilder = bare_question_prompt,
                system: str | None = None) -> dict[str, Any]:
    """One ShareGPT ``{"conversations": [{"from", "value"}, ...]}`` record."""
    names = {v: k for k, v in _SHAREGPT_ROLES.items()}
    return {"conversations": [{"from": names[m["role"]], "value": m["content"]}
                              for m in to_messages(row, build_prompt, system)["messages"]]}


def to_alpaca(row: Row, build_prompt: PromptBuilder = bare_question_prompt,
              system: str | None = None) -> dict[str, Any]:
    """One Alpaca ``{"instruction", "input", "output"}`` record (plus ``system`` if any).

    Alpaca has a single turn, so a prompt with several user turns is refused.
    """
    messages = _prompt(row, build_prompt, system)
    users = [m for m in messages if m["role"] == "user"]
    if len(users) != 1 or len(messages) - (messages[0]["role"] == "system") != 1:
        raise ValueError(f"Alpaca holds one user turn; the prompt of row {row_id(row)} has "
                         f"{[m['role'] for m in messages]}.")
    record: dict[str, Any] = {"instruction": users[0]["content"], "input": "",
                              "output": assistant_text(row)}
    if messages[0]["role"] == "system":
        record["system"] = messages[0]["content"]
    return record


CONVERTERS: dict[str, Callable[..., dict[str, Any]]] = {
    "messages": to_messages, "sharegpt": to_sharegpt, "alpaca": to_alpaca}


def split_train_val(rows: Sequence[Row], val_fraction: float = 0.1,
                    seed: int = 0) -> tuple[list[Row], list[Row]]:
    """Split by question (all samples of a question on one side), seeded.

    At least one question goes to validation when ``val_fraction > 0`` and there
    are two questions or more; ``val_fraction=0`` gives an empty validation set.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    keys = list(dict.fromkeys(question_key(r) for r in rows))
    n_val = round(len(keys) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(keys) >= 2:
        n_val = 1
    shuffled = keys[:]
    random.Random(seed).shuffle(shuffled)
    val_keys = set(shuffled[:n_val])
    return ([r for r in rows if question_key(r) not in val_keys],
            [r for r in rows if question_key(r) in val_keys])


# --------------------------------------------------------------------------- validation


def _check_turns(turns: list[Any], *, role_key: str, content_key: str, where: str,
                 role_map: Mapping[str, str]) -> list[str]:
    """Problems of a list of turns: shape, roles, order, content."""
    if not isinstance(turns, list):
        return [f"'{where}' must be a list, got {type(turns).__name__}"]
    if not turns:
        return [f"'{where}' is empty"]
    problems: list[str] = []
    roles: list[str | None] = []
    for i, turn in enumerate(turns):
        label = f"{where}[{i}]"
        if not isinstance(turn, dict):
            problems.append(f"{label} must be an object, got {type(turn).__name__}")
            roles.append(None)
            continue
        raw_role = turn.get(role_key)
        if raw_role not in role_map:
            problems.append(f"{label}.{role_key} is {raw_role!r}, expected one of {sorted(role_map)}")
            roles.append(None)
        else:
            roles.append(role_map[raw_role])
        content = turn.get(content_key)
        if content_key not in turn:
            problems.append(f"{label} has no '{content_key}'")
        elif not isinstance(content, str):
            problems.append(f"{label}.{content_key} is {type(content).__name__}, expected a string")
        elif not content.strip():
            problems.append(f"{label}.{content_key} is empty")
    if None in roles:
        return problems
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        problems.append(f"a system turn may only come first (roles: {roles})")
    elif not body:
        problems.append("only a system turn, no conversation")
    else:
        expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(body))]
        if body != expected:
            problems.append(f"turns must alternate user/assistant starting with user, got {body}")
        elif body[-1] != "assistant":
            problems.append("the last turn must be the assistant's (the training target)")
    return problems


def _check_alpaca(row: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("instruction", "output"):
        if key not in row:
            problems.append(f"missing '{key}'")
        elif not isinstance(row[key], str):
            problems.append(f"'{key}' is {type(row[key]).__name__}, expected a string")
        elif not row[key].strip():
            problems.append(f"'{key}' is empty")
    for key in ("input", "system"):
        if key in row and not isinstance(row[key], str):
            problems.append(f"'{key}' is {type(row[key]).__name__}, expected a string")
    return problems


def _check_record(row: Any, fmt: str) -> list[str]:
    if not isinstance(row, dict):
        return [f"a row must be a JSON object, got {type(row).__name__}"]
    if fmt == "alpaca":
        return _check_alpaca(row)
    key = "messages" if fmt == "messages" else "conversations"
    if key not in row:
        return [f"missing '{key}'"]
    if fmt == "messages":
        return _check_turns(row[key], role_key="role", content_key="content", where=key,
                            role_map={r: r for r in ("system", "user", "assistant")})
    return _check_turns(row[key], role_key="from", content_key="value", where=key,
                        role_map=_SHAREGPT_ROLES)


def _turns_of(row: dict[str, Any], fmt: str) -> list[tuple[str, str]]:
    """(role, content) pairs of a valid record, whatever its format."""
    if fmt == "messages":
        return [(m["role"], m["content"]) for m in row["messages"]]
    if fmt == "sharegpt":
        return [(_SHAREGPT_ROLES[t["from"]], t["value"]) for t in row["conversations"]]
    turns = [("system", row["system"])] if row.get("system") else []
    prompt = row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")
    return turns + [("user", prompt), ("assistant", row["output"])]


def validate_jsonl(path: str | Path, fmt: Format = "messages") -> dict[str, Any]:
    """Check every line of a training file; raise :class:`DatasetFormatError` listing all problems.

    Checks: valid JSON on every line (blank lines are errors too), one object
    per line, the format's keys present with string, non-empty content, known
    roles, a system turn only first, user/assistant alternating from the user,
    and the assistant last. Returns statistics when the file is valid: rows,
    turns, rows with a system prompt, rows whose target has ``<think>``, and
    mean prompt / target lengths in characters.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such training file: {path}")
    errors: list[tuple[int, str]] = []
    records: list[dict[str, Any]] = []
    lines, n_lines = scan_jsonl(path)
    for number, row, problem in lines:
        problems = [problem] if problem else _check_record(row, fmt)
        errors += [(number, p) for p in problems]
        if not problems:
            records.append(row)
    if not n_lines:
        errors.append((0, "the file has no rows"))
    if errors:
        raise DatasetFormatError(path, fmt, errors, n_lines)

    turns = [_turns_of(r, fmt) for r in records]
    targets = [t[-1][1] for t in turns]
    prompts = ["\n".join(c for role, c in t[:-1] if role == "user") for t in turns]
    return {"path": str(path), "format": fmt, "rows": len(records),
            "turns": sum(len(t) for t in turns),
            "with_system": sum(t[0][0] == "system" for t in turns),
            "with_think": sum("<think>" in target for target in targets),
            "mean_prompt_chars": round(statistics.fmean(len(p) for p in prompts), 1),
            "mean_target_chars": round(statistics.fmean(len(t) for t in targets), 1)}


# --------------------------------------------------------------------------- export


@dataclass
class ExportResult:
    """Where the files went and what they hold."""

    out_dir: Path
    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    """``{format: {"train": path, "val": path}}`` (no ``val`` when the split is empty)."""
    stats: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """``{format: {split: validate_jsonl stats}}``."""
    n_train: int = 0
    n_val: int = 0


def file_name(fmt: str, split: str) -> str:
    """``train.jsonl`` / ``val.jsonl`` for ms-swift messages, ``train.sharegpt.jsonl`` etc. otherwise."""
    return f"{split}.jsonl" if fmt == "messages" else f"{split}.{fmt}.jsonl"


def export_dataset(rows: Sequence[Row], out_dir: str | Path, *,
                   formats: Sequence[str] = ("messages",), val_fraction: float = 0.1,
                   seed: int = 0, build_prompt: PromptBuilder = bare_question_prompt,
                   system: str | None = None) -> ExportResult:
    """Split, convert and write the rows in each format, then validate every file written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"Unknown format(s) {unknown}; choose from {FORMATS}.")
    if not rows:
        raise ValueError("No rows to export: the curation kept nothing.")
    train, val = split_train_val(rows, val_fraction, seed)
    result = ExportResult(Path(out_dir), n_train=len(train), n_val=len(val))
    for fmt in formats:
        convert = CONVERTERS[fmt]
        result.files[fmt], result.stats[fmt] = {}, {}
        for split, part in (("train", train), ("val", val)):
            if not part:
                continue
            path = write_jsonl((convert(r, build_prompt, system) for r in part),
                               result.out_dir / file_name(fmt, split))
            result.files[fmt][split] = path
            result.stats[fmt][split] = validate_jsonl(path, fmt)  # type: ignore[arg-type]
    return result


# --------------------------------------------------------------------------- dataset card


def _count_tokens(texts: Sequence[str], tokenizer: Any | None) -> tuple[list[int], str]:
    """Token counts with ``tokenizer`` (anything with ``encode``), else whitespace words."""
    if tokenizer is None:
        return [len(t.split()) for t in texts], "whitespace-separated words (no tokenizer given)"
    if not hasattr(tokenizer, "encode"):
        raise TypeError("tokenizer must have an encode(text) method (e.g. a transformers tokenizer)")
    name = str(getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__)
    if Path(name).is_absolute():  # a local folder: name it, never print this machine's path
        name = Path(name).name

    def encode(text: str) -> int:
        try:
            return len(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:
            return len(tokenizer.encode(text))

    return [encode(t) for t in texts], f"tokens of the {name} tokenizer"


def token_stats(rows: Sequence[Row], tokenizer: Any | None = None,
                build_prompt: PromptBuilder = bare_question_prompt) -> tuple[pd.DataFrame, str]:
    """Length statistics of the prompts, thinking, answers and full targets, and the unit used."""
    parts = {
        "prompt": ["\n".join(m["content"] for m in build_prompt(r)) for r in rows],
        "thinking": [thinking_of(r) for r in rows],
        "answer": [answer_of(r) for r in rows],
        "target": [assistant_text(r) for r in rows],
    }
    records, unit = [], ""
    for name, texts in parts.items():
        counts, unit = _count_tokens(texts, tokenizer)
        series = pd.Series(counts, dtype=float)
        records.append({"field": name, "mean": round(series.mean(), 1),
                        "median": series.median(), "p95": round(series.quantile(0.95), 1),
                        "max": series.max(), "total": int(series.sum())})
    return pd.DataFrame(records), unit


def _mix(rows: Sequence[Row], key: str) -> pd.DataFrame:
    counts = Counter(field_of(r, key) for r in rows)
    ordered = sorted(counts.items(), key=lambda kv: natural_key(kv[0]))
    frame = pd.DataFrame([("unknown" if v is None else v, n) for v, n in ordered],
                         columns=[key, "rows"])
    frame["share"] = (frame["rows"] / max(len(rows), 1)).round(3)
    return frame


def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False) if len(frame) else "_(none)_"


def dataset_card(rows: Sequence[Row], *, source: str, teacher_model: str | None = None,
                 funnel: Funnel | None = None, tokenizer: Any | None = None,
                 export: ExportResult | None = None, title: str = "Distilled reasoning dataset",
                 build_prompt: PromptBuilder = bare_question_prompt,
                 notes: str = "") -> str:
    """The dataset card (markdown) for the final rows.

    ``source`` says where the questions came from; ``teacher_model`` defaults to
    the ``model`` field(s) of the rows. With ``funnel`` the card shows how many
    rows each curation stage kept and dropped (and why); with ``export``, the
    files and split sizes. Token counts use ``tokenizer`` when given, else
    whitespace words, and the card says which.
    """
    if not rows:
        raise ValueError("Cannot describe an empty dataset.")
    teachers = sorted({str(r.get("model")) for r in rows if r.get("model")})
    teacher = teacher_model or (", ".join(teachers) if teachers else "unknown")
    lengths, unit = token_stats(rows, tokenizer, build_prompt)
    n_questions = len({question_key(r) for r in rows})
    lines = [
        f"# {title}", "",
        f"Created {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", "",
        "## Source", "",
        f"- **Questions:** {source}",
        f"- **Teacher model:** {teacher}",
        f"- **Rows:** {len(rows)} samples of {n_questions} questions",
        "- **Format:** the user turn is the zero-shot prompt; the assistant turn is the "
        "teacher's chain of thought inside `<think>...</think>` followed by its answer.",
    ]
    params = {json.dumps(r.get("params"), sort_keys=True) for r in rows if r.get("params")}
    if len(params) == 1:
        lines.append(f"- **Sampling parameters:** `{params.pop()}`")
    if export is not None:
        lines += ["", "## Files", "", f"Train rows: {export.n_train}, validation rows: "
                  f"{export.n_val} (split by question).", ""]
        for fmt, files in export.files.items():
            for split, path in files.items():
                lines.append(f"- `{path.name}`: {fmt} format, {split}")
    if funnel is not None and funnel.results:
        lines += ["", "## Curation funnel", "",
                  "Rows entering each stage, kept, and dropped by reason.", "",
                  _md(funnel.table())]
    pass_rates = [r["pass_rate"] for r in rows if isinstance(r.get("pass_rate"), (int, float))]
    if pass_rates:
        lines += ["", f"Mean teacher pass rate of the kept samples' questions: "
                  f"{statistics.fmean(pass_rates):.2f}."]
    aligned = [r["align"] for r in rows if isinstance(r.get("align"), dict)]
    if aligned:
        lines.append(f"Reasoning alignment: {sum(a['rewritten'] for a in aligned)} of "
                     f"{len(aligned)} chains of thought were rewritten for a small student.")
    lines += ["", "## Length statistics", "", f"Unit: {unit}.", "", _md(lengths)]
    if any(field_of(r, "steps") is not None for r in rows):  # generated word problems know their steps
        lines += ["", "## Difficulty mix (reasoning steps)", "", _md(_mix(rows, "steps"))]
    lines += ["", "## Task mix", "", _md(_mix(rows, "task"))]
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


def write_dataset_card(out_dir: str | Path, rows: Sequence[Row], **kwargs: Any) -> Path:
    """Write :func:`dataset_card` to ``out_dir/README.md`` and return the path."""
    path = Path(out_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dataset_card(rows, **kwargs), encoding="utf-8")
    return path
