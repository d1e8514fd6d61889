"""The shipped default VLM (vlm/weights/vlm-adapter on SmolLM2 + lvm-small): it sees, and it talks."""

import numpy as np
import pytest

from benchmarks.runner import OptionScoring, held_out_image
from benchmarks.tasks import load_task
from vlm.engine import DEFAULT_ADAPTER_DIR, Engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    if not (DEFAULT_ADAPTER_DIR / "projector.safetensors").is_file():
        pytest.fail(f"no shipped adapter in {DEFAULT_ADAPTER_DIR}")
    return Engine.load()


def test_it_tells_fr_i_from_fr_ii_on_held_out_images(engine):
    task = load_task("b6")
    backend = OptionScoring(engine)
    right = 0
    for i in range(24):
        _, image, labels = held_out_image(task, seed=1, i=i)
        answer, _ = backend.predict(task, image)
        right += answer == task.truth(labels)
    assert right / 24 >= 0.7  # 0.5 is chance


def test_it_describes_a_simulated_fr_ii_in_words(engine):
    task = load_task("b6")
    fr_ii = next(
        image for i in range(50) for _, image, labels in [held_out_image(task, 1, i)] if "FR-II" in labels
    )
    question = [{"type": "image", "image": fr_ii}, {"type": "text", "text": "Describe this image."}]
    reply = engine.chat([{"role": "user", "content": question}], max_new_tokens=60, stream=False)
    words = reply.text.lower()
    assert len(words.split()) >= 5 and "radio" in words, reply.text
    assert np.isfinite(engine.score_options([fr_ii], "Is there a radio galaxy?", ["YES", "NO"])["YES"])
