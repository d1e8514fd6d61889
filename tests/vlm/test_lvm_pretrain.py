"""LVM pretraining (vlm/lvm/data.py, pretrain.py, cli.py): the pool, augmentation, a short run that
learns, exact resumption, config checks. Tiny preset and pools; about 30 s on one CPU core."""

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vlm.lvm import LVM, get_config
from vlm.lvm import cli as lvm_cli
from vlm.lvm import data as lvm_data
from vlm.lvm import pretrain as lvm_pretrain
from vlm.lvm.data import FIRST, augment, build_pool, default_mix, pool_path, prepare_image, scale_mix, split
from vlm.lvm.pretrain import PretrainConfig, batch_indices, pretrain, warmup_cosine
from vlm.lvm.shipped import export_run

MIX = {
    "optical-gmnist": 16,
    "optical-lsbg": 8,
    "optical-morphology": 8,
    "radio-b1": 8,
    "radio-b6": 8,
    FIRST: 16,
}
SIZE = 32


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    """A folder holding the cached test pool (FIRST is read once for the whole module)."""
    folder = tmp_path_factory.mktemp("pool")
    build_pool(MIX, SIZE, seed=0, num_proc=1, cache_dir=folder, progress=False)
    return folder


def tiny_config(out, pool_dir, **overrides) -> PretrainConfig:
    fields = dict(out=str(out), preset="lvm-tiny-test", img_size=SIZE, mix=MIX, pool_dir=str(pool_dir),
                  batch_size=8, steps=30, lr=3e-3, warmup=3, log_every=5, eval_every=10,
                  ckpt_every=10)  # fmt: skip
    return PretrainConfig(**{**fields, **overrides})


# ----------------------------------------------------------------------------- the pool


def test_pool_shape_mix_and_first_images(pool_dir):
    pool = build_pool(MIX, SIZE, seed=0, num_proc=1, cache_dir=pool_dir, progress=False)
    assert pool.shape == (sum(MIX.values()), SIZE, SIZE, 3) and pool.dtype == np.uint8
    assert pool.std() > 10  # real pictures, not blank
    index = json.loads(pool_path(pool_dir, MIX, SIZE, 0).with_suffix(".json").read_text())
    assert {f: index["families"].count(f) for f in MIX} == MIX
    assert index["families"][:16] != sorted(index["families"][:16])  # shuffled: the tail is a fair sample

    # the radio-first rows are the real FIRST images, rendered and cropped as the pool promises
    from data_builders.importers import read_first

    rows = {i: index["ids"][i] for i, f in enumerate(index["families"]) if f == FIRST}
    assert all(rid.startswith("first-") for rid in rows.values())
    row, wanted = next(iter(rows.items()))
    record = next(r for r in read_first(family=FIRST, splits=("train", "valid")) if r.id == wanted)
    np.testing.assert_array_equal(pool[row], prepare_image(record.image, "radio", ("I",), SIZE, crop=True))


