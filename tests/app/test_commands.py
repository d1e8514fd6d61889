"""`astrovlm chat` and `astrovlm serve` as a person runs them: real processes on loopback ports."""

import json
import os
import subprocess
import sys
import tempfile
import time

import httpx
import pytest
from openai import OpenAI

from tests.app.conftest import free_port


def start(*arguments: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "ASTROVLM_HOME": tempfile.mkdtemp(prefix="astrovlm-home-")}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(url: str, process: subprocess.Popen, timeout: float = 180, **options) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the process exited with {process.returncode}:\n{process.stdout.read()[-3000:]}")
        try:
            return httpx.get(url, timeout=5, **options)
        except httpx.TransportError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(30)


def test_astrovlm_serve_answers_the_openai_client_and_wants_its_key():
    port = free_port()  # with int8 weights (the chat test below runs the default bfloat16 model)
    process = start("serve", "--port", str(port), "--api-key", "k", "--max-new-tokens", "8", "--int8")
    try:
        assert wait_for(f"http://127.0.0.1:{port}/v1/models", process).status_code == 401
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        reply = client.chat.completions.create(
            model="astrovlm-smollm2", messages=[{"role": "user", "content": "Hi!"}]
        )
        assert reply.choices[0].message.content and reply.usage.completion_tokens <= 8
    finally:
        stop(process)


def test_astrovlm_chat_serves_its_page():
    port = free_port()
    process = start("chat", "--port", str(port))
    try:
        page = wait_for(f"http://127.0.0.1:{port}/", process)
        assert page.status_code == 200 and "astrovlm" in page.text
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).json()
        assert config["title"] == "astrovlm"
        shown = json.dumps(config)
        from vlm.engine import DEFAULT_ADAPTER_DIR

        assert ("No trained VLM adapter" in shown) != DEFAULT_ADAPTER_DIR.is_dir()  # the page says so
    finally:
        stop(process)


def test_a_missing_allowed_folder_is_a_one_line_error():
    process = start("serve", "--allow-images-from", "/no/such/folder")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 2 and "no such folder" in out
