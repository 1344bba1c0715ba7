"""Soft-label distillation: the loss against hand-computed values, the teacher's label scoring
(against a plain per-sequence log-likelihood), its cache, and the tiny student.

Scoring runs on a tiny randomly initialised Llama that uses the real student's tokenizer and
chat template: the KV-cache and padding logic is the same as with the real teacher, in a second.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.core.cache import DiskCache
from helpers.tasks.headlines import load_labels
from helpers.techniques.soft_labels import (
    StudentConfig,
    TeacherScores,
    common_prefix_length,
    expected_calibration_error,
    hashed_features,
    headline_subset,
    label_replies,
    predict_proba,
    reply_token_ids,
    resampled_splits,
    score_headlines,
    score_replies,
    soft_target_loss,
    soften,
    student_metrics,
    summarize_sweep,
    sweep,
    train_student,
)

# --------------------------------------------------------------------------- the loss by hand

# Two classes. Student logits (0, ln 3) -> p_S = (1/4, 3/4); teacher logits (0, 0) -> p_T = (1/2, 1/2);
# the gold label is class 1.
STUDENT = torch.tensor([[0.0, math.log(3.0)]])
TEACHER = torch.tensor([[0.0, 0.0]])
GOLD = torch.tensor([1])
CE = -math.log(3 / 4)                                      # = ln(4/3)
KL_T1 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL(p_T || p_S) = 0.5 ln(4/3)


def test_loss_matches_the_hand_computed_two_class_example():
    # alpha = 0.5, T = 1: 0.5 * KL + 0.5 * CE = 0.5 * 0.5 ln(4/3) + 0.5 ln(4/3) = 0.75 ln(4/3)
    expected = 0.5 * KL_T1 + 0.5 * CE
    assert expected == pytest.approx(0.75 * math.log(4 / 3))
    loss = soft_target_loss(STUDENT, TEACHER, GOLD, alpha=0.5, temperature=1.0)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.215761, abs=1e-6)


def test_temperature_softens_both_sides_and_scales_by_t_squared():
    # T = 2: the student's logits become (0, ln sqrt 3): p_S = (1, sqrt 3) / (1 + sqrt 3); the uniform teacher stays.
    r3 = math.sqrt(3.0)
    p_s = (1 / (1 + r3), r3 / (1 + r3))
    kl = 0.5 * math.log(0.5 / p_s[0]) + 0.5 * math.log(0.5 / p_s[1])
    loss = soft_target_loss(STUDENT, TEACHER, GOLD, alpha=1.0, temperature=2.0)
    assert loss.item() == pytest.approx(4 * kl, abs=1e-6)           # T^2 = 4
    assert kl < KL_T1 / 3                                             # softening alone shrinks the KL ...
    assert loss.item() == pytest.approx(KL_T1, rel=0.05)              # ... the T^2 factor restores its size


def test_alpha_zero_is_cross_entropy_and_ignores_the_teacher():
    torch.manual_seed(0)
    student, labels = torch.randn(6, 5), torch.randint(0, 5, (6,))
    for teacher in (torch.randn(6, 5), torch.randn(6, 5) * 10):
        for temperature in (1.0, 3.0):
            loss = soft_target_loss(student, teacher, labels, alpha=0.0, temperature=temperature)
            assert loss.item() == pytest.approx(F.cross_entropy(student, labels).item(), abs=1e-6)


def test_alpha_one_ignores_the_gold_labels_and_vanishes_when_student_equals_teacher():
    torch.manual_seed(1)
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    a = soft_target_loss(student, teacher, torch.zeros(6, dtype=torch.long), alpha=1.0, temperature=2.0)
    b = soft_target_loss(student, teacher, torch.full((6,), 4), alpha=1.0, temperature=2.0)
    assert a.item() == pytest.approx(b.item()) and a.item() > 0
    same = soft_target_loss(teacher + 7.0, teacher, torch.zeros(6, dtype=torch.long), alpha=1.0, temperature=2.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)  # a constant shift of the logits changes nothing


def test_high_temperature_limit_is_matching_centred_logits():
    # Hinton et al.: d(T^2 KL)/dz = T (p_S - p_T) -> ((z - mean z) - (v - mean v)) / K as T grows.
    torch.manual_seed(2)
    z = torch.randn(1, 4, requires_grad=True)
    v = torch.randn(1, 4)
    soft_target_loss(z, v, torch.tensor([0]), alpha=1.0, temperature=1000.0).backward()
    expected = ((z - z.mean()) - (v - v.mean())).detach() / 4
    assert torch.allclose(z.grad, expected, atol=1e-3)


@pytest.mark.parametrize("kwargs", [{"alpha": -0.1, "temperature": 1.0}, {"alpha": 1.5, "temperature": 1.0},
                                    {"alpha": 0.5, "temperature": 0.0}])
def test_loss_rejects_bad_alpha_and_temperature(kwargs):
    with pytest.raises(ValueError):
        soft_target_loss(STUDENT, TEACHER, GOLD, **kwargs)


def test_soften():
    logits = np.array([[2.0, 0.0, -2.0]])
    assert soften(logits).sum() == pytest.approx(1.0)
    assert soften(logits, 1.0)[0, 0] == pytest.approx(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    assert np.allclose(soften(logits, 1e6), 1 / 3, atol=1e-5)   # very hot: uniform
    assert soften(logits, 0.01)[0, 0] == pytest.approx(1.0)     # very cold: one-hot
    with pytest.raises(ValueError):
        soften(logits, 0)


# --------------------------------------------------------------------------- calibration


def test_expected_calibration_error_by_hand():
    # Both predictions say 90 % and one of two is right: ECE = |0.9 - 0.5| = 0.4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.4)
    # Two bins: 0.55 confident and right (gap 0.45), 0.95 confident and right (gap 0.05), weight 1/2 each.
    probs = np.array([[0.55, 0.45], [0.95, 0.05]])
    assert expected_calibration_error(probs, np.array([0, 0])) == pytest.approx(0.25)
    # Right as often as it says (60 %): calibrated.
    probs = np.tile([0.6, 0.4], (5, 1))
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1, 1])) == pytest.approx(0.0, abs=1e-12)


def test_student_metrics():
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    metrics = student_metrics(probs, np.array([0, 0]), teacher_probs=np.array([[0.1, 0.9], [0.2, 0.8]]))
    assert metrics["accuracy"] == 0.5 and metrics["agreement"] == 0.5
    assert metrics["nll"] == pytest.approx(-(math.log(0.8) + math.log(0.3)) / 2)


# --------------------------------------------------------------------------- the student


def test_hashed_features():
    X = hashed_features(["Elections held in the north", "Election held", ""], dim=512)
    assert X.shape == (3, 512) and X.dtype == np.float32
    assert np.linalg.norm(X[0]) == pytest.approx(1.0) and not X[2].any()
    assert np.array_equal(X, hashed_features(["Elections held in the north", "Election held", ""], dim=512))
    assert float(X[0] @ X[1]) > 0.3  # shared words and character 4-grams (<ele, elec, ...)
    with pytest.raises(ValueError):
        hashed_features(["x"], dim=4)


def _toy_task():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 16)).astype(np.float32)
    gold = (X[:, 0] > 0).astype(int)                 # gold labels follow feature 0
    teacher_label = (X[:, 1] > 0).astype(int)        # the teacher believes feature 1
    teacher_logits = np.where(np.eye(2)[teacher_label] > 0, 3.0, -3.0)
    return X, gold, teacher_label, teacher_logits


def test_alpha_decides_whose_labels_the_student_learns():
    X, gold, teacher_label, teacher_logits = _toy_task()
    config = StudentConfig(epochs=200, lr=0.1)
    hard = predict_proba(train_student(X, gold, teacher_logits, alpha=0.0, temperature=1.0, config=config), X)
    soft = predict_proba(train_student(X, gold, teacher_logits, alpha=1.0, temperature=2.0, config=config), X)
    assert (hard.argmax(1) == gold).mean() > 0.95
    assert (soft.argmax(1) == teacher_label).mean() > 0.95
    assert (soft.argmax(1) == gold).mean() < 0.8


def test_train_student_checks_lengths_and_config():
    X, gold, _, teacher_logits = _toy_task()
    with pytest.raises(ValueError):
        train_student(X, gold[:-1], teacher_logits, alpha=0.5, temperature=1.0)
    with pytest.raises(ValueError):
        StudentConfig(epochs=0)
    mlp = train_student(X, gold, teacher_logits, alpha=0.5, temperature=1.0, config=StudentConfig(hidden=8, epochs=5))
    assert isinstance(mlp, torch.nn.Sequential)


def test_resampled_splits_are_stratified_and_start_with_the_given_split():
    labels = np.repeat(np.arange(5), 20)
    first = np.zeros(100, bool)
    first[::2] = True
    splits = resampled_splits(labels, 4, first=first, seed=3)
    assert len(splits) == 4 and splits[0] is not None and np.array_equal(splits[0], first)
    for mask in splits[1:]:
        assert [int(mask[labels == k].sum()) for k in range(5)] == [12] * 5
    assert not np.array_equal(splits[1], splits[2])
    assert all(np.array_equal(a, b) for a, b in zip(splits, resampled_splits(labels, 4, first=first, seed=3)))
    with pytest.raises(ValueError):
        resampled_splits(labels, 0)


def test_sweep_grid_and_summary():
    X, gold, _, teacher_logits = _toy_task()
    splits = resampled_splits(gold, 2, seed=0)
    results = sweep(X, gold, teacher_logits, alphas=[0.0, 1.0], temperatures=[1.0, 4.0], splits=splits,
                    config=StudentConfig(epochs=20), progress=False)
    assert len(results) == 2 * 2 * 2
    hard = results[results.alpha == 0.0]
    assert hard.groupby("split")["accuracy"].nunique().eq(1).all()  # alpha = 0 does not depend on T
    summary = summarize_sweep(results)
    assert len(summary) == 4 and {"accuracy", "accuracy_sem", "ece", "agreement"} <= set(summary.columns)
    by_alpha = summary.groupby("alpha")["agreement"]
    assert by_alpha.min()[1.0] > by_alpha.max()[0.0]  # listening to the teacher makes the student agree with it


# --------------------------------------------------------------------------- scoring the teacher


def test_label_replies_and_common_prefix():
    replies = label_replies(["world", "sports"])
    assert replies == ["<answer>world</answer>", "<answer>sports</answer>"]
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[5], [6]]) == 0
    with pytest.raises(ValueError):
        label_replies([])


def test_headline_subset_keeps_the_split_proportions():
    rows = headline_subset(10)
    assert len(rows) == 50
    for label in load_labels():
        splits = [r["meta"]["split"] for r in rows if r["reference"] == label]
        assert splits.count("train") == 6 and splits.count("test") == 4
    assert len(headline_subset()) == 200  # every English headline
    with pytest.raises(ValueError):
        headline_subset(1)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, student):
    """A 2-layer random Llama with the student's tokenizer, saved as a model folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(student)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    model = LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("tiny_teacher")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def _naive_scores(model, tokenizer, messages, replies):
    """log p(reply | prompt) by plain full-sequence forwards, normalised over the replies."""
    seqs = reply_token_ids(tokenizer, messages, replies)
    start = common_prefix_length(seqs)
    out = []
    with torch.no_grad():
        for ids in seqs:
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
            out.append(sum(logprobs[j - 1, ids[j]].item() for j in range(start, len(ids))))
    out = np.array(out)
    return out - np.logaddexp.reduce(out)


