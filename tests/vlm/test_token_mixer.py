"""The token mixer beside the projector (vlm/token_mixer.py): joining it changes no output until its
output layer trains, the adapter carries it, a training run joins a pretrained one, pretraining on the
shipped LVM's tokens learns, and bad files and shapes are refused."""

import pytest
import test_train
import test_vlm_model
import torch
from test_vlm_model import images, tiny_model, user

from vlm.engine import Engine, EngineConfig
from vlm.lvm import LVM
from vlm.model import AstroVLM
from vlm.processor import AstroVLMProcessor
from vlm.token_mixer import (
    MIXER_FILE,
    MixerConfig,
    MixerPretrainConfig,
    TokenMixer,
    load_mixer,
    pretrain_mixer,
    save_mixer,
)
from vlm.train import train

tokenizer, parts, sets = test_vlm_model.tokenizer, test_train.parts, test_train.sets  # the fixtures


def tiny_mixer(model: AstroVLM, seed: int = 0) -> TokenMixer:
    torch.manual_seed(seed)
    return TokenMixer(
        MixerConfig(width=32, layers=1, heads=2),
        model.config.vision_hidden_size,
        model.config.num_image_tokens,
    )


def test_a_joined_mixer_changes_nothing_until_trained_and_the_adapter_carries_it(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    model.save_pretrained(tmp_path / "base")
    processor = AstroVLMProcessor.for_model(tokenizer, model.config)
    inputs = processor(
        [user("What is this?", images(1)), {"role": "assistant", "content": "A radio galaxy."}]
    )
    with torch.no_grad():
        before = model(**inputs).logits
    model.add_token_mixer(tiny_mixer(model))
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)

    model.requires_grad_(False)
    model.projector.mixer_out.requires_grad_(True)
    optimizer = torch.optim.Adam(model.projector.mixer_out.parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses  # the LM reads what the mixer adds
    with torch.no_grad():
        after = model(**inputs).logits

    model.save_adapter(tmp_path / "adapter")
    restored = AstroVLM.from_pretrained(tmp_path / "base").eval()  # built without a mixer
    restored.restore_adapter(tmp_path / "adapter")
    assert restored.config.token_mixer == {"width": 32, "layers": 1, "heads": 2}
    with torch.no_grad():
        assert torch.equal(restored(**inputs).logits, after)


def test_a_mixer_that_does_not_fit_is_refused(tokenizer):
    model = tiny_model(tokenizer)
    wrong = TokenMixer(MixerConfig(width=32, layers=1, heads=2), model.config.vision_hidden_size + 1, 4)
    with pytest.raises(ValueError, match="tokens of"):
        model.add_token_mixer(wrong)
    model.add_token_mixer(tiny_mixer(model))
    with pytest.raises(ValueError, match="has a token mixer already"):
        model.add_token_mixer(tiny_mixer(model))
    with pytest.raises(ValueError, match="not divisible"):
        MixerConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="layers"):
        MixerConfig(layers=0)


def test_pretraining_settings_that_cannot_train_or_score_are_refused_before_any_work(tmp_path):
    out = str(tmp_path / "mixer")
    with pytest.raises(ValueError, match="no images to train on or none to score"):
        MixerPretrainConfig(out=out, images_per_task=1)
    with pytest.raises(ValueError, match="no images to train on or none to score"):
        MixerPretrainConfig(out=out, held_out=0.0)
    with pytest.raises(ValueError, match="tasks is empty"):
        MixerPretrainConfig(out=out, tasks=())
    with pytest.raises(ValueError, match="epochs"):
        MixerPretrainConfig(out=out, epochs=0)
    with pytest.raises(ValueError, match="unknown benchmark task"):
        pretrain_mixer(MixerPretrainConfig(out=out, tasks=("b9",)), progress=False)
    with pytest.raises(FileNotFoundError, match="projector.safetensors"):
        pretrain_mixer(MixerPretrainConfig(out=out, adapter=str(tmp_path / "nowhere")), progress=False)
    assert not (tmp_path / "mixer").exists()  # nothing written


def test_training_joins_a_pretrained_mixer_keeps_it_frozen_and_the_engine_loads_the_result(
    parts, sets, tmp_path
):
    vision = LVM.load(parts["vision_tower"])
    mixer = tiny_mixer(_model_for(parts), seed=3)
    save_mixer(mixer, tmp_path / "mixer")
    run = tmp_path / "run"
    train(
        test_train.tiny_config(parts, sets, run, steps=2, token_mixer=str(tmp_path / "mixer")), progress=False
    )

    engine = Engine.load(
        run / "adapter",
        EngineConfig(dtype="float32"),
        language_model=parts["language_model"],
        vision_tower=vision,
    )
    projector = engine.model.projector
    for name, value in mixer.state_dict().items():  # frozen: exactly as pretrained
        assert torch.equal(projector.mixer.state_dict()[name], value), name
    assert projector.mixer_out.weight.abs().sum() > 0  # its output layer trained with the projector


def _model_for(parts) -> AstroVLM:
    """A model of the run's shapes (the tiny LM and tower), for building a mixer that fits it."""
    from vlm.model import build_astrovlm

    model, _ = build_astrovlm(parts["language_model"], LVM.load(parts["vision_tower"]))
    return model


def test_pretraining_on_the_shipped_lvm_learns_galaxymnist_and_saves_a_loadable_mixer(tmp_path):
    config = MixerPretrainConfig(
        out=str(tmp_path / "mixer"), tasks=("galaxymnist",), images_per_task=400, epochs=8, batch_size=64
    )
    mixer, report = pretrain_mixer(config, progress=False)
    assert report["held_out_macro_f1"]["galaxymnist"] > 0.5  # four classes: chance is 0.25

    loaded = load_mixer(tmp_path / "mixer")
    tokens = torch.randn(3, 16, 192)
    with torch.no_grad():
        assert torch.equal(loaded(tokens), mixer(tokens))

    (tmp_path / "mixer" / MIXER_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a token mixer saved by save_mixer"):
        load_mixer(tmp_path / "mixer")
