"""Contract generator: determinism, prefix stability, exact gold, split hygiene, balance, file checks."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import yaml

from helpers.tasks.contracts import (
    CONTRACTS_PATH,
    FIELDS,
    contract_data,
    contract_templates,
    field_definitions,
    make_contracts,
    upper_rmb,
)

CJK = re.compile(r"[\u4e00-\u9fff]")
SLOT = re.compile(r"\{(\w+)\}")


@pytest.fixture(scope="module")
def train() -> list[dict]:
    return make_contracts("train", 120, seed=0)


@pytest.fixture(scope="module")
def held_out() -> list[dict]:
    return make_contracts("test", 60, seed=0)


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    assert make_contracts("train", 12, seed=3) == make_contracts("train", 12, seed=3)
    assert [x["text"] for x in make_contracts("train", 12, seed=3)] != [x["text"] for x in make_contracts("train", 12, seed=4)]


@pytest.mark.parametrize("lang", [None, "en", "zh"])
def test_a_smoke_run_is_a_prefix_of_the_full_run(lang) -> None:
    assert make_contracts("train", 7, seed=1, lang=lang) == make_contracts("train", 40, seed=1, lang=lang)[:7]
    assert make_contracts("test", 5, seed=1, lang=lang) == make_contracts("test", 23, seed=1, lang=lang)[:5]


def test_mixed_run_interleaves_the_single_language_runs(train) -> None:
    assert train[0::2] == make_contracts("train", 60, seed=0, lang="en")
    assert train[1::2] == make_contracts("train", 60, seed=0, lang="zh")


def test_item_shape_and_ids(train, held_out) -> None:
    for split, items in (("train", train), ("test", held_out)):
        ids = [x["id"] for x in items]
        assert len(set(ids)) == len(ids)
        for x in items:
            assert set(x) == {"id", "split", "lang", "template_id", "family", "text", "gold"}
            assert re.fullmatch(rf"ct-{split}-{x['lang']}-\d{{5}}", x["id"]) and x["split"] == split
            assert x["template_id"].startswith(f"{x['family']}-{x['lang']}-")


def test_every_gold_value_is_in_its_text_exactly_once(train, held_out) -> None:
    for x in train + held_out:
        assert tuple(x["gold"]) == FIELDS
        for field, value in x["gold"].items():
            assert isinstance(value, str) and value.strip() == value and value, (x["id"], field)
            assert x["text"].count(value) == 1, (x["id"], field, value)
        assert x["gold"]["party_a"] != x["gold"]["party_b"]


def test_no_two_identical_texts() -> None:
    texts = [x["text"] for x in make_contracts("train", 400, seed=2)]
    assert len(set(texts)) == len(texts)


def test_train_and_test_use_disjoint_templates_and_families(train, held_out) -> None:
    families = contract_data().families
    train_ids = {t.id for t in contract_templates("train")}
    test_ids = {t.id for t in contract_templates("test")}
    assert train_ids and test_ids and not train_ids & test_ids
    assert not {t.family for t in contract_templates("train")} & {t.family for t in contract_templates("test")}
    assert {x["template_id"] for x in train} <= train_ids and {x["template_id"] for x in held_out} <= test_ids
    assert all(families[x["family"]] == x["split"] for x in train + held_out)
    train_texts = {x["text"] for x in train}
    assert not train_texts & {x["text"] for x in held_out}


def test_enough_templates_per_language_and_split() -> None:
    for lang in ("en", "zh"):
        assert len(contract_templates("train", lang)) >= 6
        assert len(contract_templates("test", lang)) >= 3
        kinds = {(t.term, t.penalty) for t in contract_templates("train", lang)}
        assert {k for k, _ in kinds} == {"deadline", "duration"} and {p for _, p in kinds} == {"breach", "delay"}


def test_languages_alternate_and_balance(train) -> None:
    assert [x["lang"] for x in train[:6]] == ["en", "zh"] * 3
    assert Counter(x["lang"] for x in make_contracts("test", 9)) == {"en": 5, "zh": 4}
    assert {x["lang"] for x in make_contracts("train", 10, lang="zh")} == {"zh"}


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_template_is_used_early_and_equally_often(split) -> None:
    per_lang = max(len(contract_templates(split, lang)) for lang in ("en", "zh"))
    items = make_contracts(split, 2 * per_lang, seed=5)  # one round per language
    assert {x["template_id"] for x in items} == {t.id for t in contract_templates(split)}
    for lang in ("en", "zh"):
        n_templates = len(contract_templates(split, lang))
        counts = Counter(x["template_id"] for x in make_contracts(split, 3 * n_templates + 2, seed=5, lang=lang))
        assert len(counts) == n_templates and max(counts.values()) - min(counts.values()) <= 1


def test_chinese_texts_are_chinese_and_english_texts_are_not(train, held_out) -> None:
    for x in train + held_out:
        if x["lang"] == "zh":
            assert len(CJK.findall(x["text"])) > 40, x["id"]
        else:
            assert not CJK.search(x["text"]) and ".." not in x["text"], x["id"]


def test_templates_are_short_contracts() -> None:
    for t in contract_templates():
        lines = [line for line in t.text.splitlines() if line.strip()]
        assert 3 <= len(lines) <= 7, (t.id, len(lines))
        slots = SLOT.findall(t.text)
        assert all(slots.count(f) == 1 for f in FIELDS), t.id


def test_clause_order_varies_between_templates() -> None:
    for lang in ("en", "zh"):
        orders = {tuple(s for s in SLOT.findall(t.text) if s in FIELDS) for t in contract_templates(lang=lang)}
        assert len(orders) >= 5, lang
        assert any(o.index("party_b") < o.index("party_a") for o in orders)
        assert any(o.index("penalty") < o.index("term") for o in orders)


def test_field_definitions_and_cached_loader() -> None:
    assert contract_data() is contract_data()
    for lang in ("en", "zh"):
        defs = field_definitions(lang)
        assert tuple(defs) == FIELDS and all(defs.values())


def test_upper_rmb() -> None:
    assert upper_rmb(120_000) == "壹拾贰万元整"
    assert upper_rmb(45_000) == "肆万伍仟元整"
    assert upper_rmb(100_500) == "壹拾万零伍佰元整"
    assert upper_rmb(1_050) == "壹仟零伍拾元整"
    assert upper_rmb(640_650) == "陆拾肆万零陆佰伍拾元整"
    assert upper_rmb(8) == "捌元整"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        make_contracts("dev", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        make_contracts(None, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lang"):
        make_contracts("train", 3, lang="fr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        make_contracts("train", -1)
    assert make_contracts("train", 0) == []


def _template_spec(raw: dict, tid: str) -> dict:
    return next(t for t in raw["templates"] if t["id"] == tid)


def _drop_text_key(raw: dict) -> None:
    del _template_spec(raw, "A-en-02")["text"]


def _unknown_slot(raw: dict) -> None:
    _template_spec(raw, "A-en-02")["text"] += " Colour: {colour}."


def _unknown_family(raw: dict) -> None:
    _template_spec(raw, "A-en-02")["id"] = "Z-en-02"


def _no_penalty(raw: dict) -> None:
    spec = _template_spec(raw, "A-en-02")
    spec["text"] = spec["text"].replace("{penalty}", "a fine")


def _twice_amount(raw: dict) -> None:
    _template_spec(raw, "A-en-02")["text"] += " Again: {amount}."


def _bad_term_kind(raw: dict) -> None:
    _template_spec(raw, "A-en-02")["term"] = "forever"


def _duplicate_id(raw: dict) -> None:
    _template_spec(raw, "A-en-02")["id"] = "A-en-01"


def _pool_unknown_slot(raw: dict) -> None:
    raw["zh"]["terms"]["deadline"].append("{weeks}周内")


def _missing_pool(raw: dict) -> None:
    del raw["en"]["currencies"]


def _missing_families(raw: dict) -> None:
    del raw["families"]


@pytest.mark.parametrize("break_it, message", [
    (_drop_text_key, r"\(A-en-02\): missing key\(s\) \['text'\]"),
    (_unknown_slot, r"\(A-en-02\): unknown slot\(s\) \['colour'\]"),
    (_unknown_family, r"\(Z-en-02\): family 'Z' is not in families"),
    (_no_penalty, r"\(A-en-02\): the field \{penalty\} must appear exactly once"),
    (_twice_amount, r"\(A-en-02\): the field \{amount\} must appear exactly once in the text, found 2"),
    (_bad_term_kind, r"\(A-en-02\): term must be one of"),
    (_duplicate_id, r"duplicate template ids \['A-en-01'\]"),
    (_pool_unknown_slot, r"zh\.terms\.deadline: unknown slot\(s\) \['weeks'\]"),
    (_missing_pool, r"en: missing key\(s\) \['currencies'\]"),
    (_missing_families, r"missing key\(s\) \['families'\]"),
])
def test_a_bad_file_names_the_file_the_template_and_the_problem(tmp_path, break_it, message) -> None:
    raw = yaml.safe_load(CONTRACTS_PATH.read_text(encoding="utf-8"))
    break_it(raw)
    path = tmp_path / "contracts.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        contract_data(path)
    assert str(path) in str(info.value)


def test_the_real_file_round_trips_through_a_temp_copy(tmp_path) -> None:
    path = tmp_path / "contracts.yaml"
    path.write_text(CONTRACTS_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    assert contract_data(path).templates == contract_data().templates
