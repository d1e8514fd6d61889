"""`astrovlm data ...`: build, preview and export data sets.

astrovlm data families
astrovlm data build --family radio-b1 --n 500 --out OUT [--seed 0] [--num-proc 2] [--size 128]
astrovlm data build --import galaxy-mnist --path train_dataset.hdf5 --out OUT
astrovlm data preview --family radio-b6 --out sheet.png      (--family all --out DIR: one sheet each)
astrovlm data export-llava OUT LLAVA_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="build, preview and export data sets")
    commands = data.add_subparsers(dest="data_command", required=True)

    commands.add_parser("families", help="list the data families and their classes").set_defaults(
        func=families
    )

    build = commands.add_parser("build", help="simulate or import records and write a Q&A dataset")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--family", help="simulate this family (see `astrovlm data families`)")
    source.add_argument("--import", dest="importer", help="import real data with this importer")
    build.add_argument("--path", help="the file or folder to import")
    build.add_argument("--out", required=True)
    build.add_argument("--n", type=int, default=1000, help="number of images (at most, when importing)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--size", type=int, help="image side in pixels for simulated families")
    build.add_argument("--shard-size", type=int, default=1000)
    build.add_argument("--num-proc", type=int, default=1)
    build.add_argument("--dialogues", type=int, default=4, help="dialogues per image")
    build.add_argument("--kinds", help="comma-separated conversation kinds (default: all)")
    build.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="an importer option, e.g. --option keep_hybrid=true",
    )
    build.set_defaults(func=run_build)

    preview = commands.add_parser("preview", help="write a contact sheet PNG of a simulated family")
    preview.add_argument("--family", required=True, help="a family name, or 'all' (then --out is a folder)")
    preview.add_argument("--out", required=True)
    preview.add_argument("--n", type=int, default=24)
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--size", type=int)
    preview.add_argument("--boxes", action="store_true", help="draw the per-source boxes")
    preview.set_defaults(func=run_preview)

    export = commands.add_parser("export-llava", help="export a built set to LLaVA's JSON + image folder")
    export.add_argument("built")
    export.add_argument("out")
    export.set_defaults(func=run_export)


def families(args) -> None:
    from data_builders.families import FAMILIES

    for family in FAMILIES.values():
        print(f"{family.name:20s} {family.domain:8s} {family.label_type:7s} {', '.join(family.classes)}")


def run_build(args) -> None:
    from data_builders.build import BuildConfig, build
    from data_builders.conversations import KINDS

    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    config = BuildConfig(
        out=args.out,
        family=args.family,
        n=args.n,
        importer=args.importer,
        path=args.path,
        seed=args.seed,
        size=args.size,
        shard_size=args.shard_size,
        num_proc=args.num_proc,
        dialogues_per_image=args.dialogues,
        kinds=tuple(args.kinds.split(",")) if args.kinds else KINDS,
        import_options=options,
    )
    manifest = build(config)
    print(
        f"{manifest['records']} images, {manifest['dialogues']} dialogues, {manifest['skipped']} skipped "
        f"-> {args.out} ({manifest['seconds']} s)"
    )
    print("per class:", json.dumps(manifest["per_class"]))
    if manifest["skipped"]:
        print("skipped:", json.dumps(manifest["skipped_reasons"], indent=1))


def run_preview(args) -> None:
    from data_builders.preview import family_sheet, preview_all

    if args.family == "all":
        for path in preview_all(args.out, n=args.n, seed=args.seed):
            print(path)
    else:
        print(
            family_sheet(
                args.family, Path(args.out), n=args.n, seed=args.seed, size=args.size, boxes=args.boxes
            )
        )


def run_export(args) -> None:
    from data_builders.export import export_llava

    print(export_llava(args.built, args.out))
