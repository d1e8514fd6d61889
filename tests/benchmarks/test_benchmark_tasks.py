"""Benchmark tasks as data: the seed's questions and options, the answers option scoring ranks, metrics."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.metrics import score
from benchmarks.tasks import Task, list_tasks, load_task
from data_builders.families import get_family


def test_every_task_matches_its_data_family():
    assert {"b1", "b2", "b3", "b4", "b5", "b6", "galaxymnist", "lsbg", "galaxymnist-zeroshot"} <= set(
        list_tasks()
    )
    for task_id in list_tasks():
        task = load_task(task_id)
        family = get_family(task.family)
        assert set(task.options) == set(family.classes) and task.label_type == family.label_type
        assert task.prompt().startswith(task.question)
        assert task.numbered or all(o in task.prompt() for o in task.options)


def test_seed_003_wording():
    assert (
        load_task("b3").question
        == "Do you see any likely radio galaxy with an extended morphology in the image?"
    )
    assert load_task("b6").options == ("FR-I", "FR-II")


def test_a_multi_label_task_ranks_every_combination_and_builds_truths_as_the_data_builders_do():
    b1 = load_task("b1")
    answers = b1.answers()
    assert len(answers) == 2**3 and answers[-1] == "NONE" and "EXTENDED, DIFFUSE-LARGE" in answers
    assert b1.truth(["DIFFUSE-LARGE", "EXTENDED"]) == "EXTENDED, DIFFUSE-LARGE"
    assert b1.truth(["NONE"]) == "NONE"
    with pytest.raises(ValueError, match="match 2 options"):
        load_task("b6").truth(["FR-I", "FR-II"])
    with pytest.raises(ValueError, match="unknown benchmark task"):
        load_task("b9")
    with pytest.raises(ValueError, match="label_type"):
        Task("x", "radio-b6", "ranking", "?", ("a", "b"))


def test_single_label_metrics_and_merged_classes():
    task = load_task("galaxymnist")
    truths = ["smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral"] * 2
    predictions = ["smooth_round", "edge_on_disk", "smooth_cigar", "unbarred_spiral"] * 2
    m = score(task, truths, predictions)
    assert m["accuracy"] == 0.5 and m["macro_f1"] == 0.5
    assert m["per_class"]["smooth_cigar"]["recall"] == 0 and m["confusion"][1][2] == 2
    merged = m["merged:smooth_cigar+edge_on_disk"]
    assert merged["accuracy"] == 1.0 and merged["classes"][-1] == "smooth_cigar+edge_on_disk"


def test_multi_label_metrics_score_each_class():
    task = load_task("b1")
    m = score(task, ["EXTENDED", "EXTENDED, DIFFUSE", "NONE"], ["EXTENDED", "EXTENDED", "DIFFUSE"])
    assert m["per_class"]["EXTENDED"]["f1"] == 1.0 and m["per_class"]["DIFFUSE"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx(1 / 3) and m["exact_match"] == pytest.approx(1 / 3)
    with_failure = score(task, ["EXTENDED", "NONE"], [None, "NONE"])
    assert with_failure["parse_failure_rate"] == 0.5 and with_failure["exact_match"] == 0.5
    single = score(load_task("b6"), ["FR-I", "FR-II"], [None, "FR-II"])
    assert single["accuracy"] == 0.5 and single["per_class"]["FR-I"]["recall"] == 0
    with pytest.raises(ValueError, match="as many predictions"):
        score(task, ["NONE"], [])


def test_prompts_match_their_snapshot():
    """Wording changes must be deliberate: update prompts.snapshot.json in the same commit."""
    snapshot = json.loads((Path(__file__).parent / "prompts.snapshot.json").read_text())
    assert {t: load_task(t).prompt() for t in list_tasks()} == snapshot


def test_numbered_tasks_rank_numbers_and_read_them_back():
    task = load_task("galaxymnist-zeroshot")
    assert task.answers() == ["0", "1", "2", "3"] and task.read_answer("2") == "edge_on_disk"
    assert task.prompt() == task.question and "Respond with a number" in task.prompt()
    assert load_task("lsbg-zeroshot").read_answer("1") == "LSBG"


def test_the_bootstrap_interval_holds_the_score_and_narrows_with_more_images():
    from benchmarks.metrics import score

    task = load_task("b6")
    rng = np.random.default_rng(0)

    def run(n):
        truths = rng.choice(["FR-I", "FR-II"], n).tolist()
        predictions = [t if rng.random() < 0.7 else ("FR-II" if t == "FR-I" else "FR-I") for t in truths]
        return score(task, truths, predictions)

    small, large = run(50), run(2000)
    for m in (small, large):
        low, high = m["macro_f1_ci"]
        assert low <= m["macro_f1"] <= high
    assert (large["macro_f1_ci"][1] - large["macro_f1_ci"][0]) < (
        small["macro_f1_ci"][1] - small["macro_f1_ci"][0]
    ) / 3
    assert 0.66 < large["macro_f1"] < 0.74
    perfect = score(task, ["FR-I", "FR-II"] * 10, ["FR-I", "FR-II"] * 10)
    assert perfect["macro_f1_ci"] == [1.0, 1.0]


def test_the_vectorised_bootstrap_macro_f1_is_sklearns_on_each_resample():
    from sklearn.metrics import f1_score

    from benchmarks.metrics import UNPARSED, bootstrap_ci

    task = load_task("b6")
    rng = np.random.default_rng(3)
    truths = rng.choice(list(task.options), 40).tolist()
    predictions = rng.choice([*task.options, UNPARSED], 40).tolist()
    # one resample that is the data itself: the interval collapses onto sklearn's macro-F1
    picks = np.random.default_rng(0).integers(0, 40, (1, 40))[0]
    expected = f1_score([truths[i] for i in picks], [predictions[i] for i in picks], labels=list(task.options),
                        average="macro", zero_division=0)  # fmt: skip
    assert bootstrap_ci(task, truths, predictions, resamples=1) == pytest.approx([expected, expected])


def test_context_paragraphs_precede_the_question_as_seed_003_asks():
    for task_id in ("b1", "b2", "b3", "b4", "b5", "b6", "galaxymnist", "lsbg"):
        task = load_task(task_id)
        asked = task.with_context().prompt()
        assert asked.startswith(f"Context: {task.context}\n\nQuestion: {task.question}")
        assert asked.endswith(task.prompt().split("\n")[-1])  # the options line is unchanged
        assert all(
            option.lower() in task.context.lower()
            for option in task.classes
            if task_id != "b3" and task_id != "b4"
        )
    with pytest.raises(ValueError, match="no context"):
        load_task("galaxymnist-zeroshot").with_context()  # its question holds its own definitions
