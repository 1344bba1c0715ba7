r"""Soft-label distillation: the student learns the teacher's probabilities, not only its answers.

Hinton, Vinyals and Dean (2015) on the course's headline task:

1. **Teacher label probabilities** (:func:`score_headlines`): the log-likelihood of one
   reply per label (``classification_label_reply.txt``) after the classification prompt,
   normalised over the labels. One forward pass, exact for multi-token labels, the
   shared prompt run once (:func:`score_replies`); an API could not do this (it returns
   log-probabilities only of the tokens it generates). Scores go to the disk cache.
2. **The loss** (:func:`soft_target_loss`): ``alpha`` x the KL divergence at temperature
   ``T`` (scaled by ``T**2``) + ``(1 - alpha)`` x the cross-entropy with the gold labels.
3. **A tiny student** (:func:`train_student`): a linear classifier (or a small MLP) on
   hashed n-grams (:func:`hashed_features`), trained in a fraction of a second.
4. **The experiment** (:func:`sweep`): accuracy, calibration and agreement with the
   teacher over a grid of ``alpha`` and ``T`` and several resampled splits.
"""

from __future__ import annotations

import copy
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..core.cache import DiskCache, stable_hash
from ..core.config import Settings, get_settings
from ..tasks.headlines import headline_rows, load_labels
from ..teacher.prompts import render

LABEL_REPLY_PROMPT = "classification_label_reply"
"""The prompt file whose reply is scored once per label."""

Message = dict[str, str]


# --------------------------------------------------------------------------- the loss


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                     alpha: float, temperature: float) -> torch.Tensor:
    """Hinton's distillation loss: ``alpha * T² * KL(p_T || p_S) + (1 - alpha) * CE(y, p_S)``.

    ``p_T`` and ``p_S`` are the teacher's and the student's softmax at temperature ``T``;
    the cross-entropy with the gold labels ``y`` uses the student at ``T = 1``. ``alpha = 0``
    is plain supervised training, ``alpha = 1`` learns from the teacher alone. Teacher
    log-probabilities work as ``teacher_logits`` (softmax ignores a constant shift).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    T = temperature
    soft = F.kl_div(F.log_softmax(student_logits / T, dim=-1), F.log_softmax(teacher_logits / T, dim=-1),
                    log_target=True, reduction="batchmean")
    hard = F.cross_entropy(student_logits, labels)
    return alpha * T * T * soft + (1 - alpha) * hard


def soften(logits: np.ndarray | Sequence[float], temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / T)`` along the last axis: ``T > 1`` flattens, ``T < 1`` sharpens."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- scoring the teacher


def label_replies(labels: Sequence[str]) -> list[str]:
    """The scored assistant reply for each label (from ``classification_label_reply.txt``)."""
    if not labels:
        raise ValueError("label_replies needs at least one label.")
    return [render(LABEL_REPLY_PROMPT, label=label).strip() for label in labels]


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all sequences share."""
    n = 0
    for column in zip(*seqs):
        if len(set(column)) > 1:
            break
        n += 1
    return n


def reply_token_ids(tokenizer: Any, messages: Sequence[Message], replies: Sequence[str]) -> list[list[int]]:
    """Token ids of the conversation followed by each reply as the assistant's turn.

    The whole text is tokenized at once (never prompt and reply separately), so a token that
    spans the boundary is the one the model would really see.
    """
    prompt = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return [tokenizer(prompt + reply, add_special_tokens=False)["input_ids"] for reply in replies]


