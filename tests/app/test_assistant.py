import itertools
import json

import pytest

from app.assistant import (
    Assistant,
    OpenAIBackend,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEnd,
    conversation_images,
    offered_names,
    openai_messages,
    parse_tool_calls,
    user_message,
)
from app.examples import EXAMPLES
from app.images import ChatImage
from app.server import Server
from tests.app.conftest import UvicornThread


def ids():
    return (f"call_{i}" for i in itertools.count())


def test_tool_calls_are_parsed_from_the_local_models_format():
    text = '<tool_call>{"name": "detect_sources", "arguments": {"min_score": 0.7}}</tool_call>'
    [call] = parse_tool_calls(text, ids())
    assert (call.name, call.arguments) == ("detect_sources", {"min_score": 0.7})
    two = parse_tool_calls(text + '\n<tool_call>{"name": "image_stats", "arguments": {}}</tool_call>', ids())
    assert [c.name for c in two] == ["detect_sources", "image_stats"] and two[0].id != two[1].id
    cut = parse_tool_calls('<tool_call>{"name": "image_stats", "argu', ids())  # max_new_tokens hit
    assert cut[0].name == "" and cut[0].arguments.startswith('{"name"')
    assert parse_tool_calls("<tool_call>[1, 2]</tool_call>", ids())[0].arguments == "[1, 2]"
    offered = [{"type": "function", "function": {"name": "image_stats"}}, {"name": "hitl_next"}]
    assert offered_names(offered) == {"image_stats", "hitl_next"}


def test_messages_go_to_an_openai_api_in_its_own_form():
    image = ChatImage.read(EXAMPLES[0].path)
    history = [
        user_message(image, "Detect the sources."),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "name": "detect_sources", "arguments": {}}],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "detect_sources", "content": {"detections": []}},
    ]
    user, call, result = openai_messages(history)
    assert user["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert user["content"][1] == {"type": "text", "text": "Detect the sources."}
    assert (
        call["tool_calls"][0]["function"] == {"name": "detect_sources", "arguments": "{}"}
        and call["content"] is None
    )
    assert result == {"role": "tool", "tool_call_id": "c1", "content": '{"detections": []}'}
    assert conversation_images(history) == [image]


def test_the_local_model_answers_and_the_history_records_the_turn(assistant):
    history = [user_message(ChatImage.read(EXAMPLES[4].path), "Describe this image in one sentence.")]
    events = list(assistant.respond(history, max_new_tokens=12))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    end = events[-1]
    assert isinstance(end, TurnEnd) and end.finish_reason in ("stop", "length") and text
    assert end.prompt_tokens > 16 and 0 < end.completion_tokens <= 12
    assert history[-1] == {"role": "assistant", "content": text}


def test_a_tool_run_on_request_is_recorded_as_a_call_and_the_model_answers_from_it(assistant):
    image = ChatImage.read(EXAMPLES[0].path)
    history = [user_message(image, "Run detect_sources on the image.")]
    events = list(assistant.run_tool(history, "detect_sources", {"min_score": 0.5}, max_new_tokens=12))
    call, result = events[0], events[1]
    assert isinstance(call, ToolCall) and isinstance(result, ToolResult) and result.output.ok
    assert isinstance(events[-1], TurnEnd)
    roles = [m["role"] for m in history]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert history[1]["tool_calls"][0]["name"] == "detect_sources"
    assert history[2]["content"]["detections"] == result.output.result["detections"]
    assert history[3]["content"] == "".join(e.text for e in events if isinstance(e, TextDelta))


def test_a_failed_tool_run_ends_the_turn_with_its_error_recorded(assistant):
    history = [user_message("Run image_stats.")]  # no image in the conversation
    events = list(assistant.run_tool(history, "image_stats", {}))
    assert "upload one first" in events[1].output.result["error"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]


def test_an_openai_compatible_backend_runs_the_same_tools(engine, runner):
    """The chat on an OpenAI-compatible API (here `astrovlm serve` on loopback): the tool runs here, its
    result goes to the API as a `tool` message, and the API's model answers from it."""
    from app.assistant import LocalBackend

    server = Server(Assistant(LocalBackend(engine, list_tools=True)))
    with UvicornThread(server.app) as url:
        remote = Assistant(OpenAIBackend(f"{url}/v1", None, "astrovlm-smollm2"), runner)
        history = [user_message(ChatImage.read(EXAMPLES[1].path), "What are the statistics of this image?")]
        events = list(remote.run_tool(history, "image_stats", {}, max_new_tokens=12))
    assert events[1].output.result["centre"] == pytest.approx({"ra_deg": 187.70, "dec_deg": 12.39}, abs=0.01)
    end = events[-1]
    assert isinstance(end, TurnEnd) and end.prompt_tokens > 0 and end.completion_tokens > 0
    assert json.loads(json.dumps(history[2]["content"])) == events[1].output.result
    assert history[-1]["role"] == "assistant" and history[-1]["content"]
