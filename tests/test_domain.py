"""Domain question synthesis: list parsing, tree building and leaf questions with a scripted
teacher, cross-leaf dedup, prompt rows, and the batch engine behind them."""

from __future__ import annotations

import string
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai import FakeOpenAI  # noqa: E402

from helpers.core.config import Secret, TeacherEndpoint  # noqa: E402
from helpers.curate.consistency import consistency_stage  # noqa: E402
from helpers.curate.dedup import near_dedup  # noqa: E402
from helpers.teacher.engine import GenerationConfig, batch_chat, generate  # noqa: E402
from helpers.teacher.prompts import load_prompt  # noqa: E402
from helpers.teacher.samples import load_samples  # noqa: E402
from helpers.techniques.domain import (
    DROP_REASONS,
    answer_exemplars,
    answer_messages,
    build_tree,
    clean_item,
    dedup_questions,
    example_items,
    generate_questions,
    list_messages,
    load_examples,
    parse_list,
    question_id,
    question_rows,
)
from helpers.techniques.tagtree import TagTree, show_path  # noqa: E402

# --------------------------------------------------------------------------- a scripted teacher


class ScriptedTeacher:
    """A fake batch teacher (many chats in, one reply each out): canned replies chosen by the node.

    ``tags`` maps a parent tag (the last tag of the path) to a reply; ``questions``
    maps a leaf tag to a reply; a node in ``fail`` gets an exception (a failed call).
    Every prompt it receives is recorded, and the size of every batch.
    """

    def __init__(self, tags: dict[str, str], questions: dict[str, str] | None = None,
                 fail: set[str] = frozenset()) -> None:
        self.tags, self.questions, self.fail = tags, questions or {}, fail
        self.prompts: list[str] = []
        self.batches: list[int] = []

    def one(self, messages: list[dict[str, str]]) -> str | Exception:
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        path = prompt.splitlines()[0].removeprefix("Topic path: ")
        node = path.split(" > ")[-1]
        if node in self.fail:
            return ConnectionError(f"teacher down for {node}")
        if "subtopics" in prompt:
            return self.tags.get(node, "")
        return self.questions.get(node, f"1. How many {node} fit in a box of 12?\n2. Why?")

    def __call__(self, chats: list[list[dict[str, str]]]) -> list[str | Exception]:
        self.batches.append(len(chats))
        return [self.one(chat) for chat in chats]


TAGS = {
    "everyday arithmetic": "Here are 3 subtopics:\n1. Fractions\n2) Percentages\n- money\n4. Fractions\n5. Extra",
    "Fractions": "1. Halves\n2. everyday arithmetic\n3. Thirds\n4. Quarters",
    "Percentages": "* Discounts - prices after a sale\n* Tips",
    "money": "I am not sure what you mean.",
}


def scripted() -> ScriptedTeacher:
    return ScriptedTeacher(TAGS)


# --------------------------------------------------------------------------- parsing


def test_parse_list_cleans_numbering_bullets_and_markup() -> None:
    reply = ("1. Fractions\n2) Percentages\n(3) Money\n- Time\n* Weights\n• Lengths\na) Areas\n"
             "**8.** Volumes\n`Speed`\n\"Ratios\"")
    parsed = parse_list(reply, kind="tag")
    assert parsed.items == ["Fractions", "Percentages", "Money", "Time", "Weights", "Lengths", "Areas",
                            "Volumes", "Speed", "Ratios"]
    assert all(row["status"] == "kept" for row in parsed.rows)


@pytest.mark.parametrize("reply, items", [
    ("1. Fractions 2. Percentages 3. Money", ["Fractions", "Percentages", "Money"]),
    ("Fractions, Percentages; Money and change", ["Fractions", "Percentages", "Money and change"]),
    ("<think>they want tags</think>\n1. Fractions\n2. Money", ["Fractions", "Money"]),
    ("1. Budgeting - planning what to spend\n2. Saving: putting money aside\n3. Loans (credit)",
     ["Budgeting", "Saving", "Loans"]),
    ("1. Cups/spoons\n2. Oven > hob", ["Cups or spoons", "Oven or hob"]),
])
def test_parse_list_layouts(reply: str, items: list[str]) -> None:
    assert parse_list(reply, kind="tag").items == items


