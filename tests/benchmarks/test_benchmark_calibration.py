"""Per-answer biases on option scores: the fit, applying them, the file, the runner and the commands."""

import json
import math

import numpy as np
import pytest
import test_vlm_model
from test_vlm_model import tiny_model

from benchmarks.calibration import Calibration, TaskBiases, answer_of, fit_biases, fit_task
from benchmarks.runner import OptionScoring, RunConfig, run_task
from benchmarks.tasks import load_task
from vlm.engine import Engine, EngineConfig
from vlm.processor import AstroVLMProcessor

tokenizer = test_vlm_model.tokenizer  # the fixture


def shy_scores(n: int = 300, shyness: float = 3.0, seed: int = 0):
    """Answers A, B, C: the right one's logit 2 above the others plus noise, but C's lowered by
    `shyness`, as an LM that dislikes C's words would score them."""
    rng = np.random.default_rng(seed)
    truths = rng.choice(["A", "B", "C"], n)
    logits = rng.normal(0, 1, (n, 3)) + 2.0 * (truths[:, None] == np.array(["A", "B", "C"]))
    logits[:, 2] -= shyness
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return [dict(zip("ABC", p.tolist())) for p in probs], truths.tolist()


def test_the_fitted_biases_undo_a_model_shy_of_one_answer():
    probs, truths = shy_scores()
    biases = fit_biases(probs, truths)
    lift = biases["C"] - (biases["A"] + biases["B"]) / 2
    assert 2.0 < lift < 4.0  # the shyness was 3

    calibration = Calibration({"t": TaskBiases(biases, len(probs), 0.0, 0.0)})
    test_probs, test_truths = shy_scores(seed=1)  # fitted on one draw, judged on another

    def accuracy(scores):
        return np.mean([max(p, key=p.get) == t for p, t in zip(scores, test_truths)])

    calibrated = [calibration.apply("t", p) for p in test_probs]
    assert accuracy(calibrated) > accuracy(test_probs) + 0.15
    assert all(sum(p.values()) == pytest.approx(1) for p in calibrated)


