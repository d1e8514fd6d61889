"""What the machine can do fast: bfloat16 on this CPU or GPU, and the mixed precision a training run uses."""

from __future__ import annotations

import torch


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX), where oneDNN's bfloat16
    matmul of many rows is ~3x float32's rather than ~10x slower. torch only asks this privately; a torch
    without the check counts as without the instructions (the float32 path is right on every CPU)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def check_bf16(bf16) -> None:
    """A config's bf16 field: "auto", true or false (anything else would silently mean true)."""
    if bf16 not in ("auto", True, False):
        raise ValueError(f'bf16 must be "auto", true or false, got {bf16!r}')


def mixed_precision(bf16: str | bool) -> str:
    """accelerate's mixed_precision for a config's bf16 field. "auto" is bf16 autocast on a GPU that has
    bfloat16 and on a CPU with bfloat16 instructions, float32 elsewhere (without them CPU autocast is
    several times slower than float32)."""
    if bf16 != "auto":
        return "bf16" if bf16 else "no"
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if native_bf16_cpu() else "no"
