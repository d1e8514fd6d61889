"""The `astrovlm` command: one entry point, subcommands grouped by package.

astrovlm data ...      data_builders: simulate, import, build Q&A sets, preview
astrovlm lvm ...       vlm.lvm: pretrain, multi-task, report and export the domain vision model
astrovlm ask ...       vlm: ask the VLM about images (the answer is streamed)
astrovlm train ...     vlm: train the VLM's projector, LoRA adapter or whole LM
astrovlm export ...    vlm: ship a trained adapter as the default
astrovlm bench ...     benchmarks: run tasks (B1-B6, GalaxyMNIST) with a model, tabulate runs
astrovlm chat ...      app: the chat UI in the browser, with tools
astrovlm serve ...     app: an OpenAI-compatible HTTP API
astrovlm hitl ...      app: the human-in-the-loop experiments (vlm.heads.hitl_report)
astrovlm detect ...    vlm.heads: find sources in an image; train detectors; the detection report
"""

from __future__ import annotations

import argparse
import logging
import sys

from app import commands as app_cli
from benchmarks import cli as bench_cli
from data_builders import cli as data_cli
from vlm import cli as vlm_cli
from vlm.heads import detect_cli
from vlm.lvm import cli as lvm_cli


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="astrovlm", description=__doc__.split("\n")[0])
    root.add_argument("-v", "--verbose", action="store_true")
    subparsers = root.add_subparsers(dest="command", required=True)
    data_cli.register(subparsers)
    lvm_cli.register(subparsers)
    vlm_cli.register(subparsers)
    bench_cli.register(subparsers)
    app_cli.register(subparsers)
    detect_cli.register(subparsers)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # user errors: one clear line, no traceback
        print(f"astrovlm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("astrovlm: interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
