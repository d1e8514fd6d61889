"""`astrovlm bench ...`: benchmark tasks on held-out simulated images, and the table of several runs.

    astrovlm bench list
    astrovlm bench run --out runs/bench/lora [--adapter runs/vlm/adapter] [--tasks b1,b3] [--n 200]
    astrovlm bench run --out runs/bench/base --base       # SmolLM2 + LVM with an untrained projector
    astrovlm bench run --out runs/bench/int8 --int8       # the default with int8 LM weights
    astrovlm bench run --out runs/bench/last --image-last     # image after the question (faster)
    astrovlm bench run --out runs/bench/probe --probe     # vision only: linear probe on LVM features
    astrovlm bench calibrate [--adapter DIR] [--n 400]    # per-answer biases: DIR/calibration.json
    astrovlm bench run --out runs/bench/cal --calibrated  # answers with the adapter's calibration
    astrovlm bench run --out runs/bench/gen --mode generate --tasks galaxymnist-zeroshot   # free text
    astrovlm bench run --out runs/bench/gpt4o --openai gpt-4o [--base-url URL] [--api-key KEY]
    astrovlm bench run --out runs/bench/real --tasks galaxymnist --data test_dataset.hdf5   # real images
    astrovlm bench compare runs/bench/base runs/bench/lora [--out cmp.md]   # macro-F1 [95 % CI] per task
    astrovlm bench suite --out runs/suite [--n 200]      # base, shipped default and probe: suite.md
    astrovlm bench boxes --out runs/bench/boxes --family radio-b3 --class compact   # IoU and mAP of boxes

Each run folder gets one subfolder per task (predictions.jsonl, metrics.json); rerunning resumes.
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial
from pathlib import Path

from benchmarks.calibration import CALIBRATION_FILE, CALIBRATION_SEED


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
    run.add_argument(
        "--data", help="a real data set instead of simulated images (GalaxyMNIST HDF5, MiraBest batches, ...)"
    )
    run.add_argument("--format", dest="data_format", help="its importer (default: from the path)")
    run.add_argument("--shuffle-check", type=int, default=50, metavar="K",
                     help="ask the first K images again with the options reordered (default 50; 0: off)")  # fmt: skip
    run.add_argument(
        "--context", action="store_true", help="put each task's context paragraph before its question"
    )
    run.add_argument("--base-url", help="the API of --openai (default: OpenAI's; $OPENAI_BASE_URL)")
    run.add_argument("--api-key", help="its key (default: $OPENAI_API_KEY)")
    run.add_argument("--probe-train", type=int, default=1000, help="training images of the probe (seed 0)")
    run.add_argument("--mode", choices=("score", "generate"), default="score",
                     help="score: rank the options by likelihood (default); generate: free text, parsed")  # fmt: skip
    run.add_argument("--int8", action="store_true",
                     help="the local model's LM linear layers in int8 (EngineConfig.int8_weights)")  # fmt: skip
    run.add_argument("--image-last", action="store_true",
                     help="ask the local model with the image after the question: faster, for models "
                          "trained to read that order too (EngineConfig.image_last)")  # fmt: skip
    run.add_argument("--views", type=int, choices=(1, 4, 8), default=1,
                     help="average the answers' probabilities over each image's quarter turns (4) and "
                          "their mirror images (8): test-time augmentation, N times the scoring")  # fmt: skip
    run.add_argument("--calibrated", nargs="?", const="adapter", metavar="FILE",
                     help="answer with per-answer biases (`bench calibrate`): FILE, or without it the "
                          "adapter's calibration.json")  # fmt: skip
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=run_run)

    calibrate = commands.add_parser(
        "calibrate", help="fit per-answer biases of a model's option scores on calibration images (seed 2)"
    )
    calibrate.add_argument("--adapter", help="a trained adapter folder (default: the shipped one)")
    calibrate.add_argument("--tasks", help="comma-separated task ids (default: all)")
    calibrate.add_argument("--n", type=int, default=400, help="calibration images per task (default 400)")
    calibrate.add_argument("--seed", type=int, default=CALIBRATION_SEED,
                           help=f"of the calibration images (default {CALIBRATION_SEED}; the training "
                                "sets use 0, the benchmark 1)")  # fmt: skip
    calibrate.add_argument("--scores", default="runs/calibration",
                           help="folder of the model's scores on them (resumes; default runs/calibration)")  # fmt: skip
    calibrate.add_argument("--out", help="the calibration file (default: ADAPTER/calibration.json)")
    calibrate.add_argument("--no-progress", action="store_true")
    calibrate.set_defaults(func=run_calibrate)

    compare = commands.add_parser(
        "compare", aliases=["table"], help="a Markdown table of runs, one column each"
    )
    compare.add_argument("runs", nargs="+", help="run folders (their names head the columns)")
    compare.add_argument("--out", help="also write the table (FILE.md) and a bar chart beside it (FILE.png)")
    compare.set_defaults(func=run_compare)

    boxes = commands.add_parser(
        "boxes", help="bounding-box answers scored by IoU and mAP (free-text backends)"
    )
    boxes.add_argument("--out", required=True)
    boxes.add_argument(
        "--family", default="radio-b3", help="a family with boxes (radio-b1..b5, optical-field)"
    )
    boxes.add_argument("--class", dest="box_class", default="compact", help="the class of box asked for")
    boxes.add_argument("--n", type=int, default=100)
    boxes.add_argument("--seed", type=int, default=1)
    which = boxes.add_mutually_exclusive_group()
    which.add_argument("--adapter", help="a trained adapter folder (default: the shipped one)")
    which.add_argument("--base", action="store_true", help="no adapter: the untrained assembly")
    which.add_argument("--openai", metavar="MODEL", help="a model behind an OpenAI-compatible API")
    boxes.add_argument("--base-url")
    boxes.add_argument("--api-key")
    boxes.add_argument("--max-new-tokens", type=int, default=128)
    boxes.add_argument("--no-progress", action="store_true")
    boxes.set_defaults(func=run_boxes_command)

    suite = commands.add_parser(
        "suite", help="every task for the base model, the shipped default and the probe"
    )
    suite.add_argument(
        "--out", required=True, help="suite folder: base/, default/, calibrated/, probe/ and suite.md"
    )
    suite.add_argument("--tasks", help="comma-separated task ids (default: all)")
    suite.add_argument("--n", type=int, default=200, help="images per task (default 200)")
    suite.add_argument("--seed", type=int, default=1)
    suite.add_argument("--probe-train", type=int, default=1000)
    suite.add_argument("--no-progress", action="store_true")
    suite.set_defaults(func=run_suite)


def run_list(args) -> None:
    from benchmarks.tasks import list_tasks, load_task

    for task_id in list_tasks():
        task = load_task(task_id)
        print(f"{task_id:12} {task.family:16} {task.label_type:7} {task.question}")


def run_run(args) -> None:
    from benchmarks.tasks import list_tasks, load_task

    tasks = [load_task(t) for t in (args.tasks.split(",") if args.tasks else list_tasks())]
    check_local_options(args)
    if args.probe:
        backend_for = probe_backends(args.probe_train, not args.no_progress)
    elif args.openai:
        from benchmarks.runner import OpenAIChat

        backend = OpenAIChat(args.openai, args.base_url, args.api_key or os.environ.get("OPENAI_API_KEY"))
        backend_for = lambda task: backend  # noqa: E731 -- one model answers every task
    else:
        adapter = None if args.base else args.adapter
        engine_options = {"int8_weights": args.int8, "image_last": args.image_last}
        calibration = read_calibration(args.calibrated, adapter) if args.calibrated else None
        backend_for = local_backends(adapter, args.base, args.mode, calibration, args.views, **engine_options)
    options = {"data": args.data, "data_format": args.data_format, "shuffle_check": args.shuffle_check,
               "context": args.context}  # fmt: skip
    run_tasks(tasks, backend_for, Path(args.out), args.n, args.seed, not args.no_progress, **options)


def check_local_options(args) -> None:
    """Options of the local model refused where they would be ignored."""
    local = {
        "--int8": args.int8,
        "--image-last": args.image_last,
        "--calibrated": args.calibrated,
        "--views": args.views > 1,
    }
    given = [flag for flag, value in local.items() if value]
    other = "--probe" if args.probe else "--openai" if args.openai else None
    if given and other:
        raise ValueError(f"{', '.join(given)}: options of the local model, not of {other}")
    if args.views > 1 and args.mode != "score":
        raise ValueError("--views: averages option scores, not free-text answers (--mode generate)")
    if args.calibrated and (args.base or args.mode != "score" or args.context or args.image_last):
        raise ValueError(
            "--calibrated: biases fitted for an adapter's option scores of the plain prompts, image first "
            "(not with --base, --mode generate, --context or --image-last)"
        )


def read_calibration(path: str, adapter: str | None):
    """The calibration file `path`, or "adapter": the one beside the adapter (default: the shipped)."""
    from benchmarks.calibration import Calibration
    from vlm.engine import DEFAULT_ADAPTER_DIR

    adapter = Path(adapter or DEFAULT_ADAPTER_DIR)
    calibration = Calibration.load(adapter / CALIBRATION_FILE if path == "adapter" else path)
    calibration.check_adapter(adapter)
    return calibration


def probe_backends(n_train: int, progress: bool):
    """One probe per task, fitted on its training images."""
    from benchmarks.probe import LinearProbe

    return partial(LinearProbe.fit, n_train=n_train, progress=progress)


def local_engine(adapter: str | None, base: bool, **engine_options):
    """The project's model: the untrained assembly (base), or the shipped or given adapter;
    `engine_options`: EngineConfig's fields."""
    from vlm.engine import Engine, EngineConfig
    from vlm.model import build_astrovlm

    config = EngineConfig(**engine_options)
    return Engine(*build_astrovlm(), config) if base else Engine.load(adapter_dir=adapter, config=config)


