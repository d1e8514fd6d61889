"""The one engine behind the chat UI and the server: a conversation turn, streamed, with tool calls.

    assistant = Assistant(LocalBackend.load(), ToolRunner())          # or OpenAIBackend(url, key, "gpt-4o")
    history = [user_message(ChatImage.read("field.fits"), "Detect the sources.")]
    for event in assistant.respond(history):
        ...   # TextDelta (stream it), ToolCall, ToolResult (show it), TurnEnd (finish reason)
    # history now also holds the assistant's tool call, the tool's result and the answer

A turn runs the backend; a reply that calls tools (the local model writes `<tool_call>{json}</tool_call>`,
an OpenAI-compatible backend answers with native `tool_calls`) has each call run by the ToolRunner, its
result appended as a `tool` message, and the backend runs again to answer from it, up to
`max_tool_rounds` times. Without a runner (the HTTP server: the client runs its tools) the turn ends at
the call, with finish reason "tool_calls" (a call to a tool the client did not offer stays text).
`run_tool` is the same from a person's request (a UI button): the call is recorded as if the model had
made it and the model answers from its result.

Messages are OpenAI-style dicts; image parts hold ChatImage objects ({"type": "image", "image": ...}).
The local model reads each image as it is shown (ChatImage.model_view: same stretch, model's size); an
OpenAI-compatible backend gets the shown picture as a PNG data URI.
"""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from app.images import ChatImage
from app.tools import ToolOutput, ToolRunner

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


# ----------------------------------------------------------------------------- events


@dataclass
class TextDelta:
    text: str


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict | str  # a str when the model wrote arguments that are not a JSON object


@dataclass
class ToolResult:
    call: ToolCall
    output: ToolOutput


@dataclass
class TurnEnd:
    finish_reason: str  # "stop" | "length" | "tool_calls" | "cancelled"
    notice: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Finish:
    """A backend's last item: why it stopped and what it used."""

    reason: str
    notice: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def user_message(*parts) -> dict:
    """A user message from ChatImages and strings, in order."""
    content = [
        {"type": "image", "image": p} if isinstance(p, ChatImage) else {"type": "text", "text": str(p)}
        for p in parts
    ]
    return {"role": "user", "content": content}


def conversation_images(messages: list[dict]) -> list[ChatImage]:
    """Every image of the conversation in order: what a tool's `image_index` counts."""
    return [
        part["image"]
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image"
    ]


def offered_names(tools: list[dict]) -> set[str]:
    return {tool.get("function", tool).get("name") for tool in tools}


def parse_tool_calls(text: str, ids: Iterator[str]) -> list[ToolCall]:
    """The calls in a local model's reply: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
    one or more. A call whose JSON does not parse is kept with its raw text, for the runner to refuse."""
    calls = []
    for body in TOOL_CALL_RE.findall(text):
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            calls.append(ToolCall(next(ids), "", body.strip()))
            continue
        if not isinstance(payload, dict):
            calls.append(ToolCall(next(ids), "", body.strip()))
            continue
        calls.append(ToolCall(next(ids), str(payload.get("name", "")), payload.get("arguments", {})))
    return calls


# ----------------------------------------------------------------------------- backends


class LocalBackend:
    """The project's own VLM (vlm.engine.Engine) in this process."""

    name = "local"

    def __init__(self, engine, list_tools: bool = False):
        # The shipped model learned its tools in training (their calls, not their specs): listing the
        # specs in every prompt would cost ~500 tokens of prefill. A server lists the client's tools.
        self.engine, self.list_tools = engine, list_tools

    @classmethod
    def load(cls, adapter_dir=None, config=None, **options) -> LocalBackend:
        """The shipped model (or the adapter in `adapter_dir`) run as `config` (a vlm.engine.EngineConfig)."""
        from vlm.engine import Engine

        return cls(Engine.load(adapter_dir=adapter_dir, config=config), **options)

    @property
    def model_name(self) -> str:
        return "astrovlm-smollm2"

    def _local(self, messages: list[dict]) -> list[dict]:
        size = self.engine.processor.image_size

        def part(p):
            return {**p, "image": p["image"].model_view(size)} if p.get("type") == "image" else p

        return [
            {**m, "content": [part(p) for p in m["content"]]} if isinstance(m.get("content"), list) else m
            for m in messages
        ]

    def stream(self, messages, tools, max_new_tokens: int, temperature: float) -> Iterator:
        reply = self.engine.chat(
            self._local(messages),
            tools=tools if (tools and self.list_tools) else None,
            guided_tools=tools,  # listed or not, its calls are decoded under their schemas
            max_new_tokens=max_new_tokens,
            temperature=temperature,
        )
        try:
            yield from reply
        finally:
            reply.close()  # a stopped turn frees the engine at once
        yield Finish(
            reply.finish_reason or "cancelled", reply.notice, reply.prompt_tokens, reply.completion_tokens
        )


def data_uri(image: ChatImage) -> str:
    buffer = io.BytesIO()
    image.display().save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def openai_messages(messages: list[dict]) -> list[dict]:
    """Our messages in the OpenAI chat API's form: images as PNG data URIs, tool calls and results."""
    out = []
    for m in messages:
        role, content = m["role"], m.get("content")
        if role == "tool":
            text = content if isinstance(content, str) else json.dumps(content)
            out.append({"role": "tool", "tool_call_id": m["tool_call_id"], "content": text})
        elif role == "assistant" and m.get("tool_calls"):
            calls = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {
                        "name": c["name"],
                        "arguments": c["arguments"]
                        if isinstance(c["arguments"], str)
                        else json.dumps(c["arguments"]),
                    },
                }
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": content or None, "tool_calls": calls})
        elif isinstance(content, list):
            parts = [
                {"type": "image_url", "image_url": {"url": data_uri(p["image"])}}
                if p.get("type") == "image"
                else {"type": "text", "text": p["text"]}
                for p in content
            ]
            out.append({"role": role, "content": parts})
        else:
            out.append({"role": role, "content": content})
    return out


