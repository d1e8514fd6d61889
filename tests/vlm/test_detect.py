"""Detection heads: box geometry under augmentation, tiling, the simulated fields, every backbone's
forward and backward pass, save/load, the shipped detectors' quality, and the `astrovlm detect` command."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from app.cli import main
from app.examples import EXAMPLES_DIR
from vlm.heads.detect import (
    BACKBONES,
    RADIO_CLASSES,
    Detector,
    DetectorConfig,
    build_detector,
    domain_config,
    image_tensor,
    tile_origins,
)
from vlm.heads.detect_data import DOMAINS, simulate_field, simulate_fields
from vlm.heads.detect_train import TrainConfig, dihedral, evaluate, train_detector


@pytest.fixture(scope="module")
def radio_detector() -> Detector:
    return Detector.load("radio")


@pytest.mark.parametrize("k", range(8))
def test_every_symmetry_moves_the_boxes_with_the_pixels(k):
    pixels = torch.zeros(3, 40, 60)
    pixels[:, 5:12, 30:52] = 1.0  # rows 5-11, columns 30-51
    boxes = torch.tensor([[30.0, 5.0, 52.0, 12.0]])
    turned, turned_boxes, turned_masks = dihedral(pixels, boxes, k, pixels[:1].clone())
    rows, cols = torch.nonzero(turned[0], as_tuple=True)
    lit = [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]
    assert turned_boxes[0].tolist() == lit
    assert torch.equal(turned_masks[0], turned[0])  # masks turn with the pixels


@pytest.mark.parametrize("length", [64, 256, 300, 1000, 1111])
def test_tiles_cover_the_image_and_share_the_overlap(length):
    starts = tile_origins(length, 256, 48)
    assert starts[0] == 0 and starts[-1] == max(0, length - 256)
    assert all(b - a <= 256 - 48 for a, b in zip(starts, starts[1:]))  # neighbours share >= 48 px


def test_simulated_fields_are_reproducible_split_and_boxed_inside_the_field():
    for domain, (_, size, classes, _) in DOMAINS.items():
        field = simulate_field(domain, 3)
        assert field.picture.shape == (size, size, 3) and field.picture.dtype == np.uint8
        assert len(field.boxes) == len(field.labels) > 0
        assert field.labels.min() >= 1 and field.labels.max() <= len(classes)
        assert (field.boxes[:, :2] >= 0).all() and (field.boxes[:, 2:] <= size).all()
        assert (field.boxes[:, 2:] - field.boxes[:, :2] >= 2).all()
        if domain == "radio":  # one instance mask per box, inside it
            assert field.masks.shape == (len(field.boxes), size, size)
            for mask, (x0, y0, x1, y1) in zip(field.masks, field.boxes, strict=True):
                rows, cols = np.nonzero(mask)
                assert (
                    cols.min() >= x0 - 1
                    and cols.max() < x1 + 1
                    and rows.min() >= y0 - 1
                    and rows.max() < y1 + 1
                )
        assert np.array_equal(simulate_field(domain, 3).picture, field.picture)
        assert not np.array_equal(simulate_field(domain, 3, "test").picture, field.picture)
    with pytest.raises(ValueError, match="unknown detection domain"):
        simulate_field("x-ray", 0)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_each_backbone_trains_its_heads_and_detects(backbone):
    torch.manual_seed(0)
    config = DetectorConfig(backbone=backbone)
    model = build_detector(config).train()
    body = list(model.backbone.body.parameters())
    assert all(not p.requires_grad for p in body) == config.frozen_backbone
    if backbone != "resnet50":  # a pretrained backbone trains only when fine-tuned
        tuned = build_detector(replace(config, finetune=True)).backbone.body
        assert any(p.requires_grad for p in tuned.parameters())  # (the LVM decoder never trains)
    fields = simulate_fields("radio", 2, progress=False)
    images = [image_tensor(f.picture) for f in fields]
    targets = [{"boxes": torch.from_numpy(f.boxes), "labels": torch.from_numpy(f.labels)} for f in fields]
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert model.backbone.fpn.inner_blocks[0][0].weight.grad is not None
    with torch.no_grad():
        out = model.eval()([torch.rand(3, 100, 140)])[0]  # not a multiple of the stride: padded, not resized
    assert (
        out["boxes"].shape[1] == 4 and (out["boxes"][:, 2] <= 140).all() and (out["boxes"][:, 3] <= 100).all()
    )


def test_mask_rcnn_learns_masks_and_is_scored_on_them_too():
    fields = simulate_fields("radio", 4, progress=False)
    config = DetectorConfig(arch="mask")
    detector = train_detector(config, fields, TrainConfig(steps=2, batch_size=2, warmup=1), progress=False)
    scores = evaluate(detector, fields[:2], progress=False)
    assert {"map_50", "mask_map_50", "mask_map"} <= set(scores)
    assert detector.detect(fields[0].picture, min_score=0.0)  # boxes as from Faster R-CNN
    optical = simulate_fields("optical", 1, progress=False)
    with pytest.raises(ValueError, match="instance masks"):
        train_detector(
            replace(domain_config("optical"), arch="mask"), optical, TrainConfig(steps=1), progress=False
        )


def test_a_saved_detector_holds_only_its_heads_and_reloads_to_the_same_boxes(tmp_path):
    fields = simulate_fields("radio", 4, progress=False)
    detector = train_detector(
        DetectorConfig(), fields, TrainConfig(steps=2, batch_size=2, warmup=1), progress=False
    )
    detector.save(tmp_path, half=False)
    assert (tmp_path / "detector.safetensors").stat().st_size < 8e6  # the frozen LVM is not copied
    again = Detector.load(tmp_path)
    picture = fields[0].picture
    first, second = detector.detect(picture, min_score=0.0), again.detect(picture, min_score=0.0)
    assert len(first) == len(second) > 0
    np.testing.assert_allclose([d.box for d in first], [d.box for d in second], atol=1e-4)
    (tmp_path / "config.json").write_text(
        json.dumps({**json.loads((tmp_path / "config.json").read_text()), "fpn_channels": 32})
    )
    with pytest.raises((ValueError, RuntimeError)):
        Detector.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no detector"):
        Detector.load(tmp_path / "missing")


def test_the_shipped_radio_detector_finds_the_simulated_sources(radio_detector):
    scores = evaluate(radio_detector, simulate_fields("radio", 24, "test", progress=False), progress=False)
    assert scores["map_50"] >= 0.5, scores  # 0.70 measured on these 24 fields, 0.60 on 200
    assert set(scores["ap_50"]) <= set(RADIO_CLASSES)


def test_the_shipped_optical_detector_finds_lenses():
    detector = Detector.load("optical")
    scores = evaluate(detector, simulate_fields("optical", 16, "test", progress=False), progress=False)
    assert scores["map_50"] >= 0.55 and scores["ap_50"]["lens"] >= 0.6, scores  # measured 0.78, 0.95


def test_a_wide_field_is_tiled_into_one_set_of_boxes_in_image_coordinates(radio_detector):
    wide = simulate_field("radio", 5, "test", size=512)
    found = radio_detector.detect(wide.picture, min_score=0.5)
    boxes = torch.tensor([d.box for d in found])
    assert len(found) > 20 and (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 512).all()
    for label in {d.label for d in found}:  # the overlap's sources are found once, not once per tile
        same = boxes[[d.label == label for d in found]]
        iou = box_iou(same, same).fill_diagonal_(0)
        assert iou.max() <= 0.5
    truth = torch.from_numpy(wide.boxes)
    recovered = (box_iou(truth, boxes).max(dim=1).values >= 0.5).float().mean()
    assert recovered >= 0.6  # the right places in the whole image, not tile coordinates


def test_detect_refuses_pictures_it_cannot_read(radio_detector):
    with pytest.raises(ValueError, match="uint8"):
        radio_detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        radio_detector.detect(np.zeros((64, 64), np.uint8))
    assert radio_detector.detect(np.zeros((10, 12, 3), np.uint8)) == []  # tiny and empty: padded, nothing


def test_the_detect_command_draws_boxes_and_explains_bad_input(tmp_path, capsys):
    out = tmp_path / "boxes.png"
    assert (
        main(["detect", str(EXAMPLES_DIR / "radio-field-simulated.fits"), "--out", str(out), "--json"]) == 0
    )
    detections = json.loads(capsys.readouterr().out)
    assert out.stat().st_size > 1000 and detections and {d["label"] for d in detections} <= set(RADIO_CLASSES)
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  =                    T" + b"\0" * 10)
    assert main(["detect", str(broken)]) == 2
    assert "broken.fits" in capsys.readouterr().err
    assert main(["detect", "train"]) == 2
    assert "--out" in capsys.readouterr().err


def test_the_report_scores_the_shipped_detectors_and_resumes_the_comparison(tmp_path, monkeypatch):
    import vlm.heads.detect_report as report

    monkeypatch.setattr(report, "COMPARISON_SIZES", (3,))
    monkeypatch.setattr(report, "COMPARISON_STEPS", {3: 1})
    runs = [report.Run(b, 3) for b in BACKBONES] + [
        report.Run("lvm", 3, "mask"),
        report.Run("lvm", 3, finetune=True),
    ]
    monkeypatch.setattr(report, "COMPARISON_RUNS", runs)
    monkeypatch.setattr(report, "RUNS_DIR", tmp_path / "runs")
    written = report.write_report(tmp_path / "report", compare=True, n_test=3, progress=False)
    assert {p.name for p in written} == {"table.md", "shipped.json", "examples.jpg", "comparison.png"}
    table = (tmp_path / "report" / "table.md").read_text()
    for row in ("lvm | frozen | Faster", "efficientnet-lite0 | frozen | Faster", "resnet50 | trained | Faster",
                "lvm | frozen | Mask", "lvm | fine-tuned | Faster"):  # fmt: skip
        assert f"| {row} R-CNN | 3 | 1 |" in table
    shipped = json.loads((tmp_path / "report" / "shipped.json").read_text())
    assert set(shipped) == {"radio", "optical"} and all(s["seconds_per_256"] > 0 for s in shipped.values())
    saved = (tmp_path / "report" / "comparison.json").read_text()
    report.write_report(tmp_path / "report", n_test=3, progress=False)  # no --compare: the recorded table
    assert (tmp_path / "report" / "comparison.json").read_text() == saved
    assert "| lvm | fine-tuned | Faster R-CNN | 3 | 1 |" in (tmp_path / "report" / "table.md").read_text()


def test_a_fits_with_nan_inf_and_an_odd_shape_still_gets_its_source_found(tmp_path, capsys):
    from astropy.io import fits

    data = np.random.default_rng(0).normal(size=(300, 201)).astype(np.float32)
    data[10:50, 10:50] = np.nan  # a blanked region
    data[100, 100] = np.inf
    yy, xx = np.mgrid[:300, :201]
    data += 60 * np.exp(-((xx - 150) ** 2 + (yy - 220) ** 2) / (2 * 2.0**2))  # one compact source
    fits.writeto(tmp_path / "holes.fits", data)
    assert main(["detect", str(tmp_path / "holes.fits"), "--out", str(tmp_path / "b.png"), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    y = 300 - 1 - 220  # FITS row 0 is the bottom; boxes are in picture pixels, row 0 at the top
    assert any(d["box"][0] <= 150 <= d["box"][2] and d["box"][1] <= y <= d["box"][3] for d in found)


def test_a_fine_tuned_lvm_detector_keeps_its_own_encoder_and_leaves_a_shared_one_alone(tmp_path):
    from vlm.lvm.shipped import load_default

    fields = simulate_fields("radio", 2, progress=False)
    config = replace(domain_config("radio"), finetune=True)
    schedule = TrainConfig(steps=2, batch_size=2, warmup=1, lr=1e-2, backbone_lr_scale=1.0)
    detector = train_detector(config, fields, schedule, progress=False)
    detector.save(tmp_path, half=False)
    shared = load_default()
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    again = Detector.load(tmp_path, lvm=shared)
    assert all(torch.equal(v, shared.state_dict()[k]) for k, v in before.items())  # untouched
    tuned = again.model.backbone.body.lvm.patch_embed.weight
    assert not torch.equal(tuned, shared.patch_embed.weight)  # its own, trained encoder
    np.testing.assert_allclose(
        [d.box for d in detector.detect(fields[0].picture, min_score=0.0)],
        [d.box for d in again.detect(fields[0].picture, min_score=0.0)],
        atol=1e-4,
    )