def local_backends(
    adapter: str | None, base: bool, mode: str = "score", calibration=None, views: int = 1, **engine_options
):
    from benchmarks.runner import Generation, OptionScoring

    engine = local_engine(adapter, base, **engine_options)
    backend = OptionScoring(engine, calibration, views) if mode == "score" else Generation(engine)
    return lambda task: backend


def run_calibrate(args) -> None:
    """Score each task's calibration images with the model (raw), fit the biases, write the file."""
    from benchmarks.calibration import MIN_GAIN, Calibration, adapter_digest, fit_task
    from benchmarks.tasks import list_tasks, load_task
    from vlm.engine import DEFAULT_ADAPTER_DIR

    if args.seed in (0, 1):
        raise ValueError(
            f"--seed {args.seed}: those are the {['training', 'benchmark'][args.seed]} images; calibrate on others"
        )
    tasks = [load_task(t) for t in (args.tasks.split(",") if args.tasks else list_tasks())]
    adapter = Path(args.adapter or DEFAULT_ADAPTER_DIR)
    # one folder per adapter's content: scores of another model are never resumed as this one's
    digest = adapter_digest(adapter)
    scores = Path(args.scores) / f"{digest}-seed-{args.seed}"
    run_tasks(tasks, local_backends(args.adapter, False), scores, args.n, args.seed, not args.no_progress,
              shuffle_check=0)  # fmt: skip
    fitted = {task.id: fit_task(task, scores / task.id) for task in tasks}
    out = Path(args.out) if args.out else adapter / CALIBRATION_FILE
    Calibration(fitted, args.seed, digest).save(out)
    print("| task | images | macro-F1 raw | calibrated (out of fold) | biases |")
    print("| --- | --- | --- | --- | --- |")
    for task_id, fit in fitted.items():
        kept = "kept" if any(fit.biases.values()) else f"0 (gain under {MIN_GAIN})"
        print(f"| {task_id} | {fit.n} | {fit.macro_f1_before:.3f} | {fit.macro_f1_after:.3f} | {kept} |")
    print(f"wrote {out}")


