"""A curation stage for questions without reference answers: self-consistency across samples.

Notebook 03 could *verify* every sample, because each generated word problem
came with its exact answer. Synthesized questions have none: nobody knows the
right answer to "how many 250 ml glasses does a 1.5 l bottle fill?" until
someone works it out. What replaces verification has to be cheap:

* **self-consistency** (this module): sample the teacher several times per
  question and keep the samples whose final answer agrees with the majority.
  An answer reached by independent samples is more likely right than a lone
  one, and a question whose samples all disagree is one the teacher cannot do
  reliably. It costs nothing beyond the samples themselves.
* an **LLM judge** grading each answer (as :mod:`helpers.curate.align` grades
  reasoning) costs one more call per sample and is only as good as the judge.

Agreement is not correctness: a weak teacher can agree with itself on a wrong
answer. It removes unstable answers, not systematic mistakes.

The final answer of a sample is what :func:`helpers.tasks.checks.extract_prediction`
reads (the ``\\boxed{}`` content, else the last number), compared as a number
when it is one (``0.5`` = ``1/2``) and as normalised text otherwise.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import pandas as pd

from ..core.rows import Row, answer_of, question_key, reply_of
from ..core.text import normalise_text
from ..tasks.checks import extract_prediction
from ..teacher.parsing import normalize_number
from .funnel import StageBuilder, StageResult


def final_answer(row: Row) -> str | None:
    """The comparable final answer of a sample: a canonical number or normalised text; ``None`` if none."""
    if row.get("status") == "error" or not reply_of(row):
        return None
    shown = extract_prediction(answer_of(row))
    if shown is None:
        return None
    number = normalize_number(shown)
    if number is not None:
        return number
    return normalise_text(shown) or None


def consistency_stage(rows: Sequence[Row], *, min_votes: int = 2, min_agreement: float = 0.5,
                      stage: str = "consistency") -> StageResult:
    """Keep the samples that agree with their question's majority answer.

    Per question, the samples with a final answer vote; the most frequent
    answer wins (ties: the answer of the earliest sample). A sample is kept when
    its answer is the majority answer, that answer has at least ``min_votes``
    votes and more than ``min_agreement`` of the question's samples (all its
    samples, failed and unanswered ones included) gave it. Drop reasons:

    * ``no_final_answer``: no ``\\boxed{}`` and no number in the answer (or no reply);
    * ``minority_answer``: the sample disagrees with a clear majority;
    * ``no_consensus``: no answer reached ``min_votes`` votes and the agreement share.

    Every row gets ``consistency`` (``answer``, ``majority``, ``votes``,
    ``samples``, ``agreement``); ``result.tables["agreement"]`` has one line per question.
    """
    if min_votes < 1:
        raise ValueError(f"min_votes must be at least 1, got {min_votes}")
    if not 0.0 <= min_agreement < 1.0:
        raise ValueError(f"min_agreement must be in [0, 1), got {min_agreement}")
    answers = [final_answer(row) for row in rows]
    groups: dict[str, list[tuple[Row, str | None]]] = defaultdict(list)
    for row, answer in zip(rows, answers):
        groups[question_key(row)].append((row, answer))

    majority: dict[str, tuple[str | None, int, int]] = {}
    records = []
    for key, group in groups.items():
        votes = Counter(answer for _, answer in group if answer is not None)
        first_seen = {answer: i for i, (_, answer) in reversed(list(enumerate(group)))}
        winner, count = (min(votes.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))
                         if votes else (None, 0))
        majority[key] = (winner, count, len(group))
        agreement = count / len(group)
        records.append({"prompt_id": key, "question": group[0][0].get("question"),
                        "samples": len(group), "answered": sum(votes.values()),
                        "distinct_answers": len(votes), "majority": winner, "votes": count,
                        "agreement": round(agreement, 3),
                        "consensus": count >= min_votes and agreement > min_agreement})

    builder = StageBuilder(stage, n_in=len(rows))
    for row, answer in zip(rows, answers):
        key = question_key(row)
        winner, count, n = majority[key]
        out = {**row, "consistency": {"answer": answer, "majority": winner, "votes": count,
                                      "samples": n, "agreement": round(count / n, 3)}}
        consensus = count >= min_votes and count / n > min_agreement
        if answer is None:
            builder.drop(out, "no_final_answer", "no \\boxed{} answer and no number in the answer")
        elif not consensus:
            builder.drop(out, "no_consensus",
                         f"answer {answer!r}; best answer {winner!r} has {count} of {n} votes "
                         f"(need {min_votes} and more than {min_agreement:.0%})")
        elif answer != winner:
            builder.drop(out, "minority_answer", f"answer {answer!r}, majority {winner!r} ({count} of {n})")
        else:
            builder.keep(out)
    table = pd.DataFrame(records, columns=["prompt_id", "question", "samples", "answered",
                                           "distinct_answers", "majority", "votes", "agreement",
                                           "consensus"])
    return builder.result(agreement=table)
