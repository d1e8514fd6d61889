"""How often the chat's answer after a detect_sources call states the number of sources the tool found.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/tool_answers.py [--fields 24] [--adapter DIR]

Each simulated radio field (B1's simulator, 128 px, seed [7, i]) is asked "Find the sources in this radio
field." and the detect_sources tool is run on it as the chat's button runs it (Assistant.run_tool): the
shipped detector finds the sources, the model reads the tool's JSON result and answers. The first number
in the answer is compared with the number of detections, and the answer is searched for the breakdown per
class in the words the training dialogues use ("4 compact sources and 1 extended source"). Printed: each
field's counts and answer, then the shares right. The shipped model (stage 10) with the result's totals in
front: total 16 of 24, per class 3 of 24.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

QUESTION = "Find the sources in this radio field."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fields", type=int, default=24)
    parser.add_argument("--adapter", help="adapter folder (default: the shipped one)")
    args = parser.parse_args()

    from app.assistant import Assistant, LocalBackend, TextDelta
    from app.images import ChatImage
    from app.tools import ToolRunner
    from data_builders.captions import SINGULAR, join_phrases
    from data_builders.sim import radio

    warnings.simplefilter("ignore")  # the chat's notices (context, tools) are not what is measured here
    assistant = Assistant(LocalBackend.load(args.adapter), ToolRunner())
    right = breakdown_right = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.fields):
            rng = np.random.default_rng([7, i])
            scene = radio.draw_b1(rng, 128)
            field = radio.render_field(scene.sources, scene.size, scene.beam, scene.rms, rng)
            path = Path(tmp) / f"field-{i}.npy"
            np.save(path, field.image)
            content = [{"type": "image", "image": ChatImage.read(path)}, {"type": "text", "text": QUESTION}]
            history = [{"role": "user", "content": content}]
            events = assistant.run_tool(history, "detect_sources", {"min_score": 0.5}, max_new_tokens=48)
            answer = "".join(e.text for e in events if isinstance(e, TextDelta))
            result = next(m["content"] for m in history if m["role"] == "tool")
            found, counts = result["sources"], result["counts"]
            said = re.findall(r"\d+", answer)[:1]
            right += said == [str(found)]
            phrases = [f"{n} {SINGULAR[k][n != 1]}" for k, n in counts.items()]
            breakdown_right += bool(phrases) and join_phrases(phrases) in answer
            print(f"{found:3d} sources {counts} | {answer[:110]!r}")
    print(f"the answer's first number is the tool's count for {right} of {args.fields} fields")
    print(f"the answer gives the tool's counts per class for {breakdown_right} of {args.fields} fields")


if __name__ == "__main__":
    main()
