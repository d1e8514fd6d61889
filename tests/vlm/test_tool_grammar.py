"""Guided tool calls: the grammar accepts exactly the processor's call format for the offered tools, and
a decoder that would write an invented tool or bad arguments is steered to a valid call.

The decoder here is a stand-in for a model with fixed wishes: each step it favours the next token of a
text it "wants" to write. Greedy picking under the guide is the engine's loop (Engine._tokens); the
engine itself is tested with the tiny random model, and with the real default in a slow test.
"""

import json

import pytest
import test_vlm_model
import torch
from jsonschema import Draft202012Validator
from test_engine import tiny_engine
from test_vlm_model import images, user

from app.tools import ToolRunner
from data_builders.tool_specs import ALL_TOOL_SPECS, openai_tools
from vlm.engine import EngineConfig
from vlm.processor import IMAGE_TOKEN, format_tool_call
from vlm.tool_grammar import ToolCallGrammar, schema_error, tool_call_grammar

tokenizer = test_vlm_model.tokenizer  # the fixture: a small byte-level BPE with SmolLM2's special tokens
TOOLS = openai_tools(list(ALL_TOOL_SPECS))
VALID_ARGUMENTS = {  # one valid call per tool, keys in the order of its schema
    "detect_sources": {"min_score": 0.25, "image_index": 1},
    "classify_morphology": {"scheme": "radio-b6"},
    "image_stats": {},
    "find_similar": {"k": 3},
    "hitl_start": {"session": "lens-hunt_1", "target": "strong lenses", "alpha": 0.5},
    "hitl_next": {"session": "lens-hunt_1"},
    "hitl_label": {"session": "lens-hunt_1", "labels": {"a.png": True, "b.png": False}},
    "hitl_export": {"session": "lens-hunt_1", "format": "parquet"},
}


@pytest.fixture(scope="module")
def grammar(tokenizer):
    vocab = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)  # the LM's vocabulary, as in tiny_model
    return ToolCallGrammar(tokenizer, vocab, frozenset({tokenizer.eos_token_id}))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def decode_wanting(grammar, tokenizer, wanted: str, guided: bool, steps: int = 120) -> str:
    """Greedy decoding by a 'model' that puts 8 more logit on the next token of `wanted` (then on the
    end of turn) than on any other, with noise; under the guide when `guided`."""
    target = encode(tokenizer, wanted) + [tokenizer.eos_token_id]
    noise = torch.Generator().manual_seed(0)
    guide = grammar.guide(TOOLS) if guided else None
    out: list[int] = []
    for _ in range(steps):
        logits = torch.randn(grammar.vocab_size, generator=noise)
        written = tokenizer.decode(out)
        # the wanted text's next token after what is written so far (re-tokenised: the guide may steer)
        rest = wanted[len(written) :] if wanted.startswith(written) else ""
        nxt = encode(tokenizer, rest)[0] if rest else tokenizer.eos_token_id
        logits[nxt] += 8
        if guide is not None:
            logits = guide.constrain(logits)
        token = int(logits.argmax())
        if guide is not None:
            guide.accept(token)
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
    assert target  # the wanted text is tokenisable
    return tokenizer.decode(out)


def parse_call(text: str) -> dict:
    body = text.split("<tool_call>", 1)[1].rsplit("</tool_call>", 1)[0]
    return json.loads(body)


def test_the_grammar_accepts_every_offered_call_as_the_processor_writes_it(grammar, tokenizer):
    assert set(VALID_ARGUMENTS) == set(ALL_TOOL_SPECS)
    for name, arguments in VALID_ARGUMENTS.items():
        text = f"Let me check. {format_tool_call({'name': name, 'arguments': arguments})}"
        tokens = encode(tokenizer, text) + [tokenizer.eos_token_id]
        assert grammar.guide(TOOLS).matcher.validate_tokens(tokens) == len(tokens), name


