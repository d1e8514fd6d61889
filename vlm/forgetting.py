"""Catastrophic forgetting (seed 003): how much general knowledge a fine-tuned LM keeps.

    score = general_knowledge_score(engine)      # {"accuracy": 0.85, "mean_p_correct": 0.61, "n": 40}

The questions (vlm/data/general_knowledge.yaml) are text only, four options each, written for the
project. Each is scored by option log-likelihood (Engine.score_options, no image), so the result does not
depend on how the model phrases an answer; training runs it before and after and reports the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

QUESTIONS_FILE = Path(__file__).parent / "data" / "general_knowledge.yaml"


@dataclass(frozen=True)
class Question:
    question: str
    options: tuple[str, ...]
    answer: str


@cache
def general_knowledge() -> tuple[Question, ...]:
    items = yaml.safe_load(QUESTIONS_FILE.read_text())
    return tuple(Question(q["question"], tuple(q["options"]), q["answer"]) for q in items)


def general_knowledge_score(engine, questions: tuple[Question, ...] | None = None) -> dict:
    """Accuracy (the right option has the highest probability) and the mean probability given to it."""
    questions = questions or general_knowledge()
    right, p_right = 0, 0.0
    for q in questions:
        probs = engine.score_options([], q.question, list(q.options))
        right += max(probs, key=probs.get) == q.answer
        p_right += probs[q.answer]
    return {
        "accuracy": right / len(questions),
        "mean_p_correct": p_right / len(questions),
        "n": len(questions),
    }
