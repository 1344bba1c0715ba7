"""Short English and Chinese contracts generated from templates, with exact gold fields.

The data of the contract-element extraction task (parties, amount, signing date, term, penalty)
lives in ``data/tasks/extraction/contracts.yaml``: template families with their split, value
pools per language and contract templates with ``{slots}``. Families ``A`` and ``B`` are the
training wordings and ``C`` the test wordings, so the test split measures extraction, not
memorised wording. Every gold value is an exact substring of its contract and occurs there once.
Generation is deterministic for a seed and a smoke run is a prefix of the full run. This module
makes the data only; prompts and rows are built elsewhere.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from ..core.config import REPO_ROOT

Split = Literal["train", "test"]
Lang = Literal["en", "zh"]
CONTRACTS_PATH: Path = REPO_ROOT / "data" / "tasks" / "extraction" / "contracts.yaml"
FIELDS = ("party_a", "party_b", "amount", "signing_date", "term", "penalty")
LANGS: tuple[Lang, ...] = ("en", "zh")
CONTEXT_SLOTS = ("goods", "services", "city", "contract_no", "third_party", "minor_amount", "quote_date")
TERM_KINDS = ("deadline", "duration")
PENALTY_KINDS = ("breach", "delay")
_ID_RE = re.compile(r"^([A-Z])-(en|zh)-\d{2}$")
_MONEY_SLOTS = {"num", "num2", "upper"}
_DATE_SLOTS = {"d", "dd", "m", "mm", "y", "month", "y_cn", "m_cn", "d_cn"}
_POOL_KEYS = ("companies", "cities", "goods", "services", "currencies", "dates", "contract_nos", "terms", "penalties")
_CN_UPPER = "零壹贰叁肆伍陆柒捌玖"
_CN_DATE = "〇一二三四五六七八九"
_FIRST_DAY, _DAYS = date(2022, 1, 1), 4 * 365


@dataclass(frozen=True)
class ContractTemplate:
    """One wording of a contract: its text with slots and the kinds of term and penalty it takes."""

    id: str  # <family>-<lang>-<nn>, e.g. "A-en-01"
    family: str
    split: Split
    lang: Lang
    term: str
    penalty: str
    text: str


@dataclass(frozen=True)
class ContractData:
    """Everything in the contracts file: families, numbers, field definitions, pools and templates."""

    families: Mapping[str, str]
    amount: tuple[int, int, int]
    numbers: Mapping[str, tuple[str, ...]]
    fields: Mapping[str, Mapping[str, str]]
    pools: Mapping[str, Mapping[str, Any]]
    templates: tuple[ContractTemplate, ...]


def _slots(text: str, where: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise ValueError(f"{where}: bad braces in {text!r} ({exc}).") from None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list.")
    return tuple(str(v) for v in value)


def _patterns(value: Any, allowed: set[str], where: str) -> tuple[str, ...]:
    """A pool of value patterns whose inner slots are all in ``allowed``."""
    patterns = _strings(value, where)
    for p in patterns:
        if unknown := sorted(set(_slots(p, where)) - allowed):
            raise ValueError(f"{where}: unknown slot(s) {unknown} in {p!r} (allowed: {sorted(allowed)}).")
    return patterns


def _kinds(value: Any, kinds: tuple[str, ...], allowed: set[str], where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict) or sorted(value) != sorted(kinds):
        raise ValueError(f"{where}: needs exactly the kinds {list(kinds)}.")
    return {k: _patterns(value[k], allowed, f"{where}.{k}") for k in kinds}


def _pools(raw: Any, numbers: set[str], where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of value pools.")
    if missing := [k for k in _POOL_KEYS if k not in raw]:
        raise ValueError(f"{where}: missing key(s) {missing}.")
    pools: dict[str, Any] = {k: _patterns(raw[k], set(), f"{where}.{k}")
                             for k in ("companies", "cities", "goods", "services")}
    if len(set(pools["companies"])) < 3:
        raise ValueError(f"{where}.companies: needs at least 3 different names.")
    pools["currencies"] = _patterns(raw["currencies"], _MONEY_SLOTS, f"{where}.currencies")
    pools["dates"] = _patterns(raw["dates"], _DATE_SLOTS, f"{where}.dates")
    pools["contract_nos"] = _patterns(raw["contract_nos"], {"y", "n"}, f"{where}.contract_nos")
    pools["terms"] = _kinds(raw["terms"], TERM_KINDS, numbers | {"due"}, f"{where}.terms")
    pools["penalties"] = _kinds(raw["penalties"], PENALTY_KINDS, numbers | {"fee"}, f"{where}.penalties")
    pools["months"] = tuple(str(m) for m in raw.get("months") or ())
    if any("{month}" in d for d in pools["dates"]) and len(pools["months"]) != 12:
        raise ValueError(f"{where}: a date pattern uses {{month}}, so `months` must list 12 month names.")
    return pools


def _template(spec: Any, families: Mapping[str, str], where: str) -> ContractTemplate:
    """Build a :class:`ContractTemplate` from one entry of the file and check it is consistent."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a template must be a mapping with id, term, penalty and text.")
    tid = str(spec.get("id", "?"))
    where = f"{where} ({tid})"
    if missing := [k for k in ("id", "term", "penalty", "text") if k not in spec]:
        raise ValueError(f"{where}: missing key(s) {missing}.")
    if not (m := _ID_RE.match(tid)):
        raise ValueError(f"{where}: id must look like <family>-<en|zh>-<nn>, e.g. 'A-en-01'.")
    family, lang = m.groups()
    if family not in families:
        raise ValueError(f"{where}: family {family!r} is not in families {sorted(families)}.")
    if spec["term"] not in TERM_KINDS or spec["penalty"] not in PENALTY_KINDS:
        raise ValueError(f"{where}: term must be one of {list(TERM_KINDS)} and penalty one of {list(PENALTY_KINDS)}.")
    text = str(spec["text"])
    slots = _slots(text, where)
    if unknown := sorted(set(slots) - set(FIELDS) - set(CONTEXT_SLOTS)):
        raise ValueError(f"{where}: unknown slot(s) {unknown} (allowed: {list(FIELDS + CONTEXT_SLOTS)}).")
    for f in FIELDS:
        if slots.count(f) != 1:
            raise ValueError(f"{where}: the field {{{f}}} must appear exactly once in the text, found {slots.count(f)}.")
    return ContractTemplate(id=tid, family=family, split=families[family], lang=lang,  # type: ignore[arg-type]
                            term=spec["term"], penalty=spec["penalty"], text=text)


