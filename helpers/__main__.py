"""Command line: ``python -m helpers <command>``.

Commands:
  check              print the environment report (notebook 00 without Jupyter)
  prepare-student    convert/download the student model once
  serve              run the local teacher until Ctrl+C
  generate ...       batch generation with the teacher (see ``generate --help``)
  run-course         execute every notebook headless into a run folder
  i18n ...           status / stub / build of the Chinese notebooks (see ``i18n --help``)
"""

from __future__ import annotations

import argparse
import sys

from .config import LOCAL_BATCH_SIZE


def _check(args: argparse.Namespace) -> int:
    from .envcheck import report_frame, run_checks

    checks = run_checks(prepare_student=args.prepare)
    print(report_frame(checks).to_string(index=False))
    return 0 if all(c.ok for c in checks) else 1


def _prepare(args: argparse.Namespace) -> int:
    from .models import prepare_student

    print(prepare_student(force=args.force))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import time

    from .server import start_local_teacher

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


def _run_course(args: argparse.Namespace) -> int:
    from .course import run_course

    return 0 if run_course(timeout=args.timeout, start=args.start).ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "generate":  # the engine owns its own argument parser
        from .generate import cli_main

        return cli_main(argv[1:])
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
    p = sub.add_parser("run-course", help="execute all notebooks headless")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    p.add_argument("--start", metavar="NN", help="start at this notebook (e.g. 04), reusing the workspace")
    p.set_defaults(func=_run_course)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
