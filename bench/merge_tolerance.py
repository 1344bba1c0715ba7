"""Calibrate the merge check for bfloat16: how far apart are base + adapter and the merged model, on a CPU?

Runs helpers.merge.equivalence.compare_models in float32 and in bfloat16 on the same checkpoint
and questions and prints, per dtype, the largest |Δlogit|, how many greedy replies are identical
and the logit gap where they first differ. The numbers go to bench/README.md.

    .venv/bin/python bench/merge_tolerance.py RUN/checkpoint-N [N_QUESTIONS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from helpers.core.config import get_settings
from helpers.merge.equivalence import compare_models
from helpers.models.loading import load_tokenizer
from helpers.models.student import prepare_student
from helpers.tasks.word_problems import word_problem_rows


def main() -> None:
    checkpoint = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    merged = checkpoint.with_name(checkpoint.name + "-merged")
    settings = get_settings()
    base = prepare_student(settings).path
    questions = [row["question"] for row in word_problem_rows("test", n, seed=11, shots=0)]
    tokenizer = load_tokenizer(merged)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for dtype in (torch.float32, torch.bfloat16):
        adapter_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype),
                                                  str(checkpoint)).eval()
        merged_model = AutoModelForCausalLM.from_pretrained(merged, dtype=dtype).eval()
        checks = [compare_models(adapter_model, merged_model, tokenizer, q, max_new_tokens=48, tolerance=float("inf"))
                  for q in questions]
        diffs = [c.max_logit_diff for c in checks]
        gaps = [abs(c.tie_gap) for c in checks if c.tie_gap is not None]
        print(f"{str(dtype):15} max|Δlogit| max {max(diffs):.3g} median {sorted(diffs)[len(diffs) // 2]:.3g}; "
              f"identical {sum(c.identical for c in checks)}/{len(checks)}; gaps at first difference {gaps}")


if __name__ == "__main__":
    main()
