"""`astrovlm ask ...`: one question about one or more images, the answer streamed to the terminal;
`astrovlm train ...`: train the VLM (vlm/train.py).

    astrovlm ask galaxy.png "What kind of galaxy is this?"
    astrovlm ask field.fits "Compare the two." --image other.fits --max-new-tokens 128 --temperature 0.7
    astrovlm ask cutout.fits "Is there a jet?" --adapter runs/vlm/adapter

Images may be PNG, JPEG, TIFF, FITS or NPY; they are rendered as the models see them (one plane as
radio, three as optical; see vlm.engine.load_image). The model is the default one (Engine.load): the
shipped LVM, SmolLM2-135M-Instruct and the shipped adapter unless --adapter names another. An unreadable
image stops the command before the model loads, with one line naming the file and the reason.

    astrovlm train --list
    astrovlm train lora-smollm2 --out runs/lora --set init_adapter=runs/stage1/adapter --set steps=500
"""

from __future__ import annotations

import argparse
import sys
import warnings


def register(subparsers: argparse._SubParsersAction) -> None:
    ask = subparsers.add_parser("ask", help="ask the VLM about an image; the answer is streamed")
    ask.add_argument("image", help="the image (PNG/JPEG/TIFF/FITS/NPY)")
    ask.add_argument("question", help="the question, in quotes")
    ask.add_argument("--image", dest="more_images", action="append", default=[], metavar="FILE",
                     help="one more image, shown after the first (repeatable)")  # fmt: skip
    ask.add_argument("--max-new-tokens", type=int, default=256, help="longest answer in tokens (default 256)")
    ask.add_argument("--temperature", type=float, default=0.0, help="0 (default) answers greedily")
    ask.add_argument("--adapter", help="a save_adapter folder (default: the shipped vlm/weights/vlm-adapter)")
    ask.set_defaults(func=run_ask)

    train = subparsers.add_parser("train", help="train the VLM: projector, LoRA or full (resumable)")
    train.add_argument("preset", nargs="?", help="a preset of vlm/train_presets (see --list) or a YAML file")
    train.add_argument("--out", help="run folder; rerunning the same command resumes it")
    train.add_argument("--config", help="a YAML file of TrainConfig fields, applied over the preset")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any config field, value as JSON; dots reach into sub-configs")  # fmt: skip
    train.add_argument("--stop-after", type=int, help="stop (checkpointed) after this step; rerun resumes")
    train.add_argument("--list", action="store_true", help="list the presets and exit")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=run_train)

    mixer = subparsers.add_parser(
        "mixer", help="pretrain a token mixer for the projector (vlm/token_mixer.py)"
    )
    mixer_commands = mixer.add_subparsers(dest="mixer_command", required=True)
    pretrain = mixer_commands.add_parser("pretrain", help="train it on the benchmark families' labels")
    pretrain.add_argument("--out", required=True, help="folder for mixer.safetensors and its report")
    pretrain.add_argument("--adapter", help="the adapter whose projector standardisation it reads through "
                          "(default: the shipped vlm/weights/vlm-adapter)")  # fmt: skip
    pretrain.add_argument(
        "--tasks", help="benchmark tasks, comma-separated (default: B1-B6, GalaxyMNIST, LSBG)"
    )
    pretrain.add_argument("--images-per-task", type=int, default=6000)
    pretrain.add_argument("--epochs", type=int, default=20)
    pretrain.add_argument("--no-progress", action="store_true", help="no progress bars")
    pretrain.set_defaults(func=run_mixer_pretrain)

    export = subparsers.add_parser("export", help="ship a trained LoRA run as the default adapter (float16)")
    export.add_argument("--run", required=True, help="a finished `astrovlm train` run folder")
    export.add_argument("--quality", help="a Markdown file with the scores (astrovlm bench table > FILE)")
    export.add_argument("--out", help="destination (default: the package's vlm/weights/vlm-adapter)")
    export.set_defaults(func=run_export)


def run_ask(args) -> None:
    from transformers.utils import logging as hf_logging

    from data_builders.io import ImageReadError, read_image
    from vlm.engine import Engine

    hf_logging.disable_progress_bar()  # the terminal shows the answer, not "Loading weights" bars

    # every file is read before the model loads: a typo costs no waiting
    try:
        images = [read_image(path) for path in [args.image, *args.more_images]]
    except ImageReadError as exc:  # "FILE: reason"; a library's reason may span lines, the CLI prints one
        raise ValueError(" ".join(str(exc).split())) from exc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # ours: no adapter, a shortened conversation
        engine = Engine.load(adapter_dir=args.adapter)
        parts = [{"type": "image", "image": image} for image in images]
        parts.append({"type": "text", "text": args.question})
        reply = engine.chat(
            [{"role": "user", "content": parts}],
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
        )
    for warning in caught:
        if issubclass(warning.category, UserWarning):  # one plain line, not Python's file:line format
            print(f"astrovlm: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    for piece in reply:
        print(piece, end="", flush=True)
    print()
    if reply.finish_reason == "length":
        print(
            f"astrovlm: note: the answer stopped at --max-new-tokens {args.max_new_tokens}", file=sys.stderr
        )


def run_train(args) -> None:
    import json

    from vlm.train import list_presets, load_config, train

    if args.list:
        print("\n".join(list_presets()))
        return
    if args.out is None:
        raise ValueError("--out is required: the run folder")
    config = load_config(args.preset, args.out, args.config, args.set)
    metrics = train(config, stop_after=args.stop_after, progress=not args.no_progress)
    print(json.dumps(metrics, indent=2))


def run_mixer_pretrain(args) -> None:
    import json

    from vlm.token_mixer import MixerPretrainConfig, pretrain_mixer

    tasks = {"tasks": tuple(t.strip() for t in args.tasks.split(",") if t.strip())} if args.tasks else {}
    config = MixerPretrainConfig(
        out=args.out, adapter=args.adapter, images_per_task=args.images_per_task, epochs=args.epochs, **tasks
    )
    _, report = pretrain_mixer(config, progress=not args.no_progress)
    print(json.dumps(report["held_out_macro_f1"], indent=2))


def run_export(args) -> None:
    from pathlib import Path

    from vlm.export import DEFAULT_ADAPTER_DIR, export_adapter

    quality = Path(args.quality).read_text().strip() if args.quality else None
    print(export_adapter(args.run, args.out or DEFAULT_ADAPTER_DIR, quality))
