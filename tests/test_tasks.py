"""Task data: word-problem generator, split hygiene, gsm8k loader/export, headlines, extraction."""

from __future__ import annotations

import json
import operator
import re
from collections import Counter

import pytest

from helpers.tasks import gsm8k as gsm8k_module
from helpers.tasks import word_problems as word_problems_module
from helpers.tasks.gsm8k import (
    DatasetUnavailable,
    evalscope_gsm8k_path,
    gsm8k_dir,
    gsm8k_rows,
    load_gsm8k,
    write_gsm8k_jsonl,
)
from helpers.tasks.headlines import headline_rows, load_headlines, load_labels
from helpers.tasks.word_problems import (
    fewshot_problems,
    make_word_problems,
    match_template,
    templates_for,
    word_data,
    word_problem_rows,
)

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
ROW_KEYS = {"id", "messages", "question", "reference", "task", "meta"}


def ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    toks = re.findall(r"\{\w+\}|\$|[\w']+", text.lower())
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


@pytest.fixture(scope="module")
def train():
    return make_word_problems("train", 600, seed=0)


@pytest.fixture(scope="module")
def test_split():
    return make_word_problems("test", 600, seed=0)


# --------------------------------------------------------------------------- templates and splits


def test_enough_templates_per_split_and_step():
    for split in ("train", "test"):
        for steps in (1, 2, 3):
            assert len(templates_for(split, steps)) >= 10, (split, steps)
    assert {t.split for t in word_data().templates} == {"train", "test"}


def test_template_ids_and_phrasing_never_shared_between_splits():
    train_t, test_t = templates_for("train"), templates_for("test")
    assert not {t.id for t in train_t} & {t.id for t in test_t}
    assert not {t.family for t in train_t} & {t.family for t in test_t}
    train_grams = set().union(*(ngrams(t.text) for t in train_t))
    test_grams = set().union(*(ngrams(t.text) for t in test_t))
    assert not train_grams & test_grams


def test_generated_test_questions_share_no_8gram_with_train(train, test_split):
    train_grams = set().union(*(ngrams(p.question) for p in train))
    leaked = [p.question for p in test_split if ngrams(p.question) & train_grams]
    assert not leaked, leaked[:3]


def test_splits_share_vocabulary(train, test_split):
    def words(ps):
        return {w for p in ps for w in re.findall(r"[a-z]+", p.question.lower())}
    shared = words(train) & words(test_split)
    assert {"km", "kg", "minutes", "dollars"} <= shared
    assert {"tom", "anna", "apples"} & shared


def test_questions_trace_back_to_their_own_template(train, test_split):
    for p in train[:150] + test_split[:150]:
        t = match_template(p.question)
        assert t is not None and t.split == p.split == word_data().families[p.family]


# --------------------------------------------------------------------------- generator


def test_deterministic_and_prefix_stable():
    a = make_word_problems("train", 40, seed=3)
    assert a == make_word_problems("train", 40, seed=3)
    assert make_word_problems("train", 90, seed=3)[:40] == a
    assert [p.question for p in make_word_problems("train", 40, seed=4)] != [p.question for p in a]


def test_answers_recomputed_from_recorded_operations(train, test_split):
    for p in train + test_split:
        assert len(p.equations) == p.steps == len(p.ops) == len(p.solution)
        results: list[int] = []
        numbers_in_question = {int(x) for x in re.findall(r"\d+", p.question)}
        for eq, op in zip(p.equations, p.ops):
            assert eq.op == op
            if op == "/":
                assert eq.left % eq.right == 0 and eq.left // eq.right == eq.result
            else:
                assert OPS[op](eq.left, eq.right) == eq.result
            for x in (eq.left, eq.right):  # every operand is in the question or an earlier result
                assert x in numbers_in_question or x in results, (p.question, eq)
            assert 1 <= eq.result < 1000
            results.append(eq.result)
        assert p.answer == results[-1] > 0
        for line, eq in zip(p.solution, p.equations):
            assert line.endswith(f"{eq.left} {eq.op} {eq.right} = {eq.result}.")


def test_steps_balanced_and_questions_unique(train, test_split):
    for problems in (train, test_split):
        counts = Counter(p.steps for p in problems)
        assert set(counts) == {1, 2, 3} and max(counts.values()) - min(counts.values()) <= 1
        assert len({p.question for p in problems}) == len(problems)
        assert len({p.id for p in problems}) == len(problems)
        # every template of the split gets used
        assert {p.template_id for p in problems} == {t.id for t in templates_for(problems[0].split)}
    only_two = make_word_problems("test", 30, seed=0, steps=(2,))
    assert {p.steps for p in only_two} == {2}


