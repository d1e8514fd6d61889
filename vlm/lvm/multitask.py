"""Multi-task training of the LVM encoder with three heads (seed 000, section 3; Tables 1-4).

    astrovlm lvm multitask --out runs/mt --strategy all        # frozen, uniform and active, then compare

    from vlm.lvm.multitask import MultitaskConfig, train_multitask
    metrics = train_multitask(MultitaskConfig(out="runs/mt/active", strategy="active"))

The tasks share one encoder (the pretrained LVM's) and each has its own head (vlm/heads):
- classify: the four GalaxyMNIST-like morphologies of simulated g,r,z stamps (two FC layers on the
  stage means, cross-entropy);
- restore: the stamp blurred by a Moffat PSF (FWHM 2-8 px) plus Gaussian noise (sigma 1-15 on 8-bit
  values) back to the clean stamp (conv decoder, MSE);
- reconstruct: the stamp with 0-70 % hidden in 4, 8 or 16 px patches back to the clean stamp (MSE).

Strategies (the paper's three models):
- frozen: the encoder is kept as pretrained and only the heads learn (the paper's Pre_train model);
- uniform: encoder and heads learn together, each batch split equally between the tasks (Multi_uniform);
- active: as uniform, but every `reweight_every` steps each task's share of the batch is set from its
  held-out score, so the task that scores worst gets most of the next batches (Multi_active).

Tasks are compared on one scale, the share of the error that is left: 1 - accuracy for classify, and
MSE(output) / MSE(degraded input) for the image tasks (1: no better than the input, 0: perfect). The
training loss uses the same normalisation (cross-entropy / ln(classes); MSE over the degraded input's
MSE), so no task drowns the others by its units. Active shares are floor + (1 - 3 floor) * error / sum.

Data are drawn from their own random streams (never the pretraining pool's) and rendered exactly as
the pretraining pool renders optical stamps. Files in out/: config.json, heads.safetensors, lvm/ (the
encoder, unless frozen), log.jsonl (losses and shares), metrics.json (the held-out test metrics).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from data_builders.families import get_family
from vlm.heads import ClassificationHead, ImageDecoderHead
from vlm.lvm.data import augment, render_chunk
from vlm.lvm.degrade import blur_and_noise, mask_patches
from vlm.lvm.model import LVM
from vlm.lvm.pretrain import param_groups, to_float, warmup_cosine
from vlm.lvm.shipped import load_default

TASKS = ("classify", "restore", "reconstruct")
STRATEGIES = ("frozen", "uniform", "active")
CLASSIFY_FAMILY = "optical-gmnist"  # the paper's four classes: elliptical, edge-on, spiral, other
IMAGE_FAMILY = "optical-morphology"  # clean stamps for restoration and reconstruction
MULTITASK_STREAM = 8_000  # keeps these draws apart from the pretraining pool (7000) and data builds
SPLITS = {"train": 0, "val": 1, "test": 2}
MASK_PATCHES = (4, 8, 16)  # Table 4's patch sides


@dataclass
class MultitaskConfig:
    out: str
    lvm: str | None = None  # LVM checkpoint folder; None: the shipped lvm-small
    strategy: str = "active"  # frozen | uniform | active
    img_size: int = 64
    steps: int = 600
    batch_size: int = 48  # images per step, shared between the tasks
    lr_heads: float = 1e-3
    lr_encoder: float = 1e-4  # fine-tuning rate of the pretrained encoder (uniform, active)
    warmup: int = 30
    weight_decay: float = 0.05
    n_classify: tuple[int, int, int] = (2000, 200, 500)  # train, val, test images (seed 000: 2000 / - / 1000)
    n_image: tuple[int, int, int] = (
        1000,
        100,
        200,
    )  # clean stamps for the image tasks (seed 000: 1000 / 100)
    reweight_every: int = 50  # active: steps between held-out scorings
    share_floor: float = 0.1  # active: no task gets less than this share of a batch
    seed: int = 0
    data_seed: int = 0
    num_workers: int = 2  # processes that draw the data
    log_every: int = 10

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("img_size", "steps", "batch_size", "reweight_every", "num_workers", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.batch_size < 2 * len(TASKS):
            raise ValueError(f"batch_size must be at least {2 * len(TASKS)} (two images per task)")
        for name in ("n_classify", "n_image"):
            value = tuple(getattr(self, name))
            if len(value) != 3 or not all(isinstance(v, int) and v >= 1 for v in value):
                raise ValueError(f"{name} must be three positive ints (train, val, test), got {value!r}")
            setattr(self, name, value)
        if not 0.0 <= self.share_floor < 1 / len(TASKS):
            raise ValueError(f"share_floor must be in [0, {1 / len(TASKS):.3f}), got {self.share_floor}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


# ----------------------------------------------------------------------------- data


def _render_chunk(task: tuple[str, int, str, int, int, int]) -> tuple[np.ndarray, list[str]]:
    """Worker: records start..stop of a family's split -> (n, size, size, 3) uint8 and their labels."""
    name, seed, split, start, stop, size = task
    stream = (seed, MULTITASK_STREAM, zlib.crc32(name.encode()), SPLITS[split])
    images, _, labels = render_chunk((name, stream, start, stop, size, f"{name}-{split}-"))
    return images, labels


