"""From a labelled record to training conversations (seed 003's Q&A set), deterministic by seed.

    >>> dialogues = build_dialogues(record, get_family(record.family), seed=0, n=4)
    >>> dialogues[0].turns[0]
    {'from': 'human', 'value': '<image>\\nCan you describe the image content?'}

Kinds of exchange: `describe` (a caption), `classify` (the family's benchmark question with its options),
`presence` (is X in the image: YES/NO), `boxes` (bounding boxes of class X, normalised [x0, y0, x1, y1]),
`count`, and `tool` (the user asks for a tool; the assistant emits a `<tool_call>`, a `tool` turn holds
the `<tool_response>`, the assistant summarises). Wording comes from `templates.yaml`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import yaml

from data_builders.captions import SINGULAR, caption, join_phrases
from data_builders.families import Family
from data_builders.measure import image_stats, significant
from data_builders.records import Record
from data_builders.tool_specs import detect_sources_result

IMAGE_TOKEN = "<image>"
KINDS = ("describe", "classify", "presence", "boxes", "count", "tool")
# Labels that are answers, not things one could point at in the image.
ANSWER_ONLY = {"YES", "NO", "NONE", "ORDINARY", "COMPLEX", "PECULIAR", "ARTEFACT", "LSBG"}


@dataclass
class Dialogue:
    template: str  # e.g. "classify/1+presence/3": which template and phrasing each exchange used
    turns: list[dict]  # {"from": "human" | "gpt" | "tool", "value": str}


@cache
def templates() -> dict:
    return yaml.safe_load((Path(__file__).parent / "templates.yaml").read_text())


def name_of(label: str) -> str:
    return templates()["names"].get(label, label)


def format_box(box, width: int, height: int) -> str:
    return "[{:.2f}, {:.2f}, {:.2f}, {:.2f}]".format(*box.normalised(width, height))


def build_dialogues(
    record: Record,
    family: Family,
    seed: int,
    n: int = 4,
    kinds: tuple[str, ...] = KINDS,
    max_exchanges: int = 3,
) -> list[Dialogue]:
    """`n` dialogues about one record; each has 1..max_exchanges Q&A exchanges, or one tool exchange."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown conversation kinds {sorted(unknown)}; valid: {KINDS}")
    rng = random.Random(f"{seed}:{record.id}")
    makers = {k: MAKERS[k] for k in kinds}
    dialogues = []
    for _ in range(n):
        exchange_kinds = [k for k in makers if k != "tool"]
        if "tool" in makers and (not exchange_kinds or rng.random() < 1 / len(makers)):
            template, turns = _tool(record, family, rng)
        else:
            chosen = rng.sample(exchange_kinds, k=min(rng.randint(1, max_exchanges), len(exchange_kinds)))
            exchanges = [makers[k](record, family, rng) for k in chosen]
            exchanges = [e for e in exchanges if e is not None] or [_describe(record, family, rng)]
            template = "+".join(t for t, _, _ in exchanges)
            turns = [
                t
                for _, q, a in exchanges
                for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})
            ]
        turns[0]["value"] = f"{IMAGE_TOKEN}\n{turns[0]['value']}"
        dialogues.append(Dialogue(template, turns))
    return dialogues


def _pick(rng: random.Random, kind: str, options: list[str]) -> tuple[str, str]:
    i = rng.randrange(len(options))
    return f"{kind}/{i}", options[i]


def _describe(record: Record, family: Family, rng: random.Random):
    template, question = _pick(rng, "describe", templates()["describe"])
    return template, question, caption(record, rng)


def _classify(record: Record, family: Family, rng: random.Random):
    questions = templates()["classify"].get(family.name)
    if not questions or not record.labels:
        return None
    template, question = _pick(rng, "classify", questions)
    options = list(family.classes)
    if family.label_type == "multi" and templates()["multi_none"] not in options:
        options.append(templates()["multi_none"])
    suffix = rng.choice(templates()["options_suffix"]).format(options=", ".join(options))
    answer = ", ".join(label for label in options if label in record.labels) or templates()["multi_none"]
    return template, question + suffix, answer


def _things(record: Record, family: Family) -> list[str]:
    """What presence/boxes/count questions may ask about: source classes, else object classes."""
    if record.boxes:
        return list(family.box_classes) or sorted({b.label for b in record.boxes})
    return [c for c in family.classes if c not in ANSWER_ONLY and "-" not in c[:2]]


