"""Run a benchmark task on held-out simulated images with a model, and score it.

    engine = Engine.load()                                   # or Engine.load(adapter_dir=...)
    result = run_task(load_task("b6"), OptionScoring(engine), RunConfig(out="runs/bench/lora/b6"))

The images are records of the task's family drawn from `default_rng([seed, i])` with seed 1 by default:
the training sets (`astrovlm data build`, seed 0) never see them. Every prediction is appended to
predictions.jsonl as it is made, so an interrupted run resumes where it stopped; metrics.json and the
report (report.md, report.html, per_class.png, confusion.png) are written at the end.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.calibration import Calibration
from benchmarks.metrics import score
from benchmarks.parse import parse_answer
from benchmarks.tasks import Task

log = logging.getLogger(__name__)
PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"


@dataclass(frozen=True)
class RunConfig:
    out: str
    n: int = 200  # images (fewer when a data set holds fewer)
    seed: int = 1  # of the held-out records (the training sets use seed 0)
    data: str | None = None  # a real data set, read by data_builders.importers, instead of simulated images
    data_format: str | None = None  # its importer (default: from the path: .hdf5 -> galaxy-mnist, ...)
    shuffle_check: int = 0  # the first k images are asked again with the options in another order
    context: bool = False  # put the task's context paragraph before the question


class OptionScoring:
    """The local model ranks the task's fixed answers by likelihood (Engine.score_options), a batch of
    images at a time (they share the question, so their prompts stack without padding). With a
    calibration (benchmarks.calibration) the answer is the top calibrated probability, for the tasks it
    holds; the raw probabilities are recorded either way.

    views > 1 averages the answers' probabilities over `views` symmetries of the square of the image
    (4: its quarter turns, 8: and their mirror images), test-time augmentation for tasks whose
    classes do not depend on how the sky is oriented (all of ours). It costs `views` times the scoring;
    with 8 the stage-9 default gains up to 0.07 macro-F1 on its trained tasks, none on the wide fields of
    B3 and B4 (docs/vlm-suite.md)."""

    batch_size = 16
    VIEWS = (1, 4, 8)

    def __init__(
        self, engine, calibration: Calibration | None = None, views: int = 1, memo: dict | None = None
    ):
        if views not in self.VIEWS:
            raise ValueError(f"views must be one of {self.VIEWS}, got {views}")
        self.engine, self.calibration, self.views = engine, calibration, views
        self.name = "option-scoring" if calibration is None else "option-scoring-calibrated"
        if views > 1:
            self.name += f"-{views}-views"
        self.memo = {} if memo is None else memo  # (views, prompt, answers, image digest) -> probabilities

    def with_calibration(self, calibration: Calibration) -> OptionScoring:
        """The same model and views answering with `calibration`; the images this one has scored are
        not scored again (the suite's calibrated column costs nothing)."""
        return OptionScoring(self.engine, calibration, self.views, self.memo)

    def predict(self, task: Task, image: np.ndarray, order=None) -> tuple[str, dict]:
        return self.predict_batch(task, [image], order)[0]

    def predict_batch(self, task: Task, images: list[np.ndarray], order=None) -> list[tuple[str, dict]]:
        calibrated = self.calibration is not None and task.id in self.calibration
        answers = []
        for probs in self.probabilities(task, images, order):
            details = {"probs": probs}
            if calibrated:
                probs = details["calibrated_probs"] = self.calibration.apply(task.id, probs)
            answers.append((task.read_answer(max(probs, key=probs.get)), details))
        return answers

    def probabilities(self, task: Task, images: list[np.ndarray], order=None) -> list[dict[str, float]]:
        """Each image's answer probabilities, the mean over its views; from the memo where it was scored
        before with the same prompt."""
        prompt, options = task.prompt(order), task.answers()
        keys = [(self.views, prompt, tuple(options), image_digest(image)) for image in images]
        new = [i for i, key in enumerate(keys) if key not in self.memo]
        if new:
            for i, probs in zip(new, self._score([images[i] for i in new], prompt, options)):
                self.memo[keys[i]] = probs
        return [self.memo[key] for key in keys]

    def _score(self, images: list[np.ndarray], prompt: str, options: list[str]) -> list[dict[str, float]]:
        if self.views == 1:
            return self.engine.score_options_batch(images, prompt, options)
        from vlm.lvm.data import square_symmetries  # imported here: it pulls in the simulators, ~1 s

        step = 8 // self.views  # 2: the quarter turns alone
        viewed = [view for image in images for view in square_symmetries(np.asarray(image))[::step]]
        scored = []
        for start in range(0, len(viewed), self.batch_size):
            scored += self.engine.score_options_batch(
                viewed[start : start + self.batch_size], prompt, options
            )
        per_image = [scored[i : i + self.views] for i in range(0, len(scored), self.views)]
        return [{a: float(np.mean([p[a] for p in views])) for a in views[0]} for views in per_image]


def image_digest(image: np.ndarray) -> bytes:
    """What tells two images apart: their shape, dtype and pixels."""
    image = np.ascontiguousarray(image)
    return hashlib.blake2b(f"{image.shape}{image.dtype}".encode() + image.tobytes(), digest_size=16).digest()


class Generation:
    """The local model answers in free text (greedy); the answer is parsed, and kept as it was said."""

    name = "generation"

    def __init__(self, engine, max_new_tokens: int = 32):
        self.engine, self.max_new_tokens = engine, max_new_tokens

    def ask(self, image: np.ndarray, question: str) -> str:
        return self.engine.chat(
            [{"role": "user", "content": self.engine.question([image], question)}],
            max_new_tokens=self.max_new_tokens,
            stream=False,
        ).text

    def predict(self, task: Task, image: np.ndarray, order=None) -> tuple[str | None, dict]:
        text = self.ask(image, task.prompt(order))
        return parse_answer(task, text), {"raw": text}


class OpenAIChat:
    """Any OpenAI-compatible chat API (GPT-4o, a vLLM cluster, `astrovlm serve`) answers in free text;
    the image goes as a PNG data URI. The openai client retries rate limits and server errors with
    backoff (`max_retries`); a request that still fails stops the run, which resumes where it stopped."""

    name = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 max_new_tokens: int = 32, max_retries: int = 5, timeout_s: float = 120):  # fmt: skip
        from openai import OpenAI

        self.model, self.max_new_tokens = model, max_new_tokens
        self.client = OpenAI(
            base_url=base_url, api_key=api_key or "none", max_retries=max_retries, timeout=timeout_s
        )

    def ask(self, image: np.ndarray, question: str) -> str:
        import base64
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": parts}],
            max_tokens=self.max_new_tokens,
            temperature=0.0,
        )
        return response.choices[0].message.content or ""

    def predict(self, task: Task, image: np.ndarray, order=None) -> tuple[str | None, dict]:
        text = self.ask(image, task.prompt(order))
        return parse_answer(task, text), {"raw": text}


