"""VLM training: the answer-only loss, the data mixture, exact resumption, the stages, presets and errors.

Runs use a tiny random Llama and the lvm-tiny-test tower saved to folders (so the real loading path is
taken) and small sets built by the data builders.
"""

import json
from functools import partial

import numpy as np
import pytest
import test_vlm_model
import torch
from safetensors.torch import load_file
from test_vlm_model import images, tiny_model, user

from data_builders.build import BuildConfig, build
from vlm.engine import Engine, EngineConfig
from vlm.forgetting import general_knowledge, general_knowledge_score
from vlm.lvm import LVM, get_config
from vlm.lvm.data import square_symmetry
from vlm.model import LORA_DIR, PROJECTOR_FILE, VISION_DIR
from vlm.processor import AstroVLMProcessor
from vlm.train import TrainConfig, build_trainable, list_presets, load_config, train
from vlm.train_data import (
    ConversationSet,
    DataSource,
    PlannedConversations,
    dialogue_kinds,
    group_by_length,
    images_last,
    mixture_plan,
    symmetry_views,
)

tokenizer = test_vlm_model.tokenizer  # the fixture


@pytest.fixture(scope="module")
def parts(tokenizer, tmp_path_factory):
    """Folders of a tiny LM (+ tokenizer) and a tiny LVM, as a user's checkpoints would be."""
    root = tmp_path_factory.mktemp("parts")
    model = tiny_model(tokenizer)
    model.language_model.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    LVM(get_config("lvm-tiny-test")).save(root / "lvm")
    return {"language_model": str(root / "lm"), "vision_tower": str(root / "lvm")}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    for family in ("radio-b6", "optical-gmnist"):
        build(BuildConfig(out=str(root / family), family=family, n=6, size=32, shard_size=3), progress=False)
    return root


def tiny_config(parts, sets, out, **fields) -> TrainConfig:
    settings = {
        "stage": "lora",
        "data": [{"path": str(sets / "radio-b6"), "weight": 2}, {"path": str(sets / "optical-gmnist")}],
        "steps": 4,
        "batch_size": 2,
        "length_groups": 2,  # resumes must see the grouped plan's batches too
        "image_last": 0.5,  # and the same order of image and question in each conversation
        "lr": 1e-2,
        "warmup": 1,
        "log_every": 1,
        "ckpt_every": 1,
        "forgetting": False,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
        **parts,
    }
    return TrainConfig(out=str(out), **{**settings, **fields})


def test_the_answer_only_loss_equals_the_full_forward_loss(tokenizer):
    model = tiny_model(tokenizer)
    processor = AstroVLMProcessor.for_model(tokenizer, model.config)
    conversations = [
        [user("What is this?", images(1)), {"role": "assistant", "content": "A galaxy."}],
        [user("Count the sources.", images(1, seed=3)), {"role": "assistant", "content": "There are 12."}],
    ]
    batch = processor.collate([processor(c) for c in conversations])
    full = model(**batch).loss
    fast = model(**batch, loss_only=True).loss
    torch.testing.assert_close(fast, full)
    with pytest.raises(ValueError, match="needs labels"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], loss_only=True)


def test_the_mixture_follows_the_weights_and_uses_every_example_before_repeating(sets):
    big = ConversationSet(DataSource(str(sets / "radio-b6"), weight=3))
    small = ConversationSet(DataSource(str(sets / "optical-gmnist"), weight=1, kinds=["describe"]))
    assert len(big) == 6 * 4  # 6 images, 4 dialogues each
    templates = [small.rows[int(row)]["templates"][int(d)] for row, d in small.examples]
    assert 0 < len(small) < 24 and all(dialogue_kinds(t) == {"describe"} for t in templates)
    plan = mixture_plan([big, small], 4000, seed=0)
    share = (plan[:, 0] == 0).mean()
    assert 0.72 < share < 0.78
    first = plan[plan[:, 0] == 0][: len(big), 1]
    assert sorted(first.tolist()) == list(range(len(big)))  # one epoch: each example exactly once
    np.testing.assert_array_equal(plan, mixture_plan([big, small], 4000, seed=0))
    assert dialogue_kinds("classify/1+presence/3") == {"classify", "presence"}
    assert dialogue_kinds("tool:image_stats/0") == {"tool"}


