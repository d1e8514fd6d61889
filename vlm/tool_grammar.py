"""Tool calls that always parse: once a reply opens a tool call, it is decoded under a grammar.

    guide = ToolCallGrammar(tokenizer, vocab_size).guide(tools)   # tools: OpenAI `tools=` dicts
    logits = guide.constrain(logits)                              # before picking each token
    guide.accept(token)                                           # after

Free text is left alone. After the model writes "<tool_call>", only tokens that keep the call on the
processor's format (`<tool_call>{"name": NAME, "arguments": {...}}</tool_call>`, json.dumps spacing)
with NAME one of the offered tools and arguments valid under its JSON schema can follow. A small model
then still chooses whether to call a tool and which one, but can no longer invent a tool, misspell an
argument or loop inside a number. The grammar engine is llguidance (the one vLLM and llama.cpp use);
its tokenizer view is built once per engine (~1 s) and a grammar per tool list (milliseconds).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import torch
from llguidance import LLMatcher, StructTag
from llguidance.hf import from_tokenizer
from transformers import PreTrainedTokenizerBase

from vlm.processor import TOOL_CALL

log = logging.getLogger(__name__)

OPEN_TAG, CLOSE_TAG = TOOL_CALL.split("{}")
# what json.dumps writes by default, as the data builders and format_tool_call do; no free whitespace
LARK_OPTIONS = "%llguidance {}"
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class ToolCallGrammar:
    """The tokenizer as the grammar engine sees it; `guide(tools)` starts one reply's guide."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, stop_ids: frozenset[int] = frozenset()
    ):
        self.vocab_size = vocab_size  # of the LM's logits
        # llguidance allows its end-of-sequence token only where the grammar may end: the end of turn.
        # "<image>" may lie past the LM's vocabulary (it never is a logit): the grammar counts it anyway.
        self.tokenizer = from_tokenizer(
            tokenizer, n_vocab=max(vocab_size, len(tokenizer)), eos_token=sorted(stop_ids) or None
        )

    def guide(self, tools: list[dict]) -> ToolCallGuide:
        return ToolCallGuide(LLMatcher(self.tokenizer, tool_call_grammar(tools)))


def tool_call_grammar(tools: list[dict]) -> str:
    """A Lark grammar: any text, in which every "<tool_call>" opens a call of one of `tools`."""
    tags = []
    for tool in tools:
        function = tool.get("function", tool)  # OpenAI's {"type": "function", "function": {...}} or bare
        prefix = json.dumps({"name": function["name"], "arguments": None})[: -len("null}")]
        schema = {**(function.get("parameters") or {"type": "object"}), "x-guidance": JSON_STYLE}
        tags.append(StructTag(trigger=OPEN_TAG, begin=OPEN_TAG + prefix, grammar=schema, end="}" + CLOSE_TAG))
    if not tags:
        raise ValueError("a tool-call grammar needs at least one tool")
    # "<tool_call>" is plain text to SmolLM2's tokenizer (five tokens), not a special token
    grammar = StructTag.to_grammar(tags, assume_special=False)
    # Outside a call, any token goes, even one that is part of a character (byte-level BPE): unguided.
    assert grammar.startswith(LARK_OPTIONS), "llguidance's struct-tag grammar changed its header"
    return grammar.replace(LARK_OPTIONS, '%llguidance {"allow_invalid_utf8": true}', 1)


def schema_error(tool: dict) -> str | None:
    """Why the grammar cannot follow this tool's parameters (not a JSON schema llguidance compiles), or None."""
    error = LLMatcher.validate_grammar(tool_call_grammar([tool]))
    if not error:
        return None
    first = error.strip().splitlines()[0]
    return first.split(": ", 1)[1] if first.startswith("at ") and ": " in first else first


class ToolCallGuide:
    """One reply's place in the grammar: masks the logits of the next token, follows the chosen ones."""

    def __init__(self, matcher: LLMatcher):
        if matcher.is_error():
            raise ValueError(f"the tools' JSON schemas give no valid grammar: {matcher.get_error()}")
        self.matcher = matcher

    def constrain(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits of the next token with every token the grammar forbids at -inf."""
        if self.matcher.is_error():  # never expected; the reply goes on unguided rather than stop
            return logits
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[: logits.shape[-1]].astype(bool)
        if allowed.all():
            return logits
        return logits.masked_fill(~torch.from_numpy(allowed), float("-inf"))

    def accept(self, token: int) -> None:
        if not self.matcher.is_error() and not self.matcher.consume_token(token):
            log.warning("tool-call grammar refused token %d (%s); the reply goes on unguided", token,
                        self.matcher.get_error())  # fmt: skip
