"""One bias per answer on a model's option log-likelihoods, fitted per task on images of their own.

    biases = fit_task(load_task("b5"), "runs/calibration/b5")     # a run of OptionScoring on seed 2
    Calibration({"b5": biases}, adapter=adapter_digest(adapter_dir)).save(adapter_dir / CALIBRATION_FILE)
    OptionScoring(engine, Calibration.load(path))                  # answers argmax(log p + bias)

(`astrovlm bench calibrate` does all of it.) Option scoring inherits the LM's preferences among the
answers' words: the stage-6 default named PECULIAR for 4 of B5's 35 peculiar sources and DIFFUSE for 17
of B1's 81 diffuse ones, though their probabilities ranked them well. A bias per answer moves the
decision boundaries back without touching the model ("prior correction"; Zhao et al. 2021, Calibrate
before use). The biases minimise the class-balanced cross-entropy of softmax(log p + b) on the
calibration images, with a small L2 penalty: balanced because the benchmarks report macro-F1, where a
rare class counts as much as a common one.
A task keeps its biases only where they pay on images they were not fitted on: fitted on four fifths of
the calibration images and judged on the fifth left out, in turn, their macro-F1 must beat the raw
answers' by MIN_GAIN; elsewhere the biases are 0 (a two-answer task whose scores sit near the boundary
would otherwise trade one class's recall for the other's on sampling noise). The calibration images are
the task's records drawn with seed 2, which neither the training sets (seed 0) nor the held-out
benchmark images (seed 1) use.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.tasks import Task

CALIBRATION_FILE = "calibration.json"  # beside the adapter it calibrates
CALIBRATION_SEED = 2
L2 = 0.01  # per squared unit of bias: keeps answers the calibration images never hold near 0
FLOOR = -30.0  # log-probability floor: an answer scored 0 still gets a finite logit
FOLDS = 5
MIN_GAIN = 0.01  # of macro-F1 out of fold, for a task to keep its biases


@dataclass(frozen=True)
class TaskBiases:
    biases: dict[str, float]  # per answer (Task.answers()), added to its log-probability
    n: int  # calibration images
    macro_f1_before: float  # of the raw answers on the calibration images
    macro_f1_after: float  # of the answers calibrated out of fold (each image by biases fitted without it)


@dataclass(frozen=True)
class Calibration:
    tasks: dict[str, TaskBiases]
    seed: int = CALIBRATION_SEED
    adapter: str | None = None  # adapter_digest() of the model it was fitted for

    def __contains__(self, task_id: str) -> bool:
        return task_id in self.tasks

    def apply(self, task_id: str, probs: dict[str, float]) -> dict[str, float]:
        """The calibrated probabilities, softmax(log p + b), of one image's answers."""
        biases = self.tasks[task_id].biases
        if set(biases) != set(probs):
            raise ValueError(
                f"task {task_id}: the calibration has answers {sorted(biases)}, the scores {sorted(probs)}"
            )
        return apply_biases(biases, probs)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tasks = {t: asdict(b) for t, b in sorted(self.tasks.items())}
        content = {"seed": self.seed, "adapter": self.adapter, "tasks": tasks}
        path.write_text(json.dumps(content, indent=2) + "\n")
        return path

    def check_adapter(self, adapter: str | Path) -> None:
        """Refuse to calibrate another model's scores with these biases."""
        if self.adapter is not None and self.adapter != (digest := adapter_digest(adapter)):
            raise ValueError(
                f"this calibration was fitted for adapter {self.adapter}, not {adapter} "
                f"({digest}): fit one for it with `astrovlm bench calibrate --adapter`"
            )

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no calibration file (write one with `astrovlm bench calibrate`)"
            )
        try:
            content = json.loads(path.read_text())
            tasks = {t: TaskBiases(**b) for t, b in content["tasks"].items()}
            return cls(tasks, content["seed"], content.get("adapter"))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a calibration file ({error})") from None


