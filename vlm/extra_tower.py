"""The LVM as an extra vision tower beside a real LLaVA checkpoint's own (LLaVA-OneVision, LLaVA-NeXT, LLaVA).

    model, processor = LlavaWithLVM.from_llava("llava-hf/llava-onevision-qwen2-0.5b-ov-hf")  # or a folder
    text = model.add_lvm_markers(processor.apply_chat_template(conversation, add_generation_prompt=True))
    inputs = processor(images=[image], text=text, return_tensors="pt")
    lvm_pixels = preprocess_images([image], model.lvm_image_size)
    ids = model.generate(**inputs, lvm_pixel_values=lvm_pixels, max_new_tokens=64)

The base model keeps its own tower and projector; the LVM's tokens come in beside them. After each
image's <image> marker the text gets `num_lvm_tokens` <lvm> placeholders; their input embeddings are
overwritten by the LVM's tokens through a projector of their own (2-layer MLP, GELU, LVM width -> LM
width), and the result goes to the LLaVA model as inputs_embeds with its pixel_values. The LLaVA model
then splices its own image features where it always does (it finds its image tokens by their embedding),
so none of its anyres tiling or packing is re-implemented here. Only the LVM projector is new: train it
(and LoRA on the LM) like AstroVLM's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel

from vlm.lvm.model import LVM
from vlm.lvm.shipped import load_default

LVM_TOKEN = "<lvm>"
LVM_PROJECTOR_FILE = "lvm_projector.safetensors"


class LlavaWithLVM(nn.Module):
    def __init__(self, llava: PreTrainedModel, lvm: LVM, lvm_token_id: int, vision_stage: int = -1):
        super().__init__()
        self.llava = llava
        self.lvm = lvm.requires_grad_(False).eval()
        self.lvm_token_id = lvm_token_id
        self.vision_stage = vision_stage
        hidden = llava.get_input_embeddings().embedding_dim
        lvm_config = lvm.config
        width = lvm_config.feature_dims[vision_stage]
        self.lvm_projector = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        side = lvm_config.img_size // lvm_config.patch_size // 2 ** (vision_stage % lvm_config.num_stages)
        self.num_lvm_tokens = side * side
        self.lvm_image_size = lvm_config.img_size

    @classmethod
    def from_llava(
        cls,
        llava: str | Path | PreTrainedModel,
        processor=None,
        lvm: LVM | None = None,
        vision_stage: int = -1,
    ) -> tuple[LlavaWithLVM, object]:
        """(model, the LLaVA processor with <lvm> added to its tokenizer) from a checkpoint name or folder,
        or from a built LLaVA model and its processor; `lvm` defaults to the shipped lvm-small."""
        if isinstance(llava, (str, Path)):
            processor = processor or AutoProcessor.from_pretrained(llava)
            llava = AutoModelForImageTextToText.from_pretrained(llava)
        if processor is None:
            raise ValueError("give the LLaVA model's processor with a built model")
        tokenizer = getattr(processor, "tokenizer", processor)
        if LVM_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_tokens([LVM_TOKEN], special_tokens=True)
        lvm_token_id = tokenizer.convert_tokens_to_ids(LVM_TOKEN)
        return cls(llava, lvm if lvm is not None else load_default(), lvm_token_id, vision_stage), processor

    def add_lvm_markers(self, text: str, image_token: str = "<image>") -> str:
        """The prompt with the LVM's placeholders after every image marker (before the processor runs)."""
        return text.replace(image_token, image_token + LVM_TOKEN * self.num_lvm_tokens)

    def embed(self, input_ids: torch.LongTensor, lvm_pixel_values: torch.Tensor) -> torch.Tensor:
        """Input embeddings with the projected LVM tokens at the <lvm> positions, in image order."""
        lvm_mask = input_ids == self.lvm_token_id
        embeddings = self.llava.get_input_embeddings()
        # <lvm> may lie beyond the embedding matrix (a token added to the tokenizer): embed a stand-in
        inputs_embeds = embeddings(input_ids.masked_fill(lvm_mask, 0))
        n_images = lvm_pixel_values.shape[0]
        if int(lvm_mask.sum()) != n_images * self.num_lvm_tokens:
            raise ValueError(
                f"input_ids hold {int(lvm_mask.sum())} {LVM_TOKEN} tokens but {n_images} LVM images need "
                f"{n_images * self.num_lvm_tokens} ({self.num_lvm_tokens} each): add them with add_lvm_markers"
            )
        with torch.no_grad():
            tokens = self.lvm.encode(lvm_pixel_values.float(), stage=self.vision_stage).tokens
        features = self.lvm_projector(tokens.to(self.lvm_projector[0].weight.dtype))
        mask = lvm_mask[..., None].expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(
            mask, features.reshape(-1, features.shape[-1]).to(inputs_embeds.dtype)
        )

    def forward(self, input_ids: torch.LongTensor, lvm_pixel_values: torch.Tensor, **llava_inputs):
        """The LLaVA model's forward (pixel_values, image_sizes, attention_mask, labels, ...)."""
        return self.llava(inputs_embeds=self.embed(input_ids, lvm_pixel_values), **llava_inputs)

    @torch.no_grad()
    def generate(
        self, input_ids: torch.LongTensor, lvm_pixel_values: torch.Tensor, **kwargs
    ) -> torch.LongTensor:
        """The new tokens only (generation from inputs_embeds returns no prompt)."""
        return self.llava.generate(inputs_embeds=self.embed(input_ids, lvm_pixel_values), **kwargs)

    def save_lvm_projector(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.lvm_projector.state_dict().items()}
        save_file(state, directory / LVM_PROJECTOR_FILE, metadata={"format": "pt"})
        return directory

    def load_lvm_projector(self, directory: str | Path) -> None:
        path = Path(directory) / LVM_PROJECTOR_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no LVM projector saved there (save_lvm_projector writes it)")
        self.lvm_projector.load_state_dict(load_file(path))
