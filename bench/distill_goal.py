"""Did distillation pay off? Base, 3-shot teacher and distilled student per difficulty.

The offline goal of the course (issue 6): on the held-out TEST split of the
generated word problems (wording templates that never appear in training), the
distilled SmolLM2 student, zero-shot and greedy,

* beats the 3-shot teacher at every difficulty (1, 2 and 3 steps),
* reaches at least 75% accuracy on one-step problems,
* keeps at least 98% format compliance (an extractable ``\\boxed{}`` answer).

Three rows per difficulty, all greedy, same questions, same ``max_tokens``:

* ``base``: the bundled student before training, zero-shot;
* ``teacher (3-shot)``: the same bundled model with three solved TRAIN problems of
  the same step count in the prompt (the offline teacher; on test questions there
  are no same-template exemplars to retrieve, by construction);
* ``student``: the distilled model (a merged folder), zero-shot.

Usage (after the full course, or with any merged model folder)::

    python bench/distill_goal.py                       # finds the newest merged model
    python bench/distill_goal.py --student PATH --per-step 40 --max-tokens 192

Prints a table and the three goal checks and writes
``<workspace>/outputs/bench_distill_goal.json``. Not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from helpers.core.config import get_settings
from helpers.evaluate.metrics import item_table, metrics_table
from helpers.merge.adapter import latest_merged_model
from helpers.models.student import prepare_student
from helpers.tasks.word_problems import word_problem_rows
from helpers.teacher.engine import GenerationConfig, generate
from helpers.teacher.samples import load_samples
from helpers.teacher.server import LocalServer


def run_model(name: str, model_dir: Path, rows: list[dict], out_dir: Path, max_tokens: int) -> pd.DataFrame:
    """Serve ``model_dir``, answer ``rows`` greedily, return the per-item table."""
    out = out_dir / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}.jsonl"
    out.unlink(missing_ok=True)
    started = time.time()
    with LocalServer(model_dir) as server:
        config = GenerationConfig(endpoint=server.endpoint, n_samples=1, max_tokens=max_tokens,
                                  concurrency=8, cache_dir=None, progress=True)
        generate(rows, out, config)
    samples = load_samples(out, statuses=None)
    print(f"{name}: {len(samples)} answers in {time.time() - started:.0f} s", flush=True)
    return item_table(samples).assign(model=name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", type=Path, help="merged student folder (default: the merge of the newest finished run)")
    parser.add_argument("--per-step", type=int, default=40, help="test questions per step count (default 40)")
    parser.add_argument("--max-tokens", type=int, default=192, help="generation limit (default 192)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-base", action="store_true", help="only teacher and student")
    args = parser.parse_args(argv)

    settings = get_settings()
    settings.ensure_dirs()
    student = args.student or latest_merged_model(settings)
    if student is None or not (student / "config.json").is_file():
        print("No merged student found: run notebooks 04 and 05 first, or pass --student PATH.", file=sys.stderr)
        return 2
    base = prepare_student(settings).path
    n = 3 * args.per_step
    zero_shot = word_problem_rows("test", n, seed=args.seed, shots=0)
    three_shot = word_problem_rows("test", n, seed=args.seed, shots=3, exemplars="steps")
    out_dir = settings.outputs_dir / "bench_distill_goal"
    out_dir.mkdir(parents=True, exist_ok=True)

    plan = [("teacher (3-shot)", base, three_shot), ("student", student, zero_shot)]
    if not args.skip_base:
        plan.insert(0, ("base", base, zero_shot))
    items = pd.concat([run_model(name, path, rows, out_dir, args.max_tokens) for name, path, rows in plan])
    table = metrics_table(items, by=["model", "steps"])
    print(f"\nTEST split, {args.per_step} questions per step count, greedy, max_tokens={args.max_tokens}")
    print(f"student: {student}\n")
    wide = table[["accuracy", "format_ok", "truncated", "mean_tokens"]].unstack("model")
    print(wide.round(3).to_string())

    acc = table["accuracy"]
    fmt = metrics_table(items[items.model == "student"])["format_ok"].iloc[0]
    checks = {
        "student beats the 3-shot teacher at every step count": all(
            acc[("student", s)] > acc[("teacher (3-shot)", s)] for s in (1, 2, 3)),
        "student >= 75% on one-step": acc[("student", 1)] >= 0.75,
        "student format compliance >= 98%": fmt >= 0.98,
    }
    print()
    for what, ok in checks.items():
        print(f"[{'PASS' if ok else 'MISS'}] {what}")
    result = {"student": str(student), "per_step": args.per_step, "max_tokens": args.max_tokens, "seed": args.seed,
              "accuracy": {f"{m}|{s}": float(v) for (m, s), v in acc.items()},
              "format_ok": {f"{m}|{s}": float(v) for (m, s), v in table["format_ok"].items()},
              "student_format_ok": float(fmt), "checks": {k: bool(v) for k, v in checks.items()}}
    path = settings.outputs_dir / "bench_distill_goal.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
