"""Stage 4: decontamination, so the evaluation stays a test of generalisation.

A training question that shares a long word sequence with an evaluation
question lets the student memorise the test. Following common practice (the
GPT-3 and Llama reports use 8- to 13-gram overlap), a training row is
*contaminated* when its question shares at least one word 8-gram with any item
of any evaluation set. Words are normalised first (case, punctuation, Unicode;
see :func:`helpers.core.text.words`), so formatting differences do not hide a
copy. An evaluation item shorter than ``n`` words has no n-gram; it counts as
found when its whole word sequence appears in the training question.

The evaluation sets are passed in as ``{name: [question, ...]}``. Each overlap
found is reported (training row, evaluation set, item index and text, the
shared n-gram and how many n-grams are shared) in ``result.tables["overlaps"]``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import pandas as pd
from tqdm.auto import tqdm

from ..core.rows import Row, row_id
from ..core.text import snippet, words
from .funnel import StageBuilder, StageResult

Ngram = tuple[str, ...]


@dataclass(frozen=True)
class Overlap:
    """One evaluation item a training question overlaps with."""

    eval_set: str
    eval_index: int
    eval_question: str
    shared_ngram: str
    """One shared n-gram (the first in the training question), as text."""
    n_shared: int
    """How many distinct n-grams the two questions share."""
    share: float = 1.0
    """``n_shared`` over the evaluation item's distinct n-grams (1.0 for a short item found whole)."""


def ngrams(text: str, n: int = 8) -> list[Ngram]:
    """Word ``n``-grams of ``text`` in order (empty when it has fewer than ``n`` words)."""
    tokens = words(text)
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


class EvalIndex:
    """Every n-gram of every evaluation question, mapped to where it occurs."""

    def __init__(self, eval_sets: Mapping[str, Sequence[str]], n: int = 8) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not isinstance(eval_sets, Mapping):
            raise TypeError("eval_sets must be a dict {name: [question, ...]}, "
                            f"got {type(eval_sets).__name__}")
        self.n = n
        self.eval_sets = {name: list(items) for name, items in eval_sets.items()}
        self._grams: dict[Ngram, list[tuple[str, int]]] = defaultdict(list)
        self._short: dict[Ngram, list[tuple[str, int]]] = defaultdict(list)
        for name, items in self.eval_sets.items():
            for index, item in enumerate(items):
                if not isinstance(item, str):
                    raise TypeError(f"eval set {name!r} item {index} is {type(item).__name__}, "
                                    "expected a question string")
                tokens = tuple(words(item))
                if len(tokens) < n:
                    if tokens:
                        self._short[tokens].append((name, index))
                    continue
                for gram in set(ngrams(item, n)):
                    self._grams[gram].append((name, index))
        self._short_lengths = sorted({len(t) for t in self._short})
        self._sizes = {(name, index): max(1, len(set(ngrams(item, n))))
                       for name, items in self.eval_sets.items() for index, item in enumerate(items)}

    def overlaps(self, question: str) -> list[Overlap]:
        """Every evaluation item sharing an n-gram with ``question`` (or contained whole, when short)."""
        tokens = tuple(words(question))
        found: dict[tuple[str, int], list[Ngram]] = defaultdict(list)
        for length in self._short_lengths:  # short evaluation items, found whole
            for i in range(len(tokens) - length + 1):
                for where in self._short.get(tokens[i:i + length], ()):
                    found[where].append(tokens[i:i + length])
        seen: set[Ngram] = set()
        for gram in ngrams(question, self.n):
            if gram in seen:
                continue
            seen.add(gram)
            for where in self._grams.get(gram, ()):
                found[where].append(gram)
        return [Overlap(name, index, self.eval_sets[name][index], " ".join(grams[0]), len(grams),
                        min(1.0, len(grams) / self._sizes[(name, index)]))
                for (name, index), grams in found.items()]


def decontaminate(rows: Sequence[Row], eval_sets: Mapping[str, Sequence[str]], *, n: int = 8,
                  min_share: float = 0.0, stage: str = "decontam", progress: bool = True) -> StageResult:
    """Drop rows whose question overlaps an evaluation question (reason ``contaminated``).

    By default one shared n-gram is enough. Inputs generated from shared value pools
    (contracts: the same clause wordings in train and test) share n-grams without being
    copies; ``min_share`` then asks for at least that share of an evaluation item's n-grams.

    ``result.tables["overlaps"]`` has one line per (training row, evaluation
    item) pair with the shared n-gram; dropped rows also carry the list under
    ``contamination``.
    """
    index = EvalIndex(eval_sets, n)
    cache: dict[str, list[Overlap]] = {}
    builder = StageBuilder(stage, n_in=len(rows))
    records = []
    for row in tqdm(rows, desc="decontaminate", disable=not progress):
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"Row {row_id(row)} has no question text to decontaminate.")
        if question not in cache:
            cache[question] = index.overlaps(question)
        hits = [h for h in cache[question] if h.share >= min_share]
        if not hits:
            builder.keep(row)
            continue
        for hit in hits:
            records.append({"row": row_id(row), "question": question, "eval_set": hit.eval_set,
                            "eval_index": hit.eval_index, "eval_question": hit.eval_question,
                            "shared_ngram": hit.shared_ngram, "n_shared": hit.n_shared, "share": round(hit.share, 3)})
        first = hits[0]
        more = f" (+{len(hits) - 1} more)" if len(hits) > 1 else ""
        builder.drop({**row, "contamination": [asdict(h) for h in hits]}, "contaminated",
                     f"shares {first.shared_ngram!r} with {first.eval_set}[{first.eval_index}]: "
                     f"{snippet(first.eval_question, 80)}{more}")
    overlaps = pd.DataFrame(records, columns=["row", "question", "eval_set", "eval_index",
                                              "eval_question", "shared_ngram", "n_shared", "share"])
    return builder.result(overlaps=overlaps)
