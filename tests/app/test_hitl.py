"""HITL sessions: the alpha rule, the SQLite store (kill -9, two tabs), unreadable pool images, export."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pandas as pd
import pytest

from app.hitl.session import HITLSession
from app.hitl.store import HITLStore
from vlm.heads.hitl import HITLConfig, fit_scorer, positive_ratio, recommend


def test_the_alpha_rule_picks_the_highest_scores_when_the_last_round_was_poor_in_targets():
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    labelled = np.array([True, False, False, False, False, False])
    config = HITLConfig(alpha=0.5, round_size=2)
    assert positive_ratio([True, False, False]) == 0.5 and positive_ratio([True]) == float("inf")
    assert recommend(scores, labelled, [True, False, False], config).tolist() == [2, 4]  # P/N 0.5 <= 0.5
    assert recommend(scores, labelled, [True, True, False], config).tolist() == [1, 3]  # P/N 2 > 0.5
    assert recommend(scores, labelled, [True, True, False], HITLConfig(alpha=0.9, round_size=2)).tolist() == [
        1,
        3,
    ]
    with pytest.raises(ValueError, match="alpha"):
        HITLConfig(alpha=1.5)


def test_the_mlp_separates_targets_in_feature_space_even_from_positives_alone():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 32)).astype(np.float32)
    targets = np.arange(400) < 40
    features[targets, :4] += 3.0  # the targets sit apart along four features
    config = HITLConfig()
    from sklearn.metrics import average_precision_score

    two_class = fit_scorer(
        features, [0, 1, 2, 100, 101, 102], [True, True, True, False, False, False], config
    )
    assert average_precision_score(targets, two_class.scores(features)) > 0.6  # chance: 0.1
    positives_only = fit_scorer(features, [0, 1, 2, 3, 4], [True] * 5, config)
    assert average_precision_score(targets, positives_only.scores(features)) > 0.5
    with pytest.raises(ValueError, match="at least one target"):
        fit_scorer(features, [100, 101], [False, False], config)


@pytest.fixture
def pool():
    """60 images: bright discs are the targets (every 5th), the rest faint noise."""
    rng = np.random.default_rng(1)
    images = (rng.random((60, 64, 64, 3)) * 60).astype(np.uint8)
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 150)[..., None]
    images[::5] = np.where(disc, 230, images[::5]).astype(np.uint8)
    return images


def test_a_session_recommends_rounds_that_find_the_targets_and_exports_them(tmp_path, pool):
    session = HITLSession.create(
        tmp_path / "h.sqlite", "discs", pool, target="disc", round_size=5, progress=False
    )
    session.label(0, True)
    session.label(1, False)
    picks = session.next_round()
    assert len(picks) == 5 and session.round == 1 and not {p.idx for p in picks} & {0, 1}
    assert session.next_round() == picks or [p.idx for p in session.next_round()] == [p.idx for p in picks]
    for pick in picks:
        session.label(pick.idx, pick.idx % 5 == 0)
    second = session.next_round()
    assert session.round == 2 and not {p.idx for p in second} & ({p.idx for p in picks} | {0, 1})
    scores = session.scores()
    targets = np.arange(60) % 5 == 0
    assert scores[targets].mean() > scores[~targets].mean() + 0.3
    csv = pd.read_csv(session.export(tmp_path / "labels.csv"))
    parquet = pd.read_parquet(session.export(tmp_path / "labels.parquet"))
    assert len(csv) == len(parquet) == 60 and csv["label"].notna().sum() == 7
    assert bool(parquet.loc[parquet["idx"] == 0, "label"].item())
    with pytest.raises(ValueError, match=".csv or .parquet"):
        session.export(tmp_path / "labels.xlsx")
    reopened = HITLSession.open(tmp_path / "h.sqlite", "discs")
    assert reopened.labels() == session.labels() and reopened.round == 2
    assert session.progress() == {"pool": 60, "unreadable": 0, "labelled": 7,
                                  "positives": sum(i % 5 == 0 for i in session.labels()) ,
                                  "negatives": 7 - sum(i % 5 == 0 for i in session.labels()), "round": 2}  # fmt: skip


def test_unreadable_pool_images_are_skipped_listed_and_never_recommended(tmp_path):
    from app.examples import EXAMPLES

    folder = tmp_path / "pool"
    folder.mkdir()
    for example in EXAMPLES:
        (folder / example.file).write_bytes(example.path.read_bytes())
    (folder / "zz-broken.fits").write_bytes(b"SIMPLE  = garbage")
    (folder / "zz-empty.png").write_bytes(b"")
    session = HITLSession.create(tmp_path / "h.sqlite", "mixed", folder, round_size=10, progress=False)
    assert sorted(item.split("/")[-1] for item, _ in session.failed) == ["zz-broken.fits", "zz-empty.png"]
    session.label(0, True)
    picks = session.next_round()
    assert len(picks) == len(EXAMPLES) - 1 and all("zz-" not in p.item for p in picks)
    with pytest.raises(ValueError, match="could not be read"):
        session.label(len(EXAMPLES), True)
    assert np.isnan(session.scores()[len(EXAMPLES) :]).all()


def test_two_tabs_labelling_the_same_session_lose_and_double_nothing(tmp_path, pool):
    HITLSession.create(tmp_path / "h.sqlite", "shared", pool, progress=False)
    tabs = [HITLSession.open(tmp_path / "h.sqlite", "shared") for _ in range(2)]

    def label_all(session, flip):
        for i in range(60):
            session.label(i, (i % 2 == 0) != flip)

    threads = [threading.Thread(target=label_all, args=(tab, k == 1)) for k, tab in enumerate(tabs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    labels = HITLStore(tmp_path / "h.sqlite").labels("shared")
    assert sorted(labels) == list(range(60))  # one row per image, whoever was last


def test_a_kill_in_the_middle_of_a_round_loses_no_label_given_before(tmp_path, pool):
    HITLSession.create(tmp_path / "h.sqlite", "killed", pool, progress=False)
    script = textwrap.dedent(f"""
        import sys
        from app.hitl.session import HITLSession
        session = HITLSession.open({str(tmp_path / "h.sqlite")!r}, "killed")
        for i in range(60):
            session.label(i, i % 5 == 0)
            print(i, flush=True)          # printed only after the label's transaction committed
            if i == 7:
                session.next_round()      # a round starts mid-way
        import time; time.sleep(60)
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    confirmed = []
    for line in child.stdout:
        confirmed.append(int(line))
        if len(confirmed) == 25:
            os.kill(child.pid, signal.SIGKILL)  # no cleanup, no goodbye
            break
    child.wait(30)
    labels = HITLSession.open(tmp_path / "h.sqlite", "killed").labels()
    assert set(confirmed) <= set(labels) and all(labels[i] == (i % 5 == 0) for i in confirmed)


