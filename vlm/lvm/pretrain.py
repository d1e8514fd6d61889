"""Pretrain the LVM by MSE reconstruction of rendered astronomy stamps (seed 000, section 2.2).

    astrovlm lvm pretrain --out runs/lvm-small          # the shipped lvm-small: ~35 min on 2 CPU cores
    accelerate launch --multi_gpu --num_processes 4 -m app.cli lvm pretrain --out runs/lvm-base \
        --preset lvm-base --img-size 128 --pool 20000 --steps 50000
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 4 -m app.cli lvm pretrain ...   # several CPU processes

    from vlm.lvm.pretrain import PretrainConfig, pretrain
    metrics = pretrain(PretrainConfig(out="runs/x", preset="lvm-tiny-test", img_size=32, steps=30))

A linear recipe, setup -> train -> save:
- setup: accelerate's Accelerator (bf16 autocast where the GPU or CPU has bf16 units; DDP and friends through
  `accelerate launch`), the model built from its preset with `seed`, the image pool of `vlm.lvm.data`
  (cached in `out/` or `pool_dir`) and its held-out split, AdamW and a warmup + cosine schedule;
- train: each step reconstructs a batch of augmented images (flips, quarter turns, 80-100 % crops) and
  minimises their MSE; every `eval_every` steps the held-out MSE and PSNR are logged beside those of a
  blurred copy of the input (the input average-pooled over the first stage's patches and upsampled);
- save: `out/final/` (LVM.save: config.json + model.safetensors), `out/metrics.json`, `out/loss.png`.

Batches are a pure function of (seed, process, step): the pool is walked in a permutation per epoch
and the augmentation generator is seeded per step, so no data-loader state needs saving.
Every `ckpt_every` steps `out/checkpoint/` is replaced atomically (written to checkpoint.tmp, then
renamed) by accelerate's `save_state` (optimizer, scheduler, RNG of every process), the model in the
LVM's own format (so `LVM.load(out / "checkpoint")` works), `pretrain_config.json` and
`trainer_state.json` (the step; written last). Running the same command again resumes from it
exactly: the weights after N steps are those of an uninterrupted run. A checkpoint of a different
config is refused, except for the fields in RESUMABLE (e.g. more `steps`: the cosine then stretches).

Files in out/: log.jsonl (one line per log or eval: step, loss, lr, images/s; val_mse, val_psnr),
pretrain_config.json, pool-<hash>.npy/.json (unless pool_dir), checkpoint/, final/, metrics.json,
loss.png.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from vlm.hardware import check_bf16, mixed_precision
from vlm.lvm.data import augment, build_pool, check_mix, default_mix, split
from vlm.lvm.model import LVM
from vlm.lvm.presets import get_config

# Fields that may change between a checkpoint and its resumption (they change no computed number,
# except `steps`, which stretches the cosine from there on).
RESUMABLE = frozenset({"out", "steps", "log_every", "eval_every", "ckpt_every", "num_workers", "pool_dir"})


@dataclass
class PretrainConfig:
    out: str  # run folder: log, checkpoint/, final/, metrics
    preset: str = "lvm-small"  # vlm.lvm.presets name
    img_size: int = 64  # training resolution (a multiple of the preset's size_multiple)
    mix: dict[str, int] = field(default_factory=lambda: default_mix(10_000))  # source -> images in the pool
    pool_seed: int = 0  # draws the pool (independent of `seed`, so runs can share one pool)
    val_fraction: float = 0.05  # the pool's last rows, held out for validation
    batch_size: int = 32  # per process
    steps: int = 5000  # optimizer steps
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.05  # on matrices and convolution kernels only
    warmup: int = 200  # linear warmup steps, then cosine to zero at `steps`
    min_crop_area: float = 0.8  # augmentation: random crops of this..100 % of the area
    grad_clip: float | None = 1.0  # max global grad norm; None: no clipping
    log_every: int = 10
    eval_every: int = 250
    ckpt_every: int = 500
    seed: int = 0  # model init; process i trains with seed + i
    bf16: str | bool = "auto"  # "auto": bf16 autocast where GPU or CPU has bf16 units, else fp32
    num_workers: int = 2  # processes that draw the pool (once; cached)
    pool_dir: str | None = None  # where the pool is cached (None: out)

    def __post_init__(self):
        for name in (
            "img_size",
            "batch_size",
            "steps",
            "log_every",
            "eval_every",
            "ckpt_every",
            "num_workers",
        ):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("pool_seed", "seed", "warmup"):
            _check_int(name, getattr(self, name), minimum=0)
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out):
            raise ValueError(f"out must be a folder path, got {self.out!r}")
        self.out = str(self.out)
        get_config(self.preset, img_size=self.img_size)  # raises on an unknown preset or a bad size
        self.mix = check_mix(self.mix)
        if self.warmup >= self.steps:
            raise ValueError(f"warmup ({self.warmup}) must be shorter than steps ({self.steps})")
        for name, lo, hi in (("lr", 0.0, 1.0), ("val_fraction", 0.0, 0.5), ("min_crop_area", 0.0, 1.0)):
            value = getattr(self, name)
            if not _is_number(value) or not lo < value <= hi:
                raise ValueError(f"{name} must be a number in ({lo}, {hi}], got {value!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip <= 0):
            raise ValueError(f"grad_clip must be a number > 0 or None, got {self.grad_clip!r}")
        check_bf16(self.bf16)
        n_val = math.ceil(sum(self.mix.values()) * self.val_fraction)
        if sum(self.mix.values()) - n_val < 1:
            raise ValueError(f"a pool of {sum(self.mix.values())} images leaves none to train on")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown PretrainConfig fields {unknown}; valid: {valid}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path | None, overrides: Sequence[str] = (), **fields_) -> PretrainConfig:
        """A YAML or JSON file (None: the defaults), then `fields_` (None values skipped), then
        `overrides` such as "lr=3e-4" or "mix.radio-first=500" (see apply_overrides)."""
        data = read_config_file(path) | {k: v for k, v in fields_.items() if v is not None}
        return cls.from_dict(apply_overrides(data, overrides))


def read_config_file(path: str | Path | None) -> dict:
    """The mapping in a YAML or JSON file; {} for None."""
    if path is None:
        return {}
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: Sequence[str], config_class: type | None = None) -> dict:
    """`data` with "key=value" items applied: values parse as JSON ("3e-4", "true", '{"a": 1}') or else
    stay strings; dotted keys reach into mappings ("mix.radio-first=500" starts from the default mix
    of `config_class`, PretrainConfig unless given)."""
    data = copy.deepcopy(data)
    defaults = (config_class or PretrainConfig).__dataclass_fields__
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string: a preset name, a path, "auto"
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            if part not in node and node is data and part in defaults and _has_factory(defaults[part]):
                node[part] = defaults[part].default_factory()  # e.g. the default mix
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part} is not a mapping")
        node[leaf] = value
    return data


def _has_factory(spec) -> bool:
    return spec.default_factory is not MISSING


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


# ----------------------------------------------------------------------------- pieces of the recipe


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor: linear from 1/warmup to 1 over `warmup` steps, then a cosine down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and kernels (dim >= 2), none on biases and norms (nanoGPT's rule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _seed_of(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def batch_indices(
    n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1
) -> torch.Tensor:
    """Pool rows of process `rank`'s batch at `step`: the global batches walk a new permutation of the
    `n` rows each epoch, and the processes take consecutive slices of each global batch."""
    positions = (step * world + rank) * batch_size + torch.arange(batch_size)
    epochs, within = positions // n, positions % n
    rows = torch.empty(batch_size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed_of(seed, 1, epoch)))
        rows[epochs == epoch] = perm[within[epochs == epoch]]
    return rows


def to_float(images: np.ndarray, device) -> torch.Tensor:
    """(B, H, W, 3) uint8 (pool rows, perhaps memory-mapped) -> (B, 3, H, W) float in [0, 1] on `device`."""
    return torch.from_numpy(np.array(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def blur_copy(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The baseline: each factor x factor patch averaged, then upsampled bilinearly."""
    return F.interpolate(
        F.avg_pool2d(images, factor), scale_factor=factor, mode="bilinear", align_corners=False
    )


