"""Training conversations for the VLM: a weighted mixture of data-builder sets, drawn in a fixed plan.

    sets = [ConversationSet(DataSource("data/radio-b3", weight=2, kinds=["classify"]))]
    plan = mixture_plan(sets, n=steps * batch, seed=0)           # (n, 2): set index, example index
    plan = group_by_length(plan, sets, slots=8 * batch)           # optional: less padding per batch
    dataset = PlannedConversations(sets, plan, processor, max_length=384)
    loader = DataLoader(dataset, batch_size=8, collate_fn=dataset.collate)

A set is a folder written by `astrovlm data build` (Parquet shards, one row per image with several
dialogues); each (row, dialogue) is one example. The plan fixes which example fills every slot of the
run before it starts, so a resumed run sees exactly the batches it would have seen: it skips the
slots already trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vlm.lvm.data import square_symmetry
from vlm.processor import IMAGE_TOKEN, AstroVLMProcessor


@dataclass
class DataSource:
    path: str  # a folder from `astrovlm data build` (its shard-*.parquet files)
    weight: float = 1.0  # share of the mixture, relative to the other sources
    kinds: list[str] = field(default_factory=list)  # keep only dialogues made of these kinds ([] = all)
    # each image turned or mirrored at random (one of the 8 symmetries of the square): only for sets whose
    # answers do not depend on orientation (classification), never for boxes, positions or descriptions
    symmetries: bool = False

    def __post_init__(self):
        if not self.weight > 0:
            raise ValueError(f"{self.path}: weight must be > 0, got {self.weight}")
        if not isinstance(self.symmetries, bool):
            raise ValueError(f"{self.path}: symmetries must be true or false, got {self.symmetries!r}")


def dialogue_kinds(template: str) -> set[str]:
    """The kinds of exchange in a dialogue, from its template name, e.g. "classify/1+presence/3" or
    "tool:image_stats/0" (a tool dialogue names its tool after the kind)."""
    return {part.split("/")[0].split(":")[0] for part in template.split("+")}


class ConversationSet:
    """The dialogues of one built set, as (row, dialogue) pairs; images are decoded on access."""

    def __init__(self, source: DataSource):
        from datasets import Dataset as ArrowDataset

        shards = sorted(Path(source.path).glob("shard-*.parquet"))
        if not shards:
            raise FileNotFoundError(
                f"{source.path}: no shard-*.parquet files; build one with `astrovlm data build --out {source.path}`"
            )
        self.source = source
        self.rows = ArrowDataset.from_parquet([str(s) for s in shards])  # memory-mapped Arrow
        wanted = set(source.kinds)
        self.examples = np.array(
            [
                (row, d)
                for row, templates in enumerate(self.rows["templates"])
                for d, template in enumerate(templates)
                if not wanted or dialogue_kinds(template) <= wanted
            ],
            dtype=np.int64,
        ).reshape(-1, 2)
        if len(self.examples) == 0:
            raise ValueError(f"{source.path}: no dialogues of kinds {sorted(wanted)}")

    @cached_property
    def text_lengths(self) -> np.ndarray:
        """Characters of each example's text: a cheap proxy of its length in tokens (images add a
        constant count each, and nearly every dialogue has one). Read only by runs that group by length."""
        conversations = self.rows["conversations"]
        return np.array(
            [sum(len(turn["value"]) for turn in conversations[row][d]) for row, d in self.examples],
            dtype=np.int64,
        )

    def __len__(self) -> int:
        return len(self.examples)

    def example(self, i: int) -> tuple[list[dict], np.ndarray]:
        """(LLaVA turns, RGB uint8 image) of example i."""
        row, d = self.examples[i]
        item = self.rows[int(row)]
        return item["conversations"][int(d)], np.asarray(item["image"].convert("RGB"))


def mixture_plan(sets: list[ConversationSet], n: int, seed: int) -> np.ndarray:
    """(n, 2) int array of (set, example): sets drawn by weight, examples in a fresh permutation of each
    set per epoch, so a set is used evenly before any example repeats."""
    rng = np.random.default_rng(seed)
    weights = np.array([s.source.weight for s in sets], dtype=np.float64)
    which = rng.choice(len(sets), size=n, p=weights / weights.sum())
    plan = np.empty((n, 2), dtype=np.int64)
    plan[:, 0] = which
    for k, s in enumerate(sets):
        slots = np.flatnonzero(which == k)
        epochs = -(-len(slots) // len(s))
        order = np.concatenate([rng.permutation(len(s)) for _ in range(epochs)]) if epochs else []
        plan[slots, 1] = order[: len(slots)]
    return plan


def group_by_length(plan: np.ndarray, sets: list[ConversationSet], slots: int) -> np.ndarray:
    """The plan with each run of `slots` consecutive slots sorted by text length, so that a batch cut
    from it holds conversations of similar length and pads little (in a random mixture of short
    classification answers and long descriptions a batch is ~1.6x its real tokens; sorted within runs of
    8 batches ~1.1x). What is trained on, and roughly when, stays the plan's."""
    lengths = np.array([sets[k].text_lengths[j] for k, j in plan], dtype=np.int64)
    grouped = plan.copy()
    for start in range(0, len(plan), slots):
        run = slice(start, start + slots)
        grouped[run] = plan[run][np.argsort(lengths[run], kind="stable")]
    return grouped


