"""Decode speed of the default VLM on CPU, printed as a table (DESIGN section 9: >= 60 tokens/s on 2 cores,
time to first token with one image <= 1 s).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/perf/decode.py [--threads 2] [--tokens 64] [--runs 5]
        [--variants generate-fp32,engine-bf16,...]

The model is the default one: SmolLM2-135M-Instruct from its safetensors cache, the shipped lvm-small
(random weights if it is not shipped yet: the speed is the same) and an untrained projector. Each variant
runs in a fresh process, so peak RSS and load time are its own:

    generate-fp32[-static]      transformers' generate() (dynamic, or cache_implementation="static")
    engine-{fp32,bf16}          vlm.engine's own decode loop over a DynamicCache (engine-bf16 is the default)
    engine-{fp32,bf16}-static   the same over one preallocated StaticCache
    engine-{fp32,bf16}-compile  StaticCache + torch.compile'd decode step (the first reply pays the compilation)
    engine-int8[-compile]       the LM's linear layers in int8, bfloat16 activations (EngineConfig.int8_weights)
    engine-bf16-tools           the default with the chat's tools guided (each token masked by tool_grammar)

Every reply answers the same question about skimage's Hubble Deep Field, with stopping disabled so that it
decodes exactly --tokens tokens; after one warm-up reply, --runs replies are timed. Columns: load (model from
the cache), warm-up (first reply, compilation included), time to first token (median), decode tokens/s
(median and best over the runs, wall clock), decode tokens per CPU-second (process CPU time: with
--threads 1 it is what a free core would give even when other work shares the machine), peak RSS, and
whether the greedy answer agrees with the eager run of the same dtype (bf16 and fp32 differ legitimately).
Other work on the machine only slows a run down: trust the best and the CPU-time figures over the median.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = {  # name: (how to generate, EngineConfig fields)
    "generate-fp32": ("generate", {"dtype": "float32"}),
    "generate-fp32-static": ("generate-static", {"dtype": "float32"}),
    "engine-fp32": ("engine", {"dtype": "float32"}),
    "engine-bf16": ("engine", {"dtype": "bfloat16"}),
    "engine-bf16-tools": ("engine-tools", {"dtype": "bfloat16"}),
    "engine-fp32-static": ("engine", {"dtype": "float32", "cache": "static"}),
    "engine-bf16-static": ("engine", {"dtype": "bfloat16", "cache": "static"}),
    "engine-fp32-compile": ("engine", {"dtype": "float32", "cache": "static", "compile": True}),
    "engine-bf16-compile": ("engine", {"dtype": "bfloat16", "cache": "static", "compile": True}),
    "engine-int8": ("engine", {"dtype": "bfloat16", "int8_weights": True}),
    "engine-int8-compile": (
        "engine",
        {"dtype": "bfloat16", "cache": "static", "compile": True, "int8_weights": True},
    ),
}
QUESTION = "Describe this image in detail: what objects do you see, and what are their colours?"
TARGET_TOKENS_PER_S = 60
TARGET_TTFT_S = 1.0


# ----------------------------------------------------------------------------- one variant (child process)


def build_engine(fields: dict):
    import torch

    from vlm.engine import DTYPES, Engine, EngineConfig
    from vlm.lvm import DEFAULT_LVM_DIR, LVM, get_config
    from vlm.model import build_astrovlm

    start = time.perf_counter()
    shipped = (DEFAULT_LVM_DIR / "model.safetensors").is_file()
    torch.manual_seed(0)
    tower = None if shipped else LVM(get_config("lvm-small")).eval()
    config = EngineConfig(**fields)
    model, processor = build_astrovlm(vision_tower=tower, dtype=DTYPES[config.dtype])  # as Engine.load does
    engine = Engine(model, processor, config)
    return engine, time.perf_counter() - start, "shipped" if shipped else "random"


def timed_reply(engine, kind: str, image, tokens: int) -> dict:
    """One reply of exactly `tokens` tokens -> ttft, decode wall and CPU seconds, the answer's text."""
    wall, _cpu = time.perf_counter(), time.process_time()
    stamps = []
    if kind.startswith("engine"):
        reply = engine.chat(
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}],
                }
            ],
            max_new_tokens=tokens,
            guided_tools=chat_tools() if kind == "engine-tools" else None,
        )
        for _ in reply:
            stamps.append((time.perf_counter(), time.process_time()))
        text, count = reply.text, reply.completion_tokens
    else:
        text, count, stamps = generate_reply(engine, kind, image, tokens)
    (first_wall, first_cpu), (last_wall, last_cpu) = stamps[0], stamps[-1]
    return {
        "ttft": first_wall - wall,
        "decode_wall": last_wall - first_wall,
        "decode_cpu": last_cpu - first_cpu,
        "tokens": count,
        "text": text,
    }


def chat_tools() -> list[dict]:
    from data_builders.tool_specs import ALL_TOOL_SPECS, openai_tools

    return openai_tools(list(ALL_TOOL_SPECS))


