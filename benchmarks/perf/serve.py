"""Load on `astrovlm serve` over loopback, printed as a table (issue: 8 concurrent streaming clients for 60 s,
no errors, p50/p95 time to first token and tokens/s, RSS growth <= 5 %).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/perf/serve.py [--clients 8] [--seconds 60] [--tokens 48]
        [--threads 2] [--json out/perf/serve.json] [--serve-args="--int8 --compile"]

The server is the real command in its own process (`astrovlm serve`, the default model, 127.0.0.1 on a free
port). Each client is a thread with the official openai client that sends, back to back until time is up,
a streaming request with an image (a data URI of the Hubble Deep Field example) and a question. The model
answers one request at a time, so with N clients a request waits for about N - 1 others: time to first
token is mostly queueing, and tokens/s is per reply once it streams. RSS is the server's, sampled every
second. The first seconds of concurrent load raise it once (~5 %: allocator arenas and buffers of the
first concurrent requests) and it levels off, so growth is measured from a tenth into the run to the end
(a leak keeps climbing); the growth from the idle server is printed beside it, with the whole series.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "app" / "examples" / "hubble_deep_field.png"
QUESTIONS = [
    "Describe this image.",
    "How many galaxies do you see?",
    "What kind of object is the brightest one?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def one_request(client: OpenAI, question: str, tokens: int) -> dict:
    uri = "data:image/png;base64," + base64.b64encode(IMAGE.read_bytes()).decode()
    start = time.perf_counter()
    first, pieces, usage = None, 0, None
    stream = client.chat.completions.create(
        model="astrovlm-smollm2",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": uri}},
                    {"type": "text", "text": question},
                ],
            }
        ],  # fmt: skip
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        usage = chunk.usage or usage
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces += 1
    end = time.perf_counter()
    completion = usage.completion_tokens if usage else pieces
    streaming = end - first if first else float("nan")
    return {
        "ttft_s": (first or end) - start,
        "tokens": completion,
        "tokens_per_s": completion / streaming if first and streaming > 0 else float("nan"),
        "seconds": end - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--tokens", type=int, default=48, help="max_tokens of each request")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    parser.add_argument("--json", default="out/perf/serve.json")
    parser.add_argument(
        "--serve-args", default="", help='more `astrovlm serve` options, e.g. "--int8 --compile"'
    )
    args = parser.parse_args()

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--port",
        str(port),
        "--max-queue",
        str(args.clients * 2),
        *args.serve_args.split(),
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
        load_start = time.perf_counter()
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited: {server.stderr.read()[-2000:]}")
            try:
                client.models.list()
                break
            except Exception:
                time.sleep(0.5)
        load_s = time.perf_counter() - load_start
        warm = one_request(client, QUESTIONS[0], args.tokens)
        process = psutil.Process(server.pid)
        rss = [process.memory_info().rss]

        results, errors, lock = [], [], threading.Lock()
        deadline = time.monotonic() + args.seconds

        def run_client(index: int) -> None:
            own = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
            k = 0
            while time.monotonic() < deadline:
                try:
                    result = one_request(own, QUESTIONS[(index + k) % len(QUESTIONS)], args.tokens)
                    with lock:
                        results.append(result)
                except Exception as exc:  # counted and shown: the target is none
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                k += 1

        threads = [threading.Thread(target=run_client, args=(i,)) for i in range(args.clients)]
        wall = time.perf_counter()
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            time.sleep(1.0)
            rss.append(process.memory_info().rss)
        wall = time.perf_counter() - wall
    finally:
        server.terminate()
        server.wait(30)

    ttft = [r["ttft_s"] for r in results]
    rates = [r["tokens_per_s"] for r in results if r["tokens_per_s"] == r["tokens_per_s"]]
    figures = {
        "clients": args.clients,
        "seconds": round(wall, 1),
        "server_threads": args.threads,
        "load_s": round(load_s, 1),
        "warm_up_ttft_s": round(warm["ttft_s"], 2),
        "requests": len(results),
        "errors": len(errors),
        "ttft_p50_s": round(percentile(ttft, 50), 2),
        "ttft_p95_s": round(percentile(ttft, 95), 2),
        "tokens_per_s_p50": round(percentile(rates, 50), 1),
        "tokens_per_s_p5": round(percentile(rates, 5), 1),
        "total_tokens_per_s": round(sum(r["tokens"] for r in results) / wall, 1),
        "rss_start_mb": round(rss[0] / 2**20),
        "rss_end_mb": round(rss[-1] / 2**20),
        "rss_peak_mb": round(max(rss) / 2**20),
        "rss_loaded_mb": round(rss[len(rss) // 10] / 2**20),  # a tenth into the run: buffers warmed up
        "rss_growth_pct": round(100 * (rss[-1] - rss[len(rss) // 10]) / rss[len(rss) // 10], 1),
        "rss_growth_from_idle_pct": round(100 * (rss[-1] - rss[0]) / rss[0], 1),
        "mean_request_s": round(statistics.mean(r["seconds"] for r in results), 2) if results else None,
    }
    print(f"{'figure':<22} value")
    for key, value in figures.items():
        print(f"{key:<22} {value}")
    for error in errors[:5]:
        print("error:", error)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    series = [round(r / 2**20) for r in rss[::5]]  # every 5 s: a leak climbs, a warm-up levels off
    print("rss every 5 s (MB):", series)
    Path(args.json).write_text(
        json.dumps({**figures, "rss_mb_every_5s": series, "error_samples": errors[:20]}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