def _pad(seqs: Sequence[Sequence[int]], pad: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """Right-pad to one length; returns (ids, attention mask)."""
    width = max(len(s) for s in seqs)
    return ([list(s) + [pad] * (width - len(s)) for s in seqs],
            [[1] * len(s) + [0] * (width - len(s)) for s in seqs])


@torch.no_grad()
def score_replies(model: Any, tokenizer: Any, conversations: Sequence[Sequence[Message]], replies: Sequence[str], *,
                  batch_size: int = 8, on_batch: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
    """``log p(reply_k | conversation_i)``, normalised over the replies: shape ``(n, k)``.

    Three levels of sharing keep it cheap: the prefix common to *all* conversations (system
    prompt, exemplar) is run once and its KV cache reused; per conversation its own part
    (the headline) is run once; then the ``k`` differing reply tails are run as a batch.
    Tokens every reply shares add the same log-probability to all of them and cancel in
    the normalisation, so they are not scored. ``on_batch(start, logprobs)`` sees each batch
    of ``batch_size`` conversations as it is scored (to save it).
    """
    if not conversations:
        return np.zeros((0, len(replies)))
    if len(replies) < 2:
        raise ValueError("Scoring needs at least two replies to compare.")
    seqs = [reply_token_ids(tokenizer, messages, replies) for messages in conversations]
    shared = [common_prefix_length(s) for s in seqs]
    for i, (s, p) in enumerate(zip(seqs, shared)):
        if any(len(x) == p for x in s):
            raise ValueError(f"Conversation {i}: one reply is a prefix of another; the replies must differ "
                             "before they end.")
    # Global prefix: shared by every sequence, and at least one token short of each
    # conversation's own shared part (whose last position predicts the first tail token).
    glob = min(common_prefix_length([s[0] for s in seqs]), min(shared) - 1)
    device = next(model.parameters()).device
    k = len(replies)
    out = model(input_ids=torch.tensor([seqs[0][0][:glob]], device=device), use_cache=True, logits_to_keep=1)
    prefix_cache = out.past_key_values
    results = []
    for start in range(0, len(seqs), batch_size):
        chunk, ends = seqs[start:start + batch_size], shared[start:start + batch_size]
        nb = len(chunk)
        parts, part_mask = _pad([s[0][glob:p] for s, p in zip(chunk, ends)])
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(nb)
        mask = torch.cat([torch.ones(nb, glob, dtype=torch.long), torch.tensor(part_mask)], dim=1).to(device)
        width = len(parts[0])
        positions = torch.arange(glob, glob + width, device=device).expand(nb, width)
        out = model(input_ids=torch.tensor(parts, device=device), attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True)
        last = torch.tensor([p - glob - 1 for p in ends], device=device)
        first_logprobs = torch.log_softmax(out.logits[torch.arange(nb, device=device), last].float(), dim=-1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(k)
        tails = [x[p:] for s, p in zip(chunk, ends) for x in s]
        tail_ids, tail_mask = _pad(tails)
        tail_width = len(tail_ids[0])
        mask2 = torch.cat([mask.repeat_interleave(k, dim=0), torch.tensor(tail_mask, device=device)], dim=1)
        begin = torch.tensor(ends, device=device).repeat_interleave(k)
        positions2 = begin[:, None] + torch.arange(tail_width, device=device)[None, :]
        out2 = model(input_ids=torch.tensor(tail_ids, device=device), attention_mask=mask2, position_ids=positions2,
                     past_key_values=cache, use_cache=False)
        logprobs = torch.log_softmax(out2.logits.float(), dim=-1)
        scores = np.zeros((nb, k))
        for row, tail in enumerate(tails):
            i, j = divmod(row, k)
            total = first_logprobs[i, tail[0]].item()
            for t in range(1, len(tail)):
                total += logprobs[row, t - 1, tail[t]].item()
            scores[i, j] = total
        scores = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
        if on_batch is not None:
            on_batch(start, scores)
        results.append(scores)
    return np.concatenate(results)


def headline_subset(per_label: int | None = None) -> list[dict[str, Any]]:
    """Prompt rows of the headlines (the course's 1-shot classification prompt).

    ``per_label`` keeps that many headlines per label (smoke runs), 60% of them from the
    train split and the rest from the test split, as in the full file; ``None`` keeps all.
    """
    rows = headline_rows("all", exemplar=True)
    if per_label is None:
        return rows
    if per_label < 2:
        raise ValueError(f"per_label must be at least 2 (one train and one test headline), got {per_label}")
    n_train = max(1, round(per_label * 0.6))
    wanted = {"train": n_train, "test": per_label - n_train}
    kept, counts = [], {}
    for row in rows:
        key = (row["reference"], row["meta"]["split"])
        if counts.get(key, 0) < wanted[row["meta"]["split"]]:
            counts[key] = counts.get(key, 0) + 1
            kept.append(row)
    return kept


def _row_key(teacher: str, messages: Sequence[Message], replies: Sequence[str]) -> str:
    """A fingerprint of what was scored: change the teacher, the prompt or a label and it changes."""
    return stable_hash([teacher, list(messages), list(replies)])


@dataclass
class TeacherScores:
    """The teacher's label log-probabilities for a set of headlines."""

    frame: pd.DataFrame
    """One row per headline: id, text, label (gold), split, then one log-probability column per label."""
    labels: list[str]
    teacher: str
    seconds: float = 0.0
    newly_scored: int = 0
    path: Path | None = None

    def logits(self) -> np.ndarray:
        """``(n, k)`` log-probabilities, usable as teacher logits."""
        return self.frame[self.labels].to_numpy(dtype=np.float64)

    def probs(self, temperature: float = 1.0) -> np.ndarray:
        return soften(self.logits(), temperature)

    def gold(self) -> np.ndarray:
        """Gold label indices (positions in :attr:`labels`)."""
        return self.frame["label"].map(self.labels.index).to_numpy()

    def predictions(self) -> pd.Series:
        return pd.Series(np.array(self.labels)[self.logits().argmax(axis=1)], index=self.frame.index, name="teacher")

    def accuracy(self, split: str | None = None) -> float:
        mask = np.ones(len(self.frame), bool) if split is None else (self.frame["split"] == split).to_numpy()
        return float((self.logits().argmax(axis=1) == self.gold())[mask].mean()) if mask.any() else float("nan")

    def summary(self) -> dict[str, Any]:
        probs = self.probs()
        return {"teacher": self.teacher, "headlines": len(self.frame),
                "accuracy": round(self.accuracy(), 3), "accuracy_train": round(self.accuracy("train"), 3),
                "accuracy_test": round(self.accuracy("test"), 3),
                "mean_confidence": round(float(probs.max(axis=1).mean()), 3),
                "ece": round(expected_calibration_error(probs, self.gold()), 3),
                "newly_scored": self.newly_scored, "seconds": round(self.seconds, 1)}


def example_headlines(scores: TeacherScores) -> dict[str, int]:
    """Three telling rows: the teacher right and sure, right but unsure, and wrong but sure."""
    probs, gold = scores.probs(), scores.gold()
    confidence, right = probs.max(axis=1), probs.argmax(axis=1) == gold
    picks: dict[str, int] = {}
    order = np.argsort(-confidence)
    for name, mask, ordering in (("right and sure", right, order), ("right but unsure", right, order[::-1]),
                                 ("wrong but sure", ~right, order)):
        candidates = [int(i) for i in ordering if mask[i] and int(i) not in picks.values()]
        if candidates:
            picks[name] = candidates[0]
    return picks


def plot_soft_labels(scores: TeacherScores, examples: dict[str, int],
                     temperatures: Sequence[float] = (1.0, 4.0)) -> Any:
    """The teacher's distribution for a few headlines at several temperatures (grouped bars)."""
    import textwrap

    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.3 * len(examples), 3.6))
    axes = fig.subplots(1, len(examples), sharey=True, squeeze=False)[0]
    k, width = len(scores.labels), 0.8 / len(temperatures)
    for ax, (name, i) in zip(axes, examples.items()):
        row = scores.frame.iloc[i]
        for j, temperature in enumerate(temperatures):
            ax.bar(np.arange(k) - 0.4 + width * (j + 0.5), soften(scores.logits()[i], temperature), width,
                   label=f"T = {temperature:g}")
        ax.set_xticks(range(k), [f"{lab}\n(gold)" if lab == row["label"] else lab for lab in scores.labels],
                      fontsize=8, rotation=30)
        ax.set_title(f"{name}:\n" + textwrap.shorten(row["text"], 48, placeholder="..."), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("teacher probability")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def default_scores_path(settings: Settings | None = None) -> Path:
    """``<cache>/teacher_label_scores/``: notebook 08's cache of label scores (one JSON file per headline)."""
    settings = settings or get_settings()
    return settings.cache_dir / "teacher_label_scores"


def score_headlines(model_path: str | Path, *, teacher: str | None = None, rows: Sequence[dict[str, Any]] | None = None,
                    settings: Settings | None = None, cache_path: str | Path | None = None, batch_size: int = 8,
                    progress: bool = True) -> TeacherScores:
    """The teacher's label distribution for every headline row, scored once and cached.

    ``model_path`` is the teacher (a local model folder); ``teacher`` is the name stored in
    the cache (default: the folder name). ``rows`` default to all headlines
    (:func:`headline_subset`). Rows already in the cache for this teacher and this exact
    prompt are not scored again, and the model is not even loaded when nothing is missing.
    New scores are saved batch by batch (:class:`~helpers.core.cache.DiskCache`), so an
    interruption loses at most one batch.
    """
    settings = settings or get_settings()
    rows = list(rows if rows is not None else headline_subset())
    if not rows:
        raise ValueError("No headline rows to score.")
    labels = list(load_labels())
    replies = label_replies(labels)
    teacher = teacher or Path(model_path).name
    path = Path(cache_path) if cache_path else default_scores_path(settings)
    cache = DiskCache(path)
    keys = [_row_key(teacher, row["messages"], replies) for row in rows]
    cached = {key: entry["logprobs"] for key in keys if (entry := cache.get(key)) and "logprobs" in entry}
    missing = [i for i, key in enumerate(keys) if key not in cached]
    started = time.perf_counter()
    if missing:
        from tqdm.auto import tqdm

        from ..models.loading import load_model, load_tokenizer

        model, tokenizer = load_model(model_path, settings), load_tokenizer(model_path)
        bar = tqdm(total=len(missing), desc=f"scoring {len(labels)} labels", unit="headline", disable=not progress)

        def save(start: int, logprobs: np.ndarray) -> None:
            for offset, scores in enumerate(logprobs):
                i = missing[start + offset]
                cached[keys[i]] = dict(zip(labels, map(float, scores)))
                cache.put(keys[i], {"id": rows[i]["id"], "teacher": teacher, "logprobs": cached[keys[i]]})
            bar.update(len(logprobs))

        score_replies(model, tokenizer, [rows[i]["messages"] for i in missing], replies,
                      batch_size=batch_size, on_batch=save)
        bar.close()
    frame = pd.DataFrame([{"id": row["id"], "text": row["question"], "label": row["reference"],
                           "split": row["meta"]["split"], **cached[key]} for row, key in zip(rows, keys)])
    return TeacherScores(frame, labels, teacher, time.perf_counter() - started, len(missing), path)


def scoring_teacher(settings: Settings | None = None) -> tuple[Path, str]:
    """The teacher that scores the labels: ``(model folder, display name)``.

    ``COURSE_LOGIT_TEACHER`` (a folder, or a hub id on the gpu profile) when set; else offline the
    course's local teacher, the base SmolLM2-135M-Instruct with the 1-shot classification prompt,
    and on gpu :data:`helpers.techniques.gkd.GPU_TEACHER_MODEL`, the teacher of notebook 08's GKD part.
    (An API teacher cannot be scored: see the module docstring.)
    """
    settings = settings or get_settings()
    from .gkd import GPU_TEACHER_MODEL

    name = settings.logit_teacher or (GPU_TEACHER_MODEL if settings.profile.name == "gpu" else "")
    if name and Path(name).expanduser().is_dir():
        return Path(name).expanduser(), name
    if name:
        if settings.profile.hub_offline:
            raise FileNotFoundError(f"COURSE_LOGIT_TEACHER={name!r} is not a local folder and the offline profile "
                                    "does not reach a hub: give a model folder, or use COURSE_PROFILE=gpu.")
        from modelscope import snapshot_download

        return Path(snapshot_download(name)), name
    from ..models.student import prepare_student

    return prepare_student(settings).path, f"{settings.student_model} (1-shot prompt)"


# --------------------------------------------------------------------------- the student


def hashed_features(texts: Sequence[str], dim: int = 2048) -> np.ndarray:
    """Bag of hashed n-grams: words, word pairs and character 4-grams, L2-normalised.

    Hashing (``crc32 % dim``) needs no vocabulary, so unseen test words still land in
    some column; character 4-grams let ``election`` and ``elections`` share features.
    """
    if dim < 16:
        raise ValueError(f"dim must be at least 16, got {dim}")
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        words = re.findall(r"[a-z0-9']+", text.lower())
        grams = [f"w:{w}" for w in words] + [f"b:{a}_{b}" for a, b in zip(words, words[1:])]
        for word in words:
            padded = f"<{word}>"
            grams += [f"c:{padded[i:i + 4]}" for i in range(max(1, len(padded) - 3))]
        for gram in grams:
            out[row, zlib.crc32(gram.encode("utf-8")) % dim] += 1.0
        norm = np.linalg.norm(out[row])
        if norm > 0:
            out[row] /= norm
    return out


@dataclass(frozen=True)
class StudentConfig:
    """The tiny student: a linear classifier (``hidden=0``) or a one-hidden-layer MLP."""

    hidden: int = 0
    epochs: int = 60
    """Full-batch Adam steps (converged: 150 steps at half the rate give the same accuracy)."""
    lr: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 0 or self.epochs < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"bad student config: {self}")


def build_student(n_features: int, n_classes: int, config: StudentConfig = StudentConfig()) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    if config.hidden:
        return torch.nn.Sequential(torch.nn.Linear(n_features, config.hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(config.hidden, n_classes))
    return torch.nn.Linear(n_features, n_classes)


def train_student(features: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray, *, alpha: float,
                  temperature: float, config: StudentConfig = StudentConfig()) -> torch.nn.Module:
    """Train a fresh student on ``features`` with :func:`soft_target_loss` (full batch, Adam)."""
    X = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    t = torch.as_tensor(teacher_logits, dtype=torch.float32)
    if not len(X) == len(y) == len(t):
        raise ValueError(f"features ({len(X)}), labels ({len(y)}) and teacher_logits ({len(t)}) differ in length")
    model = build_student(X.shape[1], t.shape[1], config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        optimizer.zero_grad()
        soft_target_loss(model(X), t, y, alpha=alpha, temperature=temperature).backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    return torch.softmax(model(torch.as_tensor(features, dtype=torch.float32)), dim=-1).numpy().astype(np.float64)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the gap between confidence and accuracy, averaged over confidence bins.

    Predictions are grouped by their top probability into ``n_bins`` equal-width bins;
    each bin contributes ``|mean confidence - accuracy|`` weighted by its share of items.
    0 is perfectly calibrated; a model that says 90% and is right half the time scores 0.4.
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if len(probs) == 0:
        return float("nan")
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(float)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    return float(sum(abs(confidence[bins == b].mean() - correct[bins == b].mean()) * (bins == b).mean()
                     for b in np.unique(bins)))


def student_metrics(probs: np.ndarray, labels: np.ndarray, teacher_probs: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy, ECE, negative log-likelihood and (with ``teacher_probs``) agreement with the teacher."""
    labels = np.asarray(labels)
    out = {"accuracy": float((probs.argmax(axis=1) == labels).mean()),
           "ece": expected_calibration_error(probs, labels),
           "nll": float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())}
    if teacher_probs is not None:
        out["agreement"] = float((probs.argmax(axis=1) == teacher_probs.argmax(axis=1)).mean())
    return out


def resampled_splits(labels: np.ndarray, n_splits: int, *, first: np.ndarray | None = None,
                     train_fraction: float = 0.6, seed: int = 0) -> list[np.ndarray]:
    """``n_splits`` boolean train masks, stratified by label (the same share of every label).

    ``first`` (e.g. the file's own train/test split) is used as split 0 when given.
    """
    labels = np.asarray(labels)
    if n_splits < 1:
        raise ValueError(f"n_splits must be at least 1, got {n_splits}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    rng = np.random.default_rng(seed)
    masks = [np.asarray(first, dtype=bool)] if first is not None else []
    while len(masks) < n_splits:
        mask = np.zeros(len(labels), dtype=bool)
        for label in np.unique(labels):
            idx = np.flatnonzero(labels == label)
            n_train = min(len(idx) - 1, max(1, round(len(idx) * train_fraction)))
            mask[rng.choice(idx, n_train, replace=False)] = True
        masks.append(mask)
    return masks


def sweep(features: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray, *, alphas: Sequence[float],
          temperatures: Sequence[float], splits: Sequence[np.ndarray], config: StudentConfig = StudentConfig(),
          progress: bool = True) -> pd.DataFrame:
    """Train one student per (alpha, T, split); score it on that split's held-out headlines.

    Returns one row per run: alpha, temperature, split, accuracy, ece, nll, agreement
    (with the teacher's top label). ``alpha = 0`` ignores the teacher, so its runs are
    shared by every temperature (trained once per split).
    """
    from tqdm.auto import tqdm

    labels = np.asarray(labels)
    teacher_probs = soften(teacher_logits)
    grid = [(a, t) for a in alphas for t in temperatures]
    rows, hard_only = [], {}
    for (alpha, temperature), (s, train) in tqdm([(g, s) for g in grid for s in enumerate(splits)],
                                                 desc="students", disable=not progress):
        test = ~train
        if alpha == 0 and s in hard_only:
            metrics = hard_only[s]
        else:
            model = train_student(features[train], labels[train], teacher_logits[train], alpha=alpha,
                                  temperature=temperature, config=config)
            metrics = student_metrics(predict_proba(model, features[test]), labels[test], teacher_probs[test])
            if alpha == 0:
                hard_only[s] = metrics
        rows.append({"alpha": alpha, "temperature": temperature, "split": s, **metrics})
    return pd.DataFrame(rows)


def summarize_sweep(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error over the splits for every (alpha, temperature)."""
    metrics = [c for c in ("accuracy", "ece", "nll", "agreement") if c in results]
    grouped = results.groupby(["alpha", "temperature"])[metrics]
    mean, sem = grouped.mean(), grouped.sem(ddof=1).fillna(0.0)
    return mean.join(sem.add_suffix("_sem")).reset_index()


def plot_sweep(summary: pd.DataFrame, *, teacher_accuracy: float | None = None, title: str | None = None) -> Any:
    """Accuracy, calibration error and agreement with the teacher against alpha, one line per T."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    panels = [("accuracy", "held-out accuracy"), ("ece", "calibration error (ECE, lower is better)"),
              ("agreement", "agrees with the teacher's label")]
    for ax, (metric, label) in zip(axes, panels):
        for temperature, part in summary.groupby("temperature"):
            part = part.sort_values("alpha")
            ax.errorbar(part["alpha"], part[metric], yerr=part.get(f"{metric}_sem"), marker="o", capsize=3,
                        label=f"T = {temperature:g}")
        if metric == "accuracy" and teacher_accuracy is not None:
            ax.axhline(teacher_accuracy, color="grey", linestyle="--", label="teacher")
        ax.set(xlabel="alpha (0 = gold labels only, 1 = teacher only)", ylabel=label)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig

