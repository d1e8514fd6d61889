"""The runner: held-out images, option scoring with a real (tiny) model, JSONL records, resumption."""

import json

import numpy as np
import pytest
import test_vlm_model
from test_vlm_model import tiny_model

from benchmarks.calibration import CALIBRATION_FILE
from benchmarks.report import quality_table
from benchmarks.runner import Generation, OptionScoring, RunConfig, held_out_image, run_task
from benchmarks.tasks import load_task
from vlm.engine import Engine, EngineConfig
from vlm.processor import AstroVLMProcessor

tokenizer = test_vlm_model.tokenizer  # the fixture


@pytest.fixture(scope="module")
def backend(tokenizer):
    model = tiny_model(tokenizer)
    processor = AstroVLMProcessor.for_model(tokenizer, model.config)
    return OptionScoring(Engine(model, processor, EngineConfig(dtype="float32")))


def test_held_out_images_are_not_the_training_records():
    task = load_task("b6")
    held_id, held, _ = held_out_image(task, seed=1, i=0)
    train_id, train, _ = held_out_image(task, seed=0, i=0)  # what `data build --seed 0` draws first
    assert held.dtype == np.uint8 and held.shape[-1] == 3 and held_id != train_id
    assert not np.array_equal(held, train)
    np.testing.assert_array_equal(held, held_out_image(task, seed=1, i=0)[1])


def test_a_run_records_every_prediction_resumes_and_tabulates(backend, tmp_path):
    task = load_task("b1")
    out = tmp_path / "tiny" / "b1"
    first = run_task(task, backend, RunConfig(out=str(out), n=3), progress=False)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert first["n"] == 3 and len(lines) == 3
    entry = json.loads(lines[0])
    assert entry["prediction"] in task.answers() and sum(entry["probs"].values()) == pytest.approx(1)

    (out / "predictions.jsonl").write_text("\n".join(lines) + '\n{"id": "cut off')  # an interrupted write
    second = run_task(task, backend, RunConfig(out=str(out), n=5), progress=False)
    again = (out / "predictions.jsonl").read_text().splitlines()
    assert second["n"] == 5 and again[:3] == lines

    with pytest.raises(ValueError, match="other settings"):
        run_task(task, backend, RunConfig(out=str(out), n=5, seed=7), progress=False)
    (out / "predictions.jsonl").write_text("garbage\n" + "\n".join(again) + "\n")
    with pytest.raises(ValueError, match="line 1: not a JSON record"):
        run_task(task, backend, RunConfig(out=str(out), n=5), progress=False)
    table = quality_table([tmp_path / "tiny", tmp_path / "missing"])
    assert "| b1 | " in table and "n 5" in table and "–" in table


def test_views_average_the_probabilities_of_each_images_symmetries(backend, tmp_path):
    from vlm.lvm.data import square_symmetries

    task = load_task("b6")
    images = [held_out_image(task, 1, i)[1] for i in range(2)]
    eight = OptionScoring(backend.engine, views=8)
    averaged = eight.probabilities(task, images)
    for image, probs in zip(images, averaged):
        each = backend.engine.score_options_batch(square_symmetries(image), task.prompt(), task.answers())
        assert probs == pytest.approx({a: np.mean([p[a] for p in each]) for a in task.answers()}, abs=1e-5)
        assert probs != pytest.approx(each[0], abs=1e-5)  # the views do change the answer's odds
    four = OptionScoring(backend.engine, views=4).probabilities(task, images[:1])[0]
    turns = backend.engine.score_options_batch(
        square_symmetries(images[0])[::2], task.prompt(), task.answers()
    )
    assert four == pytest.approx({a: np.mean([p[a] for p in turns]) for a in task.answers()}, abs=1e-5)

    run_task(task, eight, RunConfig(out=str(tmp_path / "b6"), n=2), progress=False)
    with pytest.raises(ValueError, match="other settings"):  # never resumed as a one-view run
        run_task(task, backend, RunConfig(out=str(tmp_path / "b6"), n=2), progress=False)
    with pytest.raises(ValueError, match="views must be one of"):
        OptionScoring(backend.engine, views=3)


