"""The shipped lvm-small weights (vlm/weights/lvm-small): found inside the installed package, no network.

    model = load_default()                                           # eval mode, float32
    export_run("runs/lvm-small", DEFAULT_LVM_DIR)                    # how the shipped folder was made

`export_run` turns a finished `astrovlm lvm pretrain` run into a shippable folder: the weights in
float16 (half the bytes; the model runs in float32, and the held-out PSNR is re-measured from the
float16 copy), config.json, metrics.json and a model card (README.md) with the recipe and figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from vlm.lvm.model import LVM

DEFAULT_LVM_DIR = Path(__file__).resolve().parents[1] / "weights" / "lvm-small"


def load_default(device: str | torch.device = "cpu", **overrides) -> LVM:
    """The shipped, pretrained lvm-small in eval mode (weights are stored in float16, run in float32)."""
    if not (DEFAULT_LVM_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the shipped LVM weights are missing from {DEFAULT_LVM_DIR}; reinstall astrovlm, or pretrain "
            "your own (astrovlm lvm pretrain --out runs/lvm-small) and pass its final/ folder"
        )
    return LVM.load(DEFAULT_LVM_DIR, device=device, **overrides).float().eval()


def export_run(run: str | Path, dest: str | Path = DEFAULT_LVM_DIR) -> dict:
    """Write run/final as float16 safetensors + config + metrics + model card into `dest`."""
    run, dest = Path(run), Path(dest)
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file() or not (run / "final").is_dir():
        raise FileNotFoundError(f"{run} is not a finished pretraining run (no final/ or metrics.json)")
    metrics = json.loads(metrics_path.read_text())
    config = json.loads((run / "pretrain_config.json").read_text())
    model = LVM.load(run / "final")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp / "model.safetensors", metadata={"format": "pt", "source": "astrovlm lvm pretrain"})
    metrics["val_psnr_float16"] = _held_out_psnr(LVM.load(tmp).float().eval(), run, config)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (tmp / "pretrain_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "README.md").write_text(model_card(model, config, metrics))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return metrics


def _held_out_psnr(model: LVM, run: Path, config: dict) -> float:
    from vlm.lvm.data import build_pool, split

    pool = build_pool(config["mix"], config["img_size"], config["pool_seed"], cache_dir=config.get("pool_dir") or run,
                      progress=False)  # fmt: skip
    _, val = split(pool, config["val_fraction"])
    x = torch.from_numpy(val.copy()).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        mse = torch.cat([((model(b) - b) ** 2).mean(dim=(1, 2, 3)) for b in x.split(128)])
    return float((-10 * torch.log10(mse.clamp_min(1e-10))).mean())


def model_card(model: LVM, config: dict, metrics: dict) -> str:
    c = model.config
    mix = "\n".join(f"| {name} | {count} |" for name, count in config["mix"].items())
    hours = metrics["train_seconds"] / 3600
    return f"""# lvm-small

The domain vision model of astrovlm (seed 000's LVM at small scale): a Swin-Transformer U-Net, {metrics["params"] / 1e6:.2f} M
parameters, {c.patch_size} px patches, {len(c.depths)} stages of depths {list(c.depths)}, dims {list(c.feature_dims)},
window {c.window_size}. Stored in float16 ({sum(p.numel() for p in model.parameters()) * 2 / 2**20:.1f} MiB); it runs in float32.

## Data
A pool of {sum(config["mix"].values())} images at {config["img_size"]} px (seed {config["pool_seed"]}), rendered as every model
here sees images (`data_builders.stretch.render_rgb`: Lupton g,r,z for optical, three stretches for radio),
optical stamps and FIRST cutouts cropped to their main source; {config["val_fraction"]:.0%} held out:

| source | images |
| --- | --- |
{mix}

Simulated families are the project's simulators (`astrovlm data families`); `radio-first` is the real FIRST
images of PyPI `firstgalaxydata` (train and valid splits only: its literature test split is never seen).

## Training
MSE reconstruction, AdamW (lr {config["lr"]}, weight decay {config["weight_decay"]}), {config["warmup"]} warmup steps then
cosine, batch {config["batch_size"]}, {config["steps"]} steps, flips, quarter turns and 80-100 % crops; seed {config["seed"]}.
{metrics["processes"]} process(es), {metrics["mixed_precision"]} mixed precision, {metrics["images_per_s"]:.0f} images/s,
{hours:.2f} h of training on a CPU (the shipped run: one thread of a shared 2-core machine). Recipe:

    astrovlm lvm pretrain --out runs/lvm-small --steps {config["steps"]} --batch-size {config["batch_size"]} --pool {sum(config["mix"].values())}
    astrovlm lvm export --run runs/lvm-small

## Held-out reconstruction ({metrics["pool_val"]} images)
| model | MSE | PSNR (dB) |
| --- | --- | --- |
| untrained (step 0) | {metrics["val_mse_initial"]:.2e} | {metrics["val_psnr_initial"]:.2f} |
| input averaged over {metrics["blur"]} px patches | {metrics["val_mse_blur"]:.2e} | {metrics["val_psnr_blur"]:.2f} |
| lvm-small, step {metrics["val_step"]} | {metrics["val_mse"]:.2e} | {metrics["val_psnr"]:.2f} |
| lvm-small, this float16 copy | | {metrics["val_psnr_float16"]:.2f} |

Downstream figures (multi-task heads, few-shot morphology, feature maps): `astrovlm lvm report --out OUT`.
"""
