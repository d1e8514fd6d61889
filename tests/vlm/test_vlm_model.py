"""AstroVLM assembly: image splicing, generation with a KV cache, save/load, LoRA adapters, chat template.

Fast tests use a tiny random Llama (2 layers, hidden 64), the lvm-tiny-test tower (32 px, 64 tokens per
image) and a small byte-level BPE tokenizer trained here; the slow test loads the real SmolLM2 GGUF.
"""

import json
import time

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from vlm.config import AstroVLMConfig
from vlm.lvm import LVM, get_config
from vlm.model import AstroVLM
from vlm.processor import IGNORE_INDEX, IMAGE_TOKEN, AstroVLMProcessor, add_image_token, preprocess_images

CORPUS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n",
    'A radio galaxy with two lobes. <tool_call>{"name": "detect_sources", "arguments": {"min_score": 0.5}}',
    '</tool_call> <tool_response>{"detections": [{"label": "FR-II", "box": [1.0, 2.5], "score": 0.9}]}',
    "Describe the image. Is there a spiral galaxy? YES NO. How many sources do you see? 0123456789",
]


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE (any text round-trips) with SmolLM2's special tokens; trained in milliseconds."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    add_image_token(tokenizer)
    return tokenizer


def tiny_model(tokenizer, seed: int = 0, **config_kwargs) -> AstroVLM:
    torch.manual_seed(seed)
    lm_config = LlamaConfig(
        vocab_size=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),  # <image> stays outside the LM's vocabulary
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.2,  # peaked logits, so greedy decoding has no near-ties
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    lm = LlamaForCausalLM(lm_config)
    tower = LVM(get_config("lvm-tiny-test"))
    config = AstroVLMConfig(
        text_config=lm.config,
        vision_config=tower.config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        **config_kwargs,
    )
    return AstroVLM(config, language_model=lm, vision_tower=tower).eval()


def images(n: int, seed: int = 0, size: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def user(text: str, pictures=()) -> dict:
    parts = [{"type": "image", "image": p} for p in pictures] + [{"type": "text", "text": text}]
    return {"role": "user", "content": parts}


def capture_lm_inputs(model: AstroVLM) -> tuple[list, object]:
    """Record the inputs_embeds that reach the LM's decoder stack."""
    seen = []
    handle = model.language_model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].detach().clone()), with_kwargs=True
    )
    return seen, handle


# ----------------------------------------------------------------------------- splicing


def test_image_features_land_exactly_on_the_image_tokens_in_order(tokenizer):
    model = tiny_model(tokenizer)
    processor = AstroVLMProcessor.for_model(tokenizer, model.config)
    conversation = [
        user("Compare these two.", images(2)),
        {"role": "assistant", "content": "The first is brighter."},
        user("And this one?", images(1, seed=1)),
    ]
    inputs = processor(conversation, add_generation_prompt=True)
    assert inputs["pixel_values"].shape == (3, 3, 32, 32)
    seen, handle = capture_lm_inputs(model)
    with torch.no_grad():
        model(**inputs)
        features = model.get_image_features(inputs["pixel_values"])  # (3, 64, 64)
    handle.remove()

    ids = inputs["input_ids"][0]
    is_image = ids == model.config.image_token_id
    assert int(is_image.sum()) == 3 * model.config.num_image_tokens
    embeds = seen[0][0]
    # image rows: the three images' features, in order; every other row: the LM's own token embedding
    torch.testing.assert_close(embeds[is_image], features.reshape(-1, features.shape[-1]), rtol=0, atol=0)
    text_embeds = model.get_input_embeddings()(ids[~is_image])
    torch.testing.assert_close(embeds[~is_image], text_embeds, rtol=0, atol=0)
    # three separate runs of 64 image tokens, one per "<image>" marker
    breaks = (is_image.nonzero()[:, 0].diff() > 1).nonzero()[:, 0]
    assert breaks.tolist() == [63, 127]