def render_split(
    name: str, split: str, n: int, size: int, seed: int, num_workers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """n images of a family's split as (n, size, size, 3) uint8 and (n,) class indices; the same for
    any num_workers."""
    family = get_family(name)
    tasks = [(name, seed, split, s, min(s + 64, n), size) for s in range(0, n, 64)]
    if num_workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(min(num_workers, len(tasks))) as pool:
            chunks = list(pool.map(_render_chunk, tasks))
    else:
        chunks = [_render_chunk(t) for t in tasks]
    images = np.concatenate([c[0] for c in chunks])
    labels = np.array([family.classes.index(label) for c in chunks for label in c[1]])
    return images, labels


@dataclass
class TaskData:
    """uint8 (N, H, W, 3) images per split; class indices for classify."""

    classes: tuple[str, ...]
    classify: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images, labels)
    images: dict[str, np.ndarray]  # split -> clean stamps for restore and reconstruct


def load_task_data(config: MultitaskConfig, cache_dir: Path | None = None, progress: bool = True) -> TaskData:
    """Draw (or load from cache_dir/multitask-data-*.npz) the three tasks' splits."""
    key = f"{config.data_seed}-{config.img_size}-{'-'.join(map(str, config.n_classify + config.n_image))}"
    path = cache_dir / f"multitask-data-{key}.npz" if cache_dir is not None else None
    classes = get_family(CLASSIFY_FAMILY).classes
    if path is not None and path.is_file():
        z = np.load(path)
        classify = {s: (z[f"cls_{s}_x"], z[f"cls_{s}_y"]) for s in SPLITS}
        return TaskData(classes, classify, {s: z[f"img_{s}"] for s in SPLITS})
    classify, images = {}, {}
    jobs = [(CLASSIFY_FAMILY, s, n) for s, n in zip(SPLITS, config.n_classify)]
    jobs += [(IMAGE_FAMILY, s, n) for s, n in zip(SPLITS, config.n_image)]
    for name, split, n in tqdm(jobs, desc="multitask data", disable=not progress):
        x, y = render_split(name, split, n, config.img_size, config.data_seed, config.num_workers)
        if name == CLASSIFY_FAMILY:
            classify[split] = (x, y)
        else:
            images[split] = x
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"cls_{s}_x": classify[s][0] for s in SPLITS} | {
            f"cls_{s}_y": classify[s][1] for s in SPLITS
        }
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays, **{f"img_{s}": images[s] for s in SPLITS})
        os.replace(tmp, path)
    return TaskData(classes, classify, images)


# ----------------------------------------------------------------------------- model


class MultitaskLVM(nn.Module):
    """The LVM encoder with one head per task."""

    def __init__(self, lvm: LVM, n_classes: int):
        super().__init__()
        self.lvm = lvm
        dims, patch = lvm.feature_dims, lvm.config.patch_size
        self.heads = nn.ModuleDict(
            {
                "classify": ClassificationHead(sum(dims), n_classes),
                "restore": ImageDecoderHead(dims, patch),
                "reconstruct": ImageDecoderHead(dims, patch),
            }
        )

    def forward(self, task: str, images: torch.Tensor) -> torch.Tensor:
        feats = self.lvm.encode(images)
        if task == "classify":
            return self.heads["classify"](feats.stage_means)
        return self.heads[task](feats.stages, images)


def load_lvm(path: str | None) -> LVM:
    return load_default() if path is None else LVM.load(path)


# ----------------------------------------------------------------------------- metrics