def generate_reply(engine, kind: str, image, tokens: int):
    """transformers' generate() on the same prompt; a streamer records when each token arrives."""
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self):
            self.stamps, self.ids, self.prompt_seen = [], [], False

        def put(self, value):
            if not self.prompt_seen:  # the first call hands over the prompt
                self.prompt_seen = True
                return
            self.stamps.append((time.perf_counter(), time.process_time()))
            self.ids += value.flatten().tolist()

        def end(self):
            pass

    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}
    ]
    inputs = engine.processor(messages, add_generation_prompt=True)
    clock = Clock()
    engine.model.generate(
        input_ids=inputs["input_ids"],
        pixel_values=inputs["pixel_values"],
        max_new_tokens=tokens,
        min_new_tokens=tokens,  # no early stop: every run decodes the same number of tokens
        do_sample=False,
        streamer=clock,
        cache_implementation="static" if kind == "generate-static" else None,
    )
    return engine.processor.decode(clock.ids), len(clock.ids), clock.stamps


def run_variant(name: str, threads: int, tokens: int, runs: int) -> dict:
    import torch
    from skimage.data import hubble_deep_field

    torch.set_num_threads(threads)
    kind, fields = VARIANTS[name]
    engine, load_s, lvm = build_engine(fields)
    engine.stop_ids = set()  # decode exactly `tokens` tokens, whatever the model says
    image = hubble_deep_field()
    start = time.perf_counter()
    first = timed_reply(engine, kind, image, tokens)
    warmup_s = time.perf_counter() - start
    timed = [timed_reply(engine, kind, image, tokens) for _ in range(runs)]
    rates = [(t["tokens"] - 1) / t["decode_wall"] for t in timed]
    cpu_rates = [(t["tokens"] - 1) / t["decode_cpu"] for t in timed]
    return {
        "name": name,
        "lvm": lvm,
        "load_s": load_s,
        "warmup_s": warmup_s,
        "ttft_s": statistics.median(t["ttft"] for t in timed),
        "tok_s_median": statistics.median(rates),
        "tok_s_best": max(rates),
        "tok_per_cpu_s": statistics.median(cpu_rates),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "text": first["text"],
        "stable": all(t["text"] == first["text"] for t in timed),
    }


# ----------------------------------------------------------------------------- the table (parent process)


def agreement(row: dict, rows: dict[str, dict]) -> str:
    """Leading characters the greedy answer shares with the eager engine run of the same weights."""
    dtype = next(d for d in ("int8", "bf16", "fp32") if d in row["name"])
    reference = rows.get(f"engine-{dtype}")
    if reference is None or reference is row:
        return "ref" if reference is row else "-"
    a, b = row["text"], reference["text"]
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return "same" if a == b else f"{same}/{len(b)} ch"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target is for 2)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per reply")
    parser.add_argument("--runs", type=int, default=5, help="timed replies per variant, after one warm-up")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {list(VARIANTS)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # run one variant, print its row as JSON
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, args.threads, args.tokens, args.runs)))
        return

    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; valid: {list(VARIANTS)}")
    rows = {}
    for name in names:
        command = [sys.executable, __file__, "--child", name, "--threads", str(args.threads),
                   "--tokens", str(args.tokens), "--runs", str(args.runs)]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"}
        )
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: done ({rows[name]['tok_s_median']:.1f} tok/s)", file=sys.stderr, flush=True)

    load = os.getloadavg()[0]
    print(f"decode on CPU, {args.threads} thread(s), {args.tokens} tokens per reply, {args.runs} runs; "
          f"load average {load:.1f} on {os.cpu_count()} cores (other work slows every figure but tok/CPU-s)")  # fmt: skip
    header = ("variant", "load s", "warm-up s", "TTFT s", "tok/s med", "tok/s best", "tok/CPU-s",
              "peak RSS MB", "answer vs eager")  # fmt: skip
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, r in rows.items():
        cells = (name, f"{r['load_s']:.2f}", f"{r['warmup_s']:.1f}", f"{r['ttft_s']:.2f}",
                 f"{r['tok_s_median']:.1f}", f"{r['tok_s_best']:.1f}", f"{r['tok_per_cpu_s']:.1f}",
                 f"{r['peak_rss_mb']:.0f}", agreement(r, rows) + ("" if r["stable"] else ", unstable"))  # fmt: skip
        print(" | ".join(cells))
    if rows:
        best = max(rows.values(), key=lambda r: r["tok_s_best"])
        print(f"fastest: {best['name']} at {best['tok_s_best']:.1f} tok/s best "
              f"(target >= {TARGET_TOKENS_PER_S}: {'yes' if best['tok_s_best'] >= TARGET_TOKENS_PER_S else 'NO'}); "
              f"TTFT target <= {TARGET_TTFT_S} s; LVM weights {sorted({r['lvm'] for r in rows.values()})}")  # fmt: skip
        print(f"answer ({best['name']}): {best['text'][:120]!r}")


if __name__ == "__main__":
    main()
