"""Greedy generation with a loaded model: the course's one local ``generate`` loop.

Chats go in batches, left-padded (a decoder continues from the right end); on a
CPU a batch of 8 costs far less than 8 single generations. Each reply keeps its
token ids, so the merge check can compare two models token by token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

Chat = Sequence[Mapping[str, str]]


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """``text -> number of tokens`` with ``tokenizer`` (no special tokens): lengths as the student sees them."""
    if not hasattr(tokenizer, "encode"):
        raise TypeError("tokenizer must have an encode(text) method (e.g. a transformers tokenizer)")
    return lambda text: len(tokenizer.encode(text or "", add_special_tokens=False))


@dataclass(frozen=True)
class Generated:
    """One greedy reply: its text and tokens, and why it stopped."""

    text: str
    prompt_ids: tuple[int, ...]
    ids: tuple[int, ...]
    """The generated tokens, end-of-text excluded."""
    finish_reason: str
    """``"stop"`` (end-of-text token) or ``"length"`` (``max_new_tokens`` reached)."""
    seconds: float
    """The batch's wall time divided by its size: the generation time each reply cost."""

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.ids)


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a reply: the tokenizer's end-of-text and the model's configured ones."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {i for i in ids if i is not None}


def generate_greedy(model: Any, tokenizer: Any, chats: Sequence[Chat], *, max_new_tokens: int,
                    batch_size: int = 8, progress: bool = False, desc: str = "generate") -> list[Generated]:
    """Greedy replies to ``chats`` (lists of ``{"role", "content"}``), ``batch_size`` at a time."""
    import torch

    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = stop_ids(model, tokenizer)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out: list[Generated] = []
    try:
        for start in tqdm(range(0, len(chats), batch_size), desc=desc, disable=not progress):
            batch = [list(chat) for chat in chats[start:start + batch_size]]
            texts = [tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
                     for chat in batch]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = {k: v.to(model.device) for k, v in encoded.items()}
            started = time.perf_counter()
            with torch.no_grad():
                sequences = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                           pad_token_id=pad_id)
            seconds = (time.perf_counter() - started) / len(batch)
            width = encoded["input_ids"].shape[1]
            for i, sequence in enumerate(sequences):
                mask = encoded["attention_mask"][i].bool()
                prompt = encoded["input_ids"][i][mask].tolist()
                new = sequence[width:].tolist()
                end = next((j for j, t in enumerate(new) if t in stop), None)
                ids = new if end is None else new[:end]
                out.append(Generated(tokenizer.decode(ids, skip_special_tokens=True).strip(), tuple(prompt),
                                     tuple(ids), "length" if end is None else "stop", round(seconds, 3)))
    finally:
        tokenizer.padding_side = side
    return out
