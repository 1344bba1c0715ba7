"""Human review of curated rows before training: a sample, a decision log, an estimate, a queue.

Verifiers read the final answer and filters catch the failures someone wrote a rule
for; a person also sees a wrong step behind a right number, a broken format, an odd
reply. Nobody reads 3,000 rows, so a stratified random sample is read instead
(:func:`review_sample`) and the share of bad rows in the whole set is *estimated*
from it with a Wilson 95% interval (:func:`bad_share_estimate`).

Each decision (accept, reject with a reason from ``data/review_reasons.json``, edit
the reply) is appended to a JSONL log the moment it is made (:func:`append_decision`,
through :mod:`helpers.core.jsonl`), so a review survives a kernel restart. The last
decision per row id wins: reviewers can share a log and change their minds.
:func:`review_stage` applies the log as a curation stage for the :class:`Funnel`
(rejected rows dropped with the reason, edited replies replaced, unreviewed rows
kept or dropped); :func:`apply_reviews` returns ``(rows, stats)``.

:class:`ReviewQueue` (in :mod:`.review_queue`) is the ipywidgets
queue; its buttons call plain methods that tests call directly. :func:`~.review_queue.start_review`
skips it when nobody can click (:func:`headless`: tests, ``make course``, ``REVIEW=0``).
"""

from __future__ import annotations

import copy
import getpass
import json
import logging
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import pandas as pd

from ..core.config import REPO_ROOT
from ..core.jsonl import JsonlAppender, read_jsonl
from ..core.rows import Row, answer_of, field_of, natural_key, row_id, thinking_of, with_reply
from ..core.stats import wilson_interval
from ..tasks.checks import answer_still_correct
from ..teacher.parsing import split_thinking
from .funnel import StageBuilder, StageResult

log = logging.getLogger(__name__)

REASONS_PATH: Path = REPO_ROOT / "data" / "review_reasons.json"
DECISIONS: tuple[str, ...] = ("accept", "reject", "edit")
STAGE = "human_review"
"""The stage name in the funnel."""
HEADLESS_ENV = "COURSE_HEADLESS"
"""``COURSE_HEADLESS=1``: no person at the screen, skip the queue (``REVIEW=0`` too; ``REVIEW=1`` forces it)."""

Decision = dict[str, Any]
"""One log line: ``id, decision, reason, reply, reviewer, time``."""
StrataKey = Union[str, Sequence[str], Callable[[Row], Any], None]
Decisions = Union[str, Path, Mapping[str, Decision], Iterable[Decision], None]


# --------------------------------------------------------------------------- reasons and decisions


@lru_cache(maxsize=8)
def _reason_table(path: str) -> tuple[dict[str, str], ...]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    reasons = data.get("reasons") if isinstance(data, dict) else None
    if not reasons or not all(isinstance(r, dict) and r.get("code") and r.get("en") for r in reasons):
        raise ValueError(f"{path} must hold {{'reasons': [{{'code', 'en', 'zh-CN'}}, ...]}}.")
    return tuple(reasons)


def load_reasons(lang: str = "en", path: str | Path | None = None) -> dict[str, str]:
    """The reject reasons, ``{code: label}`` in the file's order, labels in ``lang`` (else English)."""
    return {r["code"]: r.get(lang) or r["en"] for r in _reason_table(str(path or REASONS_PATH))}


def reason_code(reason: str | None) -> str | None:
    """The code of a stored reason: ``"wrong_answer: 7*8 is not 54"`` -> ``"wrong_answer"``; free text -> ``"other"``."""
    if not reason or not reason.strip():
        return None
    code = reason.split(":", 1)[0].strip()
    return code if code in load_reasons() else "other"


def default_reviewer() -> str:
    """``$REVIEWER``, else the login name, else ``"reviewer"``."""
    name = os.environ.get("REVIEWER", "").strip()
    if name:
        return name
    try:
        return getpass.getuser() or "reviewer"
    except (KeyError, OSError):  # a container user without a passwd entry
        return "reviewer"


def make_decision(row_or_id: Row | str, decision: str, *, reviewer: str, reason: str | None = None,
                  reply: str | None = None, time: str | None = None) -> Decision:
    """A checked log line; a rejection needs a reason, an edit the new reply."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
    if not str(reviewer or "").strip():
        raise ValueError("Say who reviewed (reviewer=...): shared logs need it.")
    reason = reason.strip() if reason and reason.strip() else None
    if decision == "reject" and reason is None:
        raise ValueError(f"A rejection needs a reason: one of {list(load_reasons())} or free text.")
    if decision == "edit" and not (reply or "").strip():
        raise ValueError("An edit needs the new reply text.")
    rid = row_or_id if isinstance(row_or_id, str) else row_id(row_or_id)
    return {"id": rid, "decision": decision, "reason": reason,
            "reply": reply if decision == "edit" else None, "reviewer": str(reviewer).strip(),
            "time": time or datetime.now(timezone.utc).isoformat(timespec="seconds")}


def append_decision(path: str | Path, decision: Decision) -> Decision:
    """Append one decision to the log, flushed and synced at once (opening repairs a torn last line)."""
    with JsonlAppender(path) as out:
        out.write(decision)
    return decision


def load_decisions(path: str | Path) -> dict[str, Decision]:
    """The last decision per row id in the log (file order); ``{}`` when there is no log yet.

    A torn last line (a killed kernel) is skipped here and cut away by the next append.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    latest: dict[str, Decision] = {}
    for value in read_jsonl(path, tolerant=True):
        if not isinstance(value, dict) or value.get("id") is None or value.get("decision") not in DECISIONS:
            log.warning("%s: skipping a line that is not a review decision: %.80r", path, value)
            continue
        latest.pop(str(value["id"]), None)
        latest[str(value["id"])] = value
    return latest


def latest_decisions(decisions: Decisions) -> dict[str, Decision]:
    """``{id: last decision}`` from a log path, a mapping already in that form, or decisions in order."""
    if decisions is None:
        return {}
    if isinstance(decisions, (str, Path)):
        return load_decisions(decisions)
    if isinstance(decisions, Mapping):
        return {str(k): v for k, v in decisions.items()}
    latest: dict[str, Decision] = {}
    for d in decisions:
        latest.pop(str(d["id"]), None)
        latest[str(d["id"])] = d
    return latest


# --------------------------------------------------------------------------- sampling and the estimate


def stratum_value(row: Row, strata_key: StrataKey) -> Any:
    """A row's stratum: a field (``row`` or ``row["meta"]``), a tuple of fields, or ``strata_key(row)``."""
    if strata_key is None:
        return None
    if callable(strata_key):
        return strata_key(row)
    if isinstance(strata_key, str):
        return field_of(row, strata_key)
    return tuple(field_of(row, key) for key in strata_key)


def _order(stratum: Any) -> tuple[Any, ...]:
    values = stratum if isinstance(stratum, tuple) else (stratum,)
    return tuple(natural_key(v) for v in values)