def test_the_chat_tools_run_a_session_over_the_gallery_seeded_by_the_current_image(runner, tmp_path):
    import pandas as pd

    from app.examples import EXAMPLES
    from app.images import ChatImage
    from app.tools import ToolResources, ToolRunner

    tools = ToolRunner(resources=ToolResources(lvm=runner.resources.lvm, hitl_dir=tmp_path))
    tools.resources.__dict__["gallery"] = runner.resources.gallery  # built once for the whole suite
    image = [ChatImage.read(EXAMPLES[1].path)]  # an FR-II: find more like it
    start = tools.run("hitl_start", {"session": "fr2", "target": "FR-II", "round_size": 6}, image)
    assert start.ok and start.result["pool"] == len(runner.resources.gallery) + 1
    first = tools.run("hitl_next", {"session": "fr2"}, [])
    ids = [entry["id"] for entry in first.result["images"]]
    assert len(ids) == 6 == len(first.visual) and "upload" not in ids
    labels = {i: i.startswith("radio-b6") or i.startswith("FIRST") for i in ids}
    labelled = tools.run("hitl_label", {"session": "fr2", "labels": labels}, [])
    assert labelled.result["progress"]["labelled"] == 7
    second = tools.run("hitl_next", {"session": "fr2"}, [])
    assert second.result["round"] == 2 and not {e["id"] for e in second.result["images"]} & set(ids)
    exported = tools.run("hitl_export", {"session": "fr2", "format": "parquet"}, [])
    frame = pd.read_parquet(exported.result["path"])
    assert exported.result["path"].startswith(str(tmp_path)) and frame["label"].notna().sum() == 7

    errors = {
        "unknown session": tools.run("hitl_next", {"session": "nope"}, []),
        "unknown ids": tools.run("hitl_label", {"session": "fr2", "labels": {"../../etc/passwd": True}}, []),
        "bad name": tools.run("hitl_export", {"session": "../../tmp/x"}, []),
        "taken name": tools.run("hitl_start", {"session": "fr2", "target": "again"}, image),
    }
    assert "no session named 'nope'" in errors["unknown session"].result["error"]
    assert "unknown image ids" in errors["unknown ids"].result["error"]
    assert "does not match" in errors["bad name"].result["error"]
    assert "exists" in errors["taken name"].result["error"]