@torch.no_grad()
def evaluate(model, images: np.ndarray, batch_size: int, accelerator, blur: int | None = None) -> dict:
    """Held-out MSE and mean per-image PSNR (peak 1) of the model, or with `blur` of the blurred copy.
    The processes split the images and their sums are reduced."""
    was_training = model.training
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = images[rank::world]
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # sum mse, sum psnr, count
    for start in range(0, len(mine), batch_size):
        x = to_float(mine[start : start + batch_size], accelerator.device)
        y = blur_copy(x, blur) if blur else model(x).float()
        mse = ((y - x) ** 2).mean(dim=(1, 2, 3)).double()  # (B,)
        psnr = -10.0 * torch.log10(mse.clamp_min(1e-10))
        sums += torch.stack([mse.sum(), psnr.sum(), torch.tensor(float(len(x)), device=sums.device)])
    sums = accelerator.reduce(sums, reduction="sum")
    model.train(was_training)
    return {"val_mse": float(sums[0] / sums[2]), "val_psnr": float(sums[1] / sums[2])}


# ----------------------------------------------------------------------------- checkpoints


def check_launch(accelerator) -> None:
    """Refuse N launched copies that each think they are alone (torchrun on CPUs without
    ACCELERATE_USE_CPU): they would overwrite each other's checkpoints."""
    launched, world = int(os.environ.get("WORLD_SIZE", "1")), accelerator.num_processes
    if launched != world:
        raise RuntimeError(
            f"{launched} processes were launched but accelerate sees {world}; on CPUs set "
            "ACCELERATE_USE_CPU=1 (e.g. ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m app.cli ...)"
        )


