"""LVM presets: one small JSON file per named config in this folder (open_clip's model_configs style).

    from vlm.lvm.presets import get_config, list_presets
    list_presets()                           # ['lvm-base', 'lvm-small', 'lvm-tiny-test']
    get_config("lvm-small", img_size=128)    # the preset with fields overridden

lvm-small is the shipped default (64 px, CPU); lvm-base is the paper's ~100M model (4 stages x 8 Swin
layers each side, 128 px, for GPUs); lvm-tiny-test is for unit tests.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlm.lvm.model import LVMConfig

PRESET_DIR = Path(__file__).parent
DEFAULT_PRESET = "lvm-small"


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def get_config(name: str = DEFAULT_PRESET, **overrides) -> LVMConfig:
    """The named preset's LVMConfig, with `overrides` replacing fields; raises listing valid names."""
    path = PRESET_DIR / f"{name}.json"
    if name not in list_presets():
        raise ValueError(f"unknown LVM preset {name!r}; valid presets: {', '.join(list_presets())}")
    return LVMConfig.from_dict({**json.loads(path.read_text()), **overrides})
