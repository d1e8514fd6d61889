"""Conversation builders: deterministic, varied, and answers that are true of the record."""

import json
import random
import re
from collections import Counter

import numpy as np
import pytest

from data_builders.captions import caption
from data_builders.conversations import IMAGE_TOKEN, KINDS, build_dialogues, templates
from data_builders.families import FAMILIES, get_family
from data_builders.records import Box, Record


def simulated(name: str, i: int = 0) -> Record:
    family = get_family(name)
    return family.simulate(
        np.random.default_rng([7, i]), family.default_size if name != "optical-field" else 128, f"{name}-{i}"
    )


def exchanges(dialogue):
    turns = dialogue.turns
    return [(turns[i]["value"], turns[i + 1]["value"]) for i in range(0, len(turns) - 1, 2)]


@pytest.mark.parametrize("name", sorted(n for n, f in FAMILIES.items() if f.simulate))
def test_every_family_gets_well_formed_dialogues(name):
    assert_well_formed(simulated(name))


def test_real_first_images_get_well_formed_dialogues():
    from data_builders.importers import read_first

    record = next(iter(read_first(family="radio-first")))
    assert_well_formed(record)


def assert_well_formed(record: Record):
    dialogues = build_dialogues(record, get_family(record.family), seed=0, n=12)
    assert len(dialogues) == 12
    for d in dialogues:
        assert d.turns[0]["from"] == "human" and d.turns[0]["value"].startswith(IMAGE_TOKEN + "\n")
        assert sum(t["value"].count(IMAGE_TOKEN) for t in d.turns) == 1
        assert d.turns[-1]["from"] == "gpt" and all(t["value"].strip() for t in d.turns)
        assert {t["from"] for t in d.turns} <= {"human", "gpt", "tool"}


def test_deterministic_by_seed_and_varied_across_records():
    record = simulated("radio-b1")
    family = get_family("radio-b1")
    first = build_dialogues(record, family, seed=3, n=6)
    again = build_dialogues(record, family, seed=3, n=6)
    assert [d.turns for d in first] == [d.turns for d in again]
    other_seed = build_dialogues(record, family, seed=4, n=6)
    assert [d.turns for d in first] != [d.turns for d in other_seed]
    templates_used = {
        d.template for i in range(30) for d in build_dialogues(simulated("radio-b1", i), family, 0, 4)
    }
    assert len(templates_used) > 40  # many phrasings and combinations, not one fixed question


def test_classify_answers_are_the_labels_with_benchmark_wording():
    family = get_family("radio-b1")
    for i in range(20):
        record = simulated("radio-b1", i)
        for d in build_dialogues(record, family, seed=i, n=8, kinds=("classify",)):
            question, answer = exchanges(d)[0]
            assert "EXTENDED, DIFFUSE, DIFFUSE-LARGE, NONE" in question
            assert set(answer.split(", ")) == set(record.labels)
    b6 = templates()["classify"]["radio-b6"][0]
    assert b6 == "Which of these morphological classes of radio galaxy do you see in the image?"


def test_box_and_count_answers_match_the_boxes():
    record = Record(
        "r1",
        np.zeros((1, 100, 200), np.float32),
        "radio",
        "radio-b3",
        ("YES",),
        ("I",),
        boxes=(Box("compact", 10, 20, 30, 40), Box("compact", 100, 50, 120, 70), Box("fr-ii", 50, 0, 90, 90)),
    )
    family = get_family("radio-b3")
    seen = set()
    for seed in range(40):
        for d in build_dialogues(record, family, seed, n=4, kinds=("boxes", "count")):
            for (question, answer), template in zip(exchanges(d), d.template.split("+")):
                if "compact" in question and template.startswith("boxes"):
                    assert answer.splitlines() == ["[0.05, 0.20, 0.15, 0.40]", "[0.50, 0.50, 0.60, 0.70]"]
                    seen.add("boxes")
                if "compact" in question and template.startswith("count"):
                    assert answer == "2"
                    seen.add("count")
                if "FR-II" in question and template.startswith("count"):
                    assert answer == "1"
    assert seen == {"boxes", "count"}


def test_presence_answers_are_true():
    family = get_family("radio-b4")
    for i in range(20):
        record = simulated("radio-b4", i)
        present = {b.label for b in record.boxes}
        for d in build_dialogues(record, family, seed=i, n=6, kinds=("presence",)):
            question, answer = exchanges(d)[0]
            label = next(c for c in family.box_classes if templates()["names"][c] in question)
            assert answer.startswith("YES") == (label in present), (question, answer, present)


def test_tool_dialogues_call_known_tools_with_valid_json():
    from data_builders.tool_specs import TOOL_SPECS

    names = set()
    for i in range(15):
        record = simulated("radio-b6", i)
        for d in build_dialogues(record, get_family("radio-b6"), seed=i, n=4, kinds=("tool",)):
            roles = [t["from"] for t in d.turns]
            assert roles == ["human", "gpt", "tool", "gpt"]
            call = json.loads(re.fullmatch(r"<tool_call>(.*)</tool_call>", d.turns[1]["value"]).group(1))
            assert call["name"] in TOOL_SPECS
            names.add(call["name"])
            response = json.loads(
                re.fullmatch(r"<tool_response>(.*)</tool_response>", d.turns[2]["value"]).group(1)
            )
            if call["name"] == "detect_sources":
                assert len(response["detections"]) == len(record.boxes) == response["sources"]
                assert response["counts"] == Counter(b.label for b in record.boxes)
            if call["name"] == "classify_morphology":
                probabilities = response["probabilities"]
                assert max(probabilities, key=probabilities.get) == record.labels[0]
                assert sum(probabilities.values()) == pytest.approx(1.0, abs=0.05)
    assert names == set(TOOL_SPECS)


def test_captions_state_the_class():
    fr2 = next(r for i in range(10) if (r := simulated("radio-b6", i)).labels == ("FR-II",))
    assert "FR-II" in caption(fr2, random.Random(0))
    spiral = next(
        r for i in range(20) if (r := simulated("optical-gmnist", i)).labels == ("unbarred_spiral",)
    )
    assert "spiral" in caption(spiral, random.Random(0))


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="valid"):
        build_dialogues(simulated("radio-b6"), get_family("radio-b6"), 0, kinds=("poetry",))
    assert "tool" in KINDS


def test_image_stats_dialogues_keep_a_radio_noise_in_jansky_readable():
    record = simulated("radio-b6", 0)
    for i in range(40):
        for d in build_dialogues(record, get_family("radio-b6"), seed=i, n=1, kinds=("tool",)):
            if '"image_stats"' in d.turns[1]["value"]:
                response = json.loads(
                    re.fullmatch(r"<tool_response>(.*)</tool_response>", d.turns[2]["value"]).group(1)
                )
                assert 0 < response["noise"] < 1e-2  # Jy/beam, to 4 significant figures
                return
    pytest.fail("no image_stats dialogue in 40 seeds")