def apply_biases(biases: dict[str, float], probs: dict[str, float]) -> dict[str, float]:
    """softmax(log p + b) over one image's answers, log p floored at FLOOR."""
    answers = list(probs)
    logits = np.log(np.maximum([probs[a] for a in answers], math.exp(FLOOR))) + [biases[a] for a in answers]
    weights = np.exp(logits - logits.max())
    return dict(zip(answers, (weights / weights.sum()).tolist()))


def adapter_digest(adapter: str | Path) -> str:
    """12 hex digits of the SHA-256 of an adapter folder's weight files: which model a calibration is for."""
    import hashlib

    files = sorted(Path(adapter).rglob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{adapter}: no adapter weights (*.safetensors) there")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def answer_of(task: Task, truth: str) -> str:
    """The answer among Task.answers() that states this truth (a numbered task's option number)."""
    return str(task.options.index(truth)) if task.numbered else truth


def fit_biases(probs: list[dict[str, float]], truths: list[str], l2: float = L2) -> dict[str, float]:
    """Biases minimising the class-balanced cross-entropy of softmax(log p + b) (plus l2 |b|^2);
    `truths`: each image's right answer, one of its probs' keys."""
    answers = list(probs[0])
    unknown = sorted(set(truths) - set(answers))
    if unknown:
        raise ValueError(f"truths {unknown} are not among the answers {answers}")
    index = {a: i for i, a in enumerate(answers)}
    logits = torch.tensor([[p[a] for a in answers] for p in probs], dtype=torch.float64)
    logits = logits.clamp(min=math.exp(FLOOR)).log()
    targets = torch.tensor([index[t] for t in truths])
    counts = torch.bincount(targets, minlength=len(answers)).clamp(min=1)
    weights = len(truths) / (len(answers) * counts.double())
    bias = torch.zeros(len(answers), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([bias], max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimiser.zero_grad()
        value = torch.nn.functional.cross_entropy(logits + bias, targets, weight=weights)
        value = value + l2 * bias.square().sum()
        value.backward()
        return value

    optimiser.step(loss)
    return {a: float(b) for a, b in zip(answers, bias.detach())}


def read_scored_run(run_dir: str | Path) -> tuple[list[dict[str, float]], list[str]]:
    """(raw answer probabilities, truths) of an option-scoring run's predictions.jsonl."""
    from benchmarks.runner import PREDICTIONS, read_predictions

    entries = read_predictions(Path(run_dir) / PREDICTIONS)
    if not entries or "probs" not in entries[0]:
        raise ValueError(f"{run_dir}: no option-scoring predictions to calibrate on")
    return [e["probs"] for e in entries], [e["truth"] for e in entries]


def fit_task(task: Task, run_dir: str | Path, folds: int = FOLDS, min_gain: float = MIN_GAIN) -> TaskBiases:
    """The task's biases from a run of the model on its calibration images (all 0 unless they gain
    min_gain macro-F1 out of fold), with the raw and out-of-fold calibrated macro-F1."""
    from benchmarks.metrics import score

    probs, truths = read_scored_run(run_dir)
    answers = [answer_of(task, t) for t in truths]

    def macro_f1(scores: list[dict[str, float]]) -> float:
        predictions = [task.read_answer(max(p, key=p.get)) for p in scores]
        return score(task, truths, predictions, resamples=0)["macro_f1"]

    out_of_fold = list(probs)
    fold_of = np.arange(len(probs)) % folds
    for fold in range(folds):
        fitted = [i for i in range(len(probs)) if fold_of[i] != fold]
        biases = fit_biases([probs[i] for i in fitted], [answers[i] for i in fitted])
        for i in np.flatnonzero(fold_of == fold):
            out_of_fold[i] = apply_biases(biases, probs[i])
    before, after = macro_f1(probs), macro_f1(out_of_fold)
    biases = fit_biases(probs, answers) if after >= before + min_gain else dict.fromkeys(probs[0], 0.0)
    return TaskBiases(biases, len(probs), before, after)
