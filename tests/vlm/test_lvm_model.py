"""The LVM (vlm/lvm): shapes, shifted-window masking, checkpoints, input checks and a tiny overfit run."""

import json

import pytest
import torch

from vlm.lvm import LVM, LVMCheckpointError, LVMConfig, get_config, list_presets
from vlm.lvm import model as lvm_model
from vlm.lvm.model import SwinBlock, shifted_window_mask, window_partition, window_reverse


def tiny(**overrides) -> LVM:
    torch.manual_seed(0)
    return LVM(get_config("lvm-tiny-test", **overrides)).eval()


def blobs(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) smooth Gaussian blobs with per-band amplitudes, values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = size / 4 + torch.rand(n, 2, generator=g) * size / 2
    sigma = 2 + 4 * torch.rand(n, generator=g)
    r2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    profile = torch.exp(-r2 / (2 * sigma[:, None, None] ** 2))  # (n, size, size)
    return profile[:, None] * (0.3 + 0.7 * torch.rand(n, 3, 1, 1, generator=g))


# ----------------------------------------------------------------------------- configs and presets


def test_presets_registry():
    assert {"lvm-small", "lvm-base", "lvm-tiny-test"} <= set(list_presets())
    assert LVMConfig() == get_config("lvm-small")  # dataclass defaults are the shipped preset
    assert get_config("lvm-small", img_size=128).img_size == 128
    with pytest.raises(ValueError, match="lvm-base, lvm-small, lvm-tiny-test"):
        get_config("lvm-huge")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"img_size": 40}, "multiple of"),
        ({"embed_dim": 18, "num_heads": [4, 4]}, "not divisible by 4 heads"),
        ({"depths": [2, 2, 2]}, "one entry per stage"),
        ({"depths": []}, "one entry per stage"),
        ({"depths": [2, 0]}, "positive ints"),
        ({"patch_size": 0}, "positive int"),
        ({"drop_path": 1.0}, r"\[0, 1\)"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
    ],
)
def test_config_checks(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_config("lvm-tiny-test", **overrides)


def test_config_dict_round_trip():
    config = get_config("lvm-base")
    d = json.loads(json.dumps(config.to_dict()))
    assert LVMConfig.from_dict(d) == config
    with pytest.raises(ValueError, match="unknown LVMConfig fields"):
        LVMConfig.from_dict({**d, "hidden_size": 3})


def test_parameter_counts_on_meta_device():
    def count(name):
        with torch.device("meta"):
            return sum(p.numel() for p in LVM(get_config(name)).parameters())

    assert 80e6 <= count("lvm-base") <= 130e6  # the paper's ~100M
    assert 2e6 <= count("lvm-small") <= 6e6


# ----------------------------------------------------------------------------- shapes


def test_forward_and_encode_shapes():
    model = tiny()
    x = blobs(2)
    assert model(x).shape == (2, 3, 32, 32)
    assert torch.equal(model(x), model.reconstruct(x))
    assert model.feature_dims == (16, 32)
    feats = model.encode(x)
    assert feats.tokens.shape == (2, 64, 32) and feats.grid == (8, 8)
    assert [tuple(s.shape) for s in feats.stages] == [(2, 16, 16, 16), (2, 32, 8, 8)]
    torch.testing.assert_close(feats.pooled, feats.tokens.mean(1))
    first = model.encode(x, stage=0)
    assert first.tokens.shape == (2, 256, 16) and first.grid == (16, 16)
    torch.testing.assert_close(first.tokens, feats.stages[0].flatten(2).transpose(1, 2))  # row-major tokens
    with pytest.raises(ValueError, match="stage must be in"):
        model.encode(x, stage=2)


def test_other_input_sizes_run_with_the_same_weights():
    model = tiny()
    x = blobs(1, size=48)[..., :32]  # (1, 3, 48, 32): any multiple of size_multiple (16)
    assert model(x).shape == (1, 3, 48, 32)
    assert model.encode(x).grid == (12, 8)


def test_every_parameter_gets_a_gradient():
    model = tiny().train()
    torch.nn.functional.mse_loss(model(blobs(2)), blobs(2)).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


# ----------------------------------------------------------------------------- windows and shifts


def test_window_partition_reverse_is_exact_inverse():
    x = torch.randn(2, 8, 12, 5)
    windows = window_partition(x, 4)
    assert windows.shape == (2 * 2 * 3, 16, 5)
    assert torch.equal(windows[1].view(4, 4, 5), x[0, :4, 4:8])  # row-major windows
    assert torch.equal(window_reverse(windows, 4, 8, 12), x)


def test_shifted_window_mask_blocks_tokens_from_different_regions():
    H, W, ws, s = 8, 12, 4, 2
    mask = shifted_window_mask(H, W, ws, (s, s))
    assert mask.shape == (6, 16, 16)
    # after rolling by -s, rolled (r, c) holds image pixel ((r + s) % H, (c + s) % W); two tokens are
    # image neighbours only if both or neither wrapped around, in each axis
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    wrapped = ((rows + s >= H) * 2 + (cols + s >= W)).float()[None, :, :, None]
    region = window_partition(wrapped, ws).squeeze(-1)  # (nW, N)
    assert torch.equal(mask, region[:, :, None] == region[:, None, :])
    assert mask[0].all() and not mask[-1].all()  # interior windows are whole; the corner one is split in 4
    assert mask[-1].sum() == 4 * 4 * 4  # four 2x2 regions of 4 tokens each


def block(shift: bool) -> SwinBlock:
    torch.manual_seed(0)
    return SwinBlock(16, 2, 4, shift, mlp_ratio=2.0, qkv_bias=True, drop_path=0.0).eval()


def perturbed(b: SwinBlock, at: tuple[int, int]) -> torch.Tensor:
    """|b(x') - b(x)| per token (8, 8) when one token of an (1, 8, 8, 16) grid is changed."""
    x = torch.randn(1, 8, 8, 16, generator=torch.Generator().manual_seed(1))
    x2 = x.clone()
    x2[0, at[0], at[1]] += torch.randn(16, generator=torch.Generator().manual_seed(2))  # not constant: LN
    with torch.no_grad():
        return (b(x2) - b(x)).abs().sum(-1)[0]


def test_shifted_block_does_not_leak_across_wrapped_regions(monkeypatch):
    # image pixel (0, 0) is rolled into the bottom-right window together with pixels (6..7, 6..7)
    diff = perturbed(block(shift=True), (0, 0))
    assert diff[0, 1] > 0 and diff[1, 1] > 0  # its own region of that window sees it
    assert diff[7, 7] == 0 and diff[6, 6] == 0  # the far corner shares the window but not the region
    # without the mask the corner would see it: the test above is not vacuous
    monkeypatch.setattr(
        lvm_model,
        "shifted_window_mask",
        lambda H, W, ws, shift, device=None: torch.ones(
            (H // ws) * (W // ws), ws * ws, ws * ws, dtype=torch.bool
        ),
    )
    assert perturbed(block(shift=True), (0, 0))[7, 7] > 0


def test_shift_carries_information_across_window_borders():
    unshifted = perturbed(block(shift=False), (3, 3))  # token in window (0, 0)
    assert unshifted[0, 0] > 0 and unshifted[:4, :4].all()  # its own window sees it
    assert unshifted[4:, :].sum() == 0 and unshifted[:, 4:].sum() == 0  # no other window does
    shifted = perturbed(block(shift=True), (3, 3))
    assert shifted[4, 4] > 0 and shifted[2:6, 2:6].all()  # the shifted window (2..5, 2..5) crosses the border
    assert shifted[0, 0] == 0 and shifted[7, 7] == 0


# ----------------------------------------------------------------------------- checkpoints


def test_save_load_round_trip(tmp_path):
    model = tiny()
    model.save(tmp_path / "ckpt")
    loaded = LVM.load(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    x = blobs(3)
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(loaded.encode(x).pooled, model.encode(x).pooled)
    assert LVM.load(tmp_path / "ckpt", img_size=64).config.img_size == 64  # size-free weights


def test_corrupt_or_mismatched_checkpoints_name_the_file(tmp_path):
    tiny().save(tmp_path)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()

    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(LVMCheckpointError, match="model.safetensors") as info:
        LVM.load(tmp_path)
    assert str(weights) in str(info.value)

    weights.write_bytes(b"\x00" * 3)
    with pytest.raises(LVMCheckpointError, match=str(weights)):
        LVM.load(tmp_path)

    weights.write_bytes(good)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "embed_dim": 32}))
    with pytest.raises(LVMCheckpointError, match="do not match config"):
        LVM.load(tmp_path)

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(LVMCheckpointError, match="config.json"):
        LVM.load(tmp_path)

    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        LVM.load(tmp_path)


