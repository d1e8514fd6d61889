"""Free-text answers: option names in any case and punctuation, longest match first, numbers, failures."""

import dataclasses

import pytest

from benchmarks.parse import parse_answer
from benchmarks.tasks import load_task


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FR-II", "FR-II"),
        ("I think it is an fr-ii radio galaxy.", "FR-II"),
        ("FR I", "FR-I"),
        ("It's an FR-I.", "FR-I"),
        ("Either FR-I or FR-II.", None),  # ambiguous
        ("Hard to say.", None),
        ("", None),
        ("2", None),  # B6 does not ask for a number
    ],
)
def test_single_label_answers(text, expected):
    assert parse_answer(load_task("b6"), text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("EXTENDED, DIFFUSE-LARGE", "EXTENDED, DIFFUSE-LARGE"),
        ("diffuse-large", "DIFFUSE-LARGE"),  # not also DIFFUSE
        ("I see extended and diffuse sources", "EXTENDED, DIFFUSE"),
        ("NONE", "NONE"),
        ("nothing of the sort", None),
    ],
)
def test_multi_label_answers(text, expected):
    assert parse_answer(load_task("b1"), text) == expected


def test_yes_no_and_numbered_answers():
    b3 = load_task("b3")
    assert parse_answer(b3, "Yes.") == "YES" and parse_answer(b3, "no") == "NO"
    gmnist = dataclasses.replace(load_task("galaxymnist"), numbered=True)
    assert parse_answer(gmnist, "Category 3") == "unbarred_spiral"
    assert parse_answer(gmnist, "0") == "smooth_round"
    assert parse_answer(gmnist, "smooth cigar") == "smooth_cigar"
    assert parse_answer(gmnist, "category 7") is None and parse_answer(gmnist, "1 or 2") is None
