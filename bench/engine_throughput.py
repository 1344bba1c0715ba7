"""Benchmark: the batch engine (helpers.teacher.engine) against ``evalscope perf`` on the same local teacher.

Not a test: run it by hand (it takes a few minutes on 2 CPU cores) and read the table.

    python bench/engine_throughput.py                      # 16 requests, max_tokens 64, c = 1 4 8, 2 repeats
    python bench/engine_throughput.py --requests 24 --repeats 3 --concurrency 1 8

What it does
    1. Starts the local teacher (bundled SmolLM2-135M-Instruct, ``swift deploy``,
       transformers backend, ``--max_batch_size 8``) on 127.0.0.1, unless
       ``--base-url``/``--model`` point at a server that already runs.
    2. Builds ``--requests`` zero-shot word-problem prompts. The SAME chat messages
       go to both clients: the engine gets them as prompt rows, evalscope reads them
       from a ``line_by_line`` file with one JSON message list per line.
    3. Warms the server up, then for each repeat and each concurrency runs, back to
       back (the order rotates between repeats, because the 2 shared cores drift):
       * the engine: ``generate(rows, fresh.jsonl, GenerationConfig(concurrency=c,
         cache_dir=None, ...))``, non-streaming, otherwise the shipped defaults;
       * ``evalscope perf`` (closed loop, ``parallel=c``, ``number=--requests``),
         streaming (its default) and non-streaming, each into a fresh output folder.
       Both sides send greedy requests (temperature 0) with the same ``max_tokens``
       and no top_p. swift's RequestConfig has no ``ignore_eos``/``min_tokens``, so
       replies may stop early: tokens/s is computed from the completion tokens the
       server reported for each side, and requests/s is shown next to it.
    4. Prints a table (medians over the repeats) and writes
       ``<workspace>/outputs/bench_engine.json`` with every single measurement.

Engine tok/s = completion tokens / the engine's own elapsed time (GenerationSummary,
which also covers reading back the output file and opening the client); evalscope
tok/s = its "Output token throughput", completion tokens / (last reply - first
request). The ratio compares the engine with evalscope in the same (non-streaming)
mode; the goal is engine >= 0.9 x raw.

evalscope is called in-process. ``evalscope.perf.main.run_perf_benchmark`` needs the
``evalscope[perf]`` extra (sse_starlette for its local-server mode); without it this
script drives ``evalscope.perf.benchmark.run_benchmark`` (the same closed-loop
benchmark that ``run_perf_benchmark`` wraps) on a fresh event loop, and the JSON
says which path was used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO))

from helpers.core.config import Secret, TeacherEndpoint, get_settings  # noqa: E402
from helpers.tasks.word_problems import word_problem_rows  # noqa: E402
from helpers.teacher.engine import GenerationConfig, generate  # noqa: E402

MODES = ("engine", "evalscope-stream", "evalscope-nonstream")


# --------------------------------------------------------------------------- prompts


def build_prompts(n: int, shots: int, seed: int) -> list[dict[str, Any]]:
    """``n`` word-problem prompt rows (train split); the same messages go to both clients."""
    rows = word_problem_rows("train", n, seed=seed, shots=shots)
    return [{"id": r["id"], "messages": r["messages"]} for r in rows]


def write_line_by_line(rows: list[dict[str, Any]], path: Path) -> Path:
    """One JSON message list per line: evalscope's ``line_by_line`` dataset sends it verbatim."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row["messages"], ensure_ascii=False) + "\n")
    return path


# --------------------------------------------------------------------------- the engine


def run_engine(endpoint: TeacherEndpoint, rows: list[dict[str, Any]], out: Path, *, concurrency: int,
               max_tokens: int, temperature: float, progress: bool, fsync: bool) -> dict[str, Any]:
    """One engine run into a fresh file, no cache; returns its throughput."""
    out.unlink(missing_ok=True)
    Path(str(out) + ".lock").unlink(missing_ok=True)
    config = GenerationConfig(endpoint=endpoint, temperatures=[temperature], max_tokens=max_tokens, top_p=None,
                              concurrency=concurrency, cache_dir=None, progress=progress, fsync=fsync,
                              max_attempts=1)
    wall = time.perf_counter()
    summary = generate(rows, out, config)
    wall = time.perf_counter() - wall
    done = summary.counts.get("ok", 0) + summary.counts.get("truncated", 0)
    return {
        "mode": "engine", "stream": False, "concurrency": concurrency,
        "requests": summary.requests, "succeeded": done, "failed": summary.counts.get("error", 0),
        "completion_tokens": summary.completion_tokens,
        "elapsed_s": summary.elapsed_s, "wall_s": round(wall, 3),
        "tok_s": summary.tokens_per_s,
        "req_s": round(done / summary.elapsed_s, 4) if summary.elapsed_s else 0.0,
        "tok_s_wall": round(summary.completion_tokens / wall, 2) if wall else 0.0,
        "errors": summary.error_examples,
    }


