"""The LVM (large vision model): a Swin-Transformer U-Net pretrained by reconstruction; see model.py."""

from vlm.lvm.model import LVM, LVMCheckpointError, LVMConfig, LVMFeatures
from vlm.lvm.presets import DEFAULT_PRESET, get_config, list_presets

__all__ = [
    "DEFAULT_PRESET",
    "LVM",
    "LVMCheckpointError",
    "LVMConfig",
    "LVMFeatures",
    "get_config",
    "list_presets",
]