def test_the_calibrated_twin_answers_from_the_scores_already_made(backend, monkeypatch):
    from benchmarks.calibration import Calibration, TaskBiases

    task = load_task("b6")
    images = [held_out_image(task, 1, i)[1] for i in range(3)]
    raw = OptionScoring(backend.engine)
    scored = []  # how many images each call of the real engine scored
    real = backend.engine.score_options_batch
    monkeypatch.setattr(
        backend.engine, "score_options_batch", lambda x, *a: scored.append(len(x)) or real(x, *a)
    )
    first = raw.predict_batch(task, images[:2])
    calibrated = raw.with_calibration(Calibration({"b6": TaskBiases({"FR-I": 40.0, "FR-II": 0.0}, 4, 0, 0)}))
    again = calibrated.predict_batch(task, images)
    assert scored == [2, 1]  # only the third image was new
    assert [d["probs"] for _, d in again[:2]] == [d["probs"] for _, d in first]
    assert [answer for answer, _ in again] == ["FR-I"] * 3  # a bias of 40 on FR-I decides
    assert calibrated.name == "option-scoring-calibrated" and raw.name == "option-scoring"
    shuffled = raw.predict_batch(task, images[:1], order=["FR-II", "FR-I"])  # another prompt: scored
    assert scored == [2, 1, 1] and set(shuffled[0][1]["probs"]) == {"FR-I", "FR-II"}


def test_free_text_answers_are_kept_raw_and_unreadable_ones_count_as_wrong(backend, tmp_path):
    task = load_task("b6")
    generation = Generation(backend.engine, max_new_tokens=6)  # a random tiny model: mostly gibberish
    metrics = run_task(task, generation, RunConfig(out=str(tmp_path / "b6"), n=4), progress=False)
    entries = [json.loads(line) for line in (tmp_path / "b6" / "predictions.jsonl").read_text().splitlines()]
    assert all(isinstance(e["raw"], str) for e in entries) and len(entries) == 4
    failures = sum(e["prediction"] is None for e in entries)
    assert metrics["parse_failure_rate"] == failures / 4
    right = sum(e["prediction"] == e["truth"] for e in entries)
    assert metrics["accuracy"] == right / 4


def test_the_vision_only_probe_learns_a_task_from_lvm_features(tmp_path):
    from benchmarks.probe import LinearProbe
    from vlm.lvm import LVM, get_config

    task = load_task("b6")
    lvm = LVM(get_config("lvm-tiny-test")).eval()  # random weights: the probe's code path, not its skill
    probe = LinearProbe.fit(task, n_train=16, lvm=lvm, progress=False)
    metrics = run_task(task, probe, RunConfig(out=str(tmp_path / "b6"), n=4), progress=False)
    assert metrics["n"] == 4 and metrics["parse_failure_rate"] == 0
    with pytest.raises(ValueError, match="trained for task b6"):
        probe.predict(load_task("b3"), held_out_image(load_task("b3"), 1, 0)[1])
    multi = LinearProbe.fit(load_task("b1"), n_train=16, lvm=lvm, progress=False)
    assert (
        multi.predict(load_task("b1"), held_out_image(load_task("b1"), 1, 0)[1])[0]
        in load_task("b1").answers()
    )


def test_a_run_writes_its_report_with_plots(backend, tmp_path):
    from PIL import Image

    metrics = run_task(load_task("b6"), backend, RunConfig(out=str(tmp_path / "b6"), n=4), progress=False)
    report = (tmp_path / "b6" / "report.md").read_text()
    assert f"{metrics['macro_f1']:.3f} (95 % CI" in report and "| FR-I |" in report and "| FR-II |" in report
    html = (tmp_path / "b6" / "report.html").read_text()
    assert "<td>FR-II" in html and 'src="confusion.png"' in html
    for name in ("per_class.png", "confusion.png"):
        assert Image.open(tmp_path / "b6" / name).size[0] > 100
    multi = run_task(load_task("b1"), backend, RunConfig(out=str(tmp_path / "b1"), n=2), progress=False)
    assert "confusion" not in multi and not (tmp_path / "b1" / "confusion.png").exists()
    assert "exact match" in (tmp_path / "b1" / "report.md").read_text()


