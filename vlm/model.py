"""AstroVLM: the LLaVA-style assembly of the LVM (vision tower), a projector and any causal LM.

    model, processor = build_astrovlm()                   # SmolLM2-135M-Instruct + the shipped lvm-small
    inputs = processor(messages, add_generation_prompt=True)
    ids = model.generate(**inputs, max_new_tokens=64)
    model.save_pretrained(d); AstroVLM.from_pretrained(d)   # the whole model; the processor saves beside it
    model.save_adapter(d); model.restore_adapter(d)         # only what training changes: projector (+ LoRA)

The data path, as in transformers' modeling_llava.py:

    pixel_values (n_images, 3, S, S) in [0, 1]
      -> vision_tower.encode(stage=config.vision_stage).tokens   (n_images, N, D_vision)
      -> projector: Linear, GELU, Linear                          (n_images, N, D_lm)
      -> masked_scatter into the LM's input embeddings at the <image> token positions

The processor expands each "<image>" marker to N = config.num_image_tokens tokens, so the i-th block of
image tokens (row-major over the batch) receives the i-th image; the counts must match exactly. With a
KV cache the image features enter once, on the prefill step; later steps feed only the new tokens.

LoRA: wrap the LM with peft, `model.language_model = get_peft_model(model.language_model, LoraConfig(...))`;
the projector stays trainable and the frozen vision tower frozen. save_adapter writes the projector and
the LoRA weights; `merge_lora()` folds LoRA into the LM before a full save_pretrained.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils import load_peft_weights, set_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast

from vlm.config import AstroVLMConfig
from vlm.language_model import load_language_model
from vlm.lvm.model import LVM, WindowAttention
from vlm.lvm.shipped import load_default
from vlm.processor import IGNORE_INDEX, AstroVLMProcessor, add_image_token
from vlm.token_mixer import MixerConfig, TokenMixer

PROJECTOR_FILE = "projector.safetensors"
LORA_DIR = "lora"
FULL_LM_DIR = "language_model"  # in an adapter folder after full fine-tuning: the whole trained LM
VISION_DIR = "vision_tower"  # in an adapter folder after training the tower (train_vision): the trained LVM


class AstroVLMProjector(nn.Module):
    """LLaVA-1.5's projector, vision tokens -> LM embeddings through a 2-layer MLP, after standardising
    each token position and channel with statistics of real images (`calibrate`).

    The standardisation matters: the LVM's bottleneck tokens are a large constant pattern plus a small
    image-dependent part (two radio fields differ by 3 % of the tokens' norm). Fed raw, the projector
    passes the constant on and an LM learns to ignore the image tokens; standardised, only what differs
    between images remains, at unit scale (the classification head's BatchNorm does the same).

    With `config.token_mixer`, a TokenMixer reads the same standardised tokens, and its output, through
    `mixer_out` (zero at first, so adding a mixer changes nothing until trained), is added to the MLP's."""

    def __init__(self, config: AstroVLMConfig):
        super().__init__()
        shape = (config.num_image_tokens, config.vision_hidden_size)
        self.register_buffer("feature_mean", torch.zeros(shape))
        self.register_buffer("feature_std", torch.ones(shape))
        self.linear_1 = nn.Linear(config.vision_hidden_size, config.projector_hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(config.projector_hidden_size, config.text_config.hidden_size)
        self.mixer = self.mixer_out = None
        if config.token_mixer is not None:
            mixer_config = MixerConfig(**config.token_mixer)
            self.mixer = TokenMixer(mixer_config, config.vision_hidden_size, config.num_image_tokens)
            self.mixer_out = nn.Linear(mixer_config.width, config.text_config.hidden_size)
            nn.init.zeros_(self.mixer_out.weight)
            nn.init.zeros_(self.mixer_out.bias)

    @torch.no_grad()
    def calibrate(self, image_tokens: torch.Tensor) -> None:
        """Set the standardisation from (n, N, D) vision tokens of n typical images (a few hundred)."""
        if image_tokens.shape[0] < 2 or image_tokens.shape[1:] != self.feature_mean.shape:
            raise ValueError(
                f"calibrate needs (n >= 2, {tuple(self.feature_mean.shape)}) tokens, got {tuple(image_tokens.shape)}"
            )
        tokens = image_tokens.float()
        std = tokens.std(dim=0)
        self.feature_mean.copy_(tokens.mean(dim=0))
        self.feature_std.copy_(
            std.clamp_min(1e-3 * float(std.mean()) + 1e-12)
        )  # constant channels stay finite

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:  # (n, N, D_vision) -> (n, N, D_lm)
        standardised = (image_tokens - self.feature_mean) / self.feature_std
        x = standardised.to(self.linear_1.weight.dtype)
        embeddings = self.linear_2(self.act(self.linear_1(x)))
        if self.mixer is not None:
            embeddings = embeddings + self.mixer_out(self.mixer(x))
        return embeddings


class AstroVLM(PreTrainedModel, GenerationMixin):
    config_class = AstroVLMConfig
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["cache"]
    # attention is the LM's business: claim every implementation so the LM's own choice stands
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(
        self,
        config: AstroVLMConfig,
        language_model: PreTrainedModel | None = None,
        vision_tower: LVM | None = None,
    ):
        """Parts given here must match `config` (build_astrovlm makes the config from them); parts not
        given are built from it with fresh weights (from_pretrained then loads the saved ones)."""
        super().__init__(config)
        self.vision_tower = vision_tower if vision_tower is not None else LVM(config.lvm_config)
        self.projector = AstroVLMProjector(config)
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(config.text_config)
        else:
            self.generation_config = copy.deepcopy(language_model.generation_config)  # its eos, pad, ...
        self.language_model = language_model
        if config.freeze_vision:
            self.vision_tower.requires_grad_(False).eval()
        self.post_init()

    def _init_weights(self, module: nn.Module):
        # The LM and the LVM initialise (or load) themselves; only the projector is ours. One LVM detail
        # needs help: from_pretrained builds on the meta device and leaves non-persistent buffers empty,
        # and the window attention's relative-position index is one.
        if isinstance(module, AstroVLMProjector):
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            for linear in (module.linear_1, module.linear_2):
                init.normal_(linear.weight, mean=0.0, std=std)
                init.zeros_(linear.bias)
            init.zeros_(module.feature_mean)
            init.ones_(module.feature_std)
            if module.mixer_out is not None:  # the mixer's own layers keep torch's initialisation
                init.zeros_(module.mixer_out.weight)
                init.zeros_(module.mixer_out.bias)
        elif isinstance(module, WindowAttention):
            init.copy_(module.bias_index, WindowAttention(1, 1, module.ws, qkv_bias=False).bias_index)

    def train(self, mode: bool = True) -> AstroVLM:
        super().train(mode)
        # The tower always runs as in eval (no stochastic depth), frozen or training: a dropped block moves
        # the bottleneck tokens by many of the projector's standard deviations, so the LM sees noise where
        # the image was (docs/vlm-suite.md, "Training the tower").
        self.vision_tower.eval()
        return self

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading_info) on request
        if model.config.freeze_vision:  # loading swaps in new Parameters, which require grad again
            model.vision_tower.requires_grad_(False)
        return loaded

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    # ------------------------------------------------------------------------- images -> embeddings

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n_images, 3, S, S) in [0, 1] -> (n_images, N, D_lm) projected image tokens."""
        stage = self.config.vision_stage
        # The tower runs in float32 even under bfloat16 autocast, as the Engine runs it: the images differ in
        # about 3 % of a token's size, and in bfloat16 a training tower's first step (6e-8 per weight)
        # flipped roundings worth 0.2 of a projector standard deviation (docs/vlm-suite.md).
        with (
            torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_vision),
            torch.autocast(pixel_values.device.type, enabled=False),
        ):
            tokens = self.vision_tower.encode(pixel_values, stage=stage).tokens  # (n, N, D_vision)
        return self.projector(tokens.float())  # standardised in float32, then cast to the projector's dtype

    def merge_image_features(
        self, inputs_embeds: torch.Tensor, image_mask: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Write the image features, in order, over the embeddings where image_mask (B, T) is True."""
        n_tokens = int(image_mask.sum())
        n_images, per_image, dim = image_features.shape
        if n_tokens != n_images * per_image:
            raise ValueError(
                f"input_ids hold {n_tokens} image tokens but the {n_images} images give "
                f"{n_images * per_image} feature rows ({per_image} per image): let the processor expand "
                "one <image> marker per image"
            )
        mask = image_mask[..., None].expand_as(inputs_embeds)  # (B, T, D)
        return inputs_embeds.masked_scatter(mask, image_features.reshape(-1, dim).to(inputs_embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        loss_only: bool = False,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """As the LM's forward, images spliced in. loss_only=True (training, with labels): the LM head,
        a 49k-row matmul for SmolLM2, runs only where labels are set (the answers, about a tenth of a
        Q&A) instead of at every position; the same loss, no logits returned."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            image_mask = input_ids == self.config.image_token_id  # (B, T)
            # <image> is a token the processor added, possibly outside the LM's vocabulary: embed a
            # stand-in id there, the image features overwrite those rows anyway
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))  # (B, T, D)
            if pixel_values is not None:
                image_features = self.get_image_features(pixel_values)
                inputs_embeds = self.merge_image_features(inputs_embeds, image_mask, image_features)
            elif image_mask.any():
                raise ValueError(f"input_ids hold {int(image_mask.sum())} image tokens but no pixel_values")
        elif pixel_values is not None:
            raise ValueError("pixel_values need input_ids (to find the <image> tokens), not inputs_embeds")
        if loss_only:
            return self._answer_loss(inputs_embeds, attention_mask, labels)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,  # the LM shifts them and skips -100
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def _answer_loss(self, inputs_embeds, attention_mask, labels) -> CausalLMOutputWithPast:
        if labels is None:
            raise ValueError("loss_only=True needs labels")
        lm = self.language_model
        decoder = (lm.get_base_model() if isinstance(lm, PeftModel) else lm).get_decoder()
        hidden = decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)[0]
        targets = labels[:, 1:]  # position t predicts token t + 1
        answer = targets != IGNORE_INDEX
        logits = self.get_output_embeddings()(hidden[:, :-1][answer])  # (answer tokens, V)
        return CausalLMOutputWithPast(loss=nn.functional.cross_entropy(logits.float(), targets[answer]))

    def prepare_inputs_for_generation(self, *args, pixel_values=None, is_first_iteration=False, **kwargs):
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        # The images enter with the prompt; once it sits in the KV cache, later steps feed only new tokens
        # (no image tokens), so the features must not be spliced again. Without a cache every step
        # re-reads the whole sequence, images included.
        if is_first_iteration or not kwargs.get("use_cache", True):
            inputs["pixel_values"] = pixel_values
        else:
            inputs.pop("pixel_values", None)
        return inputs

    # ------------------------------------------------------------------------- LoRA and adapters

    def add_token_mixer(self, mixer: TokenMixer) -> None:
        """Put a (pretrained) TokenMixer beside the projector's MLP, joined through a new, zero
        `mixer_out`: the model's outputs stay exactly as they were until mixer_out trains."""
        if self.projector.mixer is not None:
            raise ValueError("the projector has a token mixer already")
        expected = (self.config.num_image_tokens, self.config.vision_hidden_size)
        if (mixer.position.shape[0], mixer.embed.in_features) != expected:
            raise ValueError(
                f"the mixer reads {mixer.position.shape[0]} tokens of {mixer.embed.in_features} channels, "
                f"this model's tower gives {expected[0]} of {expected[1]}"
            )
        old = self.projector
        self.config.token_mixer = asdict(mixer.config)
        self.projector = AstroVLMProjector(self.config).to(old.linear_1.weight)  # its device and dtype
        kept = self.projector.load_state_dict(old.state_dict(), strict=False)  # MLP and standardisation
        assert all(k.startswith("mixer") for k in kept.missing_keys) and not kept.unexpected_keys, kept
        self.projector.mixer.load_state_dict(mixer.state_dict())

    def merge_lora(self) -> None:
        """Fold the LoRA weights into the LM and drop the peft wrapper (before a full save_pretrained)."""
        if not isinstance(self.language_model, PeftModel):
            raise ValueError("the language model has no LoRA adapter to merge")
        self.language_model = self.language_model.merge_and_unload()

    def save_pretrained(self, save_directory: str | Path, **kwargs):
        if isinstance(self.language_model, PeftModel):
            raise ValueError(
                "the language model is wrapped in a LoRA adapter: save_adapter(dir) saves the adapter alone, "
                "merge_lora() first gives a full checkpoint"
            )
        return super().save_pretrained(save_directory, **kwargs)

    def save_adapter(self, directory: str | Path) -> Path:
        """Write what training changes: config.json (to check the fit on loading), the projector,
        when the LM is peft-wrapped its LoRA adapter in lora/, and when the vision tower trains the tower
        in vision_tower/. A frozen tower and the base LM are not written: they come from their own
        checkpoints."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        state = {k: v.detach().contiguous() for k, v in self.projector.state_dict().items()}
        save_file(state, directory / PROJECTOR_FILE, metadata={"format": "pt"})
        if isinstance(self.language_model, PeftModel):
            self.language_model.save_pretrained(directory / LORA_DIR)
        if any(p.requires_grad for p in self.vision_tower.parameters()):
            self.vision_tower.save(directory / VISION_DIR)
        return directory

    def restore_adapter(self, directory: str | Path, is_trainable: bool = False) -> None:
        """Load a save_adapter folder into this model: the projector, and the LoRA adapter if there is
        one (wrapping the LM with peft unless it is wrapped already). Named apart from transformers'
        `load_adapter`, which loads peft adapters alone."""
        directory = Path(directory)
        saved = AstroVLMConfig.from_pretrained(directory)
        fields = (
            "vision_config",
            "vision_stage",
            "num_image_tokens",
            "image_token_id",
            "projector_hidden_size",
        )
        mismatched = [f for f in fields if getattr(saved, f) != getattr(self.config, f)]
        if saved.text_config.hidden_size != self.config.text_config.hidden_size:
            mismatched.append("text_config.hidden_size")
        if mismatched:
            raise ValueError(f"the adapter in {directory} was trained for another model: {mismatched} differ")
        if saved.token_mixer != self.config.token_mixer:  # the projector's shape is the adapter's to say
            self.config.token_mixer = saved.token_mixer
            like = self.projector.linear_1.weight  # the new projector takes its device and dtype
            self.projector = AstroVLMProjector(self.config).to(like)
        try:  # a truncated or overwritten file: one clear line instead of a deserialiser's trace
            self.projector.load_state_dict(load_file(directory / PROJECTOR_FILE))
            lora = directory / LORA_DIR
            if not lora.is_dir():
                return
            if isinstance(self.language_model, PeftModel):
                set_peft_model_state_dict(self.language_model, load_peft_weights(str(lora)))
            else:
                with warnings.catch_warnings():
                    # peft asks the LM for transformers' deprecated is_gradient_checkpointing: a warning
                    # for every user of `astrovlm ask` about code that is neither theirs nor ours
                    warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
                    self.language_model = PeftModel.from_pretrained(
                        self.language_model, lora, is_trainable=is_trainable
                    )
        except (SafetensorError, OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"the adapter in {directory} is corrupt or incomplete: {exc}") from exc


def build_astrovlm(
    language_model: str | Path | None = None,
    vision_tower: LVM | None = None,
    vision_stage: int = -1,
    dtype: torch.dtype = torch.float32,
    **config_kwargs,
) -> tuple[AstroVLM, AstroVLMProcessor]:
    """A new AstroVLM and its processor from a pretrained LM (None: SmolLM2-135M-Instruct, offline) and
    LVM (None: the shipped lvm-small); the projector starts untrained."""
    vision_tower = vision_tower if vision_tower is not None else load_default()
    lm, tokenizer = load_language_model(language_model, dtype=dtype)
    config = AstroVLMConfig(
        text_config=lm.config,
        vision_config=vision_tower.config,
        vision_stage=vision_stage,
        image_token_id=add_image_token(tokenizer),
        **config_kwargs,
    )
    model = AstroVLM(config, language_model=lm, vision_tower=vision_tower)
    return model, AstroVLMProcessor.for_model(tokenizer, config)
