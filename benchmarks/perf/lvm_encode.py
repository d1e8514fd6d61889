"""LVM encoding throughput and preset sizes, printed as a table (DESIGN section 9: >= 200 images/s at 64 px).

    .venv/bin/python benchmarks/perf/lvm_encode.py [--weights DIR] [--threads 2] [--rounds 7]

Times `LVM.encode` (the encoder only, under torch.inference_mode) on CPU for lvm-small at 64 px,
batch 64, and at 128 px, batch 32. Weights are randomly initialised unless --weights names a saved
LVM (they do not change the speed). Each round encodes a few batches; the table shows the best round,
which `ok` judges, and the median: other work on a shared machine only ever slows a round down (with
2 threads on 2 cores, a busy core stalls every barrier, so the median can fall several-fold). Parameter counts
of every preset are taken on the meta device, so lvm-base costs no memory.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vlm.lvm import LVM, get_config, list_presets

ENCODER_PREFIXES = ("patch_embed.", "embed_norm.", "encoder.", "downs.", "norm.")


def images_per_second(
    model: LVM, size: int, batch: int, rounds: int, batches_per_round: int = 3
) -> list[float]:
    images = torch.rand(batch, model.config.in_chans, size, size, generator=torch.Generator().manual_seed(0))
    rates = []
    with torch.inference_mode():
        for _ in range(2):  # warm-up: allocator, oneDNN kernels
            model.encode(images)
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(batches_per_round):
                model.encode(images)
            rates.append(batch * batches_per_round / (time.perf_counter() - start))
    return rates


def parameter_counts(name: str) -> tuple[int, int]:
    with torch.device("meta"):
        model = LVM(get_config(name))
    total = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for n, p in model.named_parameters() if n.startswith(ENCODER_PREFIXES))
    return total, encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="a saved LVM directory (config.json + model.safetensors)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target is for 2)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for size, batch, target in ((64, 64, 200), (128, 32, None)):
        if args.weights:
            model, name = LVM.load(args.weights, img_size=size), args.weights
        else:
            torch.manual_seed(0)
            model, name = LVM(get_config("lvm-small", img_size=size)), "lvm-small"
        rates = images_per_second(model.eval(), size, batch, args.rounds)
        best, median = max(rates), statistics.median(rates)
        rows.append(
            (
                f"encode {name} {size} px, batch {batch}, {args.threads} threads",
                f"{best:,.0f} img/s",
                f"{median:,.0f} img/s",
                f">= {target}" if target else "-",
                "-" if target is None else ("yes" if best >= target else "NO"),
            )
        )
    param_targets = {"lvm-small": (2e6, 6e6, "2-6 M"), "lvm-base": (80e6, 130e6, "~100 M")}
    for name in list_presets():
        total, encoder = parameter_counts(name)
        config = get_config(name)
        low, high, target = param_targets.get(name, (0, float("inf"), "-"))
        rows.append(
            (
                f"parameters {name} ({config.img_size} px, D {config.embed_dim}, depths {config.depths})",
                f"{total / 1e6:,.2f} M",
                f"enc {encoder / 1e6:,.2f} M",
                target,
                ("yes" if low <= total <= high else "NO") if name in param_targets else "-",
            )
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':{width}}  {'best':>14}  {'median':>14}  {'target':>10}  ok")
    for what, best, median, target, ok in rows:
        print(f"{what:{width}}  {best:>14}  {median:>14}  {target:>10}  {ok}")


if __name__ == "__main__":
    main()
