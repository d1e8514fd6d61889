"""Human-in-the-loop target finding on frozen LVM features (seed 000, section 5).

    config = HITLConfig(alpha=0.5, round_size=10)
    scorer = fit_scorer(features, labelled_idx, labels, config)     # MLP (hidden 2048) on the labels so far
    scores = scorer.scores(features)                                 # P(target) for every pooled image
    picks = recommend(scores, labelled_mask, last_round, config)     # the next round to label

The downstream network is the paper's: an MLP with one hidden layer of 2048 on fixed LVM features
(the mean and standard deviation of every encoder stage, concatenated, as in the few-shot
comparison). Each round the person labels `round_size` recommended images. The alpha rule: with P
and N the positives and negatives labelled in the latest round, P/N <= alpha recommends the
highest-scoring unlabelled images, otherwise the lowest (alpha = 0.9 steers towards precision, 0.1
towards recall, 0.5 towards AUC/AUPR). The seeds count as round 0. A round with no negatives has P/N = infinity.

Starting from positives alone (the paper's target finding), a two-class MLP has nothing to contrast: until
the first negative is labelled, `round_size` random unlabelled images stand in as provisional negatives
(positive-unlabelled learning: a rare target is almost never among them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from vlm.lvm.fewshot import MLPConfig, MLPHead, train_mlp


@dataclass
class HITLConfig:
    alpha: float = 0.5
    round_size: int = 10
    mlp: MLPConfig = field(default_factory=lambda: MLPConfig(hidden=2048, epochs=50, min_steps=200))
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.round_size < 1:
            raise ValueError(f"round_size must be >= 1, got {self.round_size}")
        if isinstance(self.mlp, dict):
            self.mlp = MLPConfig(**self.mlp)


def positive_ratio(last_round: list[bool] | np.ndarray) -> float:
    """P/N of a round's labels (True = target); infinity without negatives."""
    labels = np.asarray(last_round, dtype=bool)
    negatives = int((~labels).sum())
    return math.inf if negatives == 0 else float(labels.sum()) / negatives


def recommend(
    scores: np.ndarray, labelled: np.ndarray, last_round: list[bool] | np.ndarray, config: HITLConfig
) -> np.ndarray:
    """Indices of the next round: the highest-scoring unlabelled images when the last round's P/N <= alpha,
    else the lowest-scoring; ties broken by index so that a round is reproducible."""
    candidates = np.flatnonzero(~np.asarray(labelled, dtype=bool))
    highest = positive_ratio(last_round) <= config.alpha
    key = -scores[candidates] if highest else scores[candidates]
    return candidates[np.argsort(key, kind="stable")[: config.round_size]]


@dataclass
class Scorer:
    head: MLPHead

    @torch.no_grad()
    def scores(self, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """P(target) for (N, D) features."""
        x = torch.as_tensor(features, dtype=torch.float32)
        out = [self.head(x[s : s + batch_size]).softmax(-1)[:, 1] for s in range(0, len(x), batch_size)]
        return torch.cat(out).numpy() if out else np.empty(0, np.float32)


def fit_scorer(features: np.ndarray, labelled: np.ndarray, labels: np.ndarray, config: HITLConfig) -> Scorer:
    """The MLP on the labelled pool images (indices `labelled`, True = target)."""
    labelled, labels = np.asarray(labelled, dtype=np.int64), np.asarray(labels, dtype=bool)
    if len(labelled) != len(labels):
        raise ValueError(f"{len(labelled)} labelled indices but {len(labels)} labels")
    if not labels.any():
        raise ValueError("label at least one target (positive) image to start")
    x, y = features[labelled], labels.astype(np.int64)
    if labels.all():  # positives only: random unlabelled images stand in as negatives
        rest = np.setdiff1d(np.arange(len(features)), labelled)
        stand_ins = np.random.default_rng(config.seed).choice(
            rest, min(config.round_size, len(rest)), replace=False
        )
        x, y = (
            np.concatenate([x, features[stand_ins]]),
            np.concatenate([y, np.zeros(len(stand_ins), np.int64)]),
        )
    return Scorer(train_mlp(x, y, 2, config.mlp, seed=config.seed))
