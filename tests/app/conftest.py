"""Shared by the app's tests: the real default model (SmolLM2 + shipped LVM) loaded once, tools over the
shipped LVM and heads, and servers on loopback ports."""

import socket
import threading
import time
import warnings

import pytest
import torch

from app.assistant import Assistant, LocalBackend
from app.tools import ToolResources, ToolRunner


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    torch.set_num_threads(1)  # a busy second core cannot stall the tests


@pytest.fixture(scope="session")
def engine():
    from vlm.engine import Engine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no shipped adapter yet: the engine says so
        return Engine.load()


@pytest.fixture(scope="session")
def runner(tmp_path_factory):
    return ToolRunner(resources=ToolResources(hitl_dir=tmp_path_factory.mktemp("hitl")))  # not ~/.astrovlm


@pytest.fixture(scope="session")
def assistant(engine, runner):
    return Assistant(LocalBackend(engine), runner)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UvicornThread:
    """A real uvicorn server on a loopback port, in a thread, stopped at the end."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start in 30 s")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