def held_out_image(task: Task, seed: int, i: int):
    """(id, RGB uint8 image, labels) of held-out record i, rendered as the data builders render it."""
    from data_builders.families import get_family
    from data_builders.stretch import render_rgb

    family = get_family(task.family)
    record = family.simulate(
        np.random.default_rng([seed, i]), family.default_size, f"{task.id}-{seed}-{i:06d}"
    )
    return record.id, render_rgb(record.image, record.domain, record.bands), list(record.labels)


def checks_order(task: Task, backend) -> bool:
    """The option-order check needs options listed in the prompt and a backend that reads the prompt."""
    return not task.numbered and getattr(backend, "reads_prompt", True)


def shuffled_options(task: Task, i: int) -> list[str]:
    """A permutation of the options other than their own order (the reverse when there are two)."""
    options = list(task.options)
    rng = np.random.default_rng([7, i])
    while (order := rng.permutation(options).tolist()) == options:
        pass
    return order


def order_check(entries: list[dict]) -> dict:
    """How often the answer changed when the options were listed in another order (None: not checked)."""
    checked = [e for e in entries if "shuffled_prediction" in e]
    if not checked:
        return {"option_order_checked": 0, "option_order_flip_rate": None}
    flips = sum(e["shuffled_prediction"] != e["prediction"] for e in checked)
    return {"option_order_checked": len(checked), "option_order_flip_rate": flips / len(checked)}


