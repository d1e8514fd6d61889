"""The runner's OpenAI-compatible backend against a real server on loopback (`astrovlm serve`'s app with
the real default model)."""

import json
import warnings

import pytest
import torch

from app.assistant import Assistant, LocalBackend
from app.server import Server
from benchmarks.runner import OpenAIChat, RunConfig, run_task
from benchmarks.tasks import load_task
from tests.app.conftest import UvicornThread


@pytest.fixture(scope="module")
def api():
    from vlm.engine import Engine

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = Engine.load()
    with UvicornThread(Server(Assistant(LocalBackend(engine))).app) as url:
        yield f"{url}/v1"


def test_a_task_runs_against_an_openai_compatible_server_and_resumes(api, tmp_path):
    task = load_task("b6")
    backend = OpenAIChat("astrovlm-smollm2", base_url=api, max_new_tokens=8)
    config = RunConfig(out=str(tmp_path / "b6"), n=3)
    metrics = run_task(task, backend, config, progress=False)
    assert metrics["n"] == 3 and 0.0 <= metrics["macro_f1"] <= 1.0
    lines = [json.loads(line) for line in (tmp_path / "b6" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(isinstance(entry["raw"], str) for entry in lines)
    again = run_task(task, backend, RunConfig(out=str(tmp_path / "b6"), n=4), progress=False)
    assert again["n"] == 4  # the three answers are kept, one more is asked


def test_an_unreachable_api_fails_with_the_openai_error_after_its_retries(tmp_path):
    import openai

    backend = OpenAIChat("m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=5)
    with pytest.raises(openai.APIConnectionError):
        run_task(load_task("b6"), backend, RunConfig(out=str(tmp_path / "x"), n=1), progress=False)
