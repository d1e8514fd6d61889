"""`astrovlm chat ...` (the Gradio UI), `astrovlm serve ...` (the OpenAI-compatible API) and
`astrovlm hitl experiment` (seed 000's human-in-the-loop comparisons, vlm.heads.hitl_report).

    astrovlm chat [--port 7860] [--adapter DIR] [--gallery DIR] [--hitl-dir DIR]
    astrovlm serve [--port 8000] [--api-key KEY] [--allow-images-from DIR] [--max-queue 16]
    astrovlm serve --int8 --compile      # 2.7x the tokens/s (README, Performance) after compiling

Both listen on 127.0.0.1 unless --host says otherwise, and load the model before they listen.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    chat = subparsers.add_parser("chat", help="the chat UI in the browser (Gradio, localhost)")
    _common(chat, port=7860)
    chat.add_argument(
        "--gallery", help="a folder of images for find_similar (default: a simulated+FIRST gallery)"
    )
    chat.add_argument("--hitl-dir", help="where HITL sessions are kept (default: ~/.astrovlm/hitl)")
    chat.set_defaults(func=run_chat)

    serve = subparsers.add_parser("serve", help="an OpenAI-compatible HTTP API (/v1/chat/completions)")
    _common(serve, port=8000)
    serve.add_argument("--api-key", default=os.environ.get("ASTROVLM_API_KEY"),
                       help="require `Authorization: Bearer KEY` (default: $ASTROVLM_API_KEY, else none)")  # fmt: skip
    serve.add_argument("--allow-images-from", action="append", default=[], metavar="DIR",
                       help="a folder whose images requests may name by path (repeatable; default: none)")  # fmt: skip
    serve.add_argument("--max-queue", type=int, default=16, help="requests that may wait; more get 429")
    serve.set_defaults(func=run_serve)

    hitl = subparsers.add_parser("hitl", help="human-in-the-loop experiments (seed 000 section 5)")
    hitl_commands = hitl.add_subparsers(dest="hitl_command", required=True)
    experiment = hitl_commands.add_parser(
        "experiment", help="LVM+HITL vs random labels vs ResNet-18; alpha; rare targets"
    )
    experiment.add_argument("--out", default="docs/hitl-report")
    experiment.add_argument("--pool", type=int, default=4000, help="simulated images to draw labels from")
    experiment.add_argument("--test", type=int, default=2000, help="simulated test images")
    experiment.add_argument("--repeats", type=int, default=5, help="seeds per learner")
    experiment.add_argument("--no-resnet", action="store_true", help="leave out the ResNet-18 baseline")
    experiment.set_defaults(func=run_hitl_experiment)


def _common(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--adapter", help="a save_adapter folder (default: the shipped one)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--int8", action="store_true",
                        help="the LM's linear layers in int8 (weight-only): with --compile, the fastest")  # fmt: skip
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the decode step: ~2x the tokens/s after 1-2 min of compiling")  # fmt: skip


def _load_backend(args, **options):
    """The local model, loaded on the model thread; with --compile its decode step is compiled now
    (a minute or two), not during someone's first reply."""
    from app import compute
    from app.assistant import LocalBackend
    from vlm.engine import EngineConfig

    cache = "static" if args.compile else "dynamic"
    config = EngineConfig(cache=cache, compile=args.compile, int8_weights=args.int8)
    backend = compute.call(LocalBackend.load, args.adapter, config=config, **options)
    if args.compile:
        print("astrovlm: compiling the decode step (a minute or two)...", file=sys.stderr)
        hello = [{"role": "user", "content": "Hello!"}]
        compute.call(lambda: backend.engine.chat(hello, max_new_tokens=2, stream=False))
    return backend


def _warn_public(host: str) -> None:
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"astrovlm: listening on {host}: anyone who can reach this machine can use the model",
            file=sys.stderr,
        )


def run_chat(args) -> None:
    from app.assistant import Assistant
    from app.chat import ChatApp, launch, model_notice
    from app.tools import ToolResources, ToolRunner

    _warn_public(args.host)
    resources = ToolResources(
        gallery_folder=Path(args.gallery) if args.gallery else None, hitl_dir=args.hitl_dir
    )
    assistant = Assistant(_load_backend(args), ToolRunner(resources=resources))
    app = ChatApp(assistant, max_new_tokens=args.max_new_tokens, notice=model_notice(args.adapter))
    launch(app, host=args.host, port=args.port)


def run_serve(args) -> None:
    from app.assistant import Assistant
    from app.server import Server, ServerConfig, serve

    _warn_public(args.host)
    for folder in args.allow_images_from:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--allow-images-from {folder}: no such folder")
    config = ServerConfig(
        api_key=args.api_key,
        max_queue=args.max_queue,
        max_new_tokens=args.max_new_tokens,
        allowed_image_dirs=[Path(f) for f in args.allow_images_from],
    )
    # the client runs its own tools (OpenAI semantics): the model sees the specs the client sends
    server = Server(Assistant(_load_backend(args, list_tools=True)), config)
    print(f"astrovlm: serving {server.model_name} at http://{args.host}:{args.port}/v1", file=sys.stderr)
    serve(server, args.host, args.port)


def run_hitl_experiment(args) -> None:
    from vlm.heads.hitl_report import run

    run(args.out, args.pool, args.test, args.repeats, resnet=not args.no_resnet)
    print((Path(args.out) / "table.md").read_text())