def test_parse_list_drops_junk_with_reasons() -> None:
    reply = ("Sure! Here are the subtopics:\n"
             "1. Fractions\n"
             "2. fractions!\n"
             "3. Everyday arithmetic\n"
             "4. Leafy greens\n"
             "5. ---\n"
             "6. 12345\n"
             "7. " + " ".join(["very"] * 20) + " long\n"
             "8. Topic path: everyday arithmetic\n"
             "9. Money\n"
             "10. Time\n")
    parsed = parse_list(reply, kind="tag", limit=2, path=["everyday arithmetic"],
                        examples=example_items("tag"))
    assert parsed.items == ["Fractions", "Money"]
    status = {row["line"]: row["status"] for row in parsed.rows}
    assert status["Sure! Here are the subtopics:"] == "preamble"
    assert status["2. fractions!"] == "duplicate"
    assert status["3. Everyday arithmetic"] == "repeats_path"
    assert status["4. Leafy greens"] == "copies_example"  # one of the few-shot tags
    assert status["5. ---"] == "empty"
    assert status["6. 12345"] == "no_text"
    assert status["8. Topic path: everyday arithmetic"] == "echoes_prompt"
    assert status["10. Time"] == "over_limit"
    assert [r["status"] for r in parsed.rows if r["line"].startswith("7.")] == ["too_long"]
    assert {r["status"] for r in parsed.dropped} <= set(DROP_REASONS)
    assert len(parsed.table()) == len(parsed.rows) == 11


def test_parse_list_questions() -> None:
    reply = ("Here are some questions about halves.\n"
             "1. What is half of 18?\n"
             "2. Half of 30 is what number\n"
             "3. What is half of 18 ?\n"
             "Q4: How many halves are in 3 pizzas? How much is half of 7?\n"
             "5. If you save 15 dollars a week, how much do you have after 8 weeks?")
    parsed = parse_list(reply, kind="question", path=["arithmetic", "halves"],
                        examples=example_items("question"))
    assert parsed.items == ["What is half of 18?", "How many halves are in 3 pizzas?", "How much is half of 7?"]
    status = [r["status"] for r in parsed.rows]
    assert status == ["preamble", "kept", "not_a_question", "duplicate", "kept", "kept", "copies_example"]


def test_parse_list_marks_the_cut_off_last_line() -> None:
    reply = "1. Geometry\n2. Trigonometry\n3. Trigon"
    assert parse_list(reply, kind="tag").items == ["Geometry", "Trigonometry", "Trigon"]
    parsed = parse_list(reply, kind="tag", truncated=True)
    assert parsed.items == ["Geometry", "Trigonometry"]
    assert parsed.rows[-1]["status"] == "cut_off"
    assert parse_list(reply, kind="tag", truncated=True).items == ["Geometry", "Trigonometry"]
    assert parse_list(reply, kind="tag").items == ["Geometry", "Trigonometry", "Trigon"]


def test_parse_list_rejects_bad_arguments_and_empty_replies() -> None:
    with pytest.raises(ValueError, match="kind"):
        parse_list("1. a", kind="tags")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        parse_list("1. a", limit=0)
    assert parse_list("", kind="question").items == []
    assert parse_list("<think>unfinished thoughts 1. a 2. b", kind="tag").items == []
    assert clean_item("  - 1. **Money**: coins and notes ", "tag") == "Money"
    assert clean_item("1. What is 3/4 of 8?", "question") == "What is 3/4 of 8?"


# --------------------------------------------------------------------------- the tag tree


def small_tree() -> TagTree:
    tree = TagTree.new("everyday arithmetic", levels=2)
    for branch, leaves in {"Fractions": ["Halves", "Thirds"], "Money": ["Change"]}.items():
        tree.add("", branch, source="teacher")
        for leaf in leaves:
            tree.add(branch, leaf, source="teacher")
    return tree


