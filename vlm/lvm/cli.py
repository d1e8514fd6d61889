"""`astrovlm lvm ...`: the domain vision model.

    astrovlm lvm pretrain --out runs/lvm-small [--preset lvm-small] [--steps 5000] [--batch-size 32]
        [--pool 10000] [--img-size 64] [--lr 1e-3] [--config FILE] [--set key=value ...] [--resume]
    accelerate launch --multi_gpu --num_processes 4 -m app.cli lvm pretrain --out runs/lvm-base \\
        --preset lvm-base --img-size 128 --pool 20000 --batch-size 64 --steps 50000 --num-workers 8

The defaults are the shipped lvm-small recipe (5000 steps of 32 images at 64 px from a pool of 10,000:
about 35 minutes on 2 free CPU cores, at ~80 images/s).

Precedence: PretrainConfig's defaults, then --config (YAML/JSON), then the flags, then
--set (e.g. --set lr=3e-4 --set mix.radio-first=800). --pool N scales the mix to N images.
Rerunning a command with the same --out resumes it from out/checkpoint.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    lvm = subparsers.add_parser("lvm", help="the domain vision model (LVM): pretrain, multitask, report")
    commands = lvm.add_subparsers(dest="lvm_command", required=True)

    pretrain = commands.add_parser("pretrain", help="MSE reconstruction pretraining (resumable)")
    pretrain.add_argument("--out", required=True, help="run folder (checkpoint/, final/, metrics.json)")
    pretrain.add_argument("--config", help="a YAML or JSON file of PretrainConfig fields")
    pretrain.add_argument("--preset", help="LVM preset (default lvm-small)")
    pretrain.add_argument("--img-size", type=int, help="training resolution in px (default 64)")
    pretrain.add_argument("--steps", type=int, help="optimizer steps (default 5000)")
    pretrain.add_argument("--batch-size", type=int, help="images per step and process (default 32)")
    pretrain.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    pretrain.add_argument(
        "--pool", type=int, help="pool size: the mix scaled to this many images (default 10000)"
    )
    pretrain.add_argument("--num-workers", type=int, help="processes that draw the pool (once)")
    pretrain.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="any config field, value as JSON; dots reach into the mix")  # fmt: skip
    pretrain.add_argument("--resume", action="store_true", help="fail unless out/checkpoint exists")
    pretrain.add_argument("--stop-after", type=int, help="stop (checkpointed) after this step; rerun resumes")
    pretrain.add_argument("--no-progress", action="store_true", help="no progress bars")
    pretrain.set_defaults(func=run_pretrain)
    register_multitask(commands)
    export = commands.add_parser(
        "export", help="ship a finished pretraining run: float16 weights + model card"
    )
    export.add_argument(
        "--run", required=True, help="the pretraining run folder (with final/ and metrics.json)"
    )
    export.add_argument("--out", help="destination folder (default: the package's vlm/weights/lvm-small)")
    export.set_defaults(func=run_export)

    report = commands.add_parser("report", help="seed 000's Tables 1-4 and Figure 5 for an LVM (resumable)")
    report.add_argument("--out", required=True, help="report folder (report.md, plots, multitask runs)")
    report.add_argument("--lvm", help="LVM checkpoint folder (default: the shipped lvm-small)")
    report.add_argument("--multitask-steps", type=int, help="steps per multi-task strategy (default 300)")
    report.add_argument("--fewshot-k", help="labels per class, comma-separated (default 10,30,100,1000)")
    report.add_argument(
        "--learners",
        help="few-shot learners, comma-separated (default lvm,resnet18-scratch,efficientnet-lite0)",
    )
    report.add_argument("--no-progress", action="store_true", help="no progress bars")
    report.set_defaults(func=run_report)


def run_pretrain(args) -> None:
    from vlm.lvm.data import DEFAULT_WEIGHTS, scale_mix
    from vlm.lvm.pretrain import PretrainConfig, apply_overrides, pretrain, read_config_file

    flags = {"out": args.out, "preset": args.preset, "img_size": args.img_size, "steps": args.steps,
             "batch_size": args.batch_size, "lr": args.lr, "num_workers": args.num_workers}  # fmt: skip
    data = read_config_file(args.config) | {k: v for k, v in flags.items() if v is not None}
    if args.pool is not None:  # the file's mix (or the default one) in proportion, scaled to --pool
        data["mix"] = scale_mix(data.get("mix") or DEFAULT_WEIGHTS, args.pool)
    config = PretrainConfig.from_dict(apply_overrides(data, args.set))
    metrics = pretrain(config, resume=True if args.resume else None, stop_after=args.stop_after,
                       progress=not args.no_progress)  # fmt: skip
    print(json.dumps(metrics, indent=2))


def register_multitask(commands) -> None:
    multitask = commands.add_parser(
        "multitask", help="train the classify/restore/reconstruct heads (seed 000)"
    )
    multitask.add_argument("--out", required=True, help="run folder (one sub-folder per strategy)")
    multitask.add_argument("--strategy", default="all", choices=["all", "frozen", "uniform", "active"])
    multitask.add_argument("--lvm", help="LVM checkpoint folder (default: the shipped lvm-small)")
    multitask.add_argument("--steps", type=int, help="optimizer steps per strategy (default 600)")
    multitask.add_argument("--batch-size", type=int, help="images per step, shared by the tasks (default 48)")
    multitask.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="any MultitaskConfig field, value as JSON")  # fmt: skip
    multitask.add_argument("--no-progress", action="store_true", help="no progress bars")
    multitask.set_defaults(func=run_multitask)


def run_multitask(args) -> None:
    from pathlib import Path

    from vlm.lvm.multitask import STRATEGIES, MultitaskConfig, load_task_data, train_multitask
    from vlm.lvm.pretrain import apply_overrides

    strategies = STRATEGIES if args.strategy == "all" else (args.strategy,)
    flags = {"lvm": args.lvm, "steps": args.steps, "batch_size": args.batch_size}
    base = apply_overrides({k: v for k, v in flags.items() if v is not None}, args.set)
    data = None
    results = {}
    for strategy in strategies:
        config = MultitaskConfig(**base, out=str(Path(args.out) / strategy), strategy=strategy)
        data = data or load_task_data(config, cache_dir=Path(args.out), progress=not args.no_progress)
        results[strategy] = train_multitask(config, data=data, progress=not args.no_progress)
    print(json.dumps({s: {t: m[t] for t in ("classify", "restore", "reconstruct")} for s, m in results.items()},
                     indent=2))  # fmt: skip


def run_export(args) -> None:
    from vlm.lvm.shipped import DEFAULT_LVM_DIR, export_run

    metrics = export_run(args.run, args.out or DEFAULT_LVM_DIR)
    print(
        f"exported {args.run} -> {args.out or DEFAULT_LVM_DIR} (held-out PSNR {metrics['val_psnr_float16']:.2f} dB)"
    )


def run_report(args) -> None:
    from vlm.lvm.report import ReportConfig, run_report

    fields = {"out": args.out, "lvm": args.lvm, "multitask_steps": args.multitask_steps}
    if args.fewshot_k:
        fields["fewshot_k"] = tuple(int(k) for k in args.fewshot_k.split(","))
    if args.learners:
        fields["learners"] = tuple(args.learners.split(","))
    summary = run_report(ReportConfig(**{k: v for k, v in fields.items() if v is not None}),
                         progress=not args.no_progress)  # fmt: skip
    print(f"report written to {args.out}/report.md ({sum(summary['timings_s'].values()) / 60:.1f} min)")