@pytest.mark.parametrize(
    "bad",
    [
        '<tool_call>{"name": "find_galaxies", "arguments": {}}</tool_call>',  # no such tool
        '<tool_call>{"name": "detect_sources", "arguments": {"threshold": 0.5}}</tool_call>',  # no such argument
        '<tool_call>{"name": "detect_sources", "arguments": {"min_score": 0.0.0.0}}</tool_call>',  # not a number
        '<tool_call>{"name": "classify_morphology", "arguments": {"scheme": "hubble"}}</tool_call>',  # not in enum
    ],
)
def test_the_grammar_refuses_what_the_tools_cannot_run(grammar, tokenizer, bad):
    tokens = encode(tokenizer, bad)
    assert grammar.guide(TOOLS).matcher.validate_tokens(tokens) < len(tokens)


@pytest.mark.parametrize(
    "wanted",
    [
        'Sure. <tool_call>{"name": "find_galaxies", "arguments": {"n": 3}}</tool_call>',
        '<tool_call>{"name": "detect_sources", "arguments": {"min_score": 0.0.0.0.0.0.0.0.0.0.0.0.0.0',
        '<tool_call>{"name": "classify_morphology", "arguments": {"scheme": "hubble"}}</tool_call>',
    ],
)
def test_a_decoder_that_wants_a_bad_call_writes_a_valid_one_under_the_guide(grammar, tokenizer, wanted):
    assert decode_wanting(grammar, tokenizer, wanted, guided=False).startswith(wanted[:40])  # it would
    text = decode_wanting(grammar, tokenizer, wanted, guided=True)
    call = parse_call(text)
    assert call["name"] in ALL_TOOL_SPECS
    assert not list(
        Draft202012Validator(ALL_TOOL_SPECS[call["name"]]["parameters"]).iter_errors(call["arguments"])
    )
    assert "</tool_call>" in text  # closed: the end of turn is refused inside a call


def test_image_index_is_bounded_by_the_images_of_the_conversation(grammar, tokenizer):
    one_image = ToolRunner(allowed=("detect_sources",)).specs(n_images=1)

    def accepted(index: int) -> bool:
        call = format_tool_call({"name": "detect_sources", "arguments": {"image_index": index}})
        tokens = encode(tokenizer, call) + [tokenizer.eos_token_id]
        return grammar.guide(one_image).matcher.validate_tokens(tokens) == len(tokens)

    assert accepted(0) and not accepted(1)
    assert "maximum" not in ALL_TOOL_SPECS["detect_sources"]["parameters"]["properties"]["image_index"]


def test_free_text_is_left_alone(grammar, tokenizer):
    wanted = "An FR-II radio galaxy: two lobes <brighter> at their ends {and a core}."
    assert decode_wanting(grammar, tokenizer, wanted, guided=True) == wanted


def test_tools_whose_schemas_are_not_objects_are_refused_or_compile(grammar):
    with pytest.raises(ValueError, match="at least one tool"):
        tool_call_grammar([])
    bare = [{"name": "ping", "description": "no parameters"}]  # the function dict alone, no parameters
    assert grammar.guide(bare).matcher.validate_tokens([]) == 0
    assert schema_error(bare[0]) is None
    assert (
        schema_error({"name": "f", "parameters": {"type": "strin"}})
        == "failed to compile JSON schema: Invalid type: strin"
    )


def test_the_engine_leaves_an_answer_without_tool_calls_as_it_was(tokenizer):
    conversation = [user("Find the sources.", images(1))]
    tools = openai_tools(["image_stats"])  # the tiny tokenizer spends a token on every few characters
    unguided = tiny_engine(tokenizer, EngineConfig(dtype="float32", guided_tool_calls=False))
    expected = unguided.chat(conversation, max_new_tokens=24, tools=tools, stream=False).text
    assert "<tool_call>" not in expected  # the tiny random model opens no call
    engine = tiny_engine(tokenizer)
    assert engine.chat(conversation, max_new_tokens=24, tools=tools, stream=False).text == expected
    assert engine._tool_grammar is not None and unguided._tool_grammar is None
    assert engine._tool_grammar.vocab_size == engine.lm.config.vocab_size

    # guided without being listed, as the chat runs the shipped model: the prompt has no tool list
    plain = engine.chat(conversation, max_new_tokens=4, stream=False)
    guided = engine.chat(conversation, max_new_tokens=4, guided_tools=TOOLS, stream=False)
    assert guided.prompt_tokens == plain.prompt_tokens and guided.text == plain.text
