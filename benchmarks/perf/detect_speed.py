"""Detection speed of the shipped detectors on the CPU (issue 7: <= 0.5 s per 256 x 256 field).

    .venv/bin/python benchmarks/perf/detect_speed.py [--threads 2] [--rounds 7]

Times `Detector.detect` (render excluded) on a simulated 256 x 256 field of each domain, one tile, and
on Hubble's deep field (872 x 1000, optical, cut into overlapping 256 px tiles and merged by NMS). The
table shows the best and the median round; `ok` judges the best, as other work on a shared machine only
ever slows a round down.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from skimage.data import hubble_deep_field

from vlm.heads.detect import Detector, tile_origins
from vlm.heads.detect_data import simulate_field

TARGET_SECONDS = 0.5


def seconds(detector: Detector, picture: np.ndarray, rounds: int) -> list[float]:
    detector.detect(picture)  # warm-up: allocations, thread pool
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        detector.detect(picture)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hubble = hubble_deep_field()  # scikit-image's HST picture
    cases = [
        ("radio", "radio field 256 x 256", simulate_field("radio", 0, "test", size=256).picture),
        ("optical", "optical field 256 x 256", simulate_field("optical", 0, "test").picture),
        ("optical", "Hubble deep field 872 x 1000", hubble),
    ]
    print(f"threads: {args.threads}, rounds: {args.rounds}")
    print(f"{'detector':<9} {'image':<30} {'tiles':>5} {'best s':>7} {'median s':>8}  per 256 px tile  ok")
    detectors = {name: Detector.load(name) for name in ("radio", "optical")}
    for name, label, picture in cases:
        detector = detectors[name]
        tiles = len(tile_origins(picture.shape[0], detector.config.tile, detector.config.overlap)) * len(
            tile_origins(picture.shape[1], detector.config.tile, detector.config.overlap)
        )
        times = seconds(detector, picture, args.rounds)
        best, median = min(times), statistics.median(times)
        ok = "yes" if best / tiles <= TARGET_SECONDS else "NO"
        print(f"{name:<9} {label:<30} {tiles:>5} {best:>7.3f} {median:>8.3f}  {best / tiles:>15.3f}  {ok}")


if __name__ == "__main__":
    main()
