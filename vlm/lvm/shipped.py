"""The shipped lvm-small weights (vlm/weights/lvm-small): found inside the installed package, no network."""

from __future__ import annotations

from pathlib import Path

import torch

from vlm.lvm.model import LVM

DEFAULT_LVM_DIR = Path(__file__).resolve().parents[1] / "weights" / "lvm-small"


def load_default(device: str | torch.device = "cpu", **overrides) -> LVM:
    """The shipped, pretrained lvm-small in eval mode (weights are stored in float16, run in float32)."""
    if not (DEFAULT_LVM_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the shipped LVM weights are missing from {DEFAULT_LVM_DIR}; reinstall astrovlm, or pretrain "
            "your own (astrovlm lvm pretrain --out runs/lvm-small) and pass its final/ folder"
        )
    return LVM.load(DEFAULT_LVM_DIR, device=device, **overrides).float().eval()
