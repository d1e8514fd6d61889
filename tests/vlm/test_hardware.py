"""The mixed precision a training run picks: what the config says, else what the hardware does fast."""

import pytest
import torch

from vlm import hardware


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "no")])
def test_explicit_setting_wins(bf16, expected):
    assert hardware.mixed_precision(bf16) == expected


@pytest.mark.parametrize("cpu_bf16, expected", [(True, "bf16"), (False, "no")])
def test_auto_on_a_cpu_follows_its_bf16_units(monkeypatch, cpu_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "native_bf16_cpu", lambda: cpu_bf16)
    assert hardware.mixed_precision("auto") == expected


@pytest.mark.parametrize("gpu_bf16, expected", [(True, "bf16"), (False, "no")])
def test_auto_on_a_gpu_follows_the_gpu_not_the_cpu(monkeypatch, gpu_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: gpu_bf16)
    monkeypatch.setattr(hardware, "native_bf16_cpu", lambda: not gpu_bf16)
    assert hardware.mixed_precision("auto") == expected


def test_native_bf16_cpu_answers_a_bool():
    assert isinstance(hardware.native_bf16_cpu(), bool)
