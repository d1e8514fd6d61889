"""Option-scoring throughput of the default VLM on CPU (DESIGN section 9: >= 20 images/s on 2 cores).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/perf/bench_throughput.py [--threads 2] [--n 100]
        [--tasks b6,b1,galaxymnist] [--image-last]

For each task: held-out images are simulated and rendered first (not timed), then every image is scored
against the task's answers, one image at a time (Engine.score_options: the prompt and the answers' token
tree in one forward) and --batch images at a time (Engine.score_options_batch, what `astrovlm bench run`
does). Printed per task and way: images/s (wall clock), images per CPU-second (process CPU time: what
free cores would give when other work shares the machine), the number of answers ranked, and the target.
--image-last asks with the image after the question (EngineConfig.image_last), so that the question is
cached with the system prompt.
"""

from __future__ import annotations

import argparse
import os
import time

TARGET_IMAGES_PER_S = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=100, help="images per task")
    parser.add_argument("--tasks", default="b6,b3,b2,b1,galaxymnist")
    parser.add_argument("--adapter", help="adapter folder (default: the shipped one)")
    parser.add_argument("--batch", type=int, default=16, help="images per forward in the batched way")
    parser.add_argument("--image-last", action="store_true", help="the image after the question")
    args = parser.parse_args()

    import torch

    from benchmarks.runner import held_out_image
    from benchmarks.tasks import load_task
    from vlm.engine import Engine, EngineConfig

    torch.set_num_threads(args.threads)
    engine = Engine.load(adapter_dir=args.adapter, config=EngineConfig(image_last=args.image_last))
    print(
        f"| task | answers | images per forward | images/s | images per CPU-s | target | "
        f"({args.threads} threads, {args.n} images, image {'last' if args.image_last else 'first'})"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for task_id in args.tasks.split(","):
        task = load_task(task_id)
        images = [held_out_image(task, 1, i)[1] for i in range(args.n)]
        engine.score_options_batch(images[: args.batch], task.prompt(), task.answers())  # warm-up
        for batch in (1, args.batch):
            wall, cpu = time.perf_counter(), time.process_time()
            for start in range(0, args.n, batch):
                engine.score_options_batch(images[start : start + batch], task.prompt(), task.answers())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rate = args.n / wall
            verdict = "ok" if rate >= TARGET_IMAGES_PER_S else "below"
            print(
                f"| {task_id} | {len(task.answers())} | {batch} | {rate:.1f} | {args.n / cpu:.1f} | "
                f"≥ {TARGET_IMAGES_PER_S} ({verdict}) |"
            )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