def test_length_groups_sort_each_run_of_batches_and_keep_what_is_trained_on(sets):
    chat = ConversationSet(DataSource(str(sets / "radio-b6")))
    morphology = ConversationSet(DataSource(str(sets / "optical-gmnist")))
    plan = mixture_plan([chat, morphology], 96, seed=0)
    grouped = group_by_length(plan, [chat, morphology], slots=32)
    length = np.array([[chat, morphology][k].text_lengths[j] for k, j in grouped])
    for run in range(0, 96, 32):
        assert sorted(map(tuple, grouped[run : run + 32])) == sorted(map(tuple, plan[run : run + 32]))
        assert (np.diff(length[run : run + 32]) >= 0).all()
    assert not (np.diff(length) >= 0).all()  # sorted within runs, not across them
    assert len(chat.text_lengths) == len(chat) and chat.text_lengths.min() > 0


def test_image_last_slots_ask_the_question_before_the_image(tokenizer, sets):
    turns = [{"from": "human", "value": "<image>\n<image>\nWhich class?"}, {"from": "gpt", "value": "FR-I"}]
    assert images_last(turns) == [
        {"from": "human", "value": "Which class?\n<image>\n<image>"},
        {"from": "gpt", "value": "FR-I"},
    ]
    assert images_last(turns[1:]) == turns[1:]  # turns without an image stay as they are

    processor = AstroVLMProcessor.for_model(tokenizer, tiny_model(tokenizer).config)
    radio = ConversationSet(DataSource(str(sets / "radio-b6")))
    plan = np.array([[0, 0], [0, 0]])
    data = PlannedConversations([radio], plan, processor, max_length=384, image_last=np.array([False, True]))
    first, last = data[0]["input_ids"][0], data[1]["input_ids"][0]
    assert sorted(first.tolist()) == sorted(last.tolist())  # the same tokens, in another order
    is_image = processor.image_token_id
    question = radio.example(0)[0][0]["value"].replace("<image>\n", "")
    before = tokenizer.decode(last[: int((last == is_image).nonzero()[0])])
    assert before.endswith(question + "\n") and question not in tokenizer.decode(first[: int((first == is_image).nonzero()[0])])  # fmt: skip
    for share in (1.5, -0.1, "half", True):
        with pytest.raises(ValueError, match="image_last"):
            TrainConfig(out="x", data=[{"path": "x"}], image_last=share)


