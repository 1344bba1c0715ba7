"""The command line: ``python -m helpers <command>``.

Commands:
  check              print the environment report (notebook 00 without Jupyter)
  prepare-student    convert/download the student model once
  serve              run the local teacher until Ctrl+C
  generate ...       batch generation with the teacher (see ``generate --help``)
  task TASK          check a task file and show what the teacher will be asked
  outputs check      the committed notebook outputs match the code (refresh RUN_DIR, clear)
  run-course         execute every notebook headless into a run folder
  i18n ...           status / stub / build of the Chinese notebooks (see ``i18n --help``)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ..core.config import LOCAL_BATCH_SIZE, load_dotenv_files, mask_secrets, teacher_from_env
from ..teacher.engine import GenerationAborted, GenerationConfig, generate


def _check(args: argparse.Namespace) -> int:
    from .envcheck import report_frame, run_checks

    checks = run_checks(prepare_student=args.prepare)
    print(report_frame(checks).to_string(index=False))
    return 0 if all(c.ok for c in checks) else 1


def _prepare(args: argparse.Namespace) -> int:
    from ..models.student import prepare_student

    print(prepare_student(force=args.force))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import time

    from ..teacher.server import start_local_teacher

    server = start_local_teacher(port=args.port, max_batch_size=args.max_batch_size)
    print(f"Teacher ready at {server.base_url} (model {server.served_model_name}).")
    print(f"API key for this session: {server.api_key.reveal()}  (export TEACHER_API_KEY=...)")
    try:
        while server.running():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _task(args: argparse.Namespace) -> int:
    """Load a task file and show what the pipeline will see: its settings, splits and one prompt."""
    from ..tasks.spec import TaskFileError, load_task

    try:
        task = load_task(args.task)
        generated = task.source in ("word_problems", "contracts")  # made on demand, as many as asked for
        train, test = ([], []) if generated else (task.items("train"), task.items("test"))
        row = task.prompt_rows("train", 1, shots=task.default_shots)[0]
    except (TaskFileError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, value in task.summary().items():
        print(f"{key:>14}: {value}")
    print(f"{'items':>14}: " + ("generated on demand (train and test use different templates)" if generated
                                 else f"{len(train)} train, {len(test)} test"))
    print(f"{'checked by':>14}: {row['meta']['check']}")
    print("\nThe teacher's first prompt:")
    for message in row["messages"]:
        print(f"[{message['role']}]\n{message['content']}\n")
    print(f"reference: {row['reference']}")
    instructions = "\n".join(m["content"] for m in row["messages"] if m["role"] != "assistant")
    spec = row["meta"]["check"]
    tags = spec.get("markers") or (["<think>", "<answer>"] if spec["format"] == "think" else [])
    if missing := [tag for tag in tags if tag not in instructions]:
        print(f"\nnote: the prompts never mention {', '.join(missing)}. The course does not add format "
              "instructions: say in system or user prompt how to reply, or the model learns it only from examples.")
    from ..core.config import get_settings

    where = get_settings({**os.environ, "COURSE_TASK": args.task}, apply_env=False).task_dir
    print(f"\nRuns write to {where}/ (results: outputs/numbers.json, outputs/eval-*/summary.json and items.csv).")
    return 0


def _run_course(args: argparse.Namespace) -> int:
    from .runner import run_course

    return 0 if run_course(timeout=args.timeout, start=args.start).ok else 1


def _outputs(args: argparse.Namespace) -> int:
    from . import outputs

    if args.action == "refresh":
        if not args.run:
            print("error: give the run folder: python -m helpers outputs refresh workspace/runs/course-...",
                  file=sys.stderr)
            return 2
        for item in outputs.refresh(args.run, names=args.notebooks or None):
            print(f"{item.notebook}: {item.outputs} outputs, {item.kilobytes:.0f} kB")
        return 0
    if args.action == "clear":
        print("cleared:", ", ".join(outputs.clear()) or "nothing stale")
        return 0
    problems = outputs.stale()
    for problem in problems:
        print(problem)
    print("outputs up to date" if not problems else f"{len(problems)} notebook(s) with stale outputs")
    return 1 if problems else 0


def _seed(args: argparse.Namespace) -> int:
    from . import seed

    try:
        if args.refresh:
            info = seed.refresh_checkpoint(force=args.force)
            rows = ", ".join(f"{name} {meta.get('rows')} rows" for name, meta in (info.get("files") or {}).items())
            print(f"checkpoint refreshed in {seed.checkpoint_dir()}: {rows}")
            return 0
        if not args.stage:
            print("error: give the notebook to start at (04, 05 or 06), or --refresh", file=sys.stderr)
            return 2

        def show(line: str, is_err: bool) -> None:
            print(line.rstrip(), file=sys.stderr if is_err else sys.stdout)

        info = seed.seed_workspace(args.stage, source=args.source, force=args.force, smoke=not args.full_size,
                                   on_output=show)
    except (seed.SeedError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = ", ".join(f"{name} {n}" for name, n in (info.get("rows") or {}).items())
    print(f"seeded for notebook {info['stage']} from {info['checkpoint']} ({rows} rows)")
    if info.get("backup"):
        print(f"your earlier dataset was moved to {info['backup']}")
    if info["stage"] != "04":  # 05/06 trained (or found) a LoRA checkpoint, 06 also merged it
        print(f"LoRA checkpoint: {info.get('checkpoint')}" + (f"\nmerged model: {info['merged']}" if info.get("merged") else ""))
    for warning in info.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "generate":  # the engine has its own argument parser
        return generate_main(argv[1:])
    if argv and argv[0] == "i18n":
        from .i18n import cli_main as i18n_main

        return i18n_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="environment report")
    p.add_argument("--prepare", action="store_true", help="also prepare the student model")
    p.set_defaults(func=_check)
    p = sub.add_parser("prepare-student", help="prepare the student model folder")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_prepare)
    p = sub.add_parser("serve", help="serve the local teacher until Ctrl+C")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--max-batch-size", type=int, default=LOCAL_BATCH_SIZE)
    p.set_defaults(func=_serve)
    sub.add_parser("generate", help="batch generation (see `python -m helpers generate --help`)")
    sub.add_parser("i18n", help="Chinese notebooks from one source (see `python -m helpers i18n --help`)")
    p = sub.add_parser("task", help="check a task file and show its first prompt")
    p.add_argument("task", help="a built-in task name or the path of a task file")
    p.set_defaults(func=_task)
    p = sub.add_parser("run-course", help="execute all notebooks headless")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    p.add_argument("--start", metavar="NN", help="start at this notebook (e.g. 04), reusing the workspace")
    p.set_defaults(func=_run_course)
    p = sub.add_parser("outputs", help="committed notebook outputs: check | refresh RUN_DIR | clear (stale ones)")
    p.add_argument("action", choices=["check", "refresh", "clear"])
    p.add_argument("run", nargs="?", help="refresh: the course run folder (workspace/runs/course-...)")
    p.add_argument("notebooks", nargs="*", help="refresh: only these notebooks (e.g. 06), after one was run again")
    p.set_defaults(func=_outputs)
    p = sub.add_parser("seed", help="skip ahead: seed the workspace so notebook 04, 05 or 06 can start")
    p.add_argument("stage", nargs="?", choices=["04", "05", "06", "4", "5", "6"])
    p.add_argument("--force", action="store_true", help="move a different dataset aside and replace it")
    p.add_argument("--full-size", action="store_true", help="05/06: train at the profile's size, not smoke size")
    p.add_argument("--from", dest="source", help="the checkpoint folder (default data/checkpoints/<task>/)")
    p.add_argument("--refresh", action="store_true", help="copy this workspace's export into data/checkpoints/")
    p.set_defaults(func=_seed)
    args = parser.parse_args(argv)
    return int(args.func(args))


# --------------------------------------------------------------------------- generate


def _temperatures(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--temperatures takes comma-separated numbers such as 0,0.6,1.0; got {text!r}") from None


def generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers generate",
        description="Generate teacher samples for a JSONL of prompts (resumable, cached, rate-limited). "
                    "The endpoint defaults to TEACHER_BASE_URL / TEACHER_MODEL / TEACHER_API_KEY; "
                    "the API key is only ever read from the environment.")
    parser.add_argument("--prompts", required=True, help="JSONL of prompt rows (id, messages, ...)")
    parser.add_argument("--out", required=True, help="append-only JSONL of sample rows")
    parser.add_argument("--n", type=int, default=1, help="samples per prompt (default 1)")
    parser.add_argument("--temperatures", type=_temperatures, default=None,
                        help="one value or n comma-separated values; default: a ramp t-min -> t-max")
    parser.add_argument("--t-min", type=float, default=0.0, help="temperature of sample 0 (default 0)")
    parser.add_argument("--t-max", type=float, default=1.0, help="temperature of the last sample (default 1)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="reply token limit (default TEACHER_MAX_TOKENS, else the endpoint's own limit)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="requests in flight (default: 16 for the local teacher, 8 for an API)")
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute limit")
    parser.add_argument("--tpm", type=float, default=None, help="tokens per minute limit")
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--backoff", type=float, default=1.0, help="base backoff seconds")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible /v1 URL (default TEACHER_BASE_URL)")
    parser.add_argument("--model", default=None, help="model name (default TEACHER_MODEL)")
    parser.add_argument("--cache-dir", default=None, help="folder for the reply cache (default: no cache)")
    parser.add_argument("--prices", default=None, help="price table JSON (default data/prices.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--batch", action="store_true",
                        help="send through the endpoint's Batch API (/v1/batches: usually half price, answers within "
                             "24 h); run the same command again to collect or resume, nothing is submitted twice")
    parser.add_argument("--no-wait", action="store_true", help="--batch: submit (or check on) the batch and return")
    parser.add_argument("--poll", type=float, default=30.0, help="--batch: seconds between status checks")
    return parser


def generate_main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m helpers generate``.

    Exit codes: 0 every sample finished, 1 some samples failed (run again to
    retry them), 2 bad input or configuration, 3 the endpoint refused us
    (key, model or URL), 130 interrupted.
    """
    args = generate_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_dotenv_files()
    env = dict(os.environ)
    if args.base_url:
        env["TEACHER_BASE_URL"] = args.base_url
    if args.model:
        env["TEACHER_MODEL"] = args.model
    try:
        endpoint = teacher_from_env(env)
        if endpoint is None:
            raise ValueError("no teacher endpoint: pass --base-url and --model, or set TEACHER_BASE_URL "
                             "and TEACHER_MODEL (start the local teacher first: python -m helpers serve)")
        config = GenerationConfig(
            endpoint=endpoint, n_samples=args.n, temperatures=args.temperatures, t_min=args.t_min,
            t_max=args.t_max, max_tokens=args.max_tokens, top_p=args.top_p, seed=args.seed,
            concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm, max_attempts=args.max_attempts,
            timeout_s=args.timeout, backoff_base_s=args.backoff, cache_dir=args.cache_dir,
            prices_path=args.prices, progress=not args.no_progress)
        if args.batch:
            from ..teacher.batch_api import generate_batch

            summary = generate_batch(args.prompts, args.out, config, wait=not args.no_wait, poll_s=args.poll)
        else:
            summary = generate(args.prompts, args.out, config)
    except GenerationAborted as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(json.dumps(exc.summary.to_dict()) if args.json else exc.summary)
        return 3
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {mask_secrets(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished samples are saved; run the same command again to continue",
              file=sys.stderr)
        return 130
    print(json.dumps(summary.to_dict()) if args.json else summary)
    return 0 if summary.complete else 1
