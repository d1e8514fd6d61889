"""Multi-task heads and training (vlm/heads, vlm/lvm/degrade.py, vlm/lvm/multitask.py)."""

import json

import pytest
import torch

from vlm.heads import ClassificationHead, ImageDecoderHead
from vlm.lvm import LVM, get_config
from vlm.lvm.degrade import blur, blur_and_noise, mask_patches
from vlm.lvm.multitask import (
    TASKS,
    MultitaskConfig,
    active_shares,
    load_multitask,
    load_task_data,
    split_batch,
    train_multitask,
)

SIZE = 32


def smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(SIZE, dtype=torch.float32) - SIZE / 2
    rr = r[None, :] ** 2 + r[:, None] ** 2
    widths = 2 + 6 * torch.rand(n, 1, 1, 1, generator=g)
    return torch.exp(-rr / (2 * widths**2)).expand(n, 3, SIZE, SIZE).contiguous()


# ----------------------------------------------------------------------------- degradations


def test_blur_keeps_flux_and_spreads_a_point():
    point = torch.zeros(2, 3, SIZE, SIZE)
    point[:, :, SIZE // 2, SIZE // 2] = 1.0
    blurred = blur(point, torch.tensor([2.0, 6.0]))
    assert blurred.sum(dim=(1, 2, 3)) == pytest.approx(
        torch.full((2,), 3.0), rel=1e-2
    )  # up to reflected wings
    assert blurred[0].max() > blurred[1].max()  # the wider PSF spreads the light further
    flat = blur(torch.full((1, 3, SIZE, SIZE), 0.3), torch.tensor([8.0]))
    assert torch.allclose(flat, torch.full_like(flat, 0.3), atol=1e-5)  # reflecting edges: no dark border


def test_restoration_input_is_deterministic_clipped_and_worse():
    clean = smooth_images(4)
    a = blur_and_noise(clean, torch.Generator().manual_seed(1))
    b = blur_and_noise(clean, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert ((a - clean) ** 2).mean() > 1e-5


@pytest.mark.parametrize("patch", [4, 8, 16])
def test_masks_hide_the_asked_fraction_in_patches(patch):
    images = torch.ones(3, 3, SIZE, SIZE)
    masked, mask = mask_patches(images, torch.Generator().manual_seed(0), fraction=0.5, patch=patch)
    assert mask.shape == (3, 1, SIZE, SIZE)
    assert mask.float().mean(dim=(1, 2, 3)).tolist() == [0.5, 0.5, 0.5]
    assert (masked == 0).equal(mask.expand_as(masked))
    cells = mask[0, 0].reshape(SIZE // patch, patch, SIZE // patch, patch)
    assert (cells.all(dim=(1, 3)) | ~cells.any(dim=(1, 3))).all()  # whole patches, never parts
    _, none = mask_patches(images, torch.Generator().manual_seed(0), fraction=0.0, patch=patch)
    assert not none.any()


# ----------------------------------------------------------------------------- heads and shares


def test_image_head_starts_as_the_identity_and_classifier_shapes():
    lvm = LVM(get_config("lvm-tiny-test")).eval()
    images = smooth_images(2)
    feats = lvm.encode(images)
    head = ImageDecoderHead(lvm.feature_dims, lvm.config.patch_size)
    assert torch.equal(head(feats.stages, images), images)
    logits = ClassificationHead(sum(lvm.feature_dims), 4).eval()(feats.stage_means)
    assert logits.shape == (2, 4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ClassificationHead(8, 1)


def test_active_shares_favour_the_worst_task_and_batches_split_exactly():
    shares = active_shares({"classify": 0.1, "restore": 0.6, "reconstruct": 0.3}, floor=0.1)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["restore"] > shares["reconstruct"] > shares["classify"] >= 0.1
    for batch in (6, 7, 48):
        counts = split_batch(batch, shares)
        assert sum(counts.values()) == batch and min(counts.values()) >= 2
    assert split_batch(48, dict.fromkeys(TASKS, 1 / 3)) == dict.fromkeys(TASKS, 16)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="strategy"):
        MultitaskConfig(out="x", strategy="greedy")
    with pytest.raises(ValueError, match="n_image"):
        MultitaskConfig(out="x", n_image=(10, 0, 5))
    with pytest.raises(ValueError, match="share_floor"):
        MultitaskConfig(out="x", share_floor=0.5)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny LVM and a small data set shared by the training tests."""
    root = tmp_path_factory.mktemp("mt")
    torch.manual_seed(0)
    LVM(get_config("lvm-tiny-test")).save(root / "lvm")
    config = MultitaskConfig(
        out=str(root / "data"), lvm=str(root / "lvm"), img_size=SIZE, n_classify=(24, 8, 8), n_image=(8, 4, 4),
        num_workers=1,
    )  # fmt: skip
    return root, load_task_data(config, cache_dir=root, progress=False)


def run(root, data, strategy, **overrides):
    config = MultitaskConfig(
        out=str(root / strategy), lvm=str(root / "lvm"), strategy=strategy, img_size=SIZE, steps=4,
        batch_size=6, n_classify=(24, 8, 8), n_image=(8, 4, 4), reweight_every=2, warmup=1, log_every=2,
        num_workers=1, **overrides,
    )  # fmt: skip
    return config, train_multitask(config, data=data, progress=False)


def test_task_data_is_cached_and_split(tiny):
    root, data = tiny
    assert data.classify["train"][0].shape == (24, SIZE, SIZE, 3)
    assert set(data.classify["train"][1].tolist()) <= {0, 1, 2, 3}
    assert data.images["test"].shape == (4, SIZE, SIZE, 3)
    assert not (data.images["train"][:4] == data.images["test"]).all()  # splits are different draws
    assert len(list(root.glob("multitask-data-*.npz"))) == 1


@pytest.mark.parametrize("strategy", ["frozen", "active"])
def test_training_writes_metrics_and_only_fine_tunes_when_asked(tiny, strategy):
    root, data = tiny
    config, metrics = run(root, data, strategy)
    out = root / strategy
    assert set(TASKS) <= set(metrics) and "reconstruct@50%/8px" in metrics
    assert 0.0 <= metrics["classify"]["acc"] <= 1.0
    assert metrics["restore"]["input"]["psnr"] > 0 and metrics["restore"]["error"] > 0
    assert json.loads((out / "metrics.json").read_text())["strategy"] == strategy
    before = LVM.load(root / "lvm").state_dict()
    reloaded = load_multitask(out)
    after = reloaded.lvm.state_dict()
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert changed == (strategy != "frozen")
    if strategy == "active":
        shares = [
            json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "shares" in line
        ]
        assert shares and sum(shares[0]["shares"].values()) == pytest.approx(1.0)