def test_sets_with_symmetries_show_each_image_turned_or_mirrored_and_the_others_as_drawn(tokenizer, sets):
    turned = ConversationSet(DataSource(str(sets / "radio-b6"), symmetries=True))
    as_drawn = ConversationSet(DataSource(str(sets / "optical-gmnist")))
    plan = mixture_plan([turned, as_drawn], n=400, seed=0)
    views = symmetry_views(plan, [turned, as_drawn], seed=0)
    assert (views[plan[:, 0] == 1] == 0).all()
    assert set(views[plan[:, 0] == 0]) == set(range(8))  # every view, drawn per slot
    np.testing.assert_array_equal(views, symmetry_views(plan, [turned, as_drawn], seed=0))
    assert (views != symmetry_views(plan, [turned, as_drawn], seed=1)).any()

    processor = AstroVLMProcessor.for_model(tokenizer, tiny_model(tokenizer).config)
    data = PlannedConversations([turned], np.array([[0, 0], [0, 0]]), processor, 384, views=np.array([0, 3]))
    first, third = data[0], data[1]
    torch.testing.assert_close(first["input_ids"], third["input_ids"])  # the same words
    turns, image = turned.example(0)
    expected = processor(turns, images=[np.ascontiguousarray(square_symmetry(image, 3))])["pixel_values"]
    torch.testing.assert_close(third["pixel_values"], expected)
    assert not torch.equal(third["pixel_values"], first["pixel_values"])


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(parts, sets, tmp_path):
    straight = train(tiny_config(parts, sets, tmp_path / "straight"), progress=False)
    config = tiny_config(parts, sets, tmp_path / "resumed")
    halfway = train(config, stop_after=2, progress=False)
    assert halfway["step"] == 2 and not (tmp_path / "resumed" / "adapter").exists()
    resumed = train(config, progress=False)
    assert resumed["step"] == straight["step"] == 4

    for name in (PROJECTOR_FILE, f"{LORA_DIR}/adapter_model.safetensors"):
        a = load_file(tmp_path / "straight" / "adapter" / name)
        b = load_file(tmp_path / "resumed" / "adapter" / name)
        assert a.keys() == b.keys() and a
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    logs = [
        [json.loads(line)["loss"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        for run in ("straight", "resumed")
    ]
    assert len(logs[0]) == 4 and logs[0] == logs[1]
    assert (tmp_path / "resumed" / "loss.png").stat().st_size > 1000


def test_stages_train_what_they_say_and_their_results_load(parts, sets, tmp_path):
    projector = train(tiny_config(parts, sets, tmp_path / "p", stage="projector", steps=2, image_last=0), progress=False)  # fmt: skip
    lora = tiny_config(parts, sets, tmp_path / "l", steps=2, init_adapter=str(tmp_path / "p" / "adapter"))
    lora_metrics = train(lora, progress=False)
    full = tiny_config(parts, sets, tmp_path / "f", stage="full", steps=2, forgetting=True)
    full_metrics = train(full, progress=False)

    lm_params = sum(p.numel() for p in tiny_model_lm(parts).parameters())
    assert projector["trainable_params"] < lora_metrics["trainable_params"] < full_metrics["trainable_params"]
    assert full_metrics["trainable_params"] > lm_params  # the whole LM and the projector
    assert not (tmp_path / "p" / "adapter" / LORA_DIR).exists()
    assert (tmp_path / "l" / "adapter" / LORA_DIR).is_dir()
    for key in ("forgetting_before", "forgetting_after"):
        assert full_metrics[key]["n"] == len(general_knowledge())

    # the full stage's LM comes back with its adapter; its answers differ from the untrained LM's
    vision = LVM.load(parts["vision_tower"])
    trained = Engine.load(tmp_path / "f" / "adapter", EngineConfig(dtype="float32"), vision_tower=vision)
    base = Engine.load(tmp_path / "p" / "adapter", EngineConfig(dtype="float32"), language_model=parts["language_model"], vision_tower=vision)  # fmt: skip
    question = [user("What is this?", images(1))]
    assert trained.chat(question, max_new_tokens=8, stream=False).text != base.chat(question, max_new_tokens=8, stream=False).text  # fmt: skip


def test_export_ships_a_lora_run_in_float16_with_a_model_card(parts, sets, tmp_path):
    from vlm.export import export_adapter

    data = [{"path": str(sets / "radio-b6"), "symmetries": True}, {"path": str(sets / "optical-gmnist")}]
    train(tiny_config(parts, sets, tmp_path / "run", steps=2, data=data), progress=False)
    shipped = export_adapter(tmp_path / "run", tmp_path / "shipped", quality="| task | lora |")
    assert load_file(shipped / PROJECTOR_FILE)["linear_1.weight"].dtype == torch.float16
    card = (shipped / "README.md").read_text()
    assert "| task | lora |" in card and "steps" in card and "not scored" in card
    assert "50% of the conversations ask with the image after the question" in card
    assert f"| {sets / 'radio-b6'} | 1 | all | turned or mirrored |" in card
    assert f"| {sets / 'optical-gmnist'} | 1 | all | as drawn |" in card

    vision = LVM.load(parts["vision_tower"])
    load = partial(Engine.load, config=EngineConfig(dtype="float32"), language_model=parts["language_model"], vision_tower=vision)  # fmt: skip
    question = [user("What is this?", images(1))]
    full_precision = load(tmp_path / "run" / "adapter").chat(question, max_new_tokens=8, stream=False).text
    assert load(shipped).chat(question, max_new_tokens=8, stream=False).text == full_precision
    with pytest.raises(FileNotFoundError, match="is the run finished"):
        export_adapter(tmp_path / "nothing", tmp_path / "x")


def test_export_of_two_stages_ships_a_projector_only_adapter_and_describes_both(parts, sets, tmp_path):
    from vlm.export import export_adapter

    train(tiny_config(parts, sets, tmp_path / "s1", stage="projector", steps=2), progress=False)
    stage1 = export_adapter(tmp_path / "s1", tmp_path / "shipped1")
    assert not (stage1 / LORA_DIR).exists()  # nothing to merge: an empty lora/ would not load
    card1 = (stage1 / "README.md").read_text()
    assert "Stage 1: `projector`" in card1 and "Stage 2" not in card1

    init = str(tmp_path / "s1" / "adapter")
    train(tiny_config(parts, sets, tmp_path / "s2", steps=2, init_adapter=init), progress=False)
    card2 = (export_adapter(tmp_path / "s2", tmp_path / "shipped2") / "README.md").read_text()
    assert card2.index("Stage 1: `projector`") < card2.index("Stage 2: `lora`")
    assert f"starting from {init}" in card2

    vision = LVM.load(parts["vision_tower"])
    load = partial(Engine.load, config=EngineConfig(dtype="float32"), language_model=parts["language_model"], vision_tower=vision)  # fmt: skip
    question = [user("What is this?", images(1))]
    trained = load(tmp_path / "s1" / "adapter").chat(question, max_new_tokens=8, stream=False).text
    assert load(stage1).chat(question, max_new_tokens=8, stream=False).text == trained


def test_the_model_card_weighs_forgetting_from_before_the_first_stage_to_after_the_last(tmp_path):
    from vlm.export import model_card

    def stage(before, after):
        config = TrainConfig(out=str(tmp_path), data=[{"path": "d"}]).to_dict()
        score = {"n": 40, "mean_p_correct": 0.5}
        return config, {"forgetting_before": {**score, "accuracy": before}, "forgetting_after": {**score, "accuracy": after}}  # fmt: skip

    card = model_card([stage(0.500, 0.500), stage(0.500, 0.450), stage(0.450, 0.475)], quality=None)
    assert "accuracy 0.500 before the first stage, 0.475 after the last (95% kept)" in card


def tiny_model_lm(parts):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(parts["language_model"])


def test_a_trained_tower_is_saved_with_the_adapter_loaded_from_it_and_shipped(parts, sets, tmp_path):
    from vlm.export import export_adapter

    train(tiny_config(parts, sets, tmp_path / "run", steps=2, train_vision=True), progress=False)
    adapter = tmp_path / "run" / "adapter"
    trained, start = LVM.load(adapter / VISION_DIR), LVM.load(parts["vision_tower"])
    name, before = next(iter(start.state_dict().items()))
    assert not torch.equal(trained.state_dict()[name], before)  # the tower trained and was kept

    engine = Engine.load(adapter, EngineConfig(dtype="float32"), language_model=parts["language_model"])
    torch.testing.assert_close(engine.model.vision_tower.state_dict()[name], trained.state_dict()[name])
    shipped = export_adapter(tmp_path / "run", tmp_path / "shipped")
    # shipped as trained: float16 would round a tower's small updates away
    assert torch.equal(LVM.load(shipped / VISION_DIR).state_dict()[name], trained.state_dict()[name])
    # a later stage starts from the trained tower, not from the one in its config
    model, _ = build_trainable(tiny_config(parts, sets, tmp_path / "next", init_adapter=str(adapter)))
    torch.testing.assert_close(model.vision_tower.state_dict()[name], trained.state_dict()[name])
    # a frozen tower is not written
    train(tiny_config(parts, sets, tmp_path / "frozen", steps=1), progress=False)
    assert not (tmp_path / "frozen" / "adapter" / VISION_DIR).exists()


def test_a_training_tower_runs_in_float32_without_stochastic_depth_at_its_own_rate(parts, sets, tmp_path):
    from vlm.train import param_groups

    LVM(get_config("lvm-tiny-test", drop_path=0.5)).save(tmp_path / "lvm")
    config = tiny_config(parts, sets, tmp_path / "run", train_vision=True, vision_lr=3e-5)
    config.vision_tower = str(tmp_path / "lvm")
    model, _ = build_trainable(config)
    model.train()
    assert model.language_model.training and not model.vision_tower.training
    pixels = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.get_image_features(pixels), model.get_image_features(pixels))
    # and in float32 under bfloat16 autocast (training's mixed precision), as the Engine runs it
    tokens = []
    model.vision_tower.norm.register_forward_hook(lambda module, args, out: tokens.append(out))
    with torch.autocast("cpu", torch.bfloat16):
        model.get_image_features(pixels)
    model.get_image_features(pixels)
    torch.testing.assert_close(tokens[0], tokens[1])
    rates = {id(p): group["lr"] for group in param_groups(model, config) for p in group["params"]}
    assert {rates[id(p)] for p in model.vision_tower.parameters()} == {3e-5}
    assert {rates[id(p)] for n, p in model.language_model.named_parameters() if "lora_" in n} == {config.lr}
    assert {rates[id(p)] for p in model.projector.parameters()} == {config.projector_lr}


def test_a_run_refuses_to_resume_with_other_settings(parts, sets, tmp_path):
    train(tiny_config(parts, sets, tmp_path / "run"), stop_after=1, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(tiny_config(parts, sets, tmp_path / "run", lr=1e-3), progress=False)
    train(tiny_config(parts, sets, tmp_path / "run", log_every=2), stop_after=2, progress=False)  # allowed


def test_presets_load_with_overrides_and_bad_configs_fail_clearly(tmp_path):
    assert {"projector-smollm2", "lora-smollm2", "full-smollm2"} <= set(list_presets())
    config = load_config("lora-smollm2", str(tmp_path), overrides=["lora.r=4", "steps=3"])
    assert config.lora.r == 4 and config.lora.alpha == 32 and config.steps == 3 and config.stage == "lora"
    assert all(isinstance(d, DataSource) for d in config.data)
    with pytest.raises(ValueError, match="unknown train preset"):
        load_config("no-such-preset", str(tmp_path))
    with pytest.raises(ValueError, match="unknown train config fields"):
        load_config("lora-smollm2", str(tmp_path), overrides=["learning_rate=1"])
    with pytest.raises(ValueError, match="stage must be one of"):
        load_config("lora-smollm2", str(tmp_path), overrides=["stage=qlora"])
    with pytest.raises(ValueError, match="bf16 must be"):
        load_config("lora-smollm2", str(tmp_path), overrides=["bf16=yes"])
    with pytest.raises(ValueError, match="length_groups must be an int >= 1"):
        load_config("lora-smollm2-tasks", str(tmp_path), overrides=["length_groups=0"])
    with pytest.raises(FileNotFoundError, match="astrovlm data build"):
        ConversationSet(DataSource(str(tmp_path / "nothing")))
    with pytest.raises(ValueError, match="weight must be > 0"):
        DataSource("x", weight=0)
    with pytest.raises(ValueError, match="symmetries must be true or false"):
        DataSource("x", symmetries="no")


def test_general_knowledge_is_scored_by_option_likelihood(tokenizer):
    questions = general_knowledge()
    assert len(questions) >= 40 and all(q.answer in q.options for q in questions)
    model = tiny_model(tokenizer)
    engine = Engine(
        model, AstroVLMProcessor.for_model(tokenizer, model.config), EngineConfig(dtype="float32")
    )
    score = general_knowledge_score(engine, questions[:5])
    assert score["n"] == 5 and 0 <= score["accuracy"] <= 1 and 0 < score["mean_p_correct"] < 1
