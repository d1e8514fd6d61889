"""The tools the assistant may call, as OpenAI-style function schemas.

One source of truth for three users: the conversation builders (tool-call training data), the chat
template (tools listed in the system prompt) and `app/tools.py`, which implements and validates them (and
shapes detect_sources' result with `detect_sources_result`, as the training dialogues show it).
TOOL_SPECS are the image tools the training dialogues use; HITL_TOOL_SPECS drive a human-in-the-loop
labelling session over the chat's gallery (app/hitl), offered to the chat and to API models.
"""

from __future__ import annotations

import copy
from collections import Counter

TOOL_SPECS: dict[str, dict] = {
    "detect_sources": {
        "description": "Detect the sources in the current image; returns boxes (pixels), classes and scores.",
        "parameters": {
            "type": "object",
            "properties": {
                "min_score": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
                "image_index": {"type": "integer", "minimum": 0, "default": 0},
            },
            "additionalProperties": False,
        },
    },
    "classify_morphology": {
        "description": "Classify the morphology of the main object in the current image; returns class probabilities.",
        "parameters": {
            "type": "object",
            "properties": {
                "scheme": {"type": "string", "enum": ["radio-b6", "optical-gmnist", "optical-morphology"]},
                "image_index": {"type": "integer", "minimum": 0, "default": 0},
            },
            "required": ["scheme"],
            "additionalProperties": False,
        },
    },
    "image_stats": {
        "description": "Size, bands, background noise, peak and dynamic range of the current image.",
        "parameters": {
            "type": "object",
            "properties": {"image_index": {"type": "integer", "minimum": 0, "default": 0}},
            "additionalProperties": False,
        },
    },
    "find_similar": {
        "description": "Find the k images of the gallery most similar to the current image (LVM features).",
        "parameters": {
            "type": "object",
            "properties": {
                "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
                "image_index": {"type": "integer", "minimum": 0, "default": 0},
            },
            "additionalProperties": False,
        },
    },
}


_SESSION = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "the session's name"}

HITL_TOOL_SPECS: dict[str, dict] = {
    "hitl_start": {
        "description": "Start a human-in-the-loop search of the gallery for objects like the current image "
        "(it is the first positive example); returns the session and its settings.",
        "parameters": {
            "type": "object",
            "properties": {
                "session": _SESSION,
                "target": {"type": "string", "maxLength": 200, "description": "what is searched for"},
                "alpha": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
                "round_size": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
                "image_index": {"type": "integer", "minimum": 0, "default": 0},
            },
            "required": ["session", "target"],
            "additionalProperties": False,
        },
    },
    "hitl_next": {
        "description": "The next gallery images to label in a human-in-the-loop session, by the alpha rule.",
        "parameters": {
            "type": "object",
            "properties": {"session": _SESSION},
            "required": ["session"],
            "additionalProperties": False,
        },
    },
    "hitl_label": {
        "description": "Label gallery images of a session: true for the target, false otherwise.",
        "parameters": {
            "type": "object",
            "properties": {
                "session": _SESSION,
                "labels": {"type": "object", "additionalProperties": {"type": "boolean"}, "minProperties": 1},
            },
            "required": ["session", "labels"],
            "additionalProperties": False,
        },
    },
    "hitl_export": {
        "description": "Export a session's labels and scores to a CSV or Parquet file; returns its path.",
        "parameters": {
            "type": "object",
            "properties": {
                "session": _SESSION,
                "format": {"type": "string", "enum": ["csv", "parquet"], "default": "csv"},
            },
            "required": ["session"],
            "additionalProperties": False,
        },
    },
}
ALL_TOOL_SPECS = {**TOOL_SPECS, **HITL_TOOL_SPECS}


def openai_tools(names: list[str] | None = None) -> list[dict]:
    """The specs in the `tools=` form of the OpenAI chat API (default: the image tools)."""
    names = list(TOOL_SPECS) if names is None else names
    unknown = sorted(set(names) - set(ALL_TOOL_SPECS))
    if unknown:
        raise ValueError(f"unknown tools {unknown}; valid: {sorted(ALL_TOOL_SPECS)}")
    # copies: a caller may narrow a schema for one reply (ToolRunner.specs) without touching the specs
    return [{"type": "function", "function": {"name": n, **copy.deepcopy(ALL_TOOL_SPECS[n])}} for n in names]


def detect_sources_result(detections: list[dict], **details) -> dict:
    """detect_sources' result, in the app and in the training dialogues alike: the totals first (a small LM
    copies a number it can see far more often than it counts a list; the shipped model named the right
    total for 16 of 24 simulated fields with them, 4 without: benchmarks/tool_answers.py), then `details`
    (the detector's name), then the detections ({"label", "box", "score", ...})."""
    counts = dict(sorted(Counter(d["label"] for d in detections).items()))
    return {"sources": len(detections), "counts": counts, **details, "detections": detections}