def allocate_proportional(sizes: Mapping[Any, int], n: int, seed: int = 0) -> dict[Any, int]:
    """Split ``n`` over strata in proportion to their sizes, at least one each when ``n`` allows.

    Largest remainder, one seat at a time to the stratum furthest below its
    proportional share; a seeded shuffle breaks ties. A stratum never gets more than it has.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    total = sum(sizes.values())
    strata = sorted((s for s in sizes if sizes[s] > 0), key=_order)
    random.Random(seed).shuffle(strata)
    quota = {s: 0 for s in sizes}
    n = min(n, total)
    if n >= len(strata):
        quota.update({s: 1 for s in strata})
    for _ in range(n - sum(quota.values())):
        open_strata = [s for s in strata if quota[s] < sizes[s]]
        best = max(open_strata, key=lambda s: n * sizes[s] / total - quota[s])
        quota[best] += 1
    return quota


def review_sample(rows: Sequence[Row], n: int, *, strata_key: StrataKey = "task", seed: int = 0) -> list[Row]:
    """``n`` rows to review, stratified over ``strata_key`` (proportional, >= 1 per stratum where possible).

    Deterministic for the same rows (in the same order) and seed; returned in a
    seeded random order, so a reviewer does not read one stratum after the other.
    """
    groups: dict[Any, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[stratum_value(row, strata_key)].append(index)
    quota = allocate_proportional({s: len(ix) for s, ix in groups.items()}, n, seed)
    rng = random.Random(seed)
    picked: list[int] = []
    for stratum in sorted(groups, key=_order):
        picked += rng.sample(groups[stratum], quota[stratum])
    rng.shuffle(picked)
    return [rows[i] for i in picked]


@dataclass(frozen=True)
class BadShare:
    """The estimated share of bad (rejected) rows in the population, with its 95% interval."""

    reviewed: int
    rejected: int
    edited: int
    share: float
    low: float
    high: float
    population_size: int
    method: str
    note: str = ""

    @property
    def bad_rows(self) -> int:
        return round(self.share * self.population_size)

    @property
    def bad_rows_range(self) -> tuple[int, int]:
        return math.floor(self.low * self.population_size), math.ceil(self.high * self.population_size)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bad_rows": self.bad_rows, "bad_rows_range": self.bad_rows_range}

    def summary(self) -> str:
        """E.g. ``"2 of 20 reviewed rows rejected: bad share 10% (95% CI 3%–30%), ~300 (84–903) of 3000 rows"``."""
        if not self.reviewed:
            return f"no row of the sample reviewed yet: no estimate for the {self.population_size} rows"
        low, high = self.bad_rows_range
        edited = f", {self.edited} edited" if self.edited else ""
        weighted = "stratum-weighted " if self.method.startswith("stratum") else ""
        return (f"{self.rejected} of {self.reviewed} reviewed rows rejected{edited}: {weighted}bad share "
                f"{self.share:.0%} (95% CI {self.low:.0%}–{self.high:.0%}), ~{self.bad_rows} ({low}–{high}) "
                f"of {self.population_size} rows")


def bad_share_estimate(decisions: Decisions, sample: Sequence[Row], population_size: int | None = None, *,
                       strata_key: StrataKey = None, population: Sequence[Row] | None = None,
                       z: float = 1.96) -> BadShare:
    """The share of rejected rows among the reviewed rows of ``sample``, generalised to the population.

    Without ``strata_key``: the plain share with a Wilson interval (as if the sample
    were simple random; with proportional allocation that is close). With it: each
    stratum's share weighted by its size in ``population`` (else in the sample), and a
    Wilson interval on the effective sample size ``p(1-p) / Σ W²·p_h(1-p_h)/n_h`` (the
    plain ``n`` when that variance is 0). No finite-population correction: a bit wide.
    """
    latest = latest_decisions(decisions)
    reviewed = [(row, latest[row_id(row)]["decision"]) for row in sample if row_id(row) in latest]
    n = len(reviewed)
    k = sum(d == "reject" for _, d in reviewed)
    edited = sum(d == "edit" for _, d in reviewed)
    size = population_size if population_size is not None else len(population if population is not None else sample)
    simple = "Wilson score interval on the reviewed rows (simple random sample)"
    if strata_key is None or n == 0:
        low, high = wilson_interval(k, n, z)
        return BadShare(n, k, edited, k / n if n else 0.0, low, high, size, simple)
    weights = Counter(stratum_value(r, strata_key) for r in (population if population is not None else sample))
    per: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for row, decision in reviewed:
        cell = per[stratum_value(row, strata_key)]
        cell[0] += 1
        cell[1] += decision == "reject"
    total = sum(weights.get(s, 0) for s in per)
    if total == 0:
        low, high = wilson_interval(k, n, z)
        return BadShare(n, k, edited, k / n, low, high, size, simple, "sample strata not in the population")
    share = sum(weights.get(s, 0) / total * bad / m for s, (m, bad) in per.items())
    variance = sum((weights.get(s, 0) / total) ** 2 * (bad / m) * (1 - bad / m) / m for s, (m, bad) in per.items())
    n_eff = share * (1 - share) / variance if variance > 0 and 0 < share < 1 else n
    low, high = wilson_interval(share * n_eff, n_eff, z)
    missing = [s for s in weights if s not in per]
    note = (f"{len(missing)} of {len(weights)} strata have no reviewed row yet; assumed like the rest"
            if missing else "")
    return BadShare(n, k, edited, share, low, high, size,
                    f"stratum-weighted share, Wilson interval on the effective sample size ({n_eff:.1f})", note)


# --------------------------------------------------------------------------- applying the decisions


def reply_text(row: Row) -> str:
    """The reply as the student will learn it (as :func:`helpers.curate.export.assistant_text`), or the
    last assistant message of an exported ``messages`` row."""
    messages = row.get("messages")
    if isinstance(messages, list) and messages and messages[-1].get("role") == "assistant":
        return messages[-1].get("content") or ""
    thinking, answer = thinking_of(row).strip(), answer_of(row).strip()
    return f"<think>\n{thinking}\n</think>\n\n{answer}" if thinking else answer


def with_edited_reply(row: Row, text: str) -> Row:
    """A copy of ``row`` whose reply is ``text`` (split into thinking and answer for a sample row)."""
    messages = row.get("messages")
    if isinstance(messages, list) and messages and messages[-1].get("role") == "assistant":
        new = copy.deepcopy(row)
        new["messages"][-1]["content"] = text
        return new
    parsed = split_thinking(text, expect_boxed=False)
    return with_reply(row, thinking=parsed.thinking, answer=parsed.answer, raw=text)


def review_stage(rows: Sequence[Row], decisions: Decisions, *, unreviewed: str = "keep",
                 check_edits: bool = True, stage: str = STAGE) -> StageResult:
    """The review as a curation stage: ``funnel.add(review_stage(rows, log_path))``.

    Rejected rows are dropped with reason ``reviewer_<code>`` (``reviewer_wrong_answer``)
    and the reviewer's words as detail; edited rows get the new reply; unreviewed rows
    are kept (``unreviewed="keep"``) or dropped as ``not_reviewed``. Every reviewed row
    carries ``review`` (decision, reason, reviewer, time; for an edit the original reply
    and, with ``check_edits``, the edited answer checked against the reference).
    ``tables["decisions"]`` lists the decisions applied.
    """
    if unreviewed not in ("keep", "drop"):
        raise ValueError(f"unreviewed must be 'keep' or 'drop', got {unreviewed!r}")
    latest = latest_decisions(decisions)
    builder = StageBuilder(stage, n_in=len(rows))
    records = []
    for row in rows:
        rid = row_id(row)
        decision = latest.get(rid)
        if decision is None:
            if unreviewed == "drop":
                builder.drop(row, "not_reviewed", "no reviewer decision (unreviewed='drop')")
            else:
                builder.keep(row)
            continue
        audit = {k: decision.get(k) for k in ("decision", "reason", "reviewer", "time")}
        records.append({"row": rid, **audit})
        if decision["decision"] == "reject":
            builder.drop({**row, "review": audit}, f"reviewer_{reason_code(decision.get('reason')) or 'other'}",
                         f"{decision.get('reviewer')}: {decision.get('reason')}")
        elif decision["decision"] == "edit":
            out = with_edited_reply(row, decision["reply"])
            audit["original_reply"] = reply_text(row)
            if check_edits and "messages" not in row:
                audit["check"] = answer_still_correct(row, answer_of(out)).as_dict()
            out["review"] = audit
            builder.keep(out)
        else:
            builder.keep({**row, "review": audit})
    return builder.result(decisions=pd.DataFrame(records, columns=["row", "decision", "reason", "reviewer", "time"]))


def apply_reviews(rows: Sequence[Row], decisions: Decisions, *,
                  unreviewed: str = "keep") -> tuple[list[Row], dict[str, Any]]:
    """``(kept rows, stats)``: :func:`review_stage` without the funnel; ``stats["stage"]`` is its result."""
    latest = latest_decisions(decisions)
    result = review_stage(rows, latest, unreviewed=unreviewed)
    applied = Counter(latest[row_id(r)]["decision"] for r in rows if row_id(r) in latest)
    failing = sum(1 for r in result.kept if (r.get("review") or {}).get("check", {}).get("correct") is False)
    stats = {"rows_in": len(rows), "kept": result.n_kept, "dropped": result.n_dropped,
             "accepted": applied["accept"], "rejected": applied["reject"], "edited": applied["edit"],
             "unreviewed": len(rows) - sum(applied.values()), "unreviewed_policy": unreviewed,
             "reject_reasons": {k.removeprefix("reviewer_"): v for k, v in result.drop_counts.items()
                                if k.startswith("reviewer_")},
             "edits_failing_check": failing,
             "unknown_ids": sorted(set(latest) - {row_id(r) for r in rows}), "stage": result}
    return result.kept, stats


# --------------------------------------------------------------------------- headless runs


def headless_reason(env: Mapping[str, str] | None = None, *, check_frontend: bool = True) -> str:
    """Why nobody can click a widget now (``""``: a person is probably there).

    ``REVIEW=0`` or ``COURSE_HEADLESS=1`` (set it for papermill); a pytest/nbmake run, a
    ``make course`` run (``COURSE_RUN_DIR``), CI; else, with ``check_frontend``, no Jupyter
    kernel. ``REVIEW=1`` forces the queue.
    """
    env = os.environ if env is None else env
    review = env.get("REVIEW", "").strip()
    if review == "1":
        return ""
    if review == "0":
        return "REVIEW=0"
    if env.get(HEADLESS_ENV, "").strip().lower() in ("1", "true", "yes"):
        return f"{HEADLESS_ENV}=1"
    for var, what in (("PYTEST_CURRENT_TEST", "a pytest / nbmake run"),
                      ("COURSE_RUN_DIR", "a headless course run (make course)"),
                      ("CI", "a CI run")):
        if env.get(var, "").strip().lower() not in ("", "0", "false"):
            return what
    if check_frontend:
        try:
            from IPython import get_ipython
        except ImportError:
            return "no IPython"
        if getattr(get_ipython(), "kernel", None) is None:
            return "not in a Jupyter kernel"
    return ""


def headless(env: Mapping[str, str] | None = None, *, check_frontend: bool = True) -> bool:
    """True when no person can use the review queue now (see :func:`headless_reason`)."""
    return bool(headless_reason(env, check_frontend=check_frontend))
