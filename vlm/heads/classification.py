"""Classification head: two fully connected layers on LVM image features (seed 000, 3.1).

The input is first standardised per feature (BatchNorm without affine terms): a pretrained encoder's
averaged tokens share a large common pattern, and what tells images apart is a small variation around
it (about 0.5 % of the scale for lvm-small), which a per-sample LayerNorm would leave buried.
"""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.net = nn.Sequential(
            nn.BatchNorm1d(in_dim, affine=False),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, n_classes) logits
        return self.net(features)