# --------------------------------------------------------------------------- building with a scripted teacher


def test_build_tree_with_scripted_teacher() -> None:
    teacher = scripted()
    build = build_tree(teacher, "everyday arithmetic", levels=2, per_level=2, extra=1)
    tree = build.tree
    assert [c.name for c in tree.root.children] == ["Fractions", "Percentages"]  # per_level respected
    assert tree.leaves() == [("everyday arithmetic", "Fractions", "Halves"),
                             ("everyday arithmetic", "Fractions", "Thirds"),
                             ("everyday arithmetic", "Percentages", "Discounts"),
                             ("everyday arithmetic", "Percentages", "Tips")]
    assert build.calls == 3 and len(teacher.prompts) == 3
    assert all(n.source == "teacher" for _, n in tree.walk() if n is not tree.root)
    log = build.log
    assert set(log.columns) == {"level", "parent", "line", "item", "status", "detail"}
    reasons = log.loc[log.status != "kept"].set_index("line")["status"].to_dict()
    assert reasons["Here are 3 subtopics:"] == "preamble"
    assert reasons["- money"] == "over_limit"
    assert reasons["2. everyday arithmetic"] == "repeats_path"
    assert tree.meta == {"levels": 2, "per_level": 2}
    assert "tags kept" in build.summary()


def test_build_tree_asks_for_spares_and_keeps_a_node_without_tags_as_leaf() -> None:
    teacher = scripted()
    build = build_tree(teacher, "everyday arithmetic", levels=2, per_level=3, extra=2)
    assert any("List 5 subtopics" in p for p in teacher.prompts)
    # "money" got a chatty reply with no list: it stays a leaf and the log says why
    assert ("everyday arithmetic", "money") in build.tree.leaves()
    money = build.log[build.log.parent == "everyday arithmetic > money"]
    assert list(money.status) == ["too_long"] and money.item.iloc[0] == "I am not sure what you mean"


def test_build_tree_records_failed_calls_and_raises_when_all_fail() -> None:
    teacher = ScriptedTeacher(TAGS, fail={"Percentages"})
    build = build_tree(teacher, "everyday arithmetic", levels=2, per_level=2)
    failed = build.log[build.log.status == "call_failed"]
    assert list(failed.parent) == ["everyday arithmetic > Percentages"]
    assert "teacher down" in failed.detail.iloc[0]
    assert ("everyday arithmetic", "Percentages") in build.tree.leaves()
    with pytest.raises(RuntimeError, match="every teacher call failed"):
        build_tree(ScriptedTeacher(TAGS, fail={"everyday arithmetic"}), "everyday arithmetic")
    with pytest.raises(ValueError):
        build_tree(teacher, "x", levels=0)


def test_every_prompt_holds_the_full_tag_path() -> None:
    teacher = scripted()
    tree = build_tree(teacher, "everyday arithmetic", levels=2, per_level=2).tree
    tree.add("Fractions/Halves", "Half of odd numbers")  # a deeper leaf added by hand
    teacher.prompts.clear()
    batch = generate_questions(teacher, tree, per_leaf=1, extra=1)
    assert len(teacher.prompts) == len(tree.leaves()) == batch.calls == 4
    for leaf in tree.leaves():
        full = show_path(leaf)
        matching = [p for p in teacher.prompts if p.startswith(f"Topic path: {full}\n")]
        assert len(matching) == 1, f"no prompt with the full path {full!r}"
        assert f'about "{leaf[-1]}"' in matching[0]

    # the tag prompts carry the parent's full path too
    teacher = scripted()
    build_tree(teacher, "everyday arithmetic", levels=2, per_level=2)
    assert [p.splitlines()[0] for p in teacher.prompts] == [
        "Topic path: everyday arithmetic", "Topic path: everyday arithmetic > Fractions",
        "Topic path: everyday arithmetic > Percentages"]