@cache
def contract_data(path: Path = CONTRACTS_PATH) -> ContractData:
    """The contracts file, read and checked once; a problem raises ``ValueError`` naming it."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level.")
    if missing := [k for k in ("families", "amount", "numbers", "fields", *LANGS, "templates") if k not in raw]:
        raise ValueError(f"{path}: missing key(s) {missing}.")
    families = {str(k): str(v) for k, v in (raw["families"] or {}).items()}
    if not families or not set(families.values()) <= {"train", "test"}:
        raise ValueError(f"{path}: families must map letters to 'train' or 'test', got {families}.")
    amount = raw["amount"]
    if not (isinstance(amount, list) and len(amount) == 3 and 0 < amount[0] < amount[1] < 10**8 and amount[2] > 0):
        raise ValueError(f"{path}: amount must be [min, max, step] with 0 < min < max < 10**8, got {amount!r}.")
    numbers = {str(k): _strings(v, f"{path}: numbers.{k}") for k, v in (raw["numbers"] or {}).items()}
    fields = raw["fields"] or {}
    if sorted(fields) != sorted(FIELDS) or any(sorted(fields[f] or {}) != sorted(LANGS) for f in FIELDS):
        raise ValueError(f"{path}: fields must define {list(FIELDS)}, each in {list(LANGS)}.")
    pools = {lang: _pools(raw[lang], set(numbers), f"{path}: {lang}") for lang in LANGS}
    if not isinstance(raw["templates"], list):
        raise ValueError(f"{path}: templates must be a list.")
    templates = tuple(_template(spec, families, f"{path}: template {i + 1}") for i, spec in enumerate(raw["templates"]))
    ids = [t.id for t in templates]
    if duplicates := sorted({t for t in ids if ids.count(t) > 1}):
        raise ValueError(f"{path}: duplicate template ids {duplicates}.")
    return ContractData(families=families, amount=(int(amount[0]), int(amount[1]), int(amount[2])), numbers=numbers,
                        fields={f: {lang: str(fields[f][lang]) for lang in LANGS} for f in FIELDS},
                        pools=pools, templates=templates)


def _check(split: str | None, lang: str | None, need_split: bool = False) -> None:
    if split not in ("train", "test") + ((None,) if not need_split else ()):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if lang not in (None, *LANGS):
        raise ValueError(f"lang must be 'en', 'zh' or None, got {lang!r}.")


def contract_templates(split: Split | None = None, lang: Lang | None = None) -> list[ContractTemplate]:
    """The templates of one split and/or language (all of them by default), in file order."""
    _check(split, lang)
    return [t for t in contract_data().templates if split in (None, t.split) and lang in (None, t.lang)]


def field_definitions(lang: Lang = "en") -> dict[str, str]:
    """What each of :data:`FIELDS` means, in ``lang``: the words a prompt can reuse."""
    _check(None, lang)
    return {f: contract_data().fields[f][lang] for f in FIELDS}


def upper_rmb(n: int) -> str:
    """A whole sum in the capital numerals of Chinese contracts: 120000 -> ``"壹拾贰万元整"``."""
    if not 0 < n < 10**8:
        raise ValueError(f"upper_rmb needs 0 < n < 100,000,000, got {n}.")

    def section(x: int) -> str:
        out, zero = "", False
        for power, unit in ((3, "仟"), (2, "佰"), (1, "拾"), (0, "")):
            digit = x // 10**power % 10
            if digit:
                out += ("零" if zero and out else "") + _CN_UPPER[digit] + unit
            zero = not digit
        return out

    high, low = divmod(n, 10_000)
    text = section(high) + "万" if high else ""
    if low:
        text += ("零" if high and low < 1000 else "") + section(low)
    return text + "元整"


def _cn_number(n: int) -> str:
    """1..31 as in a Chinese date: 3 -> 三, 10 -> 十, 12 -> 十二, 30 -> 三十."""
    tens, units = divmod(n, 10)
    return (("" if tens == 1 else _CN_DATE[tens]) + "十" if tens else "") + (_CN_DATE[units] if units else "")


def _date_text(style: str, day: date, months: tuple[str, ...]) -> str:
    return style.format(d=day.day, dd=f"{day.day:02d}", m=day.month, mm=f"{day.month:02d}", y=day.year,
                        month=months[day.month - 1] if months else "", y_cn="".join(_CN_DATE[int(c)] for c in str(day.year)),
                        m_cn=_cn_number(day.month), d_cn=_cn_number(day.day))


def _share(total: int, rng: random.Random, low: float, high: float, step: int) -> int:
    """A smaller sum than ``total``: between ``low`` and ``high`` of it, rounded to ``step``."""
    return max(step, round(total * rng.uniform(low, high) / step) * step)


def _values(data: ContractData, t: ContractTemplate, rng: random.Random) -> dict[str, str]:
    """Draw every slot value of one contract (the same draws whichever slots the template uses)."""
    pools = data.pools[t.lang]
    party_a, party_b, third = rng.sample(sorted(set(pools["companies"])), 3)
    currency, style = rng.choice(pools["currencies"]), rng.choice(pools["dates"])
    low, high, step = data.amount
    total = rng.randrange(low, high + 1, step)
    signed = _FIRST_DAY + timedelta(days=rng.randrange(_DAYS))

    def money(x: int) -> str:
        return currency.format(num=f"{x:,}", num2=f"{x:,}.00", upper=upper_rmb(x))

    def when(day: date) -> str:
        return _date_text(style, day, pools["months"])

    inner = {k: rng.choice(v) for k, v in data.numbers.items()}
    inner.update(due=when(signed + timedelta(days=rng.randint(30, 540))), fee=money(_share(total, rng, 0.01, 0.1, step)))
    return {
        "party_a": party_a, "party_b": party_b, "third_party": third,
        "amount": money(total), "minor_amount": money(_share(total, rng, 0.02, 0.2, step)),
        "signing_date": when(signed), "quote_date": when(signed - timedelta(days=rng.randint(3, 60))),
        "term": rng.choice(pools["terms"][t.term]).format(**inner),
        "penalty": rng.choice(pools["penalties"][t.penalty]).format(**inner),
        "goods": rng.choice(pools["goods"]), "services": rng.choice(pools["services"]),
        "city": rng.choice(pools["cities"]),
        "contract_no": rng.choice(pools["contract_nos"]).format(y=signed.year, n=f"{rng.randint(1, 9999):04d}"),
    }


def _contract(split: Split, lang: Lang, seed: int, k: int, templates: list[ContractTemplate],
              seen: set[str], max_tries: int = 100) -> dict[str, Any]:
    """Contract ``k`` of one language stream: its template from a shuffled round, its values from its own stream."""
    key = f"contracts|{split}|{lang}|{seed}"
    order = random.Random(f"{key}|round|{k // len(templates)}").sample(templates, len(templates))
    template = order[k % len(templates)]
    for attempt in range(max_tries):
        rng = random.Random(f"{key}|{k}" + (f"|{attempt}" if attempt else ""))
        values = _values(contract_data(), template, rng)
        text = template.text.format(**values)
        gold = {f: values[f] for f in FIELDS}
        if text not in seen and all(text.count(v) == 1 for v in gold.values()):
            seen.add(text)
            return {"id": f"ct-{split}-{lang}-{k:05d}", "split": split, "lang": lang, "template_id": template.id,
                    "family": template.family, "text": text, "gold": gold}
    raise RuntimeError(f"Template {template.id} found no unique contract with unambiguous gold in {max_tries} tries.")


def make_contracts(split: Split, n: int, *, seed: int = 0, lang: Lang | None = None) -> list[dict[str, Any]]:
    """``n`` unique contracts of ``split`` with their gold :data:`FIELDS`.

    With ``lang=None`` the languages alternate (en, zh, en...), and the English
    items are exactly those of ``lang="en"``. Within a language, templates are
    used in shuffled rounds, so they appear equally often, and item ``k`` depends
    only on the seed and items before it: asking for more only appends.
    Ids are ``ct-<split>-<lang>-<k>``, ``k`` counting within the language.
    """
    _check(split, lang, need_split=True)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}.")
    langs: tuple[Lang, ...] = LANGS if lang is None else (lang,)
    templates = {lg: contract_templates(split, lg) for lg in langs}
    if empty := [lg for lg, found in templates.items() if not found]:
        raise ValueError(f"{CONTRACTS_PATH} has no {split} templates in {empty}.")
    seen: dict[str, set[str]] = {lg: set() for lg in langs}
    return [_contract(split, lg, seed, i // len(langs), templates[lg], seen[lg])
            for i, lg in ((i, langs[i % len(langs)]) for i in range(n))]
