import json

import pytest
import test_vlm_model
from test_vlm_model import tiny_model

from benchmarks.boxes import BoxConfig, held_out, parse_boxes, question, run_boxes, score_boxes
from benchmarks.runner import Generation, OptionScoring
from vlm.engine import Engine, EngineConfig
from vlm.processor import AstroVLMProcessor

tokenizer = test_vlm_model.tokenizer  # the fixture


def test_box_answers_are_read_as_the_q_and_a_sets_write_them():
    assert parse_boxes("[0.10, 0.20, 0.30, 0.40]\n[0.5,0.5,0.9,0.7]") == [
        [0.1, 0.2, 0.3, 0.4],
        [0.5, 0.5, 0.9, 0.7],
    ]
    assert parse_boxes("Here: [0.3, 0.4, 0.1, 1.2]") == [[0.1, 0.4, 0.3, 1.0]]  # corners ordered, clipped
    assert parse_boxes("There are no compact sources in the image.") == []
    assert parse_boxes("It looks lovely.") is None
    assert "compact sources" in question("compact")


def entry(truth, prediction, size=(100, 100)):
    return {"truth": truth, "prediction": prediction, "size": size}


def test_box_scores_are_cocos_map_and_the_best_iou_of_each_true_box():
    a, b = [0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.8]
    perfect = score_boxes([entry([a, b], [b, a]), entry([], [])])
    assert perfect["map_50"] == pytest.approx(1.0) and perfect["mean_best_iou"] == pytest.approx(1.0)
    assert perfect["count_accuracy"] == 1.0 and perfect["parse_failure_rate"] == 0.0
    shifted = [0.15, 0.1, 0.35, 0.3]  # IoU 0.6 with a: a hit at 0.5, a miss at 0.75
    half = score_boxes([entry([a, b], [shifted]), entry([a], None)])
    assert half["mean_best_iou"] == pytest.approx((0.6 + 0 + 0) / 3, abs=1e-3)
    assert 0 < half["map_50"] < 1 and half["map"] < half["map_50"] and half["parse_failure_rate"] == 0.5
    nothing = score_boxes([entry([a], [])])
    assert nothing["map_50"] == 0.0 and nothing["mean_best_iou"] == 0.0


def test_a_boxes_run_asks_the_held_out_records_and_resumes(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    engine = Engine(
        model, AstroVLMProcessor.for_model(tokenizer, model.config), EngineConfig(dtype="float32")
    )
    config = BoxConfig(str(tmp_path / "boxes"), "radio-b3", "compact", n=3)
    metrics = run_boxes(Generation(engine, max_new_tokens=8), config, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "boxes" / "predictions.jsonl").read_text().splitlines()]
    assert metrics["n"] == 3 == len(lines) and all(isinstance(e["raw"], str) for e in lines)
    assert lines[0]["truth"] == held_out("radio-b3", "compact", 1, 0)[2]
    assert 0 <= metrics["map_50"] <= 1 or metrics["map_50"] == -1
    with pytest.raises(ValueError, match="free text"):
        run_boxes(OptionScoring(engine), BoxConfig(str(tmp_path / "x")), progress=False)
    with pytest.raises(ValueError, match="no boxes of class"):
        held_out("radio-b3", "unicorn", 1, 0)
