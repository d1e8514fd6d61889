"""`astrovlm serve`: an OpenAI-compatible HTTP API over the assistant (FastAPI + uvicorn).

    astrovlm serve --port 8000 [--api-key KEY] [--allow-images-from DIR]

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="KEY")
    client.chat.completions.create(model="astrovlm-smollm2", stream=True, messages=[{"role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
                    {"type": "text", "text": "What is this?"}]}])

`/v1/models` and `/v1/chat/completions` (stream or not, `tools` with native `tool_calls` back: the client
runs its tools, as with any OpenAI server). Images come as data URIs; local paths (plain or file://)
only from folders named with --allow-images-from; remote URLs are refused (the server fetches nothing).

Limits, each answered with OpenAI's error JSON and a 4xx: body size (413), JSON (400), content type
(415), the request's form (400), images (400: not an image, too many pixels, too many images), API key
(401). One reply is generated at a time; up to `max_queue` more wait, and past that a request gets 429
at once with Retry-After instead of piling up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import compute
from app.assistant import Assistant, TextDelta, ToolCall, TurnEnd
from app.images import ChatImage
from data_builders.io import ImageReadError, ReadLimits
from vlm.tool_grammar import schema_error

log = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    api_key: str | None = None
    max_body_bytes: int = 20 * 2**20
    max_images: int = 8
    max_image_pixels: int = 4096 * 4096
    max_new_tokens: int = 1024  # the most a request may ask for
    max_queue: int = 16  # requests waiting for the model; more get 429
    allowed_image_dirs: list[Path] = field(default_factory=list)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


# ----------------------------------------------------------------------------- the request's form


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Strict):
    url: str


class ContentPart(_Strict):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class FunctionCall(_Strict):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionSpec(_Strict):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class ToolSpec(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    tools: list[ToolSpec] | None = None


# ----------------------------------------------------------------------------- the server


class Server:
    def __init__(self, assistant: Assistant, config: ServerConfig | None = None):
        self.assistant, self.config = assistant, config or ServerConfig()
        self.model_name = assistant.backend.model_name
        self._waiting = 0
        self._counter_lock = threading.Lock()
        self.app = self._build_app()

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="astrovlm", docs_url=None, redoc_url=None)

        @app.exception_handler(ApiError)
        async def api_error(request: Request, exc: ApiError):
            return _error(exc.status, exc.message, exc.kind, exc.headers)

        @app.get("/v1/models")
        async def models(request: Request):
            self._authorise(request)
            return {
                "object": "list",
                "data": [{"id": self.model_name, "object": "model", "created": 0, "owned_by": "astrovlm"}],
            }

        @app.post("/v1/chat/completions")
        async def completions(request: Request):
            self._authorise(request)
            body = await self._read_body(request)
            chat = _parse(body)
            history = self._history(chat)
            tools = _checked_tools(chat.tools)
            limit = min(chat.max_completion_tokens or chat.max_tokens or 256, self.config.max_new_tokens)
            options = {"max_new_tokens": limit, "temperature": chat.temperature, "tools": tools}
            self._check_queue()
            if chat.stream:
                include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
                return StreamingResponse(
                    self._sse(history, options, include_usage), media_type="text/event-stream"
                )
            return self._completion(await asyncio.wrap_future(self._submit(self._run_all, history, options)))

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
        async def unknown(path: str):
            return _error(
                404,
                f"no such endpoint /{path}; this server has /v1/models and /v1/chat/completions",
                "not_found",
            )

        return app

    # ------------------------------------------------------------------------- checks

    def _authorise(self, request: Request) -> None:
        if self.config.api_key is None:
            return
        if request.headers.get("authorization", "") != f"Bearer {self.config.api_key}":
            raise ApiError(
                401, "missing or wrong API key (send Authorization: Bearer KEY)", "authentication_error"
            )

    async def _read_body(self, request: Request) -> bytes:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            raise ApiError(415, f"content type must be application/json, got {content_type or 'none'!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.config.max_body_bytes:
            raise ApiError(
                413, f"request body of {declared} bytes is over the limit of {self.config.max_body_bytes}"
            )
        body = bytearray()
        async for chunk in request.stream():  # a chunked body is counted as it arrives
            body += chunk
            if len(body) > self.config.max_body_bytes:
                raise ApiError(413, f"request body is over the limit of {self.config.max_body_bytes} bytes")
        return bytes(body)

    def _check_queue(self) -> None:
        if self._waiting > self.config.max_queue:  # one generating + max_queue waiting
            raise ApiError(
                429,
                "the server is busy: too many requests waiting; retry shortly",
                "rate_limit_exceeded",
                {"Retry-After": "2"},
            )

    def _history(self, chat: ChatRequest) -> list[dict]:
        history, images = [], 0
        for number, message in enumerate(chat.messages):
            where = f"messages[{number}]"
            entry: dict = {"role": message.role}
            if isinstance(message.content, list):
                parts = []
                for k, part in enumerate(message.content):
                    if part.type == "text":
                        parts.append({"type": "text", "text": part.text or ""})
                        continue
                    images += 1
                    if images > self.config.max_images:
                        raise ApiError(400, f"more than {self.config.max_images} images in one request")
                    if part.image_url is None:
                        raise ApiError(400, f"{where}.content[{k}]: an image_url part needs image_url.url")
                    parts.append(
                        {"type": "image", "image": self._image(part.image_url.url, f"{where}.content[{k}]")}
                    )
                entry["content"] = parts
            else:
                entry["content"] = message.content or ""
            if message.role == "assistant" and message.tool_calls:
                entry["tool_calls"] = [
                    {"id": c.id, "name": c.function.name, "arguments": _json_or_text(c.function.arguments)}
                    for c in message.tool_calls
                ]
            if message.role == "tool":
                entry["tool_call_id"] = message.tool_call_id or ""
                if isinstance(entry["content"], str):
                    entry["content"] = _json_or_text(entry["content"])
                    if not isinstance(entry["content"], dict):
                        entry["content"] = str(message.content or "")
            history.append(entry)
        if history[-1]["role"] not in ("user", "tool"):
            raise ApiError(400, "the last message must be from the user or a tool")
        return history

    def _image(self, url: str, where: str) -> ChatImage:
        limits = ReadLimits(max_bytes=self.config.max_body_bytes, max_pixels=self.config.max_image_pixels)
        try:
            if url.startswith("data:"):
                header, _, payload = url.partition(",")
                if ";base64" not in header:
                    raise ApiError(400, f"{where}: a data URI image must be base64-encoded")
                try:
                    raw = base64.b64decode(payload, validate=True)
                except (binascii.Error, ValueError):
                    raise ApiError(400, f"{where}: the data URI is not valid base64") from None
                return ChatImage.read(raw, name=where, limits=limits)
            parsed = urlparse(url)
            if parsed.scheme in ("http", "https"):
                raise ApiError(
                    400, f"{where}: remote image URLs are not fetched; send the image as a data URI"
                )
            path = Path(unquote(parsed.path) if parsed.scheme == "file" else url)
            return ChatImage.read(self._allowed_path(path, where), limits=limits)
        except ImageReadError as exc:
            raise ApiError(400, f"{where}: not a readable image: {' '.join(str(exc).split())}") from None

    def _allowed_path(self, path: Path, where: str) -> Path:
        if not self.config.allowed_image_dirs:
            raise ApiError(
                400,
                f"{where}: local image paths are not allowed on this server (start it with --allow-images-from DIR)",
            )
        resolved = path.resolve()  # symlinks and .. resolved before the check
        if not any(resolved.is_relative_to(d.resolve()) for d in self.config.allowed_image_dirs):
            raise ApiError(
                403, f"{where}: {path} is outside the folders this server may read", "permission_error"
            )
        return resolved

    # ------------------------------------------------------------------------- answering

    def _submit(self, work, *args) -> Future:
        """`work` queued on the model thread (app/compute.py), counted as waiting until it has run."""
        with self._counter_lock:
            self._waiting += 1
        future = compute.submit(work, *args)
        future.add_done_callback(lambda _: self._leave())
        return future

    def _leave(self) -> None:
        with self._counter_lock:
            self._waiting -= 1

    def _events(self, history: list[dict], options: dict, cancelled: threading.Event):
        for event in self.assistant.respond(history, **options):  # on the model thread: one at a time
            yield event
            if cancelled.is_set():
                return

    def _run_all(self, history, options) -> list:
        return list(self._events(history, options, threading.Event()))

    def _completion(self, events: list) -> dict:
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        calls = [e for e in events if isinstance(e, ToolCall)]
        end = next((e for e in events if isinstance(e, TurnEnd)), TurnEnd("stop"))
        message = {"role": "assistant", "content": text or (None if calls else "")}
        if calls:
            message["tool_calls"] = [_tool_call_json(c) for c in calls]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": end.finish_reason}],
            "usage": _usage(end),
        }

    async def _sse(self, history, options, include_usage: bool):
        """Server-sent events: the model thread hands the events over a queue; a client that goes away
        cancels the reply at its next token."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        done = object()

        def produce():
            try:
                for event in self._events(history, options, cancelled):
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except Exception as exc:  # reported to the client as the stream's last event
                log.exception("generation failed")
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            body = {
                "id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": self.model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra,
            }  # fmt: skip
            return f"data: {json.dumps(body)}\n\n"

        self._submit(produce)
        try:
            yield chunk({"role": "assistant", "content": ""})
            calls = 0
            while (event := await queue.get()) is not done:
                if isinstance(event, Exception):
                    yield f"data: {json.dumps({'error': {'message': f'generation failed: {event}', 'type': 'server_error'}})}\n\n"
                elif isinstance(event, TextDelta):
                    yield chunk({"content": event.text})
                elif isinstance(event, ToolCall):
                    yield chunk({"tool_calls": [{"index": calls, **_tool_call_json(event)}]})
                    calls += 1
                elif isinstance(event, TurnEnd):
                    yield chunk({}, event.finish_reason)
                    if include_usage:
                        body = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                                "model": self.model_name, "choices": [], "usage": _usage(event)}  # fmt: skip
                        yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            cancelled.set()


def _parse(body: bytes) -> ChatRequest:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ApiError(400, f"invalid request: {problems}") from None


def _checked_tools(tools: list[ToolSpec] | None) -> list[dict] | None:
    """The request's tools as dicts, each one's parameters a JSON schema that calls can be decoded under."""
    if not tools:
        return None
    dumped, names = [t.model_dump() for t in tools], set()
    for number, tool in enumerate(dumped):
        name = tool["function"]["name"]
        if not name or name in names:
            raise ApiError(400, f"tools[{number}].function.name {name!r} is empty or offered twice")
        names.add(name)
        if error := schema_error(tool):
            raise ApiError(400, f"tools[{number}].function.parameters is not a usable JSON schema: {error}")
    return dumped


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


def _tool_call_json(call: ToolCall) -> dict:
    arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def _usage(end: TurnEnd) -> dict:
    return {
        "prompt_tokens": end.prompt_tokens,
        "completion_tokens": end.completion_tokens,
        "total_tokens": end.prompt_tokens + end.completion_tokens,
    }


def _error(status: int, message: str, kind: str, headers=None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": status}}, status_code=status, headers=headers
    )


def serve(server: Server, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(server.app, host=host, port=port, log_level="warning")
