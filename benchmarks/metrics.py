"""Scores of a benchmark run from its (truth, prediction) answers.

Single-label and binary tasks: accuracy, macro and weighted F1, per-class precision/recall/F1 and the
confusion matrix. Multi-label tasks (answers like "EXTENDED, DIFFUSE" or NONE): per-class F1 over the
task's classes, their macro mean, and exact-match accuracy. A prediction of None (a reply that could not
be parsed) is wrong for accuracy, exact match and every single-label score; in a multi-label task's
per-class scores it names no class. The share of them is reported as parse_failure_rate.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from benchmarks.tasks import NONE, Task


def split_answer(answer: str) -> set[str]:
    return {part.strip() for part in answer.split(",")} - {NONE, ""}


UNPARSED = "<unparsed>"  # stands for a None prediction: a class of its own, so never a right answer


def score(task: Task, truths: list[str], predictions: list[str | None]) -> dict:
    if len(truths) != len(predictions) or not truths:
        raise ValueError(f"need as many predictions as truths, and some: {len(truths)} vs {len(predictions)}")
    failures = sum(p is None for p in predictions)
    predictions = [UNPARSED if p is None else p for p in predictions]
    if task.label_type == "multi":
        return {**_multi_label(task, truths, predictions), "parse_failure_rate": failures / len(truths)}
    out = _single_label(list(task.options), truths, predictions)
    out["parse_failure_rate"] = failures / len(truths)
    for name, members in task.merged_classes.items():
        merge = {m: name for m in members}
        merged = [o for o in task.options if o not in merge] + [name]
        out[f"merged:{name}"] = _single_label(
            merged, [merge.get(t, t) for t in truths], [merge.get(p, p) for p in predictions]
        )
    return out


def _single_label(classes: list[str], truths: list[str], predictions: list[str]) -> dict:
    precision, recall, f1, support = precision_recall_fscore_support(
        truths, predictions, labels=classes, zero_division=0
    )
    return {
        "n": len(truths),
        "accuracy": accuracy_score(truths, predictions),
        "macro_f1": f1_score(truths, predictions, labels=classes, average="macro", zero_division=0),
        "weighted_f1": f1_score(truths, predictions, labels=classes, average="weighted", zero_division=0),
        "per_class": {
            c: {"precision": p, "recall": r, "f1": f, "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "classes": classes,
        "confusion": confusion_matrix(truths, predictions, labels=classes).tolist(),  # rows: truth
    }


def _multi_label(task: Task, truths: list[str], predictions: list[str]) -> dict:
    classes = list(task.classes)
    y_true = np.array([[c in split_answer(t) for c in classes] for t in truths])
    y_pred = np.array([[c in split_answer(p) for c in classes] for p in predictions])
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    return {
        "n": len(truths),
        "exact_match": float(
            np.mean([split_answer(t) == split_answer(p) for t, p in zip(truths, predictions)])
        ),
        "macro_f1": float(np.mean(f1)),
        "micro_f1": f1_score(y_true, y_pred, average="micro", zero_division=0),
        "per_class": {
            c: {"precision": p, "recall": r, "f1": f, "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "classes": classes,
    }
