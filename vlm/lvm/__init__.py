"""The LVM (large vision model): a Swin-Transformer U-Net pretrained by reconstruction; see model.py.

Names are imported on first use (PEP 562), so that `astrovlm data ...`, which registers the `lvm`
subcommands beside its own, never pays for importing torch.
"""

import importlib

_EXPORTS = {
    "LVM": "vlm.lvm.model",
    "LVMCheckpointError": "vlm.lvm.model",
    "LVMConfig": "vlm.lvm.model",
    "LVMFeatures": "vlm.lvm.model",
    "DEFAULT_PRESET": "vlm.lvm.presets",
    "get_config": "vlm.lvm.presets",
    "list_presets": "vlm.lvm.presets",
    "DEFAULT_LVM_DIR": "vlm.lvm.shipped",
    "load_default": "vlm.lvm.shipped",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vlm.lvm' has no attribute {name!r}")
