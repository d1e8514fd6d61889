"""Classification head: two fully connected layers on the LVM's pooled bottleneck (seed 000, 3.1)."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),  # pooled features of a frozen encoder have arbitrary scales
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, n_classes) logits
        return self.net(pooled)