def guess_format(path: Path) -> str:
    if path.is_dir():
        return "mirabest" if (path / "batches.meta").is_file() else "folder"
    if path.name.endswith((".hdf5", ".hdf5.gz", ".h5")):
        return "galaxy-mnist"
    raise ValueError(
        f"{path}: cannot tell its format; name one with --format (galaxy-mnist, mirabest, first, folder)"
    )


def dataset_images(task: Task, path: str, data_format: str | None = None):
    """(id, RGB uint8 image, labels) of a real data set's records whose labels are the task's classes,
    rendered as the data builders render them; the others are counted and reported once at the end."""
    from data_builders.importers import import_records
    from data_builders.stretch import render_rgb

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data set")
    outside = 0
    for record in import_records(data_format or guess_format(path), path):
        if not record.labels or not set(record.labels) <= set(task.classes):
            outside += 1
            continue
        yield record.id, render_rgb(record.image, record.domain, record.bands), list(record.labels)
    if outside:
        log.warning(
            "%s: %d records with labels outside task %s's classes were left out", path, outside, task.id
        )


def task_images(task: Task, config: RunConfig):
    """The run's images in a fixed order: held-out simulations, or the records of config.data."""
    if config.data is not None:
        yield from dataset_images(task, config.data, config.data_format)
        return
    for i in itertools.count():
        yield held_out_image(task, config.seed, i)


def read_predictions(path: Path) -> list[dict]:
    """The recorded predictions; a last line cut short by an interruption is dropped (and redone)."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    entries = []
    for number, line in enumerate(lines, start=1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(
                    f"{path}, line {number}: not a JSON record; fix or delete the file"
                ) from None
    return entries


def resume_run(out: Path, settings: dict, n: int) -> list[dict]:
    """Start or resume the run in `out`: its settings must match run.json's (a rerun may only raise n);
    -> the predictions already made (at most n), predictions.jsonl rewritten without a cut last line."""
    out.mkdir(parents=True, exist_ok=True)
    settings_file = out / "run.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise ValueError(f"{out} holds a run with other settings ({settings_file}); use another --out")
    settings_file.write_text(json.dumps(settings, indent=2) + "\n")
    path = out / PREDICTIONS
    done = read_predictions(path)[:n]
    with open(path, "w") as f:
        f.writelines(json.dumps(d) + "\n" for d in done)
    return done


def run_task(task: Task, backend, config: RunConfig, progress: bool = True) -> dict:
    task = task.with_context() if config.context else task
    out = Path(config.out)
    settings = {"task": task.id, "backend": backend.name, "seed": config.seed, "context": config.context}
    if config.data is not None:
        settings["data"] = str(Path(config.data).resolve())
    done = resume_run(out, settings, config.n)
    batch_size = getattr(backend, "batch_size", 1)
    images = itertools.islice(task_images(task, config), len(done), config.n)
    bar = tqdm(desc=task.id, initial=len(done), total=config.n, disable=not progress)
    with open(out / PREDICTIONS, "a") as f, bar:
        while chunk := list(itertools.islice(images, batch_size)):
            pictures = [image for _, image, _ in chunk]
            # answer None: the reply could not be read
            answers = (
                backend.predict_batch(task, pictures)
                if batch_size > 1
                else [backend.predict(task, pictures[0])]
            )
            for (image_id, image, labels), (answer, details) in zip(chunk, answers):
                entry = {"id": image_id, "truth": task.truth(labels), "prediction": answer, **details}
                if len(done) < config.shuffle_check and checks_order(task, backend):
                    order = shuffled_options(task, len(done))
                    entry["shuffled_order"] = order
                    entry["shuffled_prediction"] = backend.predict(task, image, order=order)[0]
                f.write(json.dumps(entry) + "\n")
                done.append(entry)
            f.flush()  # a batch at a time: an interruption loses at most the batch in hand
            bar.update(len(chunk))
    if not done:
        raise ValueError(f"task {task.id}: no images to score in {config.data or 'the simulations'}")
    metrics = {
        "task": task.id,
        "backend": backend.name,
        **score(task, [d["truth"] for d in done], [d["prediction"] for d in done]),
        **order_check(done),
    }
    (out / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    from benchmarks.report import write_run_report  # report imports this module

    write_run_report(out, metrics)
    return metrics