def _presence(record: Record, family: Family, rng: random.Random):
    things = _things(record, family)
    if not things:
        return None
    present = {b.label for b in record.boxes} | set(record.labels)
    yes = [t for t in things if t in present]
    no = [t for t in things if t not in present]
    thing = rng.choice(yes if yes and (not no or rng.random() < 0.5) else no)
    template, question = _pick(rng, "presence", templates()["presence"])
    answers = templates()["presence_answer"]["present" if thing in present else "absent"]
    return template, question.format(name=name_of(thing)), rng.choice(answers).format(name=name_of(thing))


def _boxes(record: Record, family: Family, rng: random.Random):
    if not record.boxes:
        return None
    present = sorted({b.label for b in record.boxes})
    absent = [t for t in _things(record, family) if t not in present]
    thing = rng.choice(present if not absent or rng.random() < 0.8 else absent)
    template, question = _pick(rng, "boxes", templates()["boxes"])
    boxes = [b for b in record.boxes if b.label == thing]
    if boxes:
        answer = "\n".join(
            format_box(b, record.width, record.height) for b in sorted(boxes, key=lambda b: (b.y0, b.x0))
        )
    else:
        answer = rng.choice(templates()["boxes_none"]).format(name=name_of(thing))
    return template, question.format(name=name_of(thing)), answer


def _count(record: Record, family: Family, rng: random.Random):
    if not record.boxes:
        return None
    thing = rng.choice(_things(record, family))
    template, question = _pick(rng, "count", templates()["count"])
    return template, question.format(name=name_of(thing)), str(sum(b.label == thing for b in record.boxes))


def _tool_names(record: Record, family: Family) -> list[str]:
    names = ["image_stats", "find_similar"]
    if record.boxes:
        names.append("detect_sources")
    if family.name in ("radio-b6", "optical-gmnist", "optical-morphology") and record.labels:
        names.append("classify_morphology")
    return names


def _tool(record: Record, family: Family, rng: random.Random) -> tuple[str, list[dict]]:
    """A tool exchange whose response is what the tool would return for this record (from its truth)."""
    name = rng.choice(_tool_names(record, family))
    i = rng.randrange(len(templates()["tool_request"][name]))
    request = templates()["tool_request"][name][i]
    summary_template = rng.choice(templates()["tool_summary"][name])
    if name == "detect_sources":
        arguments = {"min_score": 0.5}
        detections = [
            {
                "label": b.label,
                "box": [round(v, 1) for v in (b.x0, b.y0, b.x1, b.y1)],
                "score": round(rng.uniform(0.6, 0.99), 2),
            }
            for b in record.boxes
        ]
        result = detect_sources_result(detections)
        summary = summary_template.format(
            n=len(detections),
            summary=join_phrases(
                [f"{n} {SINGULAR.get(k, (k, k))[n != 1]}" for k, n in result["counts"].items()]
            ),
        )
    elif name == "classify_morphology":
        arguments = {"scheme": family.name}
        top = record.labels[0]
        p_top = round(rng.uniform(0.55, 0.97), 2)
        rest = [c for c in family.classes if c != top]
        shares = np.array([rng.random() for _ in rest])
        shares = (shares / shares.sum() * (1 - p_top)).round(2) if rest else shares
        result = {"probabilities": {top: p_top, **{c: float(s) for c, s in zip(rest, shares)}}}
        summary = summary_template.format(top=top, p=p_top)
    elif name == "image_stats":
        arguments = {}
        result = image_stats(record.image, record.bands)
        result = {k: significant(v) if isinstance(v, float) else v for k, v in result.items()}
        summary = summary_template.format(
            width=result["width"],
            height=result["height"],
            bands=len(result["bands"]),
            noise=result["noise"],
            peak=result["peak"],
            dr=result["dynamic_range"],
        )
    else:  # find_similar over a gallery of the same family; ids stand for gallery entries
        k = rng.choice([3, 5])
        arguments = {"k": k}
        neighbours = [
            {
                "id": f"{family.name}-{rng.randrange(10**6):06d}",
                "similarity": round(0.95 - 0.04 * j - rng.random() * 0.02, 3),
            }
            for j in range(k)
        ]
        result = {"neighbours": neighbours}
        summary = summary_template.format(k=k, ids=", ".join(n["id"] for n in neighbours))
    call = json.dumps({"name": name, "arguments": arguments})
    turns = [
        {"from": "human", "value": request},
        {"from": "gpt", "value": f"<tool_call>{call}</tool_call>"},
        {"from": "tool", "value": f"<tool_response>{json.dumps(result)}</tool_response>"},
        {"from": "gpt", "value": summary},
    ]
    return f"tool:{name}/{i}", turns


MAKERS = {
    "describe": _describe,
    "classify": _classify,
    "presence": _presence,
    "boxes": _boxes,
    "count": _count,
    "tool": None,  # handled in build_dialogues: it is a whole dialogue, not one exchange
}
