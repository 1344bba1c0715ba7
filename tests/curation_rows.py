"""Hand-made sample rows for the curation tests (the sample-row contract of helpers.core.rows)."""

from __future__ import annotations

from typing import Any

QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have now?"
THINKING = "Tom starts with 3 apples. He buys 5 more apples. 3 + 5 = 8. So he has 8 apples."
ANSWER = "<answer>\\boxed{8}</answer>"


def make_row(*, prompt_id: str = "p1", sample_index: int = 0, question: str = QUESTION,
             thinking: str | None = THINKING, answer: str = ANSWER, reference: str | None = "8",
             status: str = "ok", finish_reason: str | None = "stop", task: str = "word_problem",
             steps: int = 1, reply: bool = True, **extra: Any) -> dict[str, Any]:
    """One sample row; ``reply=False`` makes a failed request (``status="error"``)."""
    row: dict[str, Any] = {
        "prompt_id": prompt_id, "sample_index": sample_index, "request_key": f"k-{prompt_id}-{sample_index}",
        "model": "teacher-x", "params": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 512},
        "status": status if reply else "error", "question": question, "reference": reference,
        "task": task, "meta": {"steps": steps, "family": "A"},
        "reply": {"thinking": thinking, "answer": answer,
                  "raw": f"<think>{thinking}</think>{answer}", "finish_reason": finish_reason,
                  "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
                  "latency_s": 0.1} if reply else None,
        "error": None if reply else "HTTP 500 after 3 retries",
        "created_at": "2025-01-01T00:00:00Z",
    }
    row.update(extra)
    return row
