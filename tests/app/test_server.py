"""The OpenAI-compatible server on loopback, driven by the official openai client and by raw HTTP for
what a client library would never send."""

import base64
import json
import threading
import time

import httpx
import openai
import pytest
from openai import OpenAI

from app import compute
from app.assistant import Assistant, LocalBackend
from app.examples import EXAMPLES
from app.server import Server, ServerConfig
from tests.app.conftest import UvicornThread

KEY = "test-key"
QUESTION = "What is in this image? Answer in one sentence."


def png_uri(path=EXAMPLES[4].path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def image_message(url: str, text: str = QUESTION) -> dict:
    return {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
    }


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "galaxy.fits").write_bytes(EXAMPLES[1].path.read_bytes())
    config = ServerConfig(api_key=KEY, max_body_bytes=2 * 2**20, max_queue=1, allowed_image_dirs=[allowed])
    server = Server(Assistant(LocalBackend(engine, list_tools=True)), config)
    with UvicornThread(server.app) as url:
        server.url, server.allowed = url, allowed
        yield server


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list()] == ["astrovlm-smollm2"]


def test_streamed_answer_equals_the_whole_answer(client):
    messages = [image_message(png_uri())]
    whole = client.chat.completions.create(model="astrovlm-smollm2", messages=messages, max_tokens=24)
    answer = whole.choices[0].message.content
    assert answer and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 16 and 0 < whole.usage.completion_tokens <= 24
    stream = client.chat.completions.create(
        model="astrovlm-smollm2",
        messages=messages,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, reasons, usage = [], [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
    assert len([p for p in pieces if p]) > 1  # it came in pieces
    assert "".join(pieces) == answer  # greedy decoding: the same answer either way
    assert (
        reasons[-1] == whole.choices[0].finish_reason
        and usage.completion_tokens == whole.usage.completion_tokens
    )


def test_a_conversation_with_a_tool_call_and_its_result_is_answered(client):
    tools = [{"type": "function", "function": {"name": "image_stats", "description": "Image statistics.",
                                               "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip
    messages = [
        image_message(png_uri(), "What is the peak of this image?"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "image_stats", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"peak": 254.0, "noise": 3.1})},
    ]  # fmt: skip
    reply = client.chat.completions.create(model="m", messages=messages, tools=tools, max_tokens=32)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    if message.tool_calls:  # whatever the model does, a call is well formed and names an offered tool
        assert all(c.function.name == "image_stats" and isinstance(json.loads(c.function.arguments), dict)
                   for c in message.tool_calls)  # fmt: skip
    else:
        assert message.content


def test_a_fits_path_is_read_only_from_an_allowed_folder(client, server, tmp_path):
    inside = server.allowed / "galaxy.fits"
    reply = client.chat.completions.create(model="m", messages=[image_message(str(inside))], max_tokens=4)
    assert reply.choices[0].message.content is not None
    secret = tmp_path / "secret.fits"
    secret.write_bytes(EXAMPLES[1].path.read_bytes())
    for sneaky in (
        str(secret),
        f"file://{secret}",
        str(server.allowed / ".." / secret.parent.name / "secret.fits"),
    ):
        with pytest.raises(openai.PermissionDeniedError, match="outside the folders"):
            client.chat.completions.create(model="m", messages=[image_message(sneaky)], max_tokens=4)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("https://example.org/m51.png", "remote image URLs are not fetched"),
        ("data:image/png;base64,bm90IGFuIGltYWdl", "not a readable image"),
        ("data:image/png;base64,@@@", "not valid base64"),
        ("data:image/png,rawbytes", "must be base64-encoded"),
    ],
)
def test_bad_images_get_400_with_the_reason(client, url, error):
    with pytest.raises(openai.BadRequestError, match=error):
        client.chat.completions.create(model="m", messages=[image_message(url)], max_tokens=4)


def tool(name: str, parameters: dict | None = None) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters or {"type": "object"}}}


def post(server, body, headers=None, key=KEY):
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}", **(headers or {})}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}/v1/chat/completions", content=content, headers=headers, timeout=60)


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (b'{"messages": [', {}, 400, "not valid JSON"),
        (b"[1, 2]", {}, 400, "must be a JSON object"),
        ({"messages": []}, {}, 400, "messages: List should have at least 1 item"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, {}, 400, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, {}, 400, "temperature"),
        (
            {"messages": [{"role": "assistant", "content": "hi"}]},
            {},
            400,
            "last message must be from the user",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            {"content-type": "text/plain"},
            415,
            "application/json",
        ),
        ({"messages": [{"role": "user", "content": "x" * (3 * 2**20)}]}, {}, 413, "over the limit"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "tools": [tool("f", {"type": "strin"})]},
            {},
            400,
            "tools[0].function.parameters is not a usable JSON schema: failed to compile JSON schema",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [tool("f"), tool("g", {"properties": {"a": {"$ref": "#/nowhere"}}}), tool("h")],
                "stream": True,
            },
            {},
            400,
            "tools[1].function.parameters",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "tools": [tool("f"), tool("f")]},
            {},
            400,
            "tools[1].function.name 'f' is empty or offered twice",
        ),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_clear_message(server, body, headers, status, error):
    response = post(server, body, headers)
    assert response.status_code == status
    assert error in response.json()["error"]["message"]


def test_the_api_key_is_required_and_unknown_endpoints_are_404(server):
    hello = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert post(server, hello, key="wrong").status_code == 401
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert post(server, hello).status_code == 200
    assert httpx.get(f"{server.url}/v1/embeddings").status_code == 404


def test_overload_gets_429_at_once_and_the_waiting_request_is_served(server):
    hello = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    busy = threading.Event()
    compute.submit(busy.wait)  # the model thread is busy with someone else's reply
    try:
        results = {}
        waiters = [
            threading.Thread(target=lambda i=i: results.setdefault(i, post(server, hello))) for i in range(2)
        ]
        for waiter in waiters:
            waiter.start()
        deadline = time.monotonic() + 30
        while (
            server._waiting < 2 and time.monotonic() < deadline
        ):  # max_queue 1: one waits beside the busy slot
            time.sleep(0.02)
        start = time.monotonic()
        refused = post(server, hello)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
        assert time.monotonic() - start < 5
    finally:
        busy.set()
    for waiter in waiters:
        waiter.join(60)
    assert [results[i].status_code for i in range(2)] == [200, 200]
