"""`astrovlm lvm report`: seed 000's Tables 1-4 and Figure 5, and seed 002's feature map, for an LVM.

    astrovlm lvm report --out runs/report                  # the shipped lvm-small, ~15 min on 2 CPU cores
    astrovlm lvm report --out runs/report --lvm runs/lvm-small/final --multitask-steps 600

Writes into out/:
- report.md: every table, and the figures inline;
- multitask/<strategy>/: the three multi-task runs (frozen = the paper's Pre_train, uniform, active);
  a finished run with the same settings is reused, so an interrupted report resumes;
- fewshot.md, fewshot.png, fewshot.json: accuracy at 10, 30, 100, 1000 labels per class, frozen LVM + MLP
  vs ResNet-18 from scratch vs ImageNet EfficientNet-Lite0 (frozen) + MLP (vlm/lvm/fewshot.py);
- features-<learner>.png: each frozen extractor's features of the few-shot test set in 2-D (PCA), by class;
- examples.png: degraded inputs, each strategy's output and the truth, for restoration and masks.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vlm.lvm.multitask import (
    MASK_PATCHES,
    STRATEGIES,
    MultitaskConfig,
    degraded_sets,
    load_multitask,
    load_task_data,
    train_multitask,
)
from vlm.lvm.pretrain import to_float

ROW_NAMES = {"frozen": "Pre_train (frozen encoder)", "uniform": "Multi_uniform", "active": "Multi_active"}


@dataclass
class ReportConfig:
    out: str
    lvm: str | None = None  # LVM checkpoint folder; None: the shipped lvm-small
    multitask_steps: int = 300
    multitask_batch: int = 32
    fewshot_k: tuple[int, ...] = (10, 30, 100, 1000)
    fewshot_test: int = 1000
    learners: tuple[str, ...] = ("lvm", "resnet18-scratch", "efficientnet-lite0")
    seed: int = 0
    num_workers: int = 2
    multitask: dict = field(default_factory=dict)  # any other MultitaskConfig fields

    def multitask_config(self, strategy: str) -> MultitaskConfig:
        fields_ = {"steps": self.multitask_steps, "batch_size": self.multitask_batch, "seed": self.seed}
        fields_ |= {"lvm": self.lvm, "num_workers": self.num_workers, **self.multitask}
        return MultitaskConfig(out=str(Path(self.out) / "multitask" / strategy), strategy=strategy, **fields_)


def run_report(config: ReportConfig, progress: bool = True) -> dict:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    timings, results = {}, {}

    start = time.perf_counter()
    data = load_task_data(config.multitask_config("frozen"), cache_dir=out / "multitask", progress=progress)
    for strategy in STRATEGIES:
        mt = config.multitask_config(strategy)
        results[strategy] = _reuse(mt) or train_multitask(mt, data=data, progress=progress)
    timings["multitask"] = time.perf_counter() - start
    _plot_examples(config, data, out / "examples.png")

    start = time.perf_counter()
    fewshot = _fewshot(config, out, progress)
    timings["fewshot"] = time.perf_counter() - start

    summary = {"multitask": results, "fewshot": fewshot, "timings_s": timings, "config": asdict(config)}
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown(results, fewshot, config, timings))
    return summary


def _reuse(config: MultitaskConfig) -> dict | None:
    """The metrics of a finished run with exactly this config, if there is one."""
    out = Path(config.out)
    try:
        same = json.loads((out / "config.json").read_text()) == config.to_dict()
        return json.loads((out / "metrics.json").read_text()) if same else None
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# ----------------------------------------------------------------------------- tables


def _row(name: str, m: dict, keys: tuple[str, ...], fmt: tuple[str, ...]) -> str:
    return f"| {name} | " + " | ".join(format(m[k], f) for k, f in zip(keys, fmt)) + " |"


def multitask_tables(results: dict) -> str:
    lines = ["### Table 1: classification (4 GalaxyMNIST-like classes, macro averages)", ""]
    lines += ["| model | Acc | Pre | Recall | F1 |", "| --- | --- | --- | --- | --- |"]
    for s in STRATEGIES:
        lines.append(_row(ROW_NAMES[s], results[s]["classify"], ("acc", "pre", "recall", "f1"), (".3f",) * 4))
    image_keys, image_fmt = ("mse", "psnr", "ssim"), (".5f", ".2f", ".3f")
    for number, task, title in (
        (2, "restore", "restoration (Moffat FWHM 2-8 px + Gaussian noise sigma 1-15 / 255)"),
        (3, "reconstruct", "reconstruction of masked images (0-70 % in 4, 8, 16 px patches)"),
    ):
        inputs = "Blurred images" if task == "restore" else "Masked images"
        lines += [
            "",
            f"### Table {number}: {title}",
            "",
            "| model | MSE | PSNR | SSIM |",
            "| --- | --- | --- | --- |",
        ]
        lines.append(_row(inputs, results["frozen"][task]["input"], image_keys, image_fmt))
        for s in STRATEGIES:
            lines.append(_row(ROW_NAMES[s], results[s][task], image_keys, image_fmt))
    lines += ["", "### Table 4: reconstruction at 50 % masked, per patch size", ""]
    lines += ["| patch size | model | MSE | PSNR | SSIM |", "| --- | --- | --- | --- | --- |"]
    for p in MASK_PATCHES:
        m = results["active"][f"reconstruct@50%/{p}px"]
        lines.append(_row(f"{p}x{p} | Masked images", m["input"], image_keys, image_fmt))
        for s in STRATEGIES:
            lines.append(
                _row(f"{p}x{p} | {ROW_NAMES[s]}", results[s][f"reconstruct@50%/{p}px"], image_keys, image_fmt)
            )
    return "\n".join(lines)


def markdown(results: dict, fewshot: dict, config: ReportConfig, timings: dict) -> str:
    active, frozen = results["active"], results["frozen"]
    gains = {
        "restoration PSNR gain over the blurred input (active)": active["restore"]["psnr"]
        - active["restore"]["input"]["psnr"],
        "reconstruction PSNR gain over the 50 %-masked input (active, 8 px)": active["reconstruct@50%/8px"][
            "psnr"
        ]
        - active["reconstruct@50%/8px"]["input"]["psnr"],
    }
    beats = {
        "classification accuracy": active["classify"]["acc"] > frozen["classify"]["acc"],
        "restoration PSNR": active["restore"]["psnr"] > frozen["restore"]["psnr"],
        "reconstruction PSNR": active["reconstruct"]["psnr"] > frozen["reconstruct"]["psnr"],
    }
    lvm = config.lvm or "the shipped lvm-small (vlm/weights/lvm-small)"
    parts = [
        "# LVM report",
        "",
        f"Encoder: {lvm}. Multi-task runs: {config.multitask_steps} steps of {config.multitask_batch} images per "
        f"strategy; seed {config.seed}. Time: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
        + ".",
        "",
        "## Multi-task training (seed 000, Tables 1-4)",
        "",
        multitask_tables(results),
        "",
        "| check | value |",
        "| --- | --- |",
        *(f"| {k} | {v:+.2f} dB |" for k, v in gains.items()),
        *(f"| active beats frozen on {k} | {'yes' if v else 'no'} |" for k, v in beats.items()),
        "",
        "![examples](examples.png)",
    ]
    if fewshot:
        parts += [
            "",
            "## Few-shot morphology (seed 000, Figure 5)",
            "",
            f"The frozen-feature heads (lvm, efficientnet-lite0) train on the eight symmetries of the square "
            f"of each labelled stamp up to {fewshot['config']['view_shots']} labels per class, as ResNet-18 "
            "trains with them.",
            "",
            fewshot["markdown"],
            "",
            "![few-shot](fewshot.png)",
        ]
    parts += ["", "## Frozen features of the few-shot test set (seed 002, Figure 2)", ""]
    parts += [f"![{name}](features-{name}.png)" for name in config.learners if name != "resnet18-scratch"]
    parts.append("")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- figures


def _plot_examples(config: ReportConfig, data, path: Path, n: int = 4) -> None:
    """Rows: restoration and 50 %-masked (8 px) examples; columns: input, each strategy, truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = to_float(data.images["test"][:n], "cpu")
    sets = degraded_sets(clean, seed=config.seed + 2)
    models = {s: load_multitask(config.multitask_config(s).out) for s in STRATEGIES}
    rows = [("restore", sets["restore"]), ("reconstruct", sets["reconstruct@50%/8px"])]
    columns = ["input", *STRATEGIES, "truth"]
    fig, axes = plt.subplots(len(rows) * n, len(columns), figsize=(1.6 * len(columns), 1.6 * len(rows) * n))
    with torch.no_grad():
        for r, (task, degraded) in enumerate(rows):
            outputs = {s: m(task, degraded).clamp(0, 1) for s, m in models.items()}
            for i in range(n):
                images = [degraded[i], *(outputs[s][i] for s in STRATEGIES), clean[i]]
                for c, image in enumerate(images):
                    ax = axes[r * n + i, c]
                    ax.imshow(image.permute(1, 2, 0).numpy())
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if r * n + i == 0:
                        ax.set_title(columns[c], fontsize=8)
                    if c == 0:
                        ax.set_ylabel(task, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fewshot(config: ReportConfig, out: Path, progress: bool) -> dict:
    from vlm.lvm.fewshot import FewShotConfig, markdown_table, run_fewshot, write_report
    from vlm.lvm.multitask import load_lvm

    fewshot_config = FewShotConfig(
        shots=config.fewshot_k, n_test_per_class=config.fewshot_test // 4, learners=config.learners,
        seed=config.seed, num_proc=config.num_workers,
    )  # fmt: skip
    result = run_fewshot(load_lvm(config.lvm), fewshot_config, log=print if progress else lambda *_: None)
    write_report(result, out)  # fewshot.md, fewshot.png, fewshot.json, features-<learner>.png
    return result.to_dict() | {"markdown": markdown_table(result)}
