r"""The math task's prompt: a system prompt asking for ``<think>`` and a ``\boxed{}`` answer, few-shot turns, the question."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..teacher.prompts import check_shots, render, require_text

Message = dict[str, str]


def boxed(value: object) -> str:
    r"""``\boxed{value}``: the final-answer convention of the math prompts."""
    return "\\boxed{" + str(value) + "}"


def math_messages(question: str, *, shots: Sequence[Mapping[str, str]] = (),
                  system: bool = True) -> list[Message]:
    """The chat for one math question: system prompt, few-shot turns, then the question.

    ``shots`` are alternating user/assistant messages, e.g. from
    :func:`helpers.tasks.word_problems.fewshot_exemplars`; leave them out for the zero-shot prompt the student
    is trained and evaluated with.
    """
    question = require_text(question, "question")
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": render("math_system")})
    messages.extend(check_shots(shots))
    messages.append({"role": "user", "content": render("math_user", question=question)})
    return messages

