"""`astrovlm bench ...`: benchmark tasks on held-out simulated images, and the table of several runs.

    astrovlm bench list
    astrovlm bench run --out runs/bench/lora [--adapter runs/vlm/adapter] [--tasks b1,b3] [--n 200]
    astrovlm bench run --out runs/bench/base --base       # SmolLM2 + LVM with an untrained projector
    astrovlm bench run --out runs/bench/probe --probe     # vision only: linear probe on LVM features
    astrovlm bench run --out runs/bench/gen --mode generate --tasks galaxymnist-zeroshot   # free text
    astrovlm bench run --out runs/bench/gpt4o --openai gpt-4o [--base-url URL] [--api-key KEY]
    astrovlm bench table runs/bench/base runs/bench/lora  # Markdown: macro-F1 (and accuracy) per task

Each run folder gets one subfolder per task (predictions.jsonl, metrics.json); rerunning resumes.
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks: run tasks with a model, tabulate runs")
    commands = bench.add_subparsers(dest="bench_command", required=True)
    commands.add_parser("list", help="the benchmark tasks").set_defaults(func=run_list)

    run = commands.add_parser("run", help="option-scoring evaluation on held-out simulated images")
    run.add_argument("--out", required=True, help="run folder (one subfolder per task)")
    run.add_argument("--tasks", help="comma-separated task ids (default: all)")
    run.add_argument("--n", type=int, default=200, help="images per task (default 200)")
    run.add_argument("--seed", type=int, default=1, help="of the held-out images (training uses 0)")
    model = run.add_mutually_exclusive_group()
    model.add_argument("--adapter", help="a trained adapter folder (default: the shipped one)")
    model.add_argument("--base", action="store_true", help="no adapter: the untrained assembly")
    model.add_argument("--openai", metavar="MODEL",
                       help="a model behind an OpenAI-compatible API (free text; see --base-url)")  # fmt: skip
    model.add_argument("--probe", action="store_true",
                       help="the vision-only baseline: a linear probe on frozen LVM features")  # fmt: skip
    run.add_argument("--base-url", help="the API of --openai (default: OpenAI's; $OPENAI_BASE_URL)")
    run.add_argument("--api-key", help="its key (default: $OPENAI_API_KEY)")
    run.add_argument("--probe-train", type=int, default=1000, help="training images of the probe (seed 0)")
    run.add_argument("--mode", choices=("score", "generate"), default="score",
                     help="score: rank the options by likelihood (default); generate: free text, parsed")  # fmt: skip
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=run_run)

    table = commands.add_parser("table", help="a Markdown table of runs, one column each")
    table.add_argument("runs", nargs="+", help="run folders (their names head the columns)")
    table.set_defaults(func=run_table)


def run_list(args) -> None:
    from benchmarks.tasks import list_tasks, load_task

    for task_id in list_tasks():
        task = load_task(task_id)
        print(f"{task_id:12} {task.family:16} {task.label_type:7} {task.question}")


def run_run(args) -> None:
    from benchmarks.runner import Generation, OptionScoring, RunConfig, run_task
    from benchmarks.tasks import list_tasks, load_task
    from vlm.engine import Engine
    from vlm.model import build_astrovlm

    tasks = [load_task(t) for t in (args.tasks.split(",") if args.tasks else list_tasks())]
    if args.probe:  # one probe per task, fitted on its training images
        from benchmarks.probe import LinearProbe

        backend_for = partial(LinearProbe.fit, n_train=args.probe_train, progress=not args.no_progress)
    elif args.openai:
        from benchmarks.runner import OpenAIChat

        backend = OpenAIChat(args.openai, args.base_url, args.api_key or os.environ.get("OPENAI_API_KEY"))
        backend_for = lambda task: backend  # noqa: E731
    else:
        engine = Engine(*build_astrovlm()) if args.base else Engine.load(adapter_dir=args.adapter)
        backend = OptionScoring(engine) if args.mode == "score" else Generation(engine)
        backend_for = lambda task: backend  # noqa: E731 -- one model answers every task
    for task in tasks:
        config = RunConfig(out=str(Path(args.out) / task.id), n=args.n, seed=args.seed)
        metrics = run_task(task, backend_for(task), config, progress=not args.no_progress)
        print(json.dumps({k: metrics[k] for k in ("task", "n", "macro_f1")}))


def run_table(args) -> None:
    from benchmarks.report import quality_table

    print(quality_table([Path(r) for r in args.runs]))