def write_scores(run_dir, probs, truths):
    run_dir.mkdir(parents=True)
    lines = [
        json.dumps({"id": str(i), "truth": t, "probs": p}) for i, (p, t) in enumerate(zip(probs, truths))
    ]
    (run_dir / "predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_a_task_keeps_its_biases_only_where_they_pay_out_of_fold(tmp_path):
    task = load_task("b5")  # three answers, as shy_scores' A, B, C
    names = dict(zip("ABC", task.options))

    def as_b5(probs, truths):
        return [{names[a]: v for a, v in p.items()} for p in probs], [names[t] for t in truths]

    write_scores(tmp_path / "shy", *as_b5(*shy_scores(shyness=3.0)))
    shy = fit_task(task, tmp_path / "shy")
    assert shy.macro_f1_after > shy.macro_f1_before + 0.1 and shy.biases[task.options[2]] > 1

    write_scores(tmp_path / "fair", *as_b5(*shy_scores(shyness=0.0)))
    fair = fit_task(task, tmp_path / "fair")
    assert fair.n == 300 and set(fair.biases.values()) == {0.0}  # nothing to correct: left as it is


def test_applying_biases_handles_zero_scores_and_refuses_other_answers():
    calibration = Calibration({"t": TaskBiases({"A": 0.0, "B": 40.0}, 10, 0.0, 0.0)})
    probs = calibration.apply("t", {"A": 1.0, "B": 0.0})  # a 0 is floored, not log(0)
    assert probs["B"] > probs["A"] and all(math.isfinite(p) for p in probs.values())
    with pytest.raises(ValueError, match="the calibration has answers"):
        calibration.apply("t", {"A": 0.5, "C": 0.5})
    with pytest.raises(ValueError, match=r"truths \['D'\] are not among the answers"):
        fit_biases([{"A": 0.5, "B": 0.5}] * 2, ["A", "D"])


def test_a_numbered_task_is_calibrated_on_its_option_numbers():
    task = load_task("galaxymnist-zeroshot")
    assert task.numbered and answer_of(task, task.options[2]) == "2"
    assert answer_of(load_task("b6"), "FR-II") == "FR-II"


def test_the_calibration_file_round_trips_and_a_bad_one_is_refused_by_name(tmp_path):
    calibration = Calibration({"b6": TaskBiases({"FR-I": 0.3, "FR-II": -0.3}, 40, 0.6, 0.7)}, seed=2)
    path = calibration.save(tmp_path / "calibration.json")
    assert Calibration.load(path) == calibration
    with pytest.raises(FileNotFoundError, match="bench calibrate"):
        Calibration.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"tasks": {"b6": {"biases": 1}}}')
    with pytest.raises(ValueError, match=r"bad\.json: not a calibration file"):
        Calibration.load(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def engine(tokenizer):
    model = tiny_model(tokenizer)
    return Engine(model, AstroVLMProcessor.for_model(tokenizer, model.config), EngineConfig(dtype="float32"))


def test_a_calibrated_run_answers_by_the_biases_and_keeps_the_raw_scores(engine, tmp_path):
    task = load_task("b6")
    raw = run_task(task, OptionScoring(engine), RunConfig(out=str(tmp_path / "raw"), n=4), progress=False)
    biases = fit_task(task, tmp_path / "raw")  # fitted on the raw run's own scores
    assert biases.n == 4 and set(biases.biases) == {"FR-I", "FR-II"} and raw["n"] == 4

    raw_entries = [
        json.loads(line) for line in (tmp_path / "raw" / "predictions.jsonl").read_text().splitlines()
    ]
    favourite = max(["FR-I", "FR-II"], key=lambda a: sum(e["probs"][a] for e in raw_entries))
    other = "FR-II" if favourite == "FR-I" else "FR-I"
    forced = Calibration({"b6": TaskBiases({favourite: 0.0, other: 50.0}, 4, 0.0, 0.0)})
    out = tmp_path / "forced"
    run_task(task, OptionScoring(engine, forced), RunConfig(out=str(out), n=4), progress=False)
    entries = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [e["prediction"] for e in entries] == [other] * 4  # the answer the raw scores liked less
    for entry, raw_entry in zip(entries, raw_entries):
        assert entry["probs"][other] == pytest.approx(raw_entry["probs"][other], abs=1e-5)
        assert entry["calibrated_probs"][other] > 0.99
    with pytest.raises(ValueError, match="other settings"):  # raw scores never resume a calibrated run
        run_task(task, OptionScoring(engine), RunConfig(out=str(out), n=5), progress=False)


def test_calibrate_then_run_calibrated_from_the_command_line(tmp_path, capsys):
    from app.cli import main

    out = tmp_path / "calibration.json"
    arguments = ["bench", "calibrate", "--tasks", "b6", "--n", "6", "--scores", str(tmp_path / "scores"),
                 "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(arguments) == 0
    assert "| b6 | 6 | " in capsys.readouterr().out
    assert set(Calibration.load(out).tasks) == {"b6"}

    run = tmp_path / "run"
    assert main(["bench", "run", "--out", str(run), "--tasks", "b6", "--n", "2", "--shuffle-check", "0",
                 "--calibrated", str(out), "--no-progress"]) == 0  # fmt: skip
    entry = json.loads((run / "b6" / "predictions.jsonl").read_text().splitlines()[0])
    assert set(entry["calibrated_probs"]) == {"FR-I", "FR-II"}
    assert json.loads((run / "b6" / "run.json").read_text())["backend"] == "option-scoring-calibrated"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["calibrate", "--seed", "1"], "the benchmark images"),
        (["calibrate", "--seed", "0"], "the training images"),
        (
            ["run", "--image-last", "--calibrated"],
            "not with --base, --mode generate, --context or --image-last",
        ),
        (["run", "--probe", "--calibrated"], "--calibrated: options of the local model, not of --probe"),
        (["run", "--openai", "gpt-4o", "--int8"], "--int8: options of the local model, not of --openai"),
        (["run", "--base", "--calibrated"], "not with --base"),
        (["run", "--probe", "--views", "8"], "--views: options of the local model, not of --probe"),
        (["run", "--mode", "generate", "--views", "4"], "not free-text answers"),
        (["run", "--calibrated", "missing.json"], "no calibration file"),
    ],
)
def test_bench_options_that_cannot_apply_are_refused(arguments, message, tmp_path, capsys):
    from app.cli import main

    target = "--out" if arguments[0] == "run" else "--scores"
    assert main(["bench", *arguments, target, str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before anything was scored


def test_a_calibration_fitted_for_another_adapter_is_refused(tmp_path, capsys):
    from app.cli import main

    other = Calibration({"b6": TaskBiases({"FR-I": 0.0, "FR-II": 0.0}, 4, 0.5, 0.5)}, adapter="0123456789ab")
    path = other.save(tmp_path / "other.json")
    assert Calibration.load(path).adapter == "0123456789ab"
    arguments = ["bench", "run", "--out", str(tmp_path / "run"), "--tasks", "b6", "--calibrated", str(path)]
    assert main(arguments) == 2
    assert "fitted for adapter 0123456789ab" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