def latest_checkpoint(out: Path) -> Path | None:
    """out/checkpoint, or out/checkpoint.old if a save was cut between its two renames; a folder
    counts only once its trainer_state.json (written last) is there."""
    for candidate in (out / "checkpoint", out / "checkpoint.old"):
        if (candidate / "trainer_state.json").is_file():
            return candidate
    return None


def check_resumable(
    checkpoint: Path, config, config_file: str = "pretrain_config.json", resumable: frozenset = RESUMABLE
) -> int:
    """The checkpoint's step; raises if it was written by a config that differs beyond `resumable`."""
    saved = json.loads((checkpoint / config_file).read_text())
    asked = config.to_dict()
    changed = sorted(
        k for k in set(saved) | set(asked) if k not in resumable and saved.get(k) != asked.get(k)
    )
    if changed:
        diff = "; ".join(f"{k}: {saved.get(k)!r} -> {asked.get(k)!r}" for k in changed)
        raise ValueError(
            f"{checkpoint} was written by a different config ({diff}); resume with the same settings "
            f"(only {', '.join(sorted(resumable - {'out'}))} may change), use another --out, or delete it"
        )
    step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    if step > config.steps:
        raise ValueError(f"{checkpoint} is at step {step}, past steps={config.steps}")
    return step


def save_checkpoint(
    accelerator,
    out: Path,
    step: int,
    config,
    config_file: str = "pretrain_config.json",
    state: dict | None = None,
) -> None:
    """Write out/checkpoint.tmp, then swap it in for out/checkpoint (never a half-written checkpoint)."""
    tmp, final, old = out / "checkpoint.tmp", out / "checkpoint", out / "checkpoint.old"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # the model goes through _save_lvm below
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / config_file).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **(state or {})}) + "\n")
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _save_lvm(accelerator, models, weights, output_dir) -> None:
    """save_state hook: the model as LVM.save writes it (config.json + model.safetensors) instead of
    accelerate's own file. Under FSDP/DeepSpeed (no `weights`) accelerate keeps its sharded format."""
    if weights:
        if accelerator.is_main_process:
            accelerator.unwrap_model(models[0]).save(output_dir)
        weights.clear()


def _load_lvm(accelerator, models, input_dir) -> None:
    if models:
        from safetensors.torch import load_file

        state = load_file(Path(input_dir) / "model.safetensors")  # load_state_dict copies to the device
        accelerator.unwrap_model(models[0]).load_state_dict(state, strict=True)
        models.clear()