# ----------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(2, 1, 32, 32), r"expected images of shape \(B, 3, 32, 32\) .*got \(2, 1, 32, 32\)"),
        (torch.rand(2, 4, 32, 32), "got \\(2, 4, 32, 32\\)"),
        (torch.rand(3, 32, 32), "got \\(3, 32, 32\\)"),
        (torch.rand(2, 3, 30, 30), "multiple of 16\\), got \\(2, 3, 30, 30\\)"),
        (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), "float tensor in \\[0, 1\\]"),
    ],
)
def test_bad_images_raise(images, message):
    model = tiny()
    with pytest.raises(ValueError, match=message):
        model.encode(images)
    with pytest.raises(ValueError, match=message):
        model(images)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels_never_reach_the_network(bad):
    x = blobs(2)
    x[1, 2, 5, 7] = bad
    with pytest.raises(ValueError, match="NaN pixels never reach the network"):
        tiny().encode(x)


# ----------------------------------------------------------------------------- training


def test_adam_overfits_a_fixed_batch():
    model = tiny().train()
    x = blobs(8, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.02 * losses[0], losses[::10]
    mean_image = torch.nn.functional.mse_loss(x.mean(0, keepdim=True).expand_as(x), x).item()
    assert losses[-1] < 0.5 * mean_image  # it reconstructs each image, not the batch average


@pytest.mark.slow
def test_lvm_base_runs_at_128_px():
    torch.manual_seed(0)
    model = LVM(get_config("lvm-base")).eval()
    with torch.inference_mode():
        feats = model.encode(torch.rand(1, 3, 128, 128))
    assert feats.tokens.shape == (1, 16, 768) and feats.pooled.shape == (1, 768)
    assert [s.shape[1:] for s in feats.stages] == [(96, 32, 32), (192, 16, 16), (384, 8, 8), (768, 4, 4)]
