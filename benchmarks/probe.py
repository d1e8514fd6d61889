"""The vision-only baseline (seed 003's comparison): a linear probe on frozen LVM features.

    probe = LinearProbe.fit(load_task("b6"), n_train=1000)        # training records: seed 0, as the VLM's
    answer, details = probe.predict(task, image)                  # the runner's backend interface

Features are the LVM's bottleneck token grid, flattened (16 tokens x 192 for lvm-small at 64 px): the
layout the VLM's projector reads, so probe and VLM see the same information. A standardised logistic
regression per task (one-vs-rest per class for the multi-label B1).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from benchmarks.tasks import NONE, Task
from vlm.lvm.model import LVM
from vlm.morphology import lvm_features


class LinearProbe:
    name = "probe"
    reads_prompt = False  # vision only: the option-order check does not apply

    def __init__(self, lvm: LVM, model, task: Task):
        self.lvm, self.model, self.task = lvm, model, task

    @classmethod
    def fit(
        cls, task: Task, n_train: int = 1000, seed: int = 0, lvm: LVM | None = None, progress: bool = True
    ) -> LinearProbe:
        from benchmarks.runner import held_out_image  # the same rendering as the runner's images
        from vlm.lvm.shipped import load_default

        lvm = (lvm or load_default()).eval()
        images, truths = [], []
        for i in tqdm(range(n_train), desc=f"probe {task.id}: training images", disable=not progress):
            _, image, labels = held_out_image(task, seed, i)
            images.append(image)
            truths.append(task.truth(labels))
        x = lvm_features(lvm, images)
        if task.label_type == "multi":
            y = np.array([[c in t.split(", ") for c in task.classes] for t in truths], dtype=int)
            classifier = OneVsRestClassifier(LogisticRegression(C=0.05, max_iter=2000))
        else:
            if len(set(truths)) < 2:
                raise ValueError(f"task {task.id}: the {n_train} training images hold one class only")
            y = np.array(truths)
            classifier = LogisticRegression(C=0.05, max_iter=2000)
        return cls(lvm, make_pipeline(StandardScaler(), classifier).fit(x, y), task)

    def predict(self, task: Task, image: np.ndarray, order=None) -> tuple[str, dict]:
        if task.id != self.task.id:
            raise ValueError(f"this probe was trained for task {self.task.id}, not {task.id}")
        x = lvm_features(self.lvm, [image])
        if task.label_type == "multi":
            present = self.model.predict(x)[0]
            return ", ".join(c for c, p in zip(task.classes, present) if p) or NONE, {}
        probs = self.model.predict_proba(x)[0]
        return str(self.model.classes_[probs.argmax()]), {
            "probs": dict(zip(self.model.classes_.tolist(), probs.tolist()))
        }
