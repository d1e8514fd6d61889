"""The shipped lvm-small weights and `astrovlm lvm report` end to end on a tiny LVM."""

import json

import numpy as np
import pytest
import torch

from vlm.lvm import LVM, get_config, load_default
from vlm.lvm.data import build_pool, split
from vlm.lvm.report import ReportConfig, run_report


def test_shipped_weights_reconstruct_held_out_images_far_better_than_untrained():
    shipped = load_default()
    assert shipped.config == get_config("lvm-small") and not shipped.training
    torch.manual_seed(0)
    untrained = LVM(get_config("lvm-small")).eval()
    # images never seen in pretraining: another pool seed, so other random streams
    pool = build_pool({"optical-gmnist": 8, "radio-b6": 8}, 64, seed=12345, progress=False)
    _, held_out = split(pool, 0.5)
    x = torch.from_numpy(np.array(held_out)).permute(0, 3, 1, 2).float() / 255

    def psnr(model):
        with torch.no_grad():
            mse = ((model(x) - x) ** 2).mean(dim=(1, 2, 3))
        return float((-10 * torch.log10(mse)).mean())

    assert psnr(shipped) > 33.0
    assert psnr(shipped) > psnr(untrained) + 20.0


def test_report_writes_every_table_and_figure(tmp_path):
    torch.manual_seed(0)
    LVM(get_config("lvm-tiny-test")).save(tmp_path / "lvm")
    config = ReportConfig(
        out=str(tmp_path / "report"), lvm=str(tmp_path / "lvm"), multitask_steps=2, multitask_batch=6,
        fewshot_k=(2,), fewshot_test=8, learners=("lvm",), num_workers=1,
        multitask={"n_classify": [8, 4, 4], "n_image": [4, 4, 4], "warmup": 1, "log_every": 1, "reweight_every": 1},
    )  # fmt: skip
    summary = run_report(config, progress=False)
    out = tmp_path / "report"
    text = (out / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Table 4", "Few-shot", "Multi_active", "Pre_train"):
        assert heading in text, heading
    for name in ("examples.png", "fewshot.png", "features-lvm.png", "report.json"):
        assert (out / name).stat().st_size > 0, name
    assert set(summary["multitask"]) == {"frozen", "uniform", "active"}
    assert json.loads((out / "report.json").read_text())["fewshot"]["scores"][0]["shots"] == 2

    # a rerun reuses the finished multi-task runs instead of training them again
    before = (out / "multitask/active/metrics.json").stat().st_mtime_ns
    run_report(config, progress=False)
    assert (out / "multitask/active/metrics.json").stat().st_mtime_ns == before


def test_missing_shipped_weights_name_the_folder(monkeypatch, tmp_path):
    from vlm.lvm import shipped

    monkeypatch.setattr(shipped, "DEFAULT_LVM_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        shipped.load_default()