def symmetry_views(plan: np.ndarray, sets: list[ConversationSet], seed: int) -> np.ndarray:
    """(n,) the view of `square_symmetries` each slot's image is shown in: drawn from `seed` for the sets
    with `symmetries`, 0 (as drawn) for the others; a function of the plan, so a resumed run sees the
    views an uninterrupted one would."""
    views = np.random.default_rng([seed, 2]).integers(0, 8, len(plan))
    views[~np.array([sets[k].source.symmetries for k in plan[:, 0]], dtype=bool)] = 0
    return views


def images_last(turns: list[dict]) -> list[dict]:
    """The LLaVA turns with each turn's "<image>" markers moved after its text ("question\n<image>"), the
    order in which a benchmark can cache the question with the system prompt (vlm/engine.py)."""
    moved = []
    for turn in turns:
        markers = turn["value"].count(IMAGE_TOKEN)
        if markers:
            text = turn["value"].replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "").strip()
            turn = {**turn, "value": "\n".join([text] + [IMAGE_TOKEN] * markers)}
        moved.append(turn)
    return moved


class PlannedConversations(Dataset):
    """Slot i of the plan as a processor encoding (input_ids, labels, pixel_values), cut to max_length;
    where image_last[i], asked with the images after the question (`images_last`); its image in view
    views[i] of `square_symmetries` (0: as drawn)."""

    def __init__(
        self,
        sets: list[ConversationSet],
        plan: np.ndarray,
        processor: AstroVLMProcessor,
        max_length: int,
        image_last: np.ndarray | None = None,
        views: np.ndarray | None = None,
    ):
        self.sets, self.plan, self.processor, self.max_length = sets, plan, processor, max_length
        self.image_last = np.zeros(len(plan), dtype=bool) if image_last is None else image_last
        self.views = np.zeros(len(plan), dtype=np.int64) if views is None else views

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int):
        k, j = self.plan[i]
        turns, image = self.sets[k].example(int(j))
        if self.image_last[i]:
            turns = images_last(turns)
        if self.views[i]:
            image = np.ascontiguousarray(square_symmetry(image, int(self.views[i])))
        encoding = self.processor(turns, images=[image])
        if encoding["input_ids"].shape[1] <= self.max_length:
            return encoding
        is_image = encoding["input_ids"][0] == self.processor.image_token_id
        if is_image[self.max_length :].any():
            raise ValueError(
                f"example {j} of {self.sets[k].source.path} would lose image tokens when cut to "
                f"max_length={self.max_length}: raise max_length"
            )
        for key in ("input_ids", "attention_mask", "labels"):
            encoding[key] = encoding[key][:, : self.max_length]
        return encoding

    def collate(self, encodings) -> dict[str, torch.Tensor]:
        return dict(self.processor.collate(encodings, padding_side="right"))