def test_pool_is_cached_and_not_regenerated(tmp_path, monkeypatch):
    mix = {"optical-gmnist": 5, "radio-b2": 3}
    calls = []
    simulate = lvm_data._simulate_chunk
    monkeypatch.setattr(lvm_data, "_simulate_chunk", lambda task: calls.append(task) or simulate(task))
    first = build_pool(mix, 16, seed=3, num_proc=1, cache_dir=tmp_path, progress=False)
    path = pool_path(tmp_path, mix, 16, 3)
    assert path.is_file() and len(calls) == 2
    mtime = path.stat().st_mtime_ns
    again = build_pool(mix, 16, seed=3, num_proc=1, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2 and path.stat().st_mtime_ns == mtime  # loaded, not drawn again
    np.testing.assert_array_equal(first, again)
    other = build_pool(mix, 16, seed=4, num_proc=1, cache_dir=tmp_path, progress=False)  # another seed
    assert len(calls) == 4 and not np.array_equal(first, other)


def test_mix_scaling_and_checks():
    mix = default_mix(4000)
    assert sum(mix.values()) == 4000 and set(mix) == set(lvm_data.SOURCES)
    big = scale_mix(lvm_data.DEFAULT_WEIGHTS, 30_000)
    assert sum(big.values()) == 30_000 and big[FIRST] == lvm_data.FIRST_AVAILABLE  # capped, rest spread
    with pytest.raises(ValueError, match="unknown pool sources"):
        build_pool({"optical-nope": 3}, 16, 0)
    with pytest.raises(ValueError, match="positive int"):
        build_pool({"radio-b1": 0}, 16, 0)
    with pytest.raises(ValueError, match="1958"):
        build_pool({FIRST: 5000}, 16, 0)


def test_split_holds_out_the_tail():
    pool = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    train, val = split(pool, 0.05)
    assert len(train) == 38 and val[:, 0, 0, 0].tolist() == [38, 39]
    with pytest.raises(ValueError):
        split(pool, 0.0)


# ----------------------------------------------------------------------------- augmentation


def test_augment_shape_determinism_and_exact_symmetries():
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    c = augment(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0
    # without crops every output is exactly one of the 8 symmetries of its input
    d = augment(x, torch.Generator().manual_seed(7), min_area=1.0)
    for out, img in zip(d, x, strict=True):
        images = [torch.rot90(img.flip(-1) if f else img, k, dims=(-2, -1)) for k in range(4) for f in (0, 1)]
        assert any(torch.equal(out, t) for t in images)
    with pytest.raises(ValueError):
        augment(torch.rand(2, 3, 16, 8), torch.Generator())


def test_batches_walk_epochs_and_schedule():
    rows = torch.cat([batch_indices(10, 4, step, seed=0) for step in range(5)])  # 2 epochs of 10
    assert sorted(rows[:10].tolist()) == list(range(10)) and sorted(rows[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(10, 4, 3, seed=0), batch_indices(10, 4, 3, seed=0))
    two = torch.cat([batch_indices(10, 2, 0, seed=0, rank=r, world=2) for r in range(2)])
    assert torch.equal(two, batch_indices(10, 4, 0, seed=0))  # processes split the global batch
    assert (
        warmup_cosine(0, 4, 100) == 0.25
        and warmup_cosine(4, 4, 100) == 1.0
        and warmup_cosine(100, 4, 100) == 0
    )


# ----------------------------------------------------------------------------- the recipe


def test_short_run_learns_and_saves(tmp_path, pool_dir):
    out = tmp_path / "run"
    metrics = pretrain(tiny_config(out, pool_dir), progress=False)
    assert metrics["val_mse"] < 0.5 * metrics["val_mse_initial"]
    assert metrics["val_psnr"] > metrics["val_psnr_initial"] + 3
    assert metrics["images_per_s"] > 0 and metrics["step"] == 30
    for name in ("final/config.json", "final/model.safetensors", "metrics.json", "loss.png", "log.jsonl"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == metrics
    model = LVM.load(out / "final")
    assert model.config.img_size == SIZE
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "val_mse" in e] == [0, 10, 20, 30]
    assert all(e["images_per_s"] > 0 for e in log if "loss" in e)
    LVM.load(out / "checkpoint")  # the checkpoint holds a loadable model too
    assert json.loads((out / "checkpoint/pretrain_config.json").read_text())["lr"] == 3e-3

    shipped = export_run(out, tmp_path / "shipped")  # float16 copy + model card, as vlm/weights/ holds
    assert load_file(tmp_path / "shipped/model.safetensors")["head.weight"].dtype == torch.float16
    assert abs(shipped["val_psnr_float16"] - metrics["val_psnr"]) < 0.1
    assert f"{metrics['val_psnr']:.2f}" in (tmp_path / "shipped/README.md").read_text()
    reloaded = LVM.load(tmp_path / "shipped").float()
    x = torch.rand(2, 3, SIZE, SIZE)
    torch.testing.assert_close(reloaded(x), model(x), atol=2e-2, rtol=0)
    with pytest.raises(FileNotFoundError, match="not a finished"):
        export_run(tmp_path / "nothing", tmp_path / "x")


def test_resume_is_exact_and_other_configs_are_refused(tmp_path, pool_dir, monkeypatch):
    # with stochastic depth on, exactness also needs the RNG states that the checkpoint restores
    tiny_drop = get_config("lvm-tiny-test", drop_path=0.3)
    monkeypatch.setattr(lvm_pretrain, "get_config", lambda name, **kw: replace(tiny_drop, **kw))
    config = tiny_config(tmp_path / "cut", pool_dir, steps=20, ckpt_every=5)
    stopped = pretrain(config, stop_after=10, progress=False)  # as if killed after step 10
    assert stopped["step"] == 10 and not (tmp_path / "cut/final").exists()
    assert json.loads((tmp_path / "cut/checkpoint/trainer_state.json").read_text()) == {"step": 10}
    resumed = pretrain(config, progress=False)  # the same command again: resumes at 10
    whole = pretrain(replace(config, out=str(tmp_path / "whole")), progress=False)

    a = load_file(tmp_path / "cut/final/model.safetensors")
    b = load_file(tmp_path / "whole/final/model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert resumed["val_mse"] == pytest.approx(whole["val_mse"], rel=1e-5)
    logs = [
        [json.loads(s) for s in (tmp_path / d / "log.jsonl").read_text().splitlines()]
        for d in ("cut", "whole")
    ]
    assert [e["step"] for e in logs[0]] == [e["step"] for e in logs[1]]  # no duplicated entries

    with pytest.raises(ValueError, match=r"different config \(lr: 0.003 -> 0.001\)"):
        pretrain(replace(config, lr=1e-3), progress=False)
    with pytest.raises(ValueError, match="exists"):
        pretrain(config, resume=False, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        pretrain(replace(config, out=str(tmp_path / "empty")), resume=True, progress=False)


# ----------------------------------------------------------------------------- configs and the CLI


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"warmup": 30}, "warmup"),
        ({"img_size": 40}, "multiple of"),
        ({"preset": "lvm-huge"}, "valid presets"),
        ({"mix": {"optical-nope": 4}}, "unknown pool sources"),
        ({"mix": {"radio-b1": 2.5}}, "positive int"),
        ({"lr": 0}, "lr must be"),
        ({"batch_size": True}, "batch_size"),
        ({"bf16": "yes"}, "bf16"),
        ({"val_fraction": 0.9}, "val_fraction"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"mix": {"radio-b1": 1}}, "none to train on"),
    ],
)
def test_bad_configs_raise(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, tmp_path, **overrides)