def test_a_count_mismatch_fails_loudly_naming_both_counts(tokenizer):
    model = tiny_model(tokenizer)
    processor = AstroVLMProcessor.for_model(tokenizer, model.config)
    inputs = processor([user("What is this?", images(1))])
    first_image = int((inputs["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    cut = torch.cat([inputs["input_ids"][:, :first_image], inputs["input_ids"][:, first_image + 1 :]], dim=1)
    with pytest.raises(ValueError, match=r"hold 63 image tokens but the 1 images give 64 feature rows"):
        model(input_ids=cut, pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match=r"hold 64 image tokens but the 2 images give 128"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"].repeat(2, 1, 1, 1))
    with pytest.raises(ValueError, match=r"64 image tokens but no pixel_values"):
        model(input_ids=inputs["input_ids"])

    turns = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{IMAGE_TOKEN}\nCompare."}]
    with pytest.raises(ValueError, match=r"has 2 <image> markers but 1 images were given"):
        processor(turns, images=images(1))
    with pytest.raises(ValueError, match=r"has 1 <image> markers but 2 images were given"):
        processor([{"from": "human", "value": f"{IMAGE_TOKEN}\nHi"}], images=images(2))


# ----------------------------------------------------------------------------- generation


def test_generate_with_kv_cache_gives_the_same_tokens_as_without(tokenizer):
    model = tiny_model(tokenizer, seed=1)
    processor = AstroVLMProcessor.for_model(tokenizer, model.config)
    inputs = processor([user("Describe the image.", images(2))], add_generation_prompt=True)
    settings = dict(
        max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id
    )
    seen, handle = capture_lm_inputs(model)
    cached = model.generate(**inputs, **settings)
    handle.remove()
    uncached = model.generate(**inputs, use_cache=False, **settings)
    prompt = inputs["input_ids"].shape[1]
    assert cached.shape == (1, prompt + 12)
    assert torch.equal(cached, uncached)
    assert len(set(cached[0, prompt:].tolist())) > 1  # a real sequence, not one token repeated
    # with the cache the images enter once: the prefill sees the whole prompt, each later step one token
    assert [e.shape[1] for e in seen] == [prompt] + [1] * 11


def test_batched_generation_with_left_padding_matches_single_prompts(tokenizer):
    model = tiny_model(tokenizer, seed=1)
    processor = AstroVLMProcessor.for_model(tokenizer, model.config)
    prompts = [
        processor([user("Describe the image.", images(1))], add_generation_prompt=True),
        processor(
            [user("Is there a spiral galaxy in these?", images(2, seed=3))], add_generation_prompt=True
        ),
    ]
    settings = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    batch = processor.collate(prompts, padding_side="left")
    assert batch["pixel_values"].shape[0] == 3
    together = model.generate(**batch, **settings)[:, -6:]
    for row, single in zip(together, prompts):
        assert torch.equal(row, model.generate(**single, **settings)[0, -6:])


# ----------------------------------------------------------------------------- checkpoints


def test_save_and_load_round_trip_gives_identical_logits(tokenizer, tmp_path):
    model = tiny_model(tokenizer, vision_stage=-2)  # 256 tokens of the 16x16 first stage
    processor = AstroVLMProcessor.for_model(tokenizer, model.config)
    conversation = [user("What is this?", images(1)), {"role": "assistant", "content": "A galaxy."}]
    inputs = processor(conversation)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    loaded = AstroVLM.from_pretrained(tmp_path).eval()
    loaded_processor = AstroVLMProcessor.from_pretrained(tmp_path)
    assert loaded.config.num_image_tokens == 256 and loaded.config.vision_stage == -2
    again = loaded_processor(conversation)
    for key in ("input_ids", "labels", "pixel_values"):
        assert torch.equal(inputs[key], again[key])
    with torch.no_grad():
        expected, got = model(**inputs), loaded(**again)
    assert torch.equal(expected.logits, got.logits)
    assert torch.equal(expected.loss, got.loss)
    # the vision tower is frozen and stays in eval mode while the rest trains
    loaded.train()
    assert not loaded.vision_tower.training and loaded.language_model.training
    assert not any(p.requires_grad for p in loaded.vision_tower.parameters())


def test_lora_trains_and_the_adapter_round_trips(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    model.save_pretrained(tmp_path / "base")
    processor = AstroVLMProcessor.for_model(tokenizer, model.config)
    inputs = processor(
        [user("What is this?", images(1)), {"role": "assistant", "content": "A radio galaxy."}]
    )

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    model.language_model = get_peft_model(model.language_model, lora)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"projector", "language_model"}
    assert all("lora_" in n for n, p in model.language_model.named_parameters() if p.requires_grad)

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()

    with pytest.raises(ValueError, match="save_adapter"):
        model.save_pretrained(tmp_path / "wrapped")
    model.save_adapter(tmp_path / "adapter")
    files = {p.relative_to(tmp_path / "adapter").as_posix() for p in (tmp_path / "adapter").rglob("*.*")}
    assert {"config.json", "projector.safetensors", "lora/adapter_model.safetensors"} <= files
    assert "model.safetensors" not in files  # no base weights

    restored = AstroVLM.from_pretrained(tmp_path / "base").eval()
    restored.restore_adapter(tmp_path / "adapter")
    with torch.no_grad():
        trained_logits = model(**inputs).logits
        assert torch.equal(restored(**inputs).logits, trained_logits)
        model.merge_lora()
        torch.testing.assert_close(model(**inputs).logits, trained_logits, rtol=1e-4, atol=1e-4)
    model.save_pretrained(tmp_path / "merged")  # a plain checkpoint again

    other = tiny_model(tokenizer, vision_stage=-2)
    with pytest.raises(ValueError, match="vision_stage"):
        other.restore_adapter(tmp_path / "adapter")


# ----------------------------------------------------------------------------- chat template


def test_chat_template_renders_the_data_builders_tool_dialogues_and_masks_labels(tokenizer):
    from data_builders.conversations import IMAGE_TOKEN as BUILDERS_IMAGE_TOKEN
    from data_builders.conversations import build_dialogues
    from data_builders.families import get_family
    from data_builders.stretch import render_rgb

    assert BUILDERS_IMAGE_TOKEN == IMAGE_TOKEN
    family = get_family("radio-b6")
    record = family.simulate(np.random.default_rng([7, 0]), family.default_size, "radio-b6-0")
    dialogue = build_dialogues(record, family, seed=0, n=1, kinds=("tool",))[0]
    request, call, response, summary = (t["value"] for t in dialogue.turns)
    processor = AstroVLMProcessor(tokenizer, image_size=32, num_image_tokens=4, system_prompt="Be brief.")

    text = processor.render(dialogue.turns)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        f"<|im_start|>user\n{request}<|im_end|>\n"
        f"<|im_start|>assistant\n{call}<|im_end|>\n"
        f"<|im_start|>tool\n{response}<|im_end|>\n"
        f"<|im_start|>assistant\n{summary}<|im_end|>\n"
    )
    assert call.startswith('<tool_call>{"name": ') and response.startswith("<tool_response>")

    # the same dialogue as OpenAI-style messages: tool_calls and a raw tool result render identically
    parsed = json.loads(call.removeprefix("<tool_call>").removesuffix("</tool_call>"))
    openai_call = {"type": "function", "function": {**parsed, "arguments": json.dumps(parsed["arguments"])}}
    rgb = render_rgb(record.image, record.domain, record.bands)
    result = response.removeprefix("<tool_response>").removesuffix("</tool_response>")
    as_messages = [
        user(request.removeprefix(f"{IMAGE_TOKEN}\n"), [rgb]),
        {"role": "assistant", "content": "", "tool_calls": [openai_call]},
        {"role": "tool", "content": result},
        {"role": "assistant", "content": summary},
    ]
    assert processor.render(as_messages) == text

    inputs = processor(dialogue.turns, images=[rgb])
    from_messages = processor(as_messages)
    for key in ("input_ids", "labels", "pixel_values"):
        assert torch.equal(inputs[key], from_messages[key])
    ids, labels = inputs["input_ids"][0], inputs["labels"][0]
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    assert int((ids == processor.image_token_id).sum()) == 4
    # labels: exactly the two assistant answers, each with its <|im_end|>; the rest is masked
    trained = (labels != IGNORE_INDEX).int()
    runs = torch.tensor_split(ids, torch.nonzero(trained.diff()).flatten() + 1)
    masks = torch.tensor_split(trained, torch.nonzero(trained.diff()).flatten() + 1)
    spoken = [tokenizer.decode(run) for run, m in zip(runs, masks) if m[0] == 1]
    assert spoken == [f"{call}<|im_end|>", f"{summary}<|im_end|>"]
    assert torch.equal(labels[labels != IGNORE_INDEX], ids[labels != IGNORE_INDEX])

    prompt = processor(dialogue.turns[:1], images=images(1), add_generation_prompt=True)
    assert tokenizer.decode(prompt["input_ids"][0]).endswith("<|im_start|>assistant\n")
    assert (prompt["labels"] == IGNORE_INDEX).all()


def test_tools_are_listed_in_the_system_prompt(tokenizer):
    from data_builders.tool_specs import openai_tools

    processor = AstroVLMProcessor(tokenizer, image_size=32, num_image_tokens=4, system_prompt=None)
    text = processor.render(
        [{"role": "user", "content": "Find the sources."}], tools=openai_tools(["detect_sources"])
    )
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nYou can call these tools:\n<tools>\n")
    assert (
        json.loads(system.split("<tools>\n")[1].split("\n</tools>")[0])["function"]["name"]
        == "detect_sources"
    )
    assert processor.render([{"role": "user", "content": "Hi"}]) == "<|im_start|>user\nHi<|im_end|>\n"


def test_images_in_every_accepted_form_become_the_same_pixels():
    rgb = images(1, size=32)[0]
    forms = [
        rgb,
        Image.fromarray(rgb),
        rgb.transpose(2, 0, 1) / 255.0,
        torch.from_numpy(rgb).permute(2, 0, 1) / 255,
    ]
    batch = preprocess_images(forms, size=32)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == torch.float32
    for row in batch[1:]:
        torch.testing.assert_close(row, batch[0], rtol=0, atol=0)
    assert preprocess_images([images(1, size=50)[0]], size=32).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="render_rgb"):
        preprocess_images([np.zeros((1, 32, 32), np.float32)], size=32)  # a raw radio plane, not rendered
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        preprocess_images([np.full((3, 8, 8), 2.0)], size=32)


# ----------------------------------------------------------------------------- the real default LM


@pytest.mark.slow
def test_default_smollm2_loads_from_the_gguf_then_from_the_cache_and_knows_paris(tmp_path, monkeypatch):
    from vlm.language_model import load_language_model

    monkeypatch.setenv("ASTROVLM_CACHE", str(tmp_path))
    start = time.perf_counter()
    load_language_model()  # dequantises the GGUF and writes the safetensors copy
    first = time.perf_counter() - start
    start = time.perf_counter()
    lm, tokenizer = load_language_model()
    cached = time.perf_counter() - start
    print(f"SmolLM2-135M-Instruct: first load {first:.1f} s (GGUF), cached load {cached:.2f} s")
    assert cached < 5 and cached < first / 5
    assert not list(tmp_path.glob("*.tmp-*"))  # the copy was renamed into place

    image_token_id = add_image_token(tokenizer)
    config = AstroVLMConfig(
        text_config=lm.config, vision_config=get_config("lvm-tiny-test"), image_token_id=image_token_id
    )
    model = AstroVLM(config, language_model=lm).eval()
    processor = AstroVLMProcessor.for_model(tokenizer, config)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    # our ChatML is SmolLM2's own template, byte for byte
    smol_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    smol = AstroVLMProcessor.for_model(tokenizer, config, system_prompt=smol_system)
    assert smol.render(question, add_generation_prompt=True) == tokenizer.apply_chat_template(
        question, tokenize=False, add_generation_prompt=True
    )
    inputs = processor(question, add_generation_prompt=True)
    out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = processor.decode(out[0, inputs["input_ids"].shape[1] :])
    assert "Paris" in answer, answer


def test_the_projector_standardises_vision_tokens_from_calibration_images(tokenizer):
    model = tiny_model(tokenizer)
    n, d = model.config.num_image_tokens, model.config.vision_hidden_size
    offset = torch.randn(n, d) * 50  # a large constant pattern, as the LVM's bottleneck has
    tokens = offset + 0.1 * torch.randn(64, n, d)
    model.projector.calibrate(tokens)
    standardised = (tokens - model.projector.feature_mean) / model.projector.feature_std
    assert standardised.mean().abs() < 1e-4 and (standardised.std(dim=0) - 1).abs().max() < 1e-3
    with pytest.raises(ValueError, match="calibrate needs"):
        model.projector.calibrate(tokens[:1])
