"""The assistant's tools: what they do, how a call is checked, and how it is run.

    runner = ToolRunner()                                   # every tool of data_builders.tool_specs
    output = runner.run("detect_sources", {"min_score": 0.6}, images)
    output.result      # JSON for the model: {"detections": [...]} or {"error": "..."}
    output.visual      # for people: an annotated PIL image, a bar chart, or a list of (thumbnail, caption)

A call names a tool on the runner's allow-list and gives arguments that its JSON schema accepts
(tool_specs.TOOL_SPECS, checked by jsonschema, defaults filled in). Tools read only the images already in
the conversation, by index: none takes a path, so no prompt can make one read a file. A call that fails
(unknown tool, bad arguments, no such image, an error inside, over the time limit) returns
{"error": reason}, which the model reads like any result; nothing is raised to the caller.
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from jsonschema import Draft202012Validator
from PIL import Image, ImageDraw

from app.hitl.tools import HITL_TOOLS, HITLError
from app.images import ChatImage
from data_builders.measure import image_stats, significant
from data_builders.stretch import render_rgb
from data_builders.tool_specs import ALL_TOOL_SPECS, detect_sources_result, openai_tools

log = logging.getLogger(__name__)


class ToolError(Exception):
    """A call the tool cannot serve; its message goes back to the model as {"error": message}."""


@dataclass
class ToolOutput:
    name: str
    arguments: dict
    result: dict  # what the model reads
    visual: object = None  # PIL.Image | list[(np.ndarray, str)] | None: what people see
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return "error" not in self.result


class ToolResources:
    """The models the tools share, loaded on first use (the LVM once, for all of them)."""

    def __init__(self, lvm=None, morphology_heads_dir=None, gallery_folder=None, hitl_dir=None):
        self._lvm, self._heads_dir, self._gallery_folder = lvm, morphology_heads_dir, gallery_folder
        self._hitl_dir = hitl_dir
        self._detectors: dict = {}

    @cached_property
    def hitl_dir(self) -> Path:
        """Where HITL sessions, their cached features and exports are kept, across runs of the app:
        `hitl_dir`, else $ASTROVLM_HOME/hitl, else ~/.astrovlm/hitl."""
        home = Path(os.environ.get("ASTROVLM_HOME", Path.home() / ".astrovlm"))
        folder = Path(self._hitl_dir) if self._hitl_dir else home / "hitl"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @cached_property
    def lvm(self):
        from vlm.lvm.shipped import load_default

        return self._lvm or load_default()

    @cached_property
    def classifier(self):
        from vlm.morphology import DEFAULT_HEADS_DIR, MorphologyClassifier

        return MorphologyClassifier.load(self._heads_dir or DEFAULT_HEADS_DIR, lvm=self.lvm)

    def detector(self, domain: str):
        """The shipped radio or optical detector, on the shared LVM."""
        if domain not in self._detectors:
            from vlm.heads.detect import Detector

            self._detectors[domain] = Detector.load(domain, lvm=self.lvm)
        return self._detectors[domain]

    @cached_property
    def gallery(self):
        from app.gallery import Gallery

        if self._gallery_folder is not None:
            return Gallery.from_folder(self._gallery_folder, self.lvm)
        return Gallery.default(self.lvm)


# ----------------------------------------------------------------------------- the tools


def _sky(image: ChatImage, x: float, y: float) -> dict:
    sky = image.sky(x, y)
    return sky if sky is not None else {}


def tool_image_stats(resources: ToolResources, image: ChatImage) -> tuple[dict, object]:
    stats = image_stats(image.image.data, image.image.bands)
    result = {k: significant(v) if isinstance(v, float) else v for k, v in stats.items()}  # as in training
    header = image.image.header
    if header is not None and header.get("BUNIT"):
        result["unit"] = str(header["BUNIT"])
    if image.pixel_scale_arcsec():
        result["pixel_scale_arcsec"] = round(image.pixel_scale_arcsec(), 4)
    height, width = image.shape
    centre = image.sky((width - 1) / 2, (height - 1) / 2)
    if centre:
        result["centre"] = centre
    if image.image.mask is not None and image.image.mask.any():
        result["masked_pixels"] = int(image.image.mask.any(axis=0).sum())
    return result, None


def tool_detect_sources(
    resources: ToolResources, image: ChatImage, min_score: float = 0.5
) -> tuple[dict, object]:
    # the picture as the detector was trained on it, whatever stretch the user chose to look at
    picture = render_rgb(image.image.data, image.domain, image.image.bands)
    found = resources.detector(image.domain).detect(picture, min_score=min_score)
    detections = []
    for d in found:
        centre = ((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2)
        detections.append({**d.to_dict(), "centre": [round(v, 1) for v in centre], **_sky(image, *centre)})
    detector = f"Faster R-CNN on the LVM, {image.domain} (vlm.heads.detect)"
    return detect_sources_result(detections, detector=detector), draw_boxes(image, detections)


def tool_classify_morphology(resources: ToolResources, image: ChatImage, scheme: str) -> tuple[dict, object]:
    size = resources.lvm.config.img_size
    probabilities = resources.classifier.probabilities(image.model_view(size), scheme)
    ranked = dict(sorted(probabilities.items(), key=lambda kv: -kv[1]))
    result = {"scheme": scheme, "probabilities": {c: round(p, 4) for c, p in ranked.items()}}
    return result, bar_chart(ranked, f"classify_morphology ({scheme})")


def tool_find_similar(resources: ToolResources, image: ChatImage, k: int = 5) -> tuple[dict, object]:
    size = resources.lvm.config.img_size
    neighbours = resources.gallery.nearest(image.model_view(size), k)
    result = {
        "neighbours": [
            {"id": n.id, "label": n.label, "similarity": round(n.similarity, 4)} for n in neighbours
        ]
    }
    visual = [(n.thumbnail, f"{n.id} ({n.label}) {n.similarity:.2f}") for n in neighbours]
    return result, visual


TOOLS: dict[str, Callable[..., tuple[dict, object]]] = {
    "image_stats": tool_image_stats,
    "detect_sources": tool_detect_sources,
    "classify_morphology": tool_classify_morphology,
    "find_similar": tool_find_similar,
    **HITL_TOOLS,
}
assert set(TOOLS) == set(ALL_TOOL_SPECS), "every spec has an implementation and every implementation a spec"


# ----------------------------------------------------------------------------- pictures of results


def draw_boxes(image: ChatImage, detections: list[dict]) -> Image.Image:
    shown = image.display().convert("RGB")
    scale = shown.width / image.shape[1]
    draw = ImageDraw.Draw(shown)
    for d in detections:
        x0, y0, x1, y1 = (v * scale for v in d["box"])
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(0, 255, 120), width=2)
        draw.text((x0 + 2, max(0, y0 - 11)), f"{d['score']:.2f}", fill=(0, 255, 120))
    return shown


def bar_chart(probabilities: dict[str, float], title: str) -> Image.Image:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(probabilities)[::-1]
    fig, ax = plt.subplots(figsize=(5, 0.35 * len(names) + 0.9), dpi=100)
    ax.barh(names, [probabilities[n] for n in names], color="#3b7dd8")
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return Image.open(buffer).convert("RGB")


# ----------------------------------------------------------------------------- the runner


@dataclass
class ToolRunner:
    allowed: tuple[str, ...] = tuple(TOOLS)
    timeout_s: float = 60.0
    resources: ToolResources = field(default_factory=ToolResources)

    def __post_init__(self):
        unknown = sorted(set(self.allowed) - set(TOOLS))
        if unknown:
            raise ValueError(f"unknown tools {unknown}; valid: {sorted(TOOLS)}")
        self._validators = {
            name: Draft202012Validator(ALL_TOOL_SPECS[name]["parameters"]) for name in self.allowed
        }

    def specs(self, n_images: int | None = None) -> list[dict]:
        """The allowed tools in OpenAI's `tools=` form. With n_images (>= 1), `image_index` is bounded by
        the images the conversation holds, so a call decoded under these schemas names one of them."""
        specs = openai_tools(list(self.allowed))
        if n_images:
            for spec in specs:
                index = spec["function"]["parameters"].get("properties", {}).get("image_index")
                if index is not None:
                    index["maximum"] = n_images - 1
        return specs

    def check(self, name: str, arguments) -> dict:
        """The arguments with their defaults, or ToolError saying what is wrong with the call."""
        if name not in self.allowed:
            raise ToolError(f"unknown tool {name!r}; available: {list(self.allowed)}")
        if not isinstance(arguments, dict):
            raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        errors = sorted(self._validators[name].iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            raise ToolError(
                "; ".join(f"{'.'.join(map(str, e.path)) or 'arguments'}: {e.message}" for e in errors)
            )
        properties = ALL_TOOL_SPECS[name]["parameters"].get("properties", {})
        defaults = {key: spec["default"] for key, spec in properties.items() if "default" in spec}
        return {**defaults, **arguments}

    def run(self, name: str, arguments, images: list[ChatImage]) -> ToolOutput:
        start = time.perf_counter()
        try:
            arguments = self.check(name, arguments)
            on_image = "image_index" in ALL_TOOL_SPECS[name]["parameters"].get("properties", {})
            index = arguments.pop("image_index", 0)
            if on_image and not images:
                raise ToolError("there is no image in the conversation: upload one first")
            if on_image and index >= len(images):
                raise ToolError(
                    f"image_index {index} is out of range: the conversation has {len(images)} image(s)"
                )
            target = (images[index],) if on_image else ()
            future = _in_own_thread(TOOLS[name], self.resources, *target, **arguments)
            try:
                result, visual = future.result(timeout=self.timeout_s)
            except concurrent.futures.TimeoutError:
                raise ToolError(f"{name} took longer than {self.timeout_s:g} s and was abandoned") from None
            if index:
                arguments["image_index"] = index
        except (ToolError, HITLError) as exc:
            result, visual = {"error": str(exc)}, None
        except Exception as exc:  # a bug or a model file problem: reported, logged, the chat goes on
            log.exception("tool %s failed", name)
            result, visual = {"error": f"{name} failed: {type(exc).__name__}: {exc}"}, None
        arguments = arguments if isinstance(arguments, dict) else {}
        return ToolOutput(name, arguments, result, visual, time.perf_counter() - start)


def _in_own_thread(fn: Callable, *args, **kwargs) -> concurrent.futures.Future:
    """fn's result, computed in a thread of its own that ends with it. A call past its time limit cannot
    be killed: it finishes in the background while the conversation goes on with an error result. Not a
    pool: a live thread that has run torch keeps its OpenMP team, and more OpenMP threads than CPUs slow
    every later decode step (app/compute.py)."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def work():
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller with its traceback
            future.set_exception(exc)

    # not a daemon: at exit the interpreter waits for it, rather than stopping it inside torch (abort)
    threading.Thread(target=work, name="astrovlm-tool").start()
    return future