def test_operands_stay_small(train, test_split):
    operands = [x for p in train + test_split for eq in p.equations for x in (eq.left, eq.right)]
    assert sum(x < 100 for x in operands) / len(operands) > 0.9
    for p in train + test_split:
        for eq in p.equations:
            if eq.op in "*/":
                assert min(eq.left, eq.right) <= 12


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="split"):
        make_word_problems("dev", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        make_word_problems("train", 3, steps=(4,))
    with pytest.raises(ValueError, match="n must"):
        make_word_problems("train", -1)


# --------------------------------------------------------------------------- few-shot and rows


def test_fewshot_problems_come_from_train_families_only():
    for seed in range(5):
        for steps in (None, 1, 2, 3):
            problems = fewshot_problems(4, seed=seed, steps=steps)
            assert all(word_data().families[p.family] == "train" for p in problems)
            assert all(match_template(p.question).split == "train" for p in problems)
            assert len({p.template_id for p in problems}) == 4
            if steps:
                assert {p.steps for p in problems} == {steps}
    mixed = fewshot_problems(3, seed=0)
    assert [p.steps for p in mixed] == [1, 2, 3]
    first = fewshot_problems(3, seed=0, steps=1)
    again = fewshot_problems(3, seed=0, steps=1, exclude={first[0].question})
    assert first[0].question not in {p.question for p in again}


def test_word_problem_rows_schema_and_shots():
    rows = word_problem_rows("test", 9, seed=0, shots=3)
    for row in rows:
        assert set(row) == ROW_KEYS and row["task"] == "word_problem"
        assert row["reference"] == str(int(row["reference"]))
        assert set(row["meta"]) >= {"steps", "family", "template_id", "ops"}
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system"] + ["user", "assistant"] * 3 + ["user"]
        assert row["messages"][-1]["content"].startswith(row["question"])
        shot_questions = [m["content"].split("\n")[0] for m in row["messages"][1:-1:2]]
        assert all(match_template(q).split == "train" for q in shot_questions)
        assert all(match_template(q).steps == row["meta"]["steps"] for q in shot_questions)
        json.dumps(row)  # serialisable as a JSONL line
    zero = word_problem_rows("test", 3, seed=0, shots=0, system=False)
    assert [[m["role"] for m in r["messages"]] for r in zero] == [["user"]] * 3


def test_train_rows_never_show_their_own_question_as_exemplar(monkeypatch):
    # Force the worst case: the rows to build ARE the few-shot problems of the same seed.
    collide = fewshot_problems(3, seed=0, steps=1)
    monkeypatch.setattr(word_problems_module, "make_word_problems", lambda *a, **k: collide)
    rows = word_problem_rows("train", 3, seed=0, shots=3)
    for row in rows:
        shown = [m["content"].split("\n")[0] for m in row["messages"][1:-1:2]]
        assert len(shown) == 3 and row["question"] not in shown


# --------------------------------------------------------------------------- gsm8k export and loading


def test_write_gsm8k_jsonl_roundtrip(tmp_path, train):
    problems = train[:5]
    path = write_gsm8k_jsonl(problems, tmp_path / "wp" / "main_test.jsonl")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [x["question"] for x in lines] == [p.question for p in problems]
    for x, p in zip(lines, problems):
        solution, _, number = x["answer"].rpartition("\n#### ")
        assert int(number) == p.answer and solution == p.solution_text
    rows = word_problem_rows("train", 3, seed=0, shots=0)
    lines = [json.loads(line) for line in write_gsm8k_jsonl(rows, tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [x["answer"].rsplit("#### ", 1)[1] for x in lines] == [r["reference"] for r in rows]
    with pytest.raises(ValueError, match="reference"):
        write_gsm8k_jsonl([{"question": "q", "reference": None}], tmp_path / "bad.jsonl")
    assert evalscope_gsm8k_path(tmp_path).name == "main_test.jsonl"


def test_evalscope_gsm8k_adapter_reads_our_export(tmp_path, train):
    from evalscope.benchmarks.gsm8k.gsm8k_adapter import GSM8KAdapter  # a declared dependency: must import

    path = write_gsm8k_jsonl(train[:2], tmp_path / "x.jsonl")
    record = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    sample = GSM8KAdapter.record_to_sample(object.__new__(GSM8KAdapter), record)
    assert sample.target == str(train[0].answer) and sample.input == train[0].question


@pytest.fixture
def gsm8k_local():
    directory = gsm8k_dir()
    if directory is None:
        pytest.skip("no local gsm8k copy (set GSM8K_DIR or add shared/datasets/gsm8k)")
    return directory


def test_load_gsm8k_local(gsm8k_local):
    rows = load_gsm8k("test", limit=20)
    assert len(rows) == 20 and rows[0]["id"] == "gsm8k-test-00000"
    first = json.loads((gsm8k_local / "test.jsonl").open(encoding="utf-8").readline())
    assert rows[0]["question"] == first["question"]
    assert rows[0]["reference"] == first["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", r["reference"]) for r in rows)


def test_gsm8k_rows_zero_and_few_shot(gsm8k_local):
    zero = gsm8k_rows("test", 3)
    assert all(set(r) == ROW_KEYS and r["task"] == "gsm8k" for r in zero)
    assert [m["role"] for m in zero[0]["messages"]] == ["system", "user"]
    few = gsm8k_rows("test", 2, shots=2)
    assistant = few[0]["messages"][2]["content"]
    assert [m["role"] for m in few[0]["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "<<" not in assistant and re.search(r"<answer>\\boxed\{-?[\d.]+\}</answer>$", assistant)


def test_gsm8k_missing_in_offline_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(gsm8k_module, "gsm8k_dir", lambda: None)
    monkeypatch.setenv("COURSE_PROFILE", "offline")
    with pytest.raises(DatasetUnavailable, match="GSM8K_DIR.*COURSE_PROFILE=gpu"):
        load_gsm8k("test")


def test_gsm8k_dir_env_override(tmp_path, monkeypatch):
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 1,002"}) + "\n", encoding="utf-8")
    monkeypatch.setenv("GSM8K_DIR", str(tmp_path))
    assert gsm8k_dir() == tmp_path
    assert load_gsm8k("test") == [
        {"id": "gsm8k-test-00000", "question": "1+1?", "answer": "1+1=2\n#### 1,002", "reference": "1002"}]


# --------------------------------------------------------------------------- classification and extraction


def test_headlines_balanced_with_fixed_split():
    rows = load_headlines("all", lang=None)
    labels = load_labels()
    assert len(rows) == 400 and Counter(r["lang"] for r in rows) == {"en": 200, "zh": 200}
    per_label = Counter(r["label"] for r in rows)
    assert set(per_label) == set(labels) and len(set(per_label.values())) == 1
    for split in ("train", "test"):
        counts = Counter(r["label"] for r in rows if r["split"] == split)
        assert len(set(counts.values())) == 1 and set(counts) == set(labels)
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["text"].lower() for r in rows}) == len(rows)
    train_ids = {r["id"] for r in load_headlines("train", lang=None)}
    test_ids = {r["id"] for r in load_headlines("test", lang=None)}
    assert not train_ids & test_ids and len(train_ids | test_ids) == len(rows)
    # the split is stored in the file, so it is the same on every call
    assert {r["id"] for r in load_headlines("test", lang=None)} == test_ids


def test_worked_headline_exemplars_are_not_in_the_dataset():
    from helpers.core.jsonl import read_jsonl
    from helpers.tasks.headlines import headline_task

    task = headline_task()
    examples = read_jsonl(task.folder / "exemplars.jsonl")
    assert {e["lang"] for e in examples} == {"en", "zh"}
    texts = {r["text"].lower() for r in load_headlines(lang=None)}
    for e in examples:
        assert e["answer"] == f"<answer>{next(iter(k for k in task.labels if k in e['answer']))}</answer>"
        assert e["input"].lower() not in texts


def test_headline_rows():
    rows = headline_rows("test")
    assert len(rows) == len(load_headlines("test"))
    for row in rows:
        assert set(row) == ROW_KEYS and row["task"] == "headlines" and row["meta"]["lang"] == "en"
        assert row["reference"] in load_labels()
        assert row["messages"][-1]["content"].startswith(f"Headline: {row['question']}")
    assert len(headline_rows("train", exemplar=False)[0]["messages"]) == 2


def test_template_exemplars_share_the_wording_of_train_questions_only() -> None:
    from helpers.tasks.word_problems import match_template

    rows = word_problem_rows("train", 9, seed=3, shots=3, exemplars="template")
    for row in rows:
        shots = [m["content"] for m in row["messages"] if m["role"] == "user"][:-1]
        assert len(shots) == 3 and row["meta"]["exemplars"] == "template"
        assert all(match_template(s.split("\n")[0]).id == row["meta"]["template_id"] for s in shots)
        assert row["question"] not in "".join(shots)
    test_rows = word_problem_rows("test", 6, seed=3, shots=3, exemplars="template")
    for row in test_rows:  # test wording never appears in prompts: falls back to same-step train exemplars
        shots = [m["content"].split("\n")[0] for m in row["messages"] if m["role"] == "user"][:-1]
        assert all(match_template(s).split == "train" and match_template(s).steps == row["meta"]["steps"] for s in shots)
    with pytest.raises(ValueError, match="not a train template"):
        fewshot_problems(2, template_id="C1-01")
    with pytest.raises(ValueError, match="exemplars must be"):
        word_problem_rows("train", 1, exemplars="nearest")  # type: ignore[arg-type]


def test_repeated_steps_weight_the_mix() -> None:
    problems = make_word_problems("train", 40, seed=1, steps=(1, 1, 2, 3))
    counts = {s: sum(p.steps == s for p in problems) for s in (1, 2, 3)}
    assert counts == {1: 20, 2: 10, 3: 10} and len({p.question for p in problems}) == 40
