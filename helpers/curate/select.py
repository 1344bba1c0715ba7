"""Stage 6: pick the training set: a target size, balanced, focused on what the student gets wrong.

After curation there are usually more good samples than a small fine-tuning
run needs, and they are skewed: easy one-step problems pass every filter more
often than hard multi-step ones. Selection:

1. groups rows into **strata** by task and difficulty (``meta.steps``) by
   default, and gives every stratum an equal share of ``target_size``; a
   stratum with too few rows gives its unused share to the others
   ("water-filling"), so the total is met whenever enough rows exist;
2. inside a stratum, prefers questions the **student failed** (an optional set
   of prompt ids or question texts, e.g. from the baseline evaluation: those are
   where distillation can help), then spreads over distinct questions before
   taking a second sample of the same question;
3. breaks the remaining ties with a seeded shuffle, so the same inputs and seed
   always give the same selection.

Unselected rows are dropped with reason ``not_selected``;
``result.tables["mix"]`` shows available and selected rows per stratum.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from typing import Any

import pandas as pd

from ..core.rows import Row, field_of, natural_key, question_key
from ..core.text import normalise_text
from .funnel import StageBuilder, StageResult

DEFAULT_STRATA: tuple[str, ...] = ("task", "steps")

Stratum = tuple[Any, ...]


def stratum_of(row: Row, keys: Sequence[str] = DEFAULT_STRATA) -> Stratum:
    """The row's value for each key, read from the row itself or else from ``row["meta"]``."""
    return tuple(field_of(row, key) for key in keys)


def _sort_key(stratum: Stratum) -> tuple[tuple[int, Any], ...]:
    """Numbers before text, numbers in numeric order (steps 2 before steps 10), None last."""
    return tuple(natural_key(v) for v in stratum)


def allocate(sizes: dict[Stratum, int], target: int, seed: int = 0) -> dict[Stratum, int]:
    """Split ``target`` as evenly as possible over strata of the given sizes (water-filling).

    A stratum never gets more than it has; leftovers go to the strata that still
    have rows. When the remainder cannot be split evenly, a seeded shuffle picks
    which strata get one more.
    """
    if target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    quota = {s: 0 for s in sizes}
    remaining = min(target, sum(sizes.values()))
    open_strata = sorted((s for s in sizes if sizes[s] > 0), key=_sort_key)
    rng = random.Random(seed)
    while remaining > 0 and open_strata:
        share = remaining // len(open_strata)
        if share == 0:
            lucky = open_strata[:]
            rng.shuffle(lucky)
            for s in lucky[:remaining]:
                quota[s] += 1
            break
        for s in open_strata:
            add = min(share, sizes[s] - quota[s])
            quota[s] += add
            remaining -= add
        open_strata = [s for s in open_strata if quota[s] < sizes[s]]
    return quota


def select_rows(rows: Sequence[Row], target_size: int, *, seed: int = 0,
                student_failed: Collection[str] | None = None,
                strata: Sequence[str] = DEFAULT_STRATA, stage: str = "select") -> StageResult:
    """Choose ``target_size`` rows balanced over ``strata``, preferring questions the student failed.

    ``student_failed`` holds prompt ids and/or question texts (compared
    normalised); when given, every row gets a ``student_failed`` flag. The
    selection is deterministic for a given input order and ``seed``.
    """
    if not isinstance(target_size, int) or target_size < 0:
        raise ValueError(f"target_size must be a non-negative int, got {target_size!r}")
    failed_keys = {str(k) for k in student_failed or ()} | {
        normalise_text(str(k)) for k in student_failed or ()}

    def failed(row: Row) -> bool:
        return (question_key(row) in failed_keys
                or normalise_text(row.get("question") or "") in failed_keys)

    groups: dict[Stratum, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[stratum_of(row, strata)].append(index)
    quota = allocate({s: len(ix) for s, ix in groups.items()}, target_size, seed)

    rng = random.Random(seed)
    chosen: set[int] = set()
    mix = []
    for stratum in sorted(groups, key=_sort_key):
        order = groups[stratum][:]
        rng.shuffle(order)
        rank_in_question: dict[int, int] = {}
        seen: Counter[str] = Counter()
        for index in order:
            key = question_key(rows[index])
            rank_in_question[index] = seen[key]
            seen[key] += 1
        order.sort(key=lambda i: (not failed(rows[i]), rank_in_question[i]))
        picked = order[: quota[stratum]]
        chosen.update(picked)
        mix.append({**dict(zip(strata, stratum)), "available": len(order),
                    "failed_available": sum(failed(rows[i]) for i in order),
                    "selected": len(picked), "failed_selected": sum(failed(rows[i]) for i in picked)})

    builder = StageBuilder(stage, n_in=len(rows))
    for index, row in enumerate(rows):
        out = {**row, "student_failed": failed(row)} if student_failed is not None else row
        if index in chosen:
            builder.keep(out)
        else:
            stratum = stratum_of(row, strata)
            label = ", ".join(f"{k}={v}" for k, v in zip(strata, stratum))
            builder.drop(out, "not_selected",
                         f"stratum {label} full ({quota[stratum]} of {len(groups[stratum])} taken)")
    columns = [*strata, "available", "failed_available", "selected", "failed_selected"]
    return builder.result(mix=pd.DataFrame(mix, columns=columns))
