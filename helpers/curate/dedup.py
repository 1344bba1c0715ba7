"""Stage 3: drop exact and near duplicates, saying which row each duplicate matched.

Two passes over the text ``question + thinking + answer`` of each sample:

* **exact**: the normalised text (lower case, no punctuation, single spaces,
  see :func:`helpers.core.text.normalise_text`) is identical to an earlier row's;
* **near**: the Jaccard similarity of the word 5-gram sets ("shingles") is at
  least ``threshold``. Comparing every pair is quadratic, so candidate pairs
  come from MinHash locality-sensitive hashing (``datasketch.MinHashLSH``), and
  each candidate is then confirmed with the *exact* Jaccard of the shingle sets,
  so a hashing collision never drops a row.

The first row of a group is kept; later ones are dropped with
``duplicate_of`` and ``similarity`` set, so the notebook can show both texts.

**Samples of the same question.** Sampling a question n times often returns
near-identical chains of thought. Training on several copies adds no
information and over-weights that question, so by default (``scope="global"``)
they are treated like any duplicate: one is kept. Because the question is part
of the compared text, two *different* questions only match when their whole
worked solution is near-identical too. Use ``scope="same_question"`` to only
compare samples of one question with each other (templated word problems whose
solutions differ in a few numbers are then never merged).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd
from datasketch import MinHash, MinHashLSH
from tqdm.auto import tqdm

from ..core.rows import Row, answer_of, question_key, row_id, thinking_of
from ..core.text import normalise_text, words
from .funnel import StageBuilder, StageResult

DEFAULT_FIELDS: tuple[str, ...] = ("question", "thinking", "answer")
LSH_MAX_THRESHOLD = 0.9
LSH_MARGIN = 0.2
"""How far below the dedup threshold the LSH looks for candidates (see :func:`near_dedup`);
never above ``LSH_MAX_THRESHOLD`` (datasketch cannot band near 1)."""


def dedup_text(row: Row, fields: Sequence[str] = DEFAULT_FIELDS) -> str:
    """The normalised text compared for duplicates (the chosen fields, joined)."""
    getters = {"question": lambda r: r.get("question") or "", "thinking": thinking_of,
               "answer": answer_of}
    unknown = [f for f in fields if f not in getters]
    if unknown:
        raise ValueError(f"Unknown dedup field(s) {unknown}; choose from {sorted(getters)}.")
    return normalise_text(" ".join(getters[f](row) for f in fields))


def shingles(text: str, size: int = 5) -> set[str]:
    """Word ``size``-grams of ``text`` (a text shorter than ``size`` words is one shingle)."""
    if size < 1:
        raise ValueError(f"shingle size must be >= 1, got {size}")
    tokens = words(text)
    if not tokens:
        return set()
    if len(tokens) <= size:
        return {" ".join(tokens)}
    return {" ".join(tokens[i:i + size]) for i in range(len(tokens) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b| (0 for two empty sets: empty texts are not "the same text")."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def exact_dedup(rows: Sequence[Row], *, fields: Sequence[str] = DEFAULT_FIELDS,
                stage: str = "dedup_exact") -> StageResult:
    """Drop rows whose normalised text equals an earlier row's (reason ``exact_duplicate``)."""
    builder = StageBuilder(stage, n_in=len(rows))
    first_seen: dict[str, Row] = {}
    pairs = []
    for row in rows:
        text = dedup_text(row, fields)
        if text in first_seen:
            match = row_id(first_seen[text])
            builder.drop({**row, "duplicate_of": match, "similarity": 1.0},
                         "exact_duplicate", f"same text as {match}")
            pairs.append({"dropped": row_id(row), "matched": match, "similarity": 1.0,
                          "kind": "exact"})
        else:
            first_seen[text] = row
            builder.keep(row)
    return builder.result(pairs=_pairs_frame(pairs))