def test_generate_questions_parses_and_logs() -> None:
    tree = small_tree()
    teacher = ScriptedTeacher({}, questions={
        "Halves": "1. What is half of 18?\n2. What is half of 18?\n3. Halves are nice.",
        "Thirds": "Sure, here are the questions:\n1. What is a third of 27?\n2. What is a third of 30?",
        "Change": "",
    })
    batch = generate_questions(teacher, tree, per_leaf=2)
    table = batch.table()
    assert list(table.question) == ["What is half of 18?", "What is a third of 27?", "What is a third of 30?"]
    assert batch.questions[0]["path"] == ["everyday arithmetic", "Fractions", "Halves"]
    assert batch.questions[0]["leaf"] == "everyday arithmetic > Fractions > Halves"
    statuses = batch.log.groupby("leaf").status.apply(list).to_dict()
    assert statuses["everyday arithmetic > Fractions > Halves"] == ["kept", "duplicate", "not_a_question"]
    assert statuses["everyday arithmetic > Money > Change"] == ["empty_reply"]
    assert "3 questions at 2 of 3 leaves" in batch.summary()


def test_question_ids_are_stable_and_content_based() -> None:
    path = ["a", "b"]
    assert question_id(path, "What is 2+2?") == question_id(path, "what is 2 + 2 ?")
    assert question_id(path, "What is 2+2?") != question_id(["a", "c"], "What is 2+2?")
    assert question_id(path, "What is 2+2?") != question_id(path, "What is 2+3?")


def test_cross_leaf_dedup() -> None:
    questions = [
        {"id": "q1", "question": "What is the probability of rolling a 6 on a die?", "leaf": "a > dice"},
        {"id": "q2", "question": "How much is half of 18 apples?", "leaf": "a > halves"},
        {"id": "q3", "question": "What is the probability of rolling a 6 on a six-sided die?",
         "leaf": "a > chance"},
        {"id": "q4", "question": "how much is HALF of 18 apples", "leaf": "a > sharing"},
        {"id": "q5", "question": "What is the probability of rolling a 5 on two dice?", "leaf": "a > chance"},
    ]
    result = dedup_questions(questions)
    assert [q["id"] for q in result.kept] == ["q1", "q2", "q5"]
    pairs = result.tables["pairs"].set_index("dropped")
    assert pairs.loc["q3", "matched"] == "q1" and pairs.loc["q3", "kind"] == "near"
    assert pairs.loc["q4", "matched"] == "q2" and pairs.loc["q4", "kind"] == "exact"
    # a stricter threshold keeps the reworded one
    assert dedup_questions(questions, threshold=0.9).n_kept == 4


def test_lsh_threshold_finds_pairs_just_above_the_threshold() -> None:
    # Jaccard 0.67 at a threshold of 0.6: MinHash LSH banded for 0.6 misses this pair (seed 1);
    # candidates proposed below it (the default margin, or an explicit 0.4) find it, and the
    # exact Jaccard still decides.
    rows = [{"id": "a", "question": "What is the probability of rolling a 6 on a die?"},
            {"id": "b", "question": "What is the probability of rolling a 6 on a six-sided die?"}]
    options = {"threshold": 0.6, "shingle_size": 3, "fields": ("question",), "progress": False}
    assert near_dedup(rows, lsh_threshold=0.6, **options).n_dropped == 0
    assert near_dedup(rows, lsh_threshold=0.4, **options).n_dropped == 1
    assert near_dedup(rows, **options).n_dropped == 1
    with pytest.raises(ValueError, match="lsh_threshold"):
        near_dedup(rows, lsh_threshold=0.7, **options)


# --------------------------------------------------------------------------- prompts and rows


def test_prompt_files_document_their_variables() -> None:
    for name in ("domain_list_system", "domain_tags", "domain_questions", "domain_answer_system"):
        template = load_prompt(name)
        assert template.description, f"{name} has no description"
        assert sorted(template.header.get("variables", [])) == sorted(template.variables), name
        assert string.Template(template.text).is_valid()
    examples = load_examples()
    assert all(len(ex["items"]) >= 2 for ex in examples["tags"] + examples["questions"])