class OpenAIBackend:
    """Any OpenAI-compatible chat API (OpenAI's GPT-4o, a vLLM server, `astrovlm serve`), with native
    function calling."""

    name = "openai"

    def __init__(
        self, base_url: str | None, api_key: str | None, model: str, client=None, timeout_s: float = 120
    ):
        from openai import OpenAI

        self.model_name = model
        self.client = client or OpenAI(
            base_url=base_url, api_key=api_key or "none", timeout=timeout_s, max_retries=2
        )

    def stream(self, messages, tools, max_new_tokens: int, temperature: float) -> Iterator:
        options = {"tools": tools} if tools else {}
        response = self.client.chat.completions.create(
            model=self.model_name,
            messages=openai_messages(messages),
            max_tokens=max_new_tokens,
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},
            **options,
        )
        calls: dict[int, dict] = {}
        reason, usage = "stop", None
        try:
            for chunk in response:
                usage = chunk.usage or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                reason = choice.finish_reason or reason
                if choice.delta.content:
                    yield choice.delta.content
                for call in choice.delta.tool_calls or []:
                    entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    entry["id"] = call.id or entry["id"]
                    if call.function is not None:
                        entry["name"] += call.function.name or ""
                        entry["arguments"] += call.function.arguments or ""
        finally:
            response.close()
        for index, entry in sorted(calls.items()):
            try:
                arguments = json.loads(entry["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = entry["arguments"]
            yield ToolCall(entry["id"] or f"call_{index}", entry["name"], arguments)
        prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        yield Finish(reason, None, prompt, completion)


# ----------------------------------------------------------------------------- the assistant


class Assistant:
    def __init__(self, backend, runner: ToolRunner | None = None, max_tool_rounds: int = 3):
        self.backend, self.runner, self.max_tool_rounds = backend, runner, max_tool_rounds
        self._ids = iter(lambda: f"call_{uuid.uuid4().hex[:16]}", None)  # unique across turns and backends

    def respond(
        self,
        history: list[dict],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        tools: list[dict] | None = None,
    ) -> Iterator:
        """Answer the last user (or tool) message of `history`, appending what the assistant and the
        tools add. `tools`: the specs to offer (default: the runner's)."""
        if tools is None and self.runner is not None:
            tools = self.runner.specs(n_images=len(conversation_images(history)))
        for _ in range(self.max_tool_rounds + 1):
            text, calls, finish = "", [], None
            mode = "undecided"  # a reply that opens with <tool_call> is a call and is not shown as text
            for item in self.backend.stream(history, tools, max_new_tokens, temperature):
                if isinstance(item, Finish):
                    finish = item
                elif isinstance(item, ToolCall):
                    calls.append(item)
                else:
                    text += item
                    if mode == "undecided":
                        head = text.lstrip()
                        if head.startswith(TOOL_CALL_OPEN):
                            mode = "call"
                        elif not TOOL_CALL_OPEN.startswith(head):
                            mode = "text"
                            yield TextDelta(text)
                    elif mode == "text":
                        yield TextDelta(item)
            if mode == "call":
                parsed = parse_tool_calls(text, self._ids)
                if self.runner is None and tools and not {c.name for c in parsed} <= offered_names(tools):
                    yield TextDelta(text)  # a call to a tool the client did not offer: it is only text
                else:
                    calls += parsed
                    text = ""
            elif mode == "undecided" and text:  # the reply ended while it still looked like a call
                yield TextDelta(text)
            finish = finish or Finish("stop")
            if not calls:
                history.append({"role": "assistant", "content": text})
                yield TurnEnd(finish.reason, finish.notice, finish.prompt_tokens, finish.completion_tokens)
                return
            history.append(
                {
                    "role": "assistant",
                    "content": text,
                    "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls],
                }
            )
            for call in calls:
                yield call
            if self.runner is None:
                yield TurnEnd("tool_calls", finish.notice, finish.prompt_tokens, finish.completion_tokens)
                return
            for call in calls:
                yield self._run(history, call)
        history.append({"role": "assistant", "content": ""})
        yield TurnEnd("tool_calls", f"stopped after {self.max_tool_rounds} rounds of tool calls")

    def run_tool(self, history: list[dict], name: str, arguments: dict, **options) -> Iterator:
        """A tool run at a person's request, recorded as the model's call; the model then answers."""
        if self.runner is None:
            raise ValueError("this assistant has no tool runner")
        call = ToolCall(next(self._ids), name, arguments)
        history.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": call.id, "name": name, "arguments": arguments}],
            }
        )
        yield call
        result = self._run(history, call)
        yield result
        if result.output.ok:
            yield from self.respond(history, **options)
        else:
            history.append({"role": "assistant", "content": ""})
            yield TurnEnd("stop")

    def _run(self, history: list[dict], call: ToolCall) -> ToolResult:
        if isinstance(call.arguments, str):
            output = ToolOutput(
                call.name, {}, {"error": f"the arguments are not a JSON object: {call.arguments[:200]!r}"}
            )
        else:
            output = self.runner.run(call.name, call.arguments, conversation_images(history))
        history.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": output.result})
        return ToolResult(call, output)