# --------------------------------------------------------------------------- evalscope


def _quiet_logging(verbose: bool) -> None:
    """Importing evalscope reconfigures the root logger at INFO; put it back to WARNING.

    (At INFO httpx would log every engine request, which is not what the engine costs
    in a notebook.) evalscope's INFO summary tables are shown only with ``verbose``.
    """
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("httpx", "openai", "helpers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not verbose:
        logger = logging.getLogger("evalscope")
        logger.setLevel(logging.WARNING)
        for handler in logger.handlers:
            handler.setLevel(logging.WARNING)


def _evalscope_runner(verbose: bool = False) -> tuple[str, Any]:
    """``run_perf_benchmark`` when the perf extra is complete, else the core benchmark."""
    import evalscope.perf.arguments  # noqa: F401 - configures evalscope's logging once
    _quiet_logging(verbose)
    try:
        from evalscope.perf.main import run_perf_benchmark  # needs sse_starlette (evalscope[perf])
        return "evalscope.perf.main.run_perf_benchmark", run_perf_benchmark
    except ImportError:
        from evalscope.perf.arguments import Arguments
        from evalscope.perf.benchmark import run_benchmark
        from evalscope.perf.utils.db_util import get_output_path

        def core(args: Any) -> dict[str, Any]:
            args = Arguments(**args) if isinstance(args, dict) else args
            args.outputs_dir = get_output_path(args)
            for field in ("parallel", "number", "rate"):  # one run, as run_one_benchmark does
                value = getattr(args, field)
                if isinstance(value, list):
                    setattr(args, field, value[0])
            loop = asyncio.new_event_loop()
            try:
                summary, *_ = loop.run_until_complete(run_benchmark(args))
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
            return {f"parallel_{args.parallel}_number_{args.number}": {"metrics": summary}}

        return "evalscope.perf.benchmark.run_benchmark (perf extra incomplete: no sse_starlette)", core


def run_evalscope(runner: Any, endpoint: TeacherEndpoint, dataset: Path, out_dir: Path, *, concurrency: int,
                  number: int, max_tokens: int, temperature: float, stream: bool,
                  verbose: bool = False) -> dict[str, Any]:
    """One closed-loop ``evalscope perf`` run into a fresh folder; returns its throughput."""
    name = out_dir.name
    shutil.rmtree(out_dir, ignore_errors=True)
    args = {
        "api": "openai",
        "url": endpoint.base_url.rstrip("/") + "/chat/completions",
        "api_key": endpoint.api_key.reveal() or None,
        "model": endpoint.model,
        "parallel": concurrency,
        "number": number,
        "dataset": "line_by_line",
        "dataset_path": str(dataset),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": stream,
        "outputs_dir": str(out_dir.parent),
        "name": name,
        "no_timestamp": True,
        "num_workers": 1,
        "sleep_interval": 0,
    }
    results = runner(args)
    asyncio.set_event_loop_policy(None)  # evalscope may install uvloop; the engine runs on plain asyncio
    _quiet_logging(verbose)
    (entry,) = results.values()
    m = entry["metrics"]
    succeeded = int(m.succeed_requests)
    tokens = int(round(m.avg_output_tokens * succeeded))
    return {
        "mode": "evalscope-stream" if stream else "evalscope-nonstream", "stream": stream,
        "concurrency": concurrency, "requests": int(m.total_requests), "succeeded": succeeded,
        "failed": int(m.failed_requests), "completion_tokens": tokens,
        "elapsed_s": round(m.time_taken, 3), "tok_s": round(m.output_token_throughput, 2),
        "req_s": round(m.request_throughput, 4), "avg_latency_s": round(m.avg_latency, 3),
        "avg_ttft_s": round(m.avg_ttft, 3), "output_dir": str(out_dir),
    }


# --------------------------------------------------------------------------- main


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return format("-", spec.split(".")[0]) if value is None else format(value, spec)


def summarize(runs: list[dict[str, Any]], concurrencies: list[int]) -> list[dict[str, Any]]:
    table = []
    for c in concurrencies:
        row: dict[str, Any] = {"concurrency": c}
        for mode in MODES:
            sel = [r for r in runs if r["concurrency"] == c and r["mode"] == mode]
            row[f"{mode}_tok_s"] = _median([r["tok_s"] for r in sel])
            row[f"{mode}_req_s"] = _median([r["req_s"] for r in sel])
            row[f"{mode}_tokens"] = _median([r["completion_tokens"] for r in sel])
            row[f"{mode}_n"] = len(sel)
        eng = row["engine_tok_s"]
        for mode, key in (("evalscope-nonstream", "ratio_nonstream"), ("evalscope-stream", "ratio_stream")):
            raw = row[f"{mode}_tok_s"]
            row[key] = round(eng / raw, 3) if eng is not None and raw else None
        table.append(row)
    return table


def print_table(table: list[dict[str, Any]], stream_too: bool) -> None:
    head = (f"{'conc':>4} | {'engine tok/s':>12} {'req/s':>6} | {'evalscope tok/s':>15} {'req/s':>6} | "
            f"{'ratio':>5}")
    if stream_too:
        head += f" || {'evalscope stream tok/s':>22} {'req/s':>6} | {'ratio':>5}"
    print(head)
    print("-" * len(head))
    for row in table:
        line = (f"{row['concurrency']:>4} | {_fmt(row['engine_tok_s'], '>12.1f')} "
                f"{_fmt(row['engine_req_s'], '>6.2f')} | "
                f"{_fmt(row['evalscope-nonstream_tok_s'], '>15.1f')} "
                f"{_fmt(row['evalscope-nonstream_req_s'], '>6.2f')} | {_fmt(row['ratio_nonstream'], '>5.2f')}")
        if stream_too:
            line += (f" || {_fmt(row['evalscope-stream_tok_s'], '>22.1f')} "
                     f"{_fmt(row['evalscope-stream_req_s'], '>6.2f')} | {_fmt(row['ratio_stream'], '>5.2f')}")
        print(line)
    print("engine: non-streaming (GenerationConfig defaults, no cache); "
          "evalscope: non-streaming (ratio = engine / evalscope)"
          + ("; evalscope stream: streaming, evalscope's default" if stream_too else ""))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--requests", type=int, default=16, help="requests per measurement (default 16)")
    p.add_argument("--requests-c1", type=int, default=8,
                   help="requests at concurrency 1 (default 8: one at a time, no batching to average out)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats (medians are reported)")
    p.add_argument("--shots", type=int, default=0, help="few-shot examples per prompt (0: short prompts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batch-size", type=int, default=8, help="swift deploy --max_batch_size")
    p.add_argument("--server-threads", type=int, default=0,
                   help="OMP threads of the server this script starts (default 0: the server's own default, "
                        "helpers.teacher.server.server_threads(), or $OMP_NUM_THREADS)")
    p.add_argument("--verbose", action="store_true", help="show evalscope's own summary tables")
    p.add_argument("--no-stream", action="store_true", help="skip the streaming evalscope runs")
    p.add_argument("--progress", action="store_true", help="show the engine's progress bar")
    p.add_argument("--no-fsync", action="store_true", help="engine with fsync=False (diagnosis)")
    p.add_argument("--base-url", default=None, help="use a running server instead of starting one")
    p.add_argument("--model", default=None, help="its served model name (with --base-url)")
    p.add_argument("--out", type=Path, default=None, help="JSON result (default outputs/bench_engine.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = get_settings()
    settings.ensure_dirs()
    work = settings.outputs_dir / "bench_engine"
    out_json = args.out or settings.outputs_dir / "bench_engine.json"
    sizes = {c: (args.requests_c1 if c == 1 else args.requests) for c in args.concurrency}
    rows = build_prompts(max(sizes.values()), args.shots, args.seed)
    datasets = {n: write_line_by_line(rows[:n], work / f"prompts_{n}.jsonl") for n in set(sizes.values())}
    runner_name, runner = _evalscope_runner(args.verbose)
    modes = [m for m in MODES if not (args.no_stream and m == "evalscope-stream")]

    server = None
    threads = "unknown (a running server)"
    started = time.perf_counter()
    if args.base_url:
        endpoint = TeacherEndpoint(base_url=args.base_url, model=args.model or "local-teacher",
                                   api_key=Secret(os.environ.get("TEACHER_API_KEY", "")), local=True)
    else:
        from helpers.teacher.server import server_threads, start_local_teacher

        if args.server_threads > 0:  # LocalServer hands this process's environment to swift deploy
            os.environ["OMP_NUM_THREADS"] = str(args.server_threads)
        threads = os.environ.get("OMP_NUM_THREADS") or str(server_threads())
        print(f"starting the local teacher (swift deploy, max_batch_size {args.max_batch_size}, "
              f"OMP threads {threads}) ...", flush=True)
        server = start_local_teacher(settings, max_batch_size=args.max_batch_size)
        endpoint = server.endpoint
        print(f"  ready in {time.perf_counter() - started:.0f} s at {endpoint.base_url}", flush=True)
    runs: list[dict[str, Any]] = []

    def write_report(complete: bool) -> None:
        """The JSON result; rewritten after every run, so a killed bench still leaves its numbers."""
        report = {
            "benchmark": "engine_throughput",
            "complete": complete,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(),
                        "loadavg_now": [round(x, 2) for x in os.getloadavg()]},
            "server": {"backend": "swift deploy, transformers", "model": endpoint.model,
                       "max_batch_size": args.max_batch_size, "started_here": server is not None,
                       "omp_threads": threads},
            "settings": {"requests": sizes, "max_tokens": args.max_tokens, "temperature": args.temperature,
                         "concurrency": args.concurrency, "repeats": args.repeats, "shots": args.shots,
                         "engine": {"stream": False, "fsync": not args.no_fsync, "progress": args.progress,
                                    "cache_dir": None},
                         "evalscope": {"runner": runner_name, "api": "openai", "dataset": "line_by_line",
                                       "modes": [m for m in modes if m != "engine"]}},
            "table": summarize(runs, args.concurrency),
            "runs": runs,
            "total_s": round(time.perf_counter() - started, 1),
        }
        out_json.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_json.with_name(out_json.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out_json)

    try:
        # Warm-up (not measured): a full batch through the engine, one request through evalscope.
        warm = min(max(args.concurrency), len(rows))
        run_engine(endpoint, rows[:warm], work / "warmup.jsonl", concurrency=warm, max_tokens=16,
                   temperature=args.temperature, progress=False, fsync=True)
        run_evalscope(runner, endpoint, datasets[min(datasets)], work / "evalscope-warmup", concurrency=1,
                      number=1, max_tokens=16, temperature=args.temperature, stream=False, verbose=args.verbose)
        for rep in range(args.repeats):
            for c in args.concurrency:
                n = sizes[c]
                shift = rep % len(modes)
                for mode in modes[shift:] + modes[:shift]:
                    tag = f"c{c}_r{rep}"
                    if mode == "engine":
                        result = run_engine(endpoint, rows[:n], work / f"engine_{tag}.jsonl", concurrency=c,
                                            max_tokens=args.max_tokens, temperature=args.temperature,
                                            progress=args.progress, fsync=not args.no_fsync)
                    else:
                        result = run_evalscope(runner, endpoint, datasets[n], work / f"{mode}_{tag}",
                                               concurrency=c, number=n, max_tokens=args.max_tokens,
                                               temperature=args.temperature, stream=mode == "evalscope-stream",
                                               verbose=args.verbose)
                    result["repeat"] = rep
                    result["loadavg_1min"] = round(os.getloadavg()[0], 2)
                    runs.append(result)
                    write_report(complete=False)
                    print(f"[rep {rep}] c={c:<2} {mode:<20} {result['tok_s']:7.1f} tok/s "
                          f"{result['req_s']:5.2f} req/s  {result['completion_tokens']:5d} tokens "
                          f"in {result['elapsed_s']:6.1f} s  ok {result['succeeded']}/{n}", flush=True)
                    if server is not None and not server.running():
                        print(f"error: the server died (log: {server.log_path}); the numbers so far are in "
                              f"{out_json}", file=sys.stderr)
                        return 1
    finally:
        if server is not None:
            server.stop()

    table = summarize(runs, args.concurrency)
    print()
    print_table(table, stream_too=not args.no_stream)
    write_report(complete=True)
    print(f"\nwrote {out_json} ({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
