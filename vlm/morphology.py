"""Morphology classifiers on the frozen LVM: one linear head per class scheme, shipped with the package.

    classifier = MorphologyClassifier.load()                       # vlm/weights/morphology-heads
    classifier.probabilities(rgb, "radio-b6")                       # {"FR-I": 0.12, "FR-II": 0.88}

    heads, metrics = fit_heads(n_train=1500, n_test=500)           # how the shipped heads were made
    save_heads(heads, metrics, "vlm/weights/morphology-heads")     # (python -m vlm.morphology)

Each head is a standardised multinomial logistic regression on the LVM's bottleneck tokens, flattened
(the layout the VLM's projector reads, as the benchmarks' linear probe), fitted on simulated images of
the scheme's family (seed 0) and scored on other simulated images (seed 1). Images are rendered as the
VLM sees them (vlm.engine.load_image: the whole field, one plane as radio, three as optical).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from vlm.lvm.model import LVM
from vlm.processor import preprocess_images

SCHEMES = ("radio-b6", "optical-gmnist", "optical-morphology")  # the tool's `scheme` enum
DEFAULT_HEADS_DIR = Path(__file__).resolve().parent / "weights" / "morphology-heads"
HEADS_FILE = "heads.safetensors"


@dataclass
class LinearHead:
    """softmax(((x - mean) / scale) @ weight.T + bias) over `classes`."""

    classes: tuple[str, ...]
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    weight: np.ndarray  # (K, F)
    bias: np.ndarray  # (K,)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(n, F) features -> (n, K) class probabilities."""
        logits = ((features - self.mean) / self.scale) @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def lvm_features(lvm: LVM, images: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """(n, N * D) flattened bottleneck tokens of (H, W, 3) uint8 images."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pixels = preprocess_images(images[start : start + batch_size], lvm.config.img_size)
            out.append(lvm.encode(pixels).tokens.flatten(1).float().numpy())
    return np.concatenate(out)


class MorphologyClassifier:
    def __init__(self, lvm: LVM, heads: dict[str, LinearHead]):
        self.lvm, self.heads = lvm.eval(), heads

    @classmethod
    def load(cls, heads_dir: str | Path = DEFAULT_HEADS_DIR, lvm: LVM | None = None) -> MorphologyClassifier:
        from vlm.lvm.shipped import load_default

        return cls(lvm or load_default(), load_heads(heads_dir))

    def probabilities(self, image: np.ndarray, scheme: str) -> dict[str, float]:
        """One (H, W, 3) uint8 image, rendered as the VLM sees it -> {class: probability}."""
        if scheme not in self.heads:
            raise ValueError(f"unknown scheme {scheme!r}; valid: {sorted(self.heads)}")
        head = self.heads[scheme]
        p = head.probabilities(lvm_features(self.lvm, [image]))[0]
        return {c: float(v) for c, v in zip(head.classes, p)}


# ----------------------------------------------------------------------------- fitting


def simulated_images(scheme: str, n: int, seed: int, size: int) -> tuple[list[np.ndarray], list[str]]:
    """n simulated images of the scheme's family with their first label, rendered as the VLM sees them."""
    from data_builders.families import get_family
    from vlm.lvm.data import prepare_image

    family = get_family(scheme)
    images, labels = [], []
    for i in tqdm(range(n), desc=f"{scheme} seed {seed}", leave=False):
        record = family.simulate(np.random.default_rng([seed, i]), family.default_size, f"{scheme}-{i}")
        images.append(prepare_image(record.image, record.domain, record.bands, size, crop=False))
        labels.append(record.labels[0])
    return images, labels


def fit_head(features: np.ndarray, labels: list[str], C: float = 0.05) -> LinearHead:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=C, max_iter=3000).fit(scaler.transform(features), labels)
    weight, bias = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # sklearn keeps one row for two classes: softmax([0, z]) = sigmoid(z)
        weight, bias = np.stack([np.zeros_like(weight[0]), weight[0]]), np.array([0.0, bias[0]])
    return LinearHead(
        tuple(str(c) for c in model.classes_),
        scaler.mean_.astype(np.float32),
        scaler.scale_.astype(np.float32),
        weight.astype(np.float32),
        bias.astype(np.float32),
    )


def fit_heads(
    n_train: int = 1500, n_test: int = 500, schemes=SCHEMES, lvm: LVM | None = None
) -> tuple[dict[str, LinearHead], dict]:
    """A head per scheme fitted on seed-0 simulations, with accuracy and macro-F1 on seed-1 ones."""
    from sklearn.metrics import accuracy_score, f1_score

    from vlm.lvm.shipped import load_default

    lvm = (lvm or load_default()).eval()
    heads, metrics = {}, {}
    for scheme in schemes:
        train_images, train_labels = simulated_images(scheme, n_train, 0, lvm.config.img_size)
        heads[scheme] = head = fit_head(lvm_features(lvm, train_images), train_labels)
        test_images, test_labels = simulated_images(scheme, n_test, 1, lvm.config.img_size)
        predicted = np.array(head.classes)[head.probabilities(lvm_features(lvm, test_images)).argmax(1)]
        metrics[scheme] = {
            "accuracy": float(accuracy_score(test_labels, predicted)),
            "macro_f1": float(f1_score(test_labels, predicted, average="macro")),
            "n_train": n_train,
            "n_test": n_test,
        }
    return heads, metrics


# ----------------------------------------------------------------------------- files


def save_heads(heads: dict[str, LinearHead], metrics: dict, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{scheme}.{name}": getattr(head, name)
        for scheme, head in heads.items()
        for name in ("mean", "scale", "weight", "bias")
    }
    classes = {scheme: list(head.classes) for scheme, head in heads.items()}
    save_file(tensors, out / HEADS_FILE, metadata={"classes": json.dumps(classes)})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def load_heads(heads_dir: str | Path = DEFAULT_HEADS_DIR) -> dict[str, LinearHead]:
    from safetensors import safe_open

    path = Path(heads_dir) / HEADS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no morphology heads; fit them with `python -m vlm.morphology`")
    with safe_open(path, "np") as f:
        classes = json.loads(f.metadata()["classes"])
    tensors = load_file(path)
    return {
        scheme: LinearHead(
            tuple(names), *(tensors[f"{scheme}.{k}"] for k in ("mean", "scale", "weight", "bias"))
        )
        for scheme, names in classes.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fit the morphology heads on simulated images")
    parser.add_argument("--out", default=str(DEFAULT_HEADS_DIR))
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--n-test", type=int, default=500)
    args = parser.parse_args(argv)
    heads, metrics = fit_heads(args.n_train, args.n_test)
    save_heads(heads, metrics, args.out)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
