"""`astrovlm ask ...`: one question about one or more images, the answer streamed to the terminal.

    astrovlm ask galaxy.png "What kind of galaxy is this?"
    astrovlm ask field.fits "Compare the two." --image other.fits --max-new-tokens 128 --temperature 0.7
    astrovlm ask cutout.fits "Is there a jet?" --adapter runs/vlm/adapter

Images may be PNG, JPEG, TIFF, FITS or NPY; they are rendered as the models see them (one plane as
radio, three as optical; see vlm.engine.load_image). The model is the default one (Engine.load): the
shipped LVM, SmolLM2-135M-Instruct and the shipped adapter unless --adapter names another. An unreadable
image stops the command before the model loads, with one line naming the file and the reason.
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
