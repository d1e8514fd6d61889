"""Free-text answers -> a task's answer, robustly; what cannot be read is reported, never dropped.

    parse_answer(task, "I think it is an FR-II radio galaxy.")    # "FR-II"
    parse_answer(task, "Category 3")                             # the fourth option (seed 001's numbering)
    parse_answer(b1, "Extended sources and diffuse emission.")   # "EXTENDED, DIFFUSE"
    parse_answer(task, "Hmm, hard to say.")                       # None: a parse failure

Options are matched as whole words, case and punctuation aside, with "-", "_" and spaces
interchangeable; a longer option wins over one it contains (DIFFUSE-LARGE over DIFFUSE, FR-II over
FR-I). A single-label answer naming two different options is ambiguous and counts as a failure. For
a task that asks for a number (seed 001's prompts), a bare number or "category N" picks option N,
counting from 0 as those prompts do.
"""

from __future__ import annotations

import re

from benchmarks.tasks import NONE, Task

NUMBERED = re.compile(r"\b(?:category|class|option|answer)?\s*[:#]?\s*(\d+)\b", re.IGNORECASE)


def _normalise(text: str) -> str:
    return " " + re.sub(r"[\s_\-]+", " ", re.sub(r"[^\w\s\-]", " ", text.lower())).strip() + " "


def mentioned(task: Task, text: str) -> list[str]:
    """The task's options named in `text`, in task order; an option inside a longer named one is not
    counted (DIFFUSE within DIFFUSE-LARGE)."""
    haystack = _normalise(text)
    found = []
    for option in sorted(task.options, key=len, reverse=True):
        needle = _normalise(option)
        if needle in haystack:
            found.append(option)
            haystack = haystack.replace(needle, " ")
    return [o for o in task.options if o in found]


def parse_answer(task: Task, text: str) -> str | None:
    """The answer in the task's own form (as Task.truth gives it), or None when it cannot be read."""
    named = mentioned(task, text)
    if task.label_type == "multi":
        classes = [o for o in named if o != NONE]
        if classes:
            return ", ".join(classes)
        return NONE if NONE in named else None
    if len(named) == 1:
        return named[0]
    if not named and task.numbered:
        return _numbered(task, text)
    return None  # two different options: ambiguous


def _numbered(task: Task, text: str) -> str | None:
    numbers = {int(m) for m in NUMBERED.findall(text)}
    if len(numbers) != 1:
        return None
    (n,) = numbers
    return task.options[n] if 0 <= n < len(task.options) else None