class RunLog:
    """A run's log.jsonl. Resumed at a checkpoint's step, it keeps the entries up to that step (later
    ones came from work after the checkpoint, now redone); calling it appends an entry, written to the
    file by the main process only. `entries` is the log as a list."""

    def __init__(self, path: Path, resumed_at: int | None, main: bool):
        self.path, self.main = path, main
        self.entries = []
        if resumed_at is not None and path.is_file():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.entries = [e for e in lines if e["step"] <= resumed_at]
        if main:
            path.write_text("".join(json.dumps(e) + "\n" for e in self.entries))

    def __call__(self, entry: dict) -> None:
        self.entries.append(entry)
        if self.main:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [e for e in history if "loss" in e]
    val = [e for e in history if "val_mse" in e]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot([e["step"] for e in train], [e["loss"] for e in train], lw=1, label="train MSE (augmented)")
    if val:
        ax.plot([e["step"] for e in val], [e["val_mse"] for e in val], "o-", ms=3, label="held-out MSE")
        blurred = [e for e in history if "val_mse_blur" in e]
        if blurred:
            label = f"held-out MSE of the input blurred over {blurred[-1]['blur']} px patches"
            ax.axhline(blurred[-1]["val_mse_blur"], ls="--", c="grey", lw=1, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE")
    ax.set_title("LVM reconstruction pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the recipe


def pretrain(
    config: PretrainConfig, resume: bool | None = None, stop_after: int | None = None, progress: bool = True
) -> dict:
    """Run (or resume) pretraining; returns the final metrics (also written to out/metrics.json).

    resume: None resumes from out/checkpoint when there is one, True requires one, False refuses to
    start where one exists. stop_after: return after that step (checkpointed) without the final
    save, e.g. to spread a run over several sessions; rerunning the config resumes.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # ------------------------------------------------------------------------- setup
    out = Path(config.out)
    stop = config.steps if stop_after is None else min(stop_after, config.steps)
    if stop < 1:
        raise ValueError(f"stop_after must be >= 1, got {stop_after}")
    checkpoint = latest_checkpoint(out)
    if resume is True and checkpoint is None:
        raise FileNotFoundError(f"nothing to resume: no checkpoint in {out}")
    if resume is False and checkpoint is not None:
        raise ValueError(f"{checkpoint} exists; resume it (same command) or use another --out")
    start = check_resumable(checkpoint, config) if checkpoint is not None else 0

    accelerator = Accelerator(
        mixed_precision=mixed_precision(config.bf16), step_scheduler_with_optimizer=False
    )
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    check_launch(accelerator)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "pretrain_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    with accelerator.main_process_first():  # the main process draws and caches the pool, the rest load it
        pool = build_pool(
            config.mix, config.img_size, config.pool_seed, config.num_workers,
            cache_dir=config.pool_dir or out, progress=progress and main,
        )  # fmt: skip
    train_images, val_images = split(pool, config.val_fraction)  # (N, H, W, 3) uint8 arrays
    set_seed(config.seed)  # the same initial weights on every process
    model = LVM(get_config(config.preset, img_size=config.img_size))
    set_seed(config.seed + rank)  # drop-path and anything else random differs per process

    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = LambdaLR(optimizer, partial(warmup_cosine, warmup=config.warmup, total=config.steps))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    accelerator.register_save_state_pre_hook(partial(_save_lvm, accelerator))
    accelerator.register_load_state_pre_hook(partial(_load_lvm, accelerator))

    log = RunLog(out / "log.jsonl", start if checkpoint is not None else None, main)
    history = log.entries
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))  # weights, optimizer, scheduler, every RNG

    patch = accelerator.unwrap_model(model).config.patch_size
    baseline = evaluate(model, val_images, config.batch_size, accelerator, blur=patch)
    if start == 0:
        initial = evaluate(model, val_images, config.batch_size, accelerator)
        blurred = {"val_mse_blur": baseline["val_mse"], "val_psnr_blur": baseline["val_psnr"], "blur": patch}
        log({"step": 0, **initial, **blurred})
    n_params = sum(p.numel() for p in model.parameters())
    if main and progress:
        tqdm.write(
            f"LVM {config.preset} ({n_params / 1e6:.2f} M params) at {config.img_size} px on {world} x "
            f"{accelerator.device} ({accelerator.mixed_precision}); pool {len(train_images)} train + "
            f"{len(val_images)} held out; steps {start} -> {stop} of {config.steps}"
        )

    # ------------------------------------------------------------------------- train
    model.train()
    bar = tqdm(total=stop, initial=start, desc="pretrain", unit="step", disable=not (progress and main))
    loss_sum = torch.zeros((), device=accelerator.device)
    seen, train_seconds, interval_steps = 0, 0.0, 0
    tick = time.perf_counter()  # the clock runs over training steps only, not evals or checkpoints
    for step in range(start, stop):
        rows = batch_indices(len(train_images), config.batch_size, step, config.seed, rank, world)
        generator = torch.Generator().manual_seed(_seed_of(config.seed, 2, rank, step))
        x = augment(to_float(train_images[rows.numpy()], accelerator.device), generator, config.min_crop_area)
        loss = F.mse_loss(model(x).float(), x)  # (B, 3, H, W) -> the input itself
        accelerator.backward(loss)
        if config.grad_clip is not None:
            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        interval_steps += 1
        done = step + 1
        bar.update(1)

        if done % config.log_every == 0 or done == stop:
            mean_loss = accelerator.reduce(loss_sum, reduction="mean").item() / interval_steps  # syncs
            seconds = time.perf_counter() - tick
            rate = interval_steps * config.batch_size * world / seconds
            log({"step": done, "loss": mean_loss, "lr": scheduler.get_last_lr()[0], "images_per_s": rate})
            bar.set_postfix(loss=f"{mean_loss:.2e}", img_s=f"{rate:.0f}")
            seen += interval_steps * config.batch_size * world
            train_seconds += seconds
            loss_sum.zero_()
            interval_steps = 0
            tick = time.perf_counter()
        paused = time.perf_counter()
        if done % config.eval_every == 0 or done == config.steps:
            metrics = evaluate(model, val_images, config.batch_size, accelerator)
            log({"step": done, **metrics})
            if main and progress:
                tqdm.write(
                    f"step {done}: held-out MSE {metrics['val_mse']:.3e}, PSNR {metrics['val_psnr']:.2f} dB"
                )
        if done % config.ckpt_every == 0 or done == stop:
            save_checkpoint(accelerator, out, done, config)
        tick += time.perf_counter() - paused  # evals and checkpoints do not count as training time
    bar.close()

    # ------------------------------------------------------------------------- save
    if not any("val_mse" in e for e in history):  # a resumed run whose log was lost
        log({"step": stop, **evaluate(model, val_images, config.batch_size, accelerator)})
    evals = [e for e in history if "val_mse" in e]
    first = evals[0] if evals and evals[0]["step"] == 0 else {}
    metrics = {
        "step": stop,
        "steps": config.steps,
        "val_mse": evals[-1]["val_mse"],
        "val_psnr": evals[-1]["val_psnr"],
        "val_step": evals[-1]["step"],
        "val_mse_initial": first.get("val_mse"),
        "val_psnr_initial": first.get("val_psnr"),
        "val_mse_blur": baseline["val_mse"],
        "val_psnr_blur": baseline["val_psnr"],
        "blur": patch,  # the baseline averages patch x patch pixels, the first stage's token size
        "train_loss": next((e["loss"] for e in reversed(history) if "loss" in e), None),
        "images_per_s": seen / train_seconds if train_seconds else None,  # this session's training
        "train_seconds": round(train_seconds, 2),
        "params": n_params,
        "pool_train": len(train_images),
        "pool_val": len(val_images),
        "processes": world,
        "mixed_precision": accelerator.mixed_precision,
    }
    if stop < config.steps:  # interrupted on purpose: the checkpoint is the result
        return metrics
    accelerator.wait_for_everyone()
    if main:
        tmp = out / "final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save(tmp)
        shutil.rmtree(out / "final", ignore_errors=True)
        os.replace(tmp, out / "final")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        plot_losses(history, out / "loss.png")
    accelerator.wait_for_everyone()
    return metrics
