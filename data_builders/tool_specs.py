"""The tools the assistant may call, as OpenAI-style function schemas.

One source of truth for three users: the conversation builders (tool-call training data), the chat
template (tools listed in the system prompt) and `app/tools.py`, which implements and validates them.
"""

from __future__ import annotations

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


def openai_tools(names: list[str] | None = None) -> list[dict]:
    """The specs in the `tools=` form of the OpenAI chat API."""
    names = list(TOOL_SPECS) if names is None else names
    unknown = sorted(set(names) - set(TOOL_SPECS))
    if unknown:
        raise ValueError(f"unknown tools {unknown}; valid: {sorted(TOOL_SPECS)}")
    return [{"type": "function", "function": {"name": n, **TOOL_SPECS[n]}} for n in names]
