"""The LVM as an extra tower beside a LLaVA-OneVision model's own, on a tiny random OneVision built here."""

import pytest
import test_vlm_model
import torch
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    SiglipVisionConfig,
)

from vlm.extra_tower import LVM_TOKEN, LlavaWithLVM
from vlm.lvm import LVM, get_config
from vlm.processor import IMAGE_TOKEN

tokenizer = test_vlm_model.tokenizer  # the fixture: it knows <image>


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(
            vocab_size=image_token_id + 1,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        vision_config=SiglipVisionConfig(
            image_size=16,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
        image_token_id=image_token_id,
        video_token_id=0,
        image_grid_pinpoints=[[16, 16]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    llava = LlavaOnevisionForConditionalGeneration(config).eval()
    model, _ = LlavaWithLVM.from_llava(llava, tokenizer, lvm=LVM(get_config("lvm-tiny-test")))
    return model


def inputs_for(model, tokenizer, seed=0):
    """input_ids with the base tower's image tokens and the LVM's placeholders, and both towers' pixels."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.rand(1, 2, 3, 16, 16, generator=generator)  # anyres: the overview and one tile
    image_sizes = torch.tensor([[16, 16]])
    features = model.llava.model.get_image_features(pixel_values, image_sizes).pooler_output
    n_base = sum(f.shape[0] for f in features)
    text = model.add_lvm_markers(f"Look: {IMAGE_TOKEN}\nWhat is it?")
    assert text.count(LVM_TOKEN) == model.num_lvm_tokens
    text = text.replace(IMAGE_TOKEN, IMAGE_TOKEN * n_base)  # what the LLaVA processor's expansion does
    input_ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    lvm_pixels = torch.rand(1, 3, 32, 32, generator=generator)
    return input_ids, {"pixel_values": pixel_values, "image_sizes": image_sizes}, lvm_pixels, features


def test_both_towers_land_on_their_own_tokens(model, tokenizer):
    input_ids, base_inputs, lvm_pixels, base_features = inputs_for(model, tokenizer)
    seen = []
    hook = model.llava.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"]), with_kwargs=True
    )
    with torch.no_grad():
        logits = model(input_ids, lvm_pixels, **base_inputs).logits
        lvm_tokens = model.lvm_projector(model.lvm.encode(lvm_pixels, stage=-1).tokens)[0]
    hook.remove()
    embeds = seen[0][0]
    is_lvm = input_ids[0] == model.lvm_token_id
    is_base = input_ids[0] == model.llava.config.image_token_id
    torch.testing.assert_close(embeds[is_lvm], lvm_tokens)
    torch.testing.assert_close(embeds[is_base], torch.cat(base_features))
    text = ~(is_lvm | is_base)
    torch.testing.assert_close(embeds[text], model.llava.get_input_embeddings()(input_ids[0][text]))
    assert logits.shape[:2] == input_ids.shape

    _, _, other_lvm_pixels, _ = inputs_for(model, tokenizer, seed=1)
    with torch.no_grad():
        moved = model(input_ids, other_lvm_pixels, **base_inputs).logits
    assert not torch.allclose(moved[0, -1], logits[0, -1])  # the answer depends on the LVM's view


def test_generation_and_the_lvm_projector_round_trip(model, tokenizer, tmp_path):
    input_ids, base_inputs, lvm_pixels, _ = inputs_for(model, tokenizer)
    new = model.generate(input_ids, lvm_pixels, **base_inputs, max_new_tokens=4, do_sample=False)
    assert new.shape == (1, 4)

    model.save_lvm_projector(tmp_path)
    torch.manual_seed(5)
    other, _ = LlavaWithLVM.from_llava(model.llava, tokenizer, lvm=model.lvm)
    other.load_lvm_projector(tmp_path)
    again = other.generate(input_ids, lvm_pixels, **base_inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(new, again)
    with pytest.raises(FileNotFoundError, match="no LVM projector"):
        other.load_lvm_projector(tmp_path / "missing")


def test_a_placeholder_count_mismatch_fails_loudly(model, tokenizer):
    input_ids, base_inputs, lvm_pixels, _ = inputs_for(model, tokenizer)
    with pytest.raises(ValueError, match="add_lvm_markers"):
        model(input_ids, torch.cat([lvm_pixels, lvm_pixels]), **base_inputs)