def test_score_replies_equals_plain_log_likelihood(tiny_teacher):
    _, model, tokenizer = tiny_teacher
    rows = headline_subset(2)[:5]
    replies = label_replies(list(load_labels()))
    # batch_size 2 over 5 rows: uneven batches, padded headlines and padded label tails
    fast = score_replies(model, tokenizer, [r["messages"] for r in rows], replies, batch_size=2)
    naive = np.array([_naive_scores(model, tokenizer, r["messages"], replies) for r in rows])
    assert fast.shape == (5, 5)
    assert np.allclose(np.exp(fast).sum(axis=1), 1.0)
    assert np.abs(fast - naive).max() < 1e-4
    one = score_replies(model, tokenizer, [rows[0]["messages"]], replies)  # a single conversation
    assert np.abs(one[0] - naive[0]).max() < 1e-4


def test_score_replies_rejects_replies_that_are_prefixes(tiny_teacher):
    _, model, tokenizer = tiny_teacher
    rows = headline_subset(2)[:1]
    with pytest.raises(ValueError, match="prefix"):
        score_replies(model, tokenizer, [rows[0]["messages"]], ["<answer>world", "<answer>world</answer>"])


@pytest.mark.slow
def test_score_headlines_caches_resumes_and_keys_by_teacher(tiny_teacher, settings, tmp_path):
    folder, _, _ = tiny_teacher
    rows = headline_subset(2)[:6]
    cache = tmp_path / "scores"
    first = score_headlines(folder, teacher="tiny", rows=rows[:4], settings=settings, cache_path=cache,
                            batch_size=3, progress=False)
    assert first.newly_scored == 4 and len(DiskCache(cache)) == 4
    # two more rows: only those are scored, the four cached ones are reused as they were
    second = score_headlines(folder, teacher="tiny", rows=rows, settings=settings, cache_path=cache, progress=False)
    assert second.newly_scored == 2
    assert np.allclose(second.logits()[:4], first.logits())
    # fully cached: the model folder is not even read
    third = score_headlines(tmp_path / "no-such-model", teacher="tiny", rows=rows, settings=settings,
                            cache_path=cache, progress=False)
    assert third.newly_scored == 0 and np.allclose(third.logits(), second.logits())
    # an entry damaged by an interrupted write is scored again; another teacher name is scored afresh
    damaged = sorted(cache.glob("*/*.json"))[0]
    damaged.write_text('{"logpr', encoding="utf-8")
    again = score_headlines(folder, teacher="tiny", rows=rows, settings=settings, cache_path=cache, progress=False)
    assert again.newly_scored == 1 and np.allclose(again.logits(), second.logits(), atol=1e-5)
    other = score_headlines(folder, teacher="tiny-2", rows=rows[:1], settings=settings, cache_path=cache,
                            progress=False)
    assert other.newly_scored == 1 and len(DiskCache(cache)) == 7