def test_list_messages_are_few_shot_chats() -> None:
    messages = list_messages("question", ["x", "y"], 3)
    roles = [m["role"] for m in messages]
    assert roles[0] == "system" and roles[-1] == "user"
    assert roles[1:-1] == ["user", "assistant"] * len(load_examples()["questions"])
    assert messages[-1]["content"].startswith("Topic path: x > y\nWrite 3 different questions about \"y\"")
    assert messages[2]["content"].startswith("1. ")
    with pytest.raises(ValueError):
        list_messages("tag", [], 2)


def test_question_rows_and_answer_messages() -> None:
    questions = [{"id": "dq-1", "question": "What is half of 18?", "path": ["arith", "fractions", "halves"],
                  "leaf": "arith > fractions > halves"}]
    rows = question_rows(questions, answer_exemplars(2))
    row = rows[0]
    assert row["id"] == "dq-1" and row["task"] == "domain" and "reference" not in row
    assert row["meta"] == {"path": "arith > fractions > halves", "leaf": "halves", "level": 2,
                           "branch": "fractions"}
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert row["messages"][-1]["content"].startswith("What is half of 18?\n")
    assert "<think>" in row["messages"][2]["content"]
    zero_shot = answer_messages("What is half of 18?")
    assert [m["role"] for m in zero_shot] == ["system", "user"]
    assert zero_shot[0]["content"] == row["messages"][0]["content"]
    with pytest.raises(ValueError):
        answer_exemplars(99)
    with pytest.raises(ValueError):
        answer_messages(" ")


# --------------------------------------------------------------------------- with an OpenAI-compatible server


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as server:
        yield server


def test_the_tree_is_built_through_the_batch_engine(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.reset()
    endpoint = TeacherEndpoint(base_url=fake.base_url, model="fake-teacher", api_key=Secret(""))
    chat = batch_chat(endpoint, tmp_path / "calls.jsonl", max_tokens=32, cache_dir=tmp_path / "cache",
                      progress=False)
    build = build_tree(chat, "numbers [[answer:4]]", levels=1, per_level=2)
    assert fake.total_requests == 1 and build.calls == 1
    assert "add the numbers" not in " ".join(build.log["line"])  # the reply's thinking never reaches the parser
    again = build_tree(chat, "numbers [[answer:4]]", levels=1, per_level=2)
    assert fake.total_requests == 1 and again.log.equals(build.log)  # resumed from the call log
    whole = build_tree(chat, "numbers [[reasoning]]", levels=1, per_level=5)
    assert whole.log["status"].iloc[-1] != "cut_off"
    cut = build_tree(chat, "numbers [[reasoning]] [[trunc]]", levels=1, per_level=5)
    assert cut.log["status"].iloc[-1] == "cut_off"  # the engine's "truncated" reaches parse_list


def test_questions_are_answered_by_the_batch_engine(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.reset()
    endpoint = TeacherEndpoint(base_url=fake.base_url, model="fake-teacher", api_key=Secret(""))
    questions = [{"id": question_id(["t", leaf], q), "question": q, "path": ["t", leaf], "leaf": f"t > {leaf}"}
                 for leaf, q in (("a", "What is 3 + 4? [[answer:7]]"), ("b", "What is 2 + 2? [[answer:4]]"))]
    config = GenerationConfig(endpoint=endpoint, n_samples=2, max_tokens=32, progress=False,
                              cache_dir=tmp_path / "cache")
    out = tmp_path / "samples.jsonl"
    summary = generate(question_rows(questions), out, config)
    assert summary.complete and summary.requests == 4
    assert generate(question_rows(questions), out, config).requests == 0  # resumable: nothing redone
    samples = load_samples(out)
    assert {s["meta"]["leaf"] for s in samples} == {"a", "b"}
    result = consistency_stage(samples)
    assert result.n_kept == 4
    assert sorted(result.tables["agreement"].majority) == ["4", "7"]
