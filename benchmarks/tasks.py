"""Benchmark tasks as data: one YAML file each in benchmarks/tasks/ (B1-B6 of seed 003, GalaxyMNIST).

    task = load_task("b6")
    task.prompt()                 # the question and its options, as the model is asked
    task.answers()                # the fixed answers that option scoring ranks
    task.truth(record.labels)     # the answer a record's labels make

A multi-label task (B1) is answered with the present classes joined in the task's order, or NONE, as the
data builders write it; option scoring then ranks every such combination.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from itertools import combinations
from pathlib import Path

import yaml

TASKS_DIR = Path(__file__).parent / "tasks"
NONE = "NONE"
LABEL_TYPES = ("single", "multi", "binary")


@dataclass(frozen=True)
class Task:
    id: str
    family: str  # the data family (data_builders.families) whose held-out records it is asked about
    label_type: str  # single, multi or binary
    question: str
    options: tuple[str, ...]
    merged_classes: dict[str, list[str]] = field(default_factory=dict)  # extra scores with classes merged
    numbered: bool = False  # the prompt asks for the option's number (from 0), as seed 001's do
    context: str = ""  # what the image is and what the classes mean, put before the question on request

    def __post_init__(self):
        if self.label_type not in LABEL_TYPES:
            raise ValueError(
                f"task {self.id}: label_type must be one of {LABEL_TYPES}, got {self.label_type!r}"
            )
        if not all(isinstance(o, str) for o in self.options):  # YAML reads a bare YES/NO as a boolean
            raise ValueError(
                f"task {self.id}: options must be strings (quote YES and NO), got {self.options}"
            )
        if self.numbered and self.label_type == "multi":
            raise ValueError(f"task {self.id}: a multi-label task cannot be answered with one number")
        if len(self.options) < 2:
            raise ValueError(f"task {self.id}: needs at least two options, got {self.options}")

    def with_context(self) -> Task:
        """The task asked as seed 003 asks it: "Context: ...", then "Question: ..."."""
        if not self.context:
            raise ValueError(f"task {self.id} has no context paragraph")
        return dataclasses.replace(
            self, question=f"Context: {self.context}\n\nQuestion: {self.question}", context=""
        )

    def prompt(self, order: list[str] | tuple[str, ...] | None = None) -> str:
        """What the model is asked: a numbered task's text already says how to answer; the others list
        their options after the question, as the training sets do (in `order`, for the option-order
        check; default: the task's own)."""
        if self.numbered:
            return self.question
        order = self.options if order is None else order
        if sorted(order) != sorted(self.options):
            raise ValueError(f"order must be a permutation of {list(self.options)}, got {list(order)}")
        return f"{self.question}\nOptions: {', '.join(order)}."

    @property
    def classes(self) -> tuple[str, ...]:
        """What is scored: the options, without a multi-label task's NONE."""
        return tuple(o for o in self.options if not (self.label_type == "multi" and o == NONE))

    def answers(self) -> list[str]:
        """The answers option scoring ranks: the options (their numbers, for a numbered task), or for a
        multi-label task every combination."""
        if self.numbered:
            return [str(i) for i in range(len(self.options))]
        if self.label_type != "multi":
            return list(self.options)
        combos = [
            ", ".join(c) for k in range(1, len(self.classes) + 1) for c in combinations(self.classes, k)
        ]
        return [*combos, NONE]

    def read_answer(self, answer: str) -> str:
        """One of answers() in the task's own form (a numbered task's "2" is its third option)."""
        return self.options[int(answer)] if self.numbered else answer

    def truth(self, labels) -> str:
        """The answer a record with these labels should get."""
        if self.label_type == "multi":
            return ", ".join(c for c in self.classes if c in labels) or NONE
        matching = [o for o in self.options if o in labels]
        if len(matching) != 1:
            raise ValueError(f"task {self.id}: labels {list(labels)} match {len(matching)} options, not one")
        return matching[0]


def list_tasks() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


@cache
def load_task(task_id: str) -> Task:
    path = TASKS_DIR / f"{task_id}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown benchmark task {task_id!r}; valid: {list_tasks()}")
    data = yaml.safe_load(path.read_text())
    return Task(**{**data, "options": tuple(data["options"])})