def test_teacher_scores_accuracy_and_summary():
    labels = ["a", "b"]
    import pandas as pd

    frame = pd.DataFrame({"id": ["1", "2", "3"], "text": ["x", "y", "z"], "label": ["a", "b", "b"],
                          "split": ["train", "train", "test"], "a": np.log([0.9, 0.8, 0.3]),
                          "b": np.log([0.1, 0.2, 0.7])})
    scores = TeacherScores(frame, labels, "t")
    assert scores.accuracy() == pytest.approx(2 / 3)
    assert scores.accuracy("train") == 0.5 and scores.accuracy("test") == 1.0
    assert list(scores.predictions()) == ["a", "a", "b"]
    assert scores.summary()["mean_confidence"] == pytest.approx(0.8)


def test_example_headlines_and_plots():
    import pandas as pd

    from helpers.techniques.soft_labels import example_headlines, plot_soft_labels, plot_sweep

    labels = ["a", "b"]
    frame = pd.DataFrame({"id": list("1234"), "text": ["w", "x", "y", "z"], "label": ["a", "a", "b", "b"],
                          "split": ["train"] * 4, "a": np.log([0.95, 0.55, 0.9, 0.2]),
                          "b": np.log([0.05, 0.45, 0.1, 0.8])})
    scores = TeacherScores(frame, labels, "t")
    assert example_headlines(scores) == {"right and sure": 0, "right but unsure": 1, "wrong but sure": 2}
    assert len(plot_soft_labels(scores, example_headlines(scores)).axes) == 3
    X, gold, _, teacher_logits = _toy_task()
    summary = summarize_sweep(sweep(X, gold, teacher_logits, alphas=[0.0, 1.0], temperatures=[1.0],
                                    splits=resampled_splits(gold, 2), config=StudentConfig(epochs=5), progress=False))
    assert len(plot_sweep(summary, teacher_accuracy=0.5).axes) == 3