def test_config_from_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("out: runs/x\npreset: lvm-tiny-test\nimg_size: 32\nsteps: 50\nwarmup: 5\nbf16: false\n")
    config = PretrainConfig.from_file(path, ["lr=3e-4", "mix.radio-first=100", "eval_every=5"], steps=60)
    assert (config.lr, config.steps, config.eval_every, config.bf16) == (3e-4, 60, 5, False)
    assert config.mix[FIRST] == 100 and config.mix["radio-b1"] == PretrainConfig(out="x").mix["radio-b1"]
    with pytest.raises(ValueError, match="unknown PretrainConfig fields"):
        PretrainConfig.from_file(path, ["learning_rate=1"])
    with pytest.raises(ValueError, match="key=value"):
        PretrainConfig.from_file(path, ["lr"])


def test_cli_assembles_the_config(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(
        "vlm.lvm.pretrain.pretrain", lambda config, **kw: seen.update(config=config, **kw) or {}
    )
    root = argparse.ArgumentParser()
    lvm_cli.register(root.add_subparsers(dest="command"))
    args = root.parse_args(["lvm", "pretrain", "--out", str(tmp_path), "--preset", "lvm-tiny-test",
                            "--img-size", "32", "--pool", "500", "--steps", "40", "--set", "lr=2e-3",
                            "--set", "warmup=4", "--resume"])  # fmt: skip
    args.func(args)
    config = seen["config"]
    assert (config.preset, config.img_size, config.steps, config.lr, config.warmup) == (
        "lvm-tiny-test",
        32,
        40,
        2e-3,
        4,
    )
    assert sum(config.mix.values()) == 500 and seen["resume"] is True
