"""`astrovlm detect`: find sources in an image, train a detector, or write the detection report.

    astrovlm detect IMAGE [--detector auto|radio|optical|DIR] [--out boxes.png] [--min-score 0.5] [--json]
    astrovlm detect train --domain radio [--backbone lvm] [--arch faster|mask] [--train-fields 1000] --out DIR
    astrovlm detect report [--out docs/detect-report] [--compare]

IMAGE is anything the chat reads (FITS, PNG, JPEG, TIFF, NPY). `auto` picks the radio detector for one
plane and the optical one for three; the picture is rendered as in training (one radio plane as three
stretches, g,r,z by Lupton's mapping, 8-bit RGB as it is).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

ACTIONS = ("train", "report")


def register(subparsers: argparse._SubParsersAction) -> None:
    detect = subparsers.add_parser(
        "detect",
        help="detect sources (Faster R-CNN on the LVM); `detect train`, `detect report`",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:6]),
    )
    detect.add_argument("target", metavar="IMAGE|train|report")
    detect.add_argument(
        "--out", help="PNG with boxes (IMAGE), detector folder (train), report folder (report)"
    )
    found = detect.add_argument_group("detect IMAGE")
    found.add_argument("--detector", default="auto", help="auto, radio, optical or a detector folder")
    found.add_argument("--min-score", type=float, default=0.5)
    found.add_argument("--json", action="store_true", help="print the detections as JSON")
    train = detect.add_argument_group("detect train")
    train.add_argument("--domain", choices=("radio", "optical"), default="radio")
    train.add_argument("--backbone", choices=("lvm", "resnet50", "efficientnet-lite0"), default="lvm")
    train.add_argument(
        "--arch", choices=("faster", "mask"), default="faster", help="Faster or Mask R-CNN (radio)"
    )
    train.add_argument("--finetune", action="store_true", help="train the pretrained backbone too")
    train.add_argument("--train-fields", type=int, default=1000)
    train.add_argument("--test-fields", type=int, default=200)
    train.add_argument("--steps", type=int, default=600)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument(
        "--backbone-lr-scale", type=float, default=1.0, help="a fine-tuned backbone's lr over the heads'"
    )
    report = detect.add_argument_group("detect report")
    report.add_argument("--compare", action="store_true", help="retrain the backbone comparison (~2 h)")
    detect.set_defaults(func=run)


def run(args) -> None:
    if args.target == "train":
        train(args)
    elif args.target == "report":
        from vlm.heads.detect_report import write_report

        for path in write_report(args.out or "docs/detect-report", compare=args.compare):
            print(path)
    else:
        detect_image(args)


def detect_image(args) -> None:
    from data_builders.io import read_image
    from data_builders.stretch import render_rgb
    from vlm.heads.detect import Detector
    from vlm.heads.detect_report import draw

    if not 0.0 <= args.min_score <= 1.0:
        raise ValueError(f"--min-score must be in [0, 1], got {args.min_score}")
    image = read_image(args.target)
    domain = "radio" if image.data.shape[0] == 1 else "optical"
    detector = Detector.load(domain if args.detector == "auto" else args.detector)
    picture = render_rgb(image.data, domain, image.bands)
    detections = detector.detect(picture, min_score=args.min_score, progress=True)
    out = Path(args.out or f"{Path(args.target).stem}-boxes.png")
    draw(picture, detections, scale=2 if max(picture.shape[:2]) <= 512 else 1).save(out)
    if args.json:
        print(json.dumps([d.to_dict() for d in detections], indent=1))
    else:
        counts = Counter(d.label for d in detections)
        summary = ", ".join(f"{n} {label}" for label, n in counts.items()) or "nothing"
        print(
            f"{len(detections)} detections ({summary}) with score >= {args.min_score}; boxes drawn to {out}"
        )


def train(args) -> None:
    from vlm.heads.detect import domain_config
    from vlm.heads.detect_data import simulate_fields
    from vlm.heads.detect_train import TrainConfig, evaluate, train_detector

    if not args.out:
        raise ValueError(
            "detect train needs --out DIR (e.g. vlm/weights/detect-radio to replace the default)"
        )
    if args.train_fields < 1 or args.test_fields < 1:
        raise ValueError("--train-fields and --test-fields must be >= 1")
    config = replace(domain_config(args.domain, args.backbone), arch=args.arch, finetune=args.finetune)
    fields = simulate_fields(args.domain, args.train_fields, "train")
    schedule = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, backbone_lr_scale=args.backbone_lr_scale
    )
    detector = train_detector(config, fields, schedule)
    detector.metrics["domain"] = args.domain
    detector.metrics["test"] = evaluate(detector, simulate_fields(args.domain, args.test_fields, "test"))
    detector.save(args.out)
    print(json.dumps(detector.metrics["test"]))
