"""Throughput and memory of the data builders, printed as a table (DESIGN section 9, issue 2 targets).

    .venv/bin/python benchmarks/perf/data_speed.py [--quick]

Measures, on whatever machine runs it (targets are for the 2-core CPU):
  - conversation generation from existing labels       target >= 5,000 conversations/s
  - optical stamp simulation at 128x128                 target >= 200 images/s
  - radio field simulation at 128x128, per family       target >= 100 fields/s
  - peak RSS of a 100,000-conversation build            target <= 2 GB (streamed to shards)
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time

import numpy as np

from data_builders.conversations import build_dialogues
from data_builders.families import get_family

RADIO = ["radio-b1", "radio-b2", "radio-b3", "radio-b4", "radio-b5", "radio-b6"]
OPTICAL = ["optical-gmnist", "optical-lsbg", "optical-morphology"]


def simulate(name: str, n: int, size: int = 128) -> tuple[float, list]:
    family = get_family(name)
    family.simulate(np.random.default_rng(-1 % 2**32), size, "warm-up")
    start = time.perf_counter()
    records = [family.simulate(np.random.default_rng([0, i]), size, f"{name}-{i}") for i in range(n)]
    return n / (time.perf_counter() - start), records


def conversations_per_second(records: list, per_record: int = 8) -> float:
    families = {r.family: get_family(r.family) for r in records}
    start = time.perf_counter()
    total = 0
    for seed in range(3):
        for record in records:
            total += len(build_dialogues(record, families[record.family], seed, per_record))
    return total / (time.perf_counter() - start)


def build_peak_rss(n_images: int, dialogues: int) -> tuple[float, float]:
    """Peak of the summed RSS of the build's whole process tree (main process and workers), sampled
    every 50 ms, and the build's wall time."""
    import psutil

    command = [sys.executable, "-m", "app.cli", "data", "build", "--family", "radio-b1"]
    command += ["--n", str(n_images), "--dialogues", str(dialogues), "--num-proc", "2"]
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryFile() as log:  # a pipe could fill and block
        start = time.perf_counter()
        child = subprocess.Popen([*command, "--out", out], stdout=subprocess.DEVNULL, stderr=log)
        root, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            with contextlib.suppress(psutil.Error):
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        if child.returncode:
            log.seek(0)
            raise RuntimeError(f"build failed: {log.read().decode()[-2000:]}")
    return peak / 2**20, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, a 10,000-conversation build")
    args = parser.parse_args()
    n = 100 if args.quick else 400
    rows = []
    pool = []
    for name in OPTICAL + RADIO:
        rate, records = simulate(name, n)
        target = 200 if name.startswith("optical") else 100
        rows.append((f"simulate {name} 128 px", f"{rate:,.0f} img/s", f">= {target}", rate >= target))
        pool += records[:100]
    rate = conversations_per_second(pool)
    rows.append(("conversations from labels", f"{rate:,.0f} conv/s", ">= 5,000", rate >= 5000))
    n_images, dialogues = (1000, 10) if args.quick else (10000, 10)
    peak_mb, seconds = build_peak_rss(n_images, dialogues)
    rows.append(
        (
            f"build {n_images * dialogues:,} conversations (2 procs, {seconds:.0f} s)",
            f"{peak_mb:,.0f} MB peak RSS",
            "<= 2,048 MB",
            peak_mb <= 2048,
        )
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':{width}}  {'value':>18}  {'target':>12}  ok")
    for what, value, target, ok in rows:
        print(f"{what:{width}}  {value:>18}  {target:>12}  {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