def run_tasks(tasks, backend_for, out: Path, n: int, seed: int, progress: bool, **options) -> None:
    """Each task with its backend; `options`: RunConfig's data, data_format, shuffle_check, context."""
    from benchmarks.runner import RunConfig, run_task

    for task in tasks:
        config = RunConfig(out=str(out / task.id), n=n, seed=seed, **options)
        metrics = run_task(task, backend_for(task), config, progress)
        print(json.dumps({k: metrics[k] for k in ("task", "n", "macro_f1")}))


def run_boxes_command(args) -> None:
    from benchmarks.boxes import BoxConfig, run_boxes
    from benchmarks.runner import Generation, OpenAIChat

    if args.openai:
        key = args.api_key or os.environ.get("OPENAI_API_KEY")
        backend = OpenAIChat(args.openai, args.base_url, key, max_new_tokens=args.max_new_tokens)
    else:
        backend = Generation(local_engine(args.adapter, args.base), max_new_tokens=args.max_new_tokens)
    config = BoxConfig(args.out, args.family, args.box_class, args.n, args.seed)
    metrics = run_boxes(backend, config, progress=not args.no_progress)
    print(
        json.dumps(
            {
                k: metrics[k]
                for k in ("n", "map_50", "map", "mean_best_iou", "count_accuracy", "parse_failure_rate")
            }
        )
    )


def run_compare(args) -> None:
    from benchmarks.report import compare_runs

    print(compare_runs([Path(r) for r in args.runs], Path(args.out) if args.out else None))


def run_suite(args) -> None:
    """seed 003's results slide: the base assembly, the shipped fine-tuned default (when one ships; and
    with its shipped calibration, when it has one) and the vision-only probe on every task, as one table
    (suite.md, suite.png)."""
    from benchmarks.report import compare_runs
    from benchmarks.runner import OptionScoring
    from benchmarks.tasks import list_tasks, load_task
    from vlm.engine import DEFAULT_ADAPTER_DIR
    from vlm.model import PROJECTOR_FILE

    out = Path(args.out)
    tasks = [load_task(t) for t in (args.tasks.split(",") if args.tasks else list_tasks())]
    progress = not args.no_progress
    runs = {"base": local_backends(None, base=True)}
    if (DEFAULT_ADAPTER_DIR / PROJECTOR_FILE).is_file():
        default = OptionScoring(local_engine(None, base=False))
        runs["default"] = lambda task: default
        if (DEFAULT_ADAPTER_DIR / CALIBRATION_FILE).is_file():  # the same model, answering calibrated
            calibrated = default.with_calibration(read_calibration("adapter", None))
            runs["calibrated"] = lambda task: calibrated
    else:
        print(f"no shipped adapter in {DEFAULT_ADAPTER_DIR}: the suite has no fine-tuned column")
    runs["probe"] = probe_backends(args.probe_train, progress)
    for name, backend_for in runs.items():
        run_tasks(tasks, backend_for, out / name, args.n, args.seed, progress)
    print(compare_runs([out / name for name in runs], out / "suite.md"))