def ssim(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-image SSIM of (B, C, H, W) images in [0, 1] (scikit-image's, over the colour channels)."""
    from skimage.metrics import structural_similarity

    a, b = a.permute(0, 2, 3, 1).cpu().numpy(), b.permute(0, 2, 3, 1).cpu().numpy()
    return np.array(
        [structural_similarity(x, y, channel_axis=-1, data_range=1.0) for x, y in zip(a, b, strict=True)]
    )


def image_metrics(output: torch.Tensor, target: torch.Tensor) -> dict:
    """Mean MSE, PSNR (peak 1, per image then averaged) and SSIM of a batch of images."""
    output = output.clamp(0.0, 1.0)
    mse = ((output - target) ** 2).mean(dim=(1, 2, 3)).double()
    psnr = -10.0 * torch.log10(mse.clamp_min(1e-10))
    return {"mse": float(mse.mean()), "psnr": float(psnr.mean()), "ssim": float(ssim(output, target).mean())}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    pre, rec, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {
        "acc": float(accuracy_score(y_true, y_pred)),
        "pre": float(pre),
        "recall": float(rec),
        "f1": float(f1),
    }


@torch.no_grad()
def _predict(model: MultitaskLVM, task: str, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    return torch.cat([model(task, images[s : s + batch_size]) for s in range(0, len(images), batch_size)])


def degraded_sets(clean: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The fixed degraded versions of a split: restoration input, masked input at random fractions and
    patches (Table 3), and at 50 % for each patch size (Table 4)."""
    g = torch.Generator().manual_seed(seed)
    sets = {"restore": blur_and_noise(clean, g), "reconstruct": mask_patches(clean, g)[0]}
    for p in MASK_PATCHES:
        sets[f"reconstruct@50%/{p}px"] = mask_patches(clean, g, fraction=0.5, patch=p)[0]
    return sets


@torch.no_grad()
def evaluate(model: MultitaskLVM, data: TaskData, split: str, seed: int, tasks=None) -> dict:
    """Held-out metrics of every task on `split`, with the degraded inputs' own metrics beside them.
    `error` is each task's share of error left (see the module notes)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tasks = tasks or (*TASKS, *(f"reconstruct@50%/{p}px" for p in MASK_PATCHES))
    results = {}
    if "classify" in tasks:
        x, y = data.classify[split]
        logits = _predict(model, "classify", to_float(x, device))
        results["classify"] = classification_metrics(y, logits.argmax(1).cpu().numpy())
        results["classify"]["error"] = 1.0 - results["classify"]["acc"]
    clean = to_float(data.images[split], device)
    for name, degraded in degraded_sets(clean, seed).items():
        if name not in tasks:
            continue
        head = name.split("@")[0]
        output = _predict(model, head, degraded)
        results[name] = image_metrics(output, clean) | {"input": image_metrics(degraded, clean)}
        results[name]["error"] = results[name]["mse"] / results[name]["input"]["mse"]
    model.train(was_training)
    return results


def active_shares(errors: dict[str, float], floor: float) -> dict[str, float]:
    """Batch shares from held-out errors: the worst task gets most, none less than `floor`."""
    total = sum(errors.values())
    if total <= 0:
        return {t: 1 / len(errors) for t in errors}
    return {t: floor + (1 - len(errors) * floor) * e / total for t, e in errors.items()}


def split_batch(batch_size: int, shares: dict[str, float]) -> dict[str, int]:
    """Images per task (largest remainder; at least two per task whose share is above zero, as the
    classifier's batch norm needs)."""
    raw = {t: batch_size * s for t, s in shares.items()}
    counts = {t: max(2, math.floor(r)) if shares[t] > 0 else 0 for t, r in raw.items()}
    for t in sorted(raw, key=lambda t: raw[t] - math.floor(raw[t]), reverse=True):
        if sum(counts.values()) >= batch_size:
            break
        counts[t] += 1
    while sum(counts.values()) > batch_size:
        counts[max(counts, key=counts.get)] -= 1
    return counts


# ----------------------------------------------------------------------------- training


def train_multitask(config: MultitaskConfig, data: TaskData | None = None, progress: bool = True) -> dict:
    """Train the heads (and, unless frozen, the encoder); returns the test metrics (also in out/)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = data or load_task_data(config, cache_dir=out, progress=progress)
    torch.manual_seed(config.seed)
    model = MultitaskLVM(load_lvm(config.lvm), len(data.classes)).to(device)
    frozen = config.strategy == "frozen"
    model.lvm.requires_grad_(not frozen)
    groups = [{"params": model.heads.parameters(), "lr": config.lr_heads, "weight_decay": 0.0}]
    if not frozen:
        for group in param_groups(model.lvm, config.weight_decay):
            groups.append(group | {"lr": config.lr_encoder})
    optimizer = torch.optim.AdamW(groups)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    x_cls, y_cls = data.classify["train"]
    clean = data.images["train"]
    shares = {t: 1 / len(TASKS) for t in TASKS}
    log_path = out / "log.jsonl"
    log_path.write_text("")
    rng = np.random.default_rng([config.seed, MULTITASK_STREAM])
    model.train()
    if frozen:
        model.lvm.eval()  # no dropout or drop-path in a frozen encoder
    bar = tqdm(range(config.steps), desc=f"multitask {config.strategy}", unit="step", disable=not progress)
    sums, tick = dict.fromkeys(TASKS, 0.0), time.perf_counter()
    for step in bar:
        if config.strategy == "active" and step > 0 and step % config.reweight_every == 0:
            scores = evaluate(model, data, "val", seed=config.seed + 1, tasks=TASKS)
            shares = active_shares({t: scores[t]["error"] for t in TASKS}, config.share_floor)
            if frozen:
                model.lvm.eval()
            _log(
                log_path,
                {"step": step, "val_error": {t: scores[t]["error"] for t in TASKS}, "shares": shares},
            )
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * warmup_cosine(step, config.warmup, config.steps)
        counts = split_batch(config.batch_size, shares)
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))

        rows = rng.integers(len(x_cls), size=counts["classify"])
        images = augment(to_float(x_cls[rows], device), g)
        labels = torch.from_numpy(y_cls[rows]).to(device)
        targets = augment(
            to_float(clean[rng.integers(len(clean), size=counts["restore"] + counts["reconstruct"])], device),
            g,
        )
        restore_target, recon_target = targets[: counts["restore"]], targets[counts["restore"] :]
        inputs = {
            "classify": images,
            "restore": blur_and_noise(restore_target, g),
            "reconstruct": mask_patches(recon_target, g)[0],
        }
        with torch.set_grad_enabled(not frozen):
            feats = model.lvm.encode(torch.cat([inputs[t] for t in TASKS]))
        means = feats.stage_means
        pieces = {t: [] for t in TASKS}
        start = 0
        for t in TASKS:
            stop = start + counts[t]
            pieces[t] = (means[start:stop], [s[start:stop] for s in feats.stages])
            start = stop
        losses = {
            "classify": F.cross_entropy(model.heads["classify"](pieces["classify"][0]), labels)
            / math.log(len(data.classes)),
            "restore": _relative_mse(
                model.heads["restore"](pieces["restore"][1], inputs["restore"]),
                inputs["restore"],
                restore_target,
            ),
            "reconstruct": _relative_mse(
                model.heads["reconstruct"](pieces["reconstruct"][1], inputs["reconstruct"]),
                inputs["reconstruct"],
                recon_target,
            ),
        }
        loss = sum(losses[t] * counts[t] / config.batch_size for t in TASKS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        for t in TASKS:
            sums[t] += losses[t].item()
        if (step + 1) % config.log_every == 0:
            rate = config.log_every * config.batch_size / (time.perf_counter() - tick)
            entry = {"step": step + 1, **{f"loss_{t}": sums[t] / config.log_every for t in TASKS}}
            _log(log_path, entry | {"counts": counts, "images_per_s": rate})
            bar.set_postfix({t[:5]: f"{sums[t] / config.log_every:.3f}" for t in TASKS})
            sums, tick = dict.fromkeys(TASKS, 0.0), time.perf_counter()

    metrics = evaluate(model, data, "test", seed=config.seed + 2)
    metrics["strategy"] = config.strategy
    _save(model, out, frozen)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _relative_mse(output: torch.Tensor, degraded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE of the output over that of the degraded input, over the whole batch: scale-free, and stable
    when an image is barely degraded (a 1 % mask), where a per-image ratio would explode."""
    base = ((degraded - target) ** 2).mean().detach().clamp_min(1e-8)
    return ((output - target) ** 2).mean() / base


def _log(path: Path, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _save(model: MultitaskLVM, out: Path, frozen: bool) -> None:
    tmp = out / "heads.tmp.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.heads.state_dict().items()}, tmp)
    os.replace(tmp, out / "heads.safetensors")
    if not frozen:
        shutil.rmtree(out / "lvm", ignore_errors=True)
        model.lvm.save(out / "lvm")


def load_multitask(out: str | Path, n_classes: int = 4) -> MultitaskLVM:
    """A trained multitask model from its folder (the encoder of lvm/, or the config's LVM if frozen)."""
    out = Path(out)
    config = json.loads((out / "config.json").read_text())
    lvm = LVM.load(out / "lvm") if (out / "lvm").is_dir() else load_lvm(config.get("lvm"))
    model = MultitaskLVM(lvm, n_classes)
    model.heads.load_state_dict(load_file(out / "heads.safetensors"))
    return model.eval()
