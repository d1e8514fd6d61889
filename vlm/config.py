"""AstroVLMConfig: what rebuilds an AstroVLM (vlm/model.py): the LM's config, the LVM's, and the glue.

    config = AstroVLMConfig()                                   # SmolLM2-135M + lvm-small, as shipped
    config = AstroVLMConfig(text_config=lm.config, vision_config=lvm.config, vision_stage=-2)
    config.num_image_tokens                                     # 16 for lvm-small's bottleneck at 64 px

A transformers config (a typed dataclass under the hood), so it is saved as config.json beside the weights
by `save_pretrained` and read back by `from_pretrained`. The defaults describe the shipped model without
reading any file: the LM part is SmolLM2-135M-Instruct's architecture and the vision part the lvm-small
preset. `text_config` may also be a hub id or local path, whose config is read with AutoConfig.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from vlm.lvm.model import LVMConfig
from vlm.lvm.presets import DEFAULT_PRESET, get_config
from vlm.token_mixer import MixerConfig

# SmolLM2-135M-Instruct's architecture (as read from its GGUF), so that AstroVLMConfig() needs no files.
SMOLLM2_135M = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}


class AstroVLMConfig(PreTrainedConfig):
    model_type = "astrovlm"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs=SMOLLM2_135M)
    }

    text_config: dict | PreTrainedConfig | str | Path | None = None  # the causal LM's config (or its name)
    vision_config: dict | LVMConfig | None = None  # LVMConfig fields; None is the lvm-small preset
    vision_stage: int = -1  # which LVM encoder stage gives the image tokens (-1: the bottleneck)
    projector_hidden_size: int | None = None  # None: the LM's hidden size, as in LLaVA
    projector_hidden_act: str = "gelu"
    # "<image>" as the processor adds it to SmolLM2's tokenizer: the first id after its 49152-token vocabulary
    image_token_id: int = 49152
    num_image_tokens: int | None = None  # tokens per image; follows from the vision config (checked if given)
    freeze_vision: bool = True  # the vision tower takes no gradient and stays in eval mode
    # MixerConfig fields of a TokenMixer beside the projector's MLP (vlm/token_mixer.py); None: no mixer
    token_mixer: dict | None = None

    def __post_init__(self, **kwargs):
        if isinstance(self.text_config, (str, Path)):
            self.text_config = AutoConfig.from_pretrained(self.text_config)
        if isinstance(self.text_config, PreTrainedConfig):
            # the base class sets attn_implementation on every sub-config (None if not given), which would
            # wipe the choice of an LM that is already built around this very config object
            kwargs.setdefault("attn_implementation", self.text_config._attn_implementation)
        super().__post_init__(**kwargs)  # turns a text_config dict (or None) into the LM's config class
        if self.vision_config is None:
            self.vision_config = get_config(DEFAULT_PRESET).to_dict()
        elif isinstance(self.vision_config, LVMConfig):
            self.vision_config = self.vision_config.to_dict()
        lvm = self.lvm_config  # raises on unknown or invalid fields
        if not -lvm.num_stages <= self.vision_stage < lvm.num_stages:
            raise ValueError(
                f"vision_stage must be in [{-lvm.num_stages}, {lvm.num_stages - 1}] for a "
                f"{lvm.num_stages}-stage LVM, got {self.vision_stage}"
            )
        expected = self.image_grid[0] * self.image_grid[1]
        if self.num_image_tokens is None:
            self.num_image_tokens = expected
        elif self.num_image_tokens != expected:
            raise ValueError(
                f"num_image_tokens={self.num_image_tokens} does not fit the vision config: stage "
                f"{self.vision_stage} of the LVM at {lvm.img_size} px gives {expected} tokens per image"
            )
        if self.projector_hidden_size is None:
            self.projector_hidden_size = self.text_config.hidden_size
        if self.token_mixer is not None:
            MixerConfig(**self.token_mixer)  # raises on unknown or invalid fields
        if self.image_token_id < 0:
            raise ValueError(f"image_token_id must be a token id (>= 0), got {self.image_token_id}")

    @property
    def lvm_config(self) -> LVMConfig:
        return LVMConfig.from_dict(self.vision_config)

    @property
    def image_size(self) -> int:
        """Side in pixels of the images the vision tower is given (the processor resizes to it)."""
        return self.lvm_config.img_size

    @property
    def vision_hidden_size(self) -> int:
        return self.lvm_config.feature_dims[self.vision_stage]

    @property
    def image_grid(self) -> tuple[int, int]:
        """(h, w) of the chosen stage's token grid at image_size: each stage halves the patch grid."""
        lvm = self.lvm_config
        stage = self.vision_stage % lvm.num_stages
        side = lvm.img_size // lvm.patch_size // 2**stage
        return side, side


# So that AutoConfig (and AutoTokenizer, which reads config.json to pick a tokenizer) understand a saved
# AstroVLM folder; transformers' documented way to plug a custom model into its Auto classes.
AutoConfig.register(AstroVLMConfig.model_type, AstroVLMConfig, exist_ok=True)
