"""The HITL experiment's pieces (vlm/heads/hitl_report.py) on synthetic features: drawing seeds, thinning
to a rare target, the oracle-labelled rounds, and the written report."""

import numpy as np
import pytest

from vlm.heads.hitl import HITLConfig, MLPConfig
from vlm.heads.hitl_report import draw, run_rounds, thin, write_report


def test_draw_and_thin():
    rng = np.random.default_rng(0)
    truth = np.arange(100) < 20
    seeds = draw(rng, truth, 5, 5)
    assert len(set(seeds.tolist())) == 10 and truth[seeds].sum() == 5
    labels = np.array(["lens"] * 50 + ["other"] * 490)
    keep = thin(labels, "lens", 0.02, seed=0)
    assert (labels[keep] == "other").sum() == 490 and (labels[keep] == "lens").sum() == 10  # 2 % of 500


def test_oracle_rounds_find_the_targets_of_a_separable_pool():
    rng = np.random.default_rng(0)
    truth = np.arange(600) < 30  # 5 % targets, far apart from the rest in feature space
    features = rng.normal(size=(600, 8)) + 6 * truth[:, None]
    config = HITLConfig(alpha=0.5, round_size=10, mlp=MLPConfig(hidden=32, epochs=20, min_steps=50))
    seeds = draw(rng, truth, 5, 5)
    labelled, scorer = run_rounds(features, truth, seeds, 2, config)
    assert len(labelled) == len(set(labelled)) == 30
    # seeds 5/5: P/N 1 > alpha, so the lowest scores (no target); that round's P/N 0: the highest (all targets)
    assert truth[labelled[10:20]].sum() == 0 and truth[labelled[20:]].sum() == 10
    scores = scorer.scores(features)
    assert scores[truth].min() > scores[~truth].max()


def test_report_tables_and_plot(tmp_path):
    truth = np.array([True, False, True, False])
    results = {
        "spirals": {"LVM 5+5": {"aupr": (0.9, 0.01), "auc": (0.95, 0.01)}},
        "alpha": {
            a: {"precision": 0.5, "recall": 0.6, "aupr": 0.55, "positives_labelled": 15.0} for a in (0.1, 0.9)
        },
        "rare": {
            "lens": {
                "pool_targets": 71,
                "test_targets": 36,
                "precision_at_k": 0.45,
                "found_in_100_recommended": 20.7,
            }
        },
        "round_seconds": 1.5,
    }
    curves = {"truth": truth, "scores": {"LVM 5+5": np.array([0.9, 0.2, 0.7, 0.4])}}
    paths = write_report(results, curves, tmp_path / "report")
    table = (tmp_path / "report" / "table.md").read_text()
    assert "| LVM 5+5 | 10 | 0.900 ± 0.010 | 0.950 ± 0.010 |" in table
    assert "| 0.9 | 0.500 | 0.600 | 0.550 | 15.0 |" in table and "exactly 4 targets of 10" in table
    assert "| lens | 71 / 36 | 0.450 | 20.7 |" in table and "1.50 s" in table
    assert (tmp_path / "report" / "pr_curves.png").read_bytes()[:4] == b"\x89PNG" and len(paths) == 3
    with pytest.raises(KeyError):
        write_report(
            {**results, "spirals": {"unknown learner": results["spirals"]["LVM 5+5"]}}, curves, tmp_path
        )
