"""Bounding-box answers, scored against the true boxes by IoU and mAP (torchmetrics over COCO's code).

    config = BoxConfig(out="runs/bench/lora/boxes-compact", family="radio-b3", box_class="compact", n=100)
    metrics = run_boxes(Generation(engine), config)      # or OpenAIChat(...): any backend that answers text

The question is the data builders' own ("Give the bounding boxes of the compact sources in the image."),
asked about held-out simulated records (seed 1); the answer is read as the Q&A sets write boxes: one
"[x0, y0, x1, y1]" per line in normalised image coordinates (origin top-left), or a sentence saying there
are none. An answer with neither is a parse failure: no boxes, counted in parse_failure_rate. Scores, in
pixels: mAP@50 and mAP@[.5:.95] (the order of the boxes in the answer is their confidence, first
highest), the mean over true boxes of the best IoU any answered box reaches, and how often the number of
boxes is right. Predictions go to predictions.jsonl as they come; a rerun resumes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.runner import PREDICTIONS, resume_run

BOX = re.compile(r"\[\s*(-?\d*\.?\d+)\s*,\s*(-?\d*\.?\d+)\s*,\s*(-?\d*\.?\d+)\s*,\s*(-?\d*\.?\d+)\s*\]")
NO_BOXES = re.compile(r"\b(no|none|zero|not any|there are no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class BoxConfig:
    out: str
    family: str = "radio-b3"
    box_class: str = "compact"
    n: int = 100
    seed: int = 1


def question(box_class: str) -> str:
    from data_builders.conversations import name_of, templates

    return templates()["boxes"][1].format(name=name_of(box_class))


def parse_boxes(text: str) -> list[list[float]] | None:
    """Normalised [x0, y0, x1, y1] boxes in the answer's order; [] for "there are none"; None if unreadable.
    Corners are put in order and clipped to the image."""
    boxes = []
    for match in BOX.finditer(text):
        x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in match.groups())
        boxes.append([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)])
    if boxes:
        return boxes
    return [] if NO_BOXES.search(text) else None


def held_out(family_name: str, box_class: str, seed: int, i: int):
    """(id, RGB uint8 image, true normalised boxes of box_class, (width, height))."""
    from data_builders.families import get_family
    from data_builders.stretch import render_rgb

    family = get_family(family_name)
    if box_class not in family.box_classes:
        raise ValueError(
            f"{family_name} has no boxes of class {box_class!r}; valid: {list(family.box_classes)}"
        )
    record = family.simulate(
        np.random.default_rng([seed, i]), family.default_size, f"{family_name}-{seed}-{i:06d}"
    )
    width, height = record.width, record.height
    truths = [list(b.normalised(width, height)) for b in record.boxes if b.label == box_class]
    return record.id, render_rgb(record.image, record.domain, record.bands), truths, (width, height)


def score_boxes(entries: list[dict]) -> dict:
    from torchmetrics.detection import MeanAveragePrecision
    from torchvision.ops import box_iou

    def pixels(boxes, size):
        w, h = size
        return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) * torch.tensor([w, h, w, h])

    average_precision = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    best_ious, right_counts = [], 0
    for e in entries:
        predicted, truth = pixels(e["prediction"] or [], e["size"]), pixels(e["truth"], e["size"])
        scores = torch.linspace(1.0, 0.5, len(predicted)) if len(predicted) else torch.zeros(0)
        average_precision.update(
            [{"boxes": predicted, "scores": scores, "labels": torch.zeros(len(predicted), dtype=torch.long)}],
            [{"boxes": truth, "labels": torch.zeros(len(truth), dtype=torch.long)}],
        )
        if len(truth):
            ious = box_iou(truth, predicted) if len(predicted) else torch.zeros(len(truth), 1)
            best_ious += ious.max(dim=1).values.tolist()
        right_counts += len(e["prediction"] or []) == len(e["truth"])
    result = average_precision.compute()
    return {
        "n": len(entries),
        "map_50": float(result["map_50"]),
        "map": float(result["map"]),
        "mean_best_iou": float(np.mean(best_ious)) if best_ious else None,
        "count_accuracy": right_counts / len(entries),
        "parse_failure_rate": sum(e["prediction"] is None for e in entries) / len(entries),
    }


def run_boxes(backend, config: BoxConfig, progress: bool = True) -> dict:
    if not hasattr(backend, "ask"):
        raise ValueError(
            f"boxes are answered in free text: the {backend.name} backend cannot (use --mode generate or --openai)"
        )
    out = Path(config.out)
    settings = {
        "family": config.family,
        "box_class": config.box_class,
        "backend": backend.name,
        "seed": config.seed,
    }
    done = resume_run(out, settings, config.n)
    asked = question(config.box_class)
    with open(out / PREDICTIONS, "a") as f:
        for i in tqdm(range(len(done), config.n), desc=f"boxes {config.box_class}", initial=len(done),
                      total=config.n, disable=not progress):  # fmt: skip
            image_id, image, truth, size = held_out(config.family, config.box_class, config.seed, i)
            text = backend.ask(image, asked)
            entry = {
                "id": image_id,
                "truth": truth,
                "prediction": parse_boxes(text),
                "raw": text,
                "size": size,
            }
            f.write(json.dumps(entry) + "\n")
            f.flush()
            done.append(entry)
    metrics = {**settings, "question": asked, **score_boxes(done)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
