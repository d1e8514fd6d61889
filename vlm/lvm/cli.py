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
    lvm = subparsers.add_parser("lvm", help="pretrain the domain vision model (LVM)")
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