def test_the_suite_runs_base_and_probe_and_compares_them(tmp_path, capsys):
    from app.cli import main

    code = main(["bench", "suite", "--out", str(tmp_path), "--tasks", "b6", "--n", "3", "--probe-train", "40",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    from vlm.engine import DEFAULT_ADAPTER_DIR
    from vlm.model import PROJECTOR_FILE

    shipped = (DEFAULT_ADAPTER_DIR / PROJECTOR_FILE).is_file()
    assert ("no shipped adapter" in capsys.readouterr().out) != shipped  # it says why a column is missing
    table = (tmp_path / "suite.md").read_text()
    calibrated = shipped and (DEFAULT_ADAPTER_DIR / CALIBRATION_FILE).is_file()
    columns = ["base", *(["default"] if shipped else []), *(["calibrated"] if calibrated else []), "probe"]
    header = "| task | " + " | ".join(columns) + " |"
    assert table.splitlines()[0] == header and "| b6 | " in table
    assert (tmp_path / "suite.png").stat().st_size > 1000
    assert main(["bench", "compare", str(tmp_path / "base"), str(tmp_path / "probe")]) == 0
    assert "| task | base | probe |" in capsys.readouterr().out  # compare: the runs it is given


def test_real_data_sets_run_through_the_importers_into_the_runner(backend, tmp_path):
    import pickle

    import h5py

    rng = np.random.default_rng(0)
    hdf5 = tmp_path / "test_dataset.hdf5"  # GalaxyMNIST's native layout: images (n, 64, 64, 3), labels 0-3
    with h5py.File(hdf5, "w") as f:
        f["images"] = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
        f["labels"] = np.array([0, 1, 2, 3, 0, 1], dtype=np.int64)
    metrics = run_task(load_task("galaxymnist"), backend, RunConfig(out=str(tmp_path / "gm"), n=10, data=str(hdf5)),
                       progress=False)  # fmt: skip
    truths = [
        json.loads(line)["truth"] for line in (tmp_path / "gm" / "predictions.jsonl").read_text().splitlines()
    ]
    assert metrics["n"] == 6  # the file holds six
    assert truths == [
        "smooth_round",
        "smooth_cigar",
        "edge_on_disk",
        "unbarred_spiral",
        "smooth_round",
        "smooth_cigar",
    ]

    batches = (
        tmp_path / "MiraBest_F"
    )  # CIFAR-style pickles; code 0xx is FR-I, 2xx FR-II, 3xx hybrid (left out)
    batches.mkdir()
    names = ["100", "102", "104", "110", "112", "200", "201", "210", "300", "310"]
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    stamps = rng.integers(0, 256, (5, 22500), dtype=np.uint8)
    (batches / "test_batch").write_bytes(
        pickle.dumps({"data": stamps, "labels": [0, 5, 8, 6, 1], "filenames": list("abcde")})
    )
    metrics = run_task(
        load_task("b6"), backend, RunConfig(out=str(tmp_path / "mb"), n=10, data=str(batches)), progress=False
    )
    truths = [
        json.loads(line)["truth"] for line in (tmp_path / "mb" / "predictions.jsonl").read_text().splitlines()
    ]
    assert metrics["n"] == 4 and truths == ["FR-I", "FR-II", "FR-II", "FR-I"]  # the hybrid is not a B6 class

    with pytest.raises(ValueError, match="other settings"):  # simulated and real images never mix in a run
        run_task(load_task("b6"), backend, RunConfig(out=str(tmp_path / "mb"), n=10), progress=False)
    with pytest.raises(FileNotFoundError, match="no such data set"):
        run_task(
            load_task("b6"),
            backend,
            RunConfig(out=str(tmp_path / "x"), data=str(tmp_path / "nope")),
            progress=False,
        )
    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as f:
        f["images"] = np.zeros((0, 64, 64, 3), np.uint8)
        f["labels"] = np.zeros(0, np.int64)
    with pytest.raises(ValueError, match="no images to score"):
        run_task(
            load_task("galaxymnist"),
            backend,
            RunConfig(out=str(tmp_path / "e"), data=str(empty)),
            progress=False,
        )


def test_the_option_order_check_asks_again_with_the_options_reordered(backend, tmp_path):
    task = load_task("b2")
    metrics = run_task(
        task, backend, RunConfig(out=str(tmp_path / "b2"), n=4, shuffle_check=3), progress=False
    )
    entries = [json.loads(line) for line in (tmp_path / "b2" / "predictions.jsonl").read_text().splitlines()]
    checked = [e for e in entries if "shuffled_prediction" in e]
    assert len(checked) == 3 == metrics["option_order_checked"]
    for e in checked:
        assert sorted(e["shuffled_order"]) == sorted(task.options) and e["shuffled_order"] != list(
            task.options
        )
    flips = sum(e["shuffled_prediction"] != e["prediction"] for e in checked)
    assert metrics["option_order_flip_rate"] == flips / 3
    assert ", ".join(checked[0]["shuffled_order"]) in task.prompt(checked[0]["shuffled_order"])
    numbered = run_task(load_task("galaxymnist-zeroshot"), backend,
                        RunConfig(out=str(tmp_path / "gz"), n=2, shuffle_check=2), progress=False)  # fmt: skip
    assert numbered["option_order_checked"] == 0 and numbered["option_order_flip_rate"] is None
    with pytest.raises(ValueError, match="permutation"):
        task.prompt(["1C-1P"])


def test_bench_run_from_the_command_line_passes_every_option_to_the_runner(tmp_path, capsys):
    from app.cli import main

    arguments = ["bench", "run", "--out", str(tmp_path), "--tasks", "b6", "--n", "2", "--probe", "--probe-train",
                 "40", "--shuffle-check", "1", "--context", "--no-progress"]  # fmt: skip
    assert main(arguments) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["n"] == 2
    assert json.loads((tmp_path / "b6" / "run.json").read_text())["context"] is True