def near_dedup(rows: Sequence[Row], *, threshold: float = 0.8, num_perm: int = 128,
               shingle_size: int = 5, seed: int = 1,
               scope: Literal["global", "same_question"] = "global",
               fields: Sequence[str] = DEFAULT_FIELDS, stage: str = "dedup_near",
               progress: bool = True, lsh_threshold: float | None = None) -> StageResult:
    """Drop rows whose shingle Jaccard with an earlier kept row is >= ``threshold``.

    MinHash LSH proposes candidates; the exact Jaccard decides. Dropped rows
    carry ``duplicate_of`` (the kept row they matched, the most similar one) and
    ``similarity``; ``result.tables["pairs"]`` lists every match.

    ``lsh_threshold`` is where the LSH proposes candidates (default
    ``threshold - 0.2``, at least 0.1). LSH finds a pair just above its own
    threshold only part of the time (see bench/README.md), so it searches well
    below ``threshold``; the exact Jaccard still decides, so the margin costs
    only comparisons.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if scope not in ("global", "same_question"):
        raise ValueError(f"scope must be 'global' or 'same_question', got {scope!r}")
    # The LSH only proposes candidates and the exact Jaccard decides, so a lower LSH
    # threshold only costs time; datasketch cannot band for thresholds near 1.
    if lsh_threshold is not None and not 0.0 < lsh_threshold <= threshold:
        raise ValueError(f"lsh_threshold must be in (0, threshold={threshold}], got {lsh_threshold}")
    if lsh_threshold is None:
        lsh_threshold = max(threshold - LSH_MARGIN, 0.1)
    lsh = MinHashLSH(threshold=min(lsh_threshold, LSH_MAX_THRESHOLD), num_perm=num_perm)
    kept_sets: dict[str, tuple[Row, set[str]]] = {}
    builder = StageBuilder(stage, n_in=len(rows))
    pairs = []
    for index, row in enumerate(tqdm(rows, desc="near-dedup", disable=not progress)):
        grams = shingles(dedup_text(row, fields), shingle_size)
        signature = MinHash(num_perm=num_perm, seed=seed)
        signature.update_batch(g.encode("utf-8") for g in grams)
        best: tuple[float, Row] | None = None
        for key in lsh.query(signature) if grams else ():
            other, other_grams = kept_sets[key]
            if scope == "same_question" and question_key(other) != question_key(row):
                continue
            score = jaccard(grams, other_grams)
            if score >= threshold and (best is None or score > best[0]):
                best = (score, other)
        if best is not None:
            match = row_id(best[1])
            builder.drop({**row, "duplicate_of": match, "similarity": round(best[0], 4)},
                         "near_duplicate", f"matches {match} (Jaccard {best[0]:.2f})")
            pairs.append({"dropped": row_id(row), "matched": match,
                          "similarity": round(best[0], 4), "kind": "near"})
        else:
            key = str(index)
            if grams:
                lsh.insert(key, signature)
                kept_sets[key] = (row, grams)
            builder.keep(row)
    return builder.result(pairs=_pairs_frame(pairs))


def dedup_stage(rows: Sequence[Row], *, threshold: float = 0.8, num_perm: int = 128,
                shingle_size: int = 5, seed: int = 1,
                scope: Literal["global", "same_question"] = "global",
                fields: Sequence[str] = DEFAULT_FIELDS, stage: str = "dedup",
                progress: bool = True, lsh_threshold: float | None = None) -> StageResult:
    """Exact then near deduplication as one stage (reasons ``exact_duplicate``, ``near_duplicate``)."""
    exact = exact_dedup(rows, fields=fields, stage=stage)
    near = near_dedup(exact.kept, threshold=threshold, num_perm=num_perm,
                      shingle_size=shingle_size, seed=seed, scope=scope, fields=fields,
                      stage=stage, progress=progress, lsh_threshold=lsh_threshold)
    frames = [f for f in (exact.tables["pairs"], near.tables["pairs"]) if len(f)]
    pairs = pd.concat(frames, ignore_index=True) if frames else _pairs_frame([])
    return StageResult(stage, near.kept, exact.dropped + near.dropped, n_in=len(rows),
                       tables={"pairs": pairs})


def _pairs_frame(pairs: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["dropped", "matched", "similarity", "kind"])
