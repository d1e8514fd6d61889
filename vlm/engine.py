"""Engine: chat with an AstroVLM (streaming, history, several images) and rank fixed answers by likelihood.

    engine = Engine.load()                                   # shipped LVM + SmolLM2 + shipped adapter
    reply = engine.chat([{"role": "user", "content": [{"type": "image", "image": "m51.fits"},
                                                      {"type": "text", "text": "What is this?"}]}])
    for piece in reply: print(piece, end="", flush=True)     # text as it is generated
    reply.text, reply.finish_reason, reply.notice            # the whole answer; "stop" | "length"; truncation

    chat = engine.conversation()                             # keeps the history, images included
    chat.ask("Describe it.", images=["field.png"]).finish().text; chat.ask("Any jets?").finish().text

    engine.score_options(image, "Which class?", ["FR-I", "FR-II"])   # {"FR-I": 0.31, "FR-II": 0.69}

Images may be anything the processor takes (PIL, uint8 (H, W, 3), float (3, H, W) in [0, 1]) or a file
path / AstroImage, rendered as the models were trained to see it (`load_image`).

Decoding is our own loop over the KV cache rather than `generate()` with a streamer thread: the prompt
(images included) runs once, then each step feeds one token to the LM alone, without generate's per-step
machinery (logits processors, stopping criteria, a streamer queue and its thread). The matmuls are ~80 %
of a decode step (each step reads every weight once), so what counts is the bytes: the default bfloat16
weights read half as many, ~1.3x float32's tokens/s on the project's AVX2 CPU (benchmarks/perf/decode.py
has the figures). A static cache with a torch.compile'd step, its weights frozen into the graph and its
matmul kernels autotuned, doubles that (27.5 -> 58.6 tokens/s on 2 EPYC cores; 73.8 with int8 weights)
for 1-2 minutes of compilation per process and cache size: an option for a long-lived server. CPUs without
native bfloat16 (AVX2) run a bfloat16 matmul of many rows on a slow path (~10x float32), so there forwards
of many tokens (the prompt, option scoring) compute their linear layers in float32 (`_Float32Matmuls`):
the time to first token stays float32's. CPUs with it (AVX512-BF16, AMX) keep bfloat16 throughout.
Offered tools, a reply decodes each tool call it opens under the tools' JSON schemas
(vlm/tool_grammar.py), so its calls always parse and name a real tool.

score_options scores every option in the prompt's own forward: the options' tokens follow the prompt as
a prefix tree (`OptionTree`: "FR" and "-", shared by "FR-I" and "FR-II", are fed once) under a tree
attention mask, so each option token sees the prompt and its own option's earlier tokens, at the position
it would have after the prompt. score_options_batch asks many images the same question in one such
forward. An option's score is the sum of the log-probabilities of its tokens and of the end-of-turn
token, and a softmax over the options turns the scores into probabilities. The text before the first
image, the same in every prompt, is kept in a KV cache; asked with the image after the question
(EngineConfig.image_last), the question is cached too. (One forward for the prompts and a second for
every (prompt, option) pair over a repeated cache was 1.5x slower on two answers, 2.5x on eight.)
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from transformers import DynamicCache, StaticCache

from data_builders.io import AstroImage, read_image
from vlm.hardware import native_bf16_cpu
from vlm.lvm.model import LVM
from vlm.model import FULL_LM_DIR, LORA_DIR, PROJECTOR_FILE, VISION_DIR, AstroVLM, build_astrovlm
from vlm.processor import IMAGE_TOKEN, AstroVLMProcessor, parse_message
from vlm.tool_grammar import ToolCallGrammar, ToolCallGuide

DEFAULT_ADAPTER_DIR = Path(__file__).resolve().parent / "weights" / "vlm-adapter"
END_OF_TURN = "<|im_end|>"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CACHES = ("dynamic", "static")
STATIC_BLOCK = 256  # a static cache is sized up to a multiple of this: each size is compiled once


class ContextTruncatedWarning(UserWarning):
    """The conversation was longer than the model's context: its oldest turns were left out."""


@dataclass
class EngineConfig:
    """How the engine runs the model; the defaults are the fastest correct recipe on a plain CPU."""

    dtype: str = "bfloat16"  # of the LM and projector; the small vision tower always runs in float32
    cache: str = "dynamic"  # "static": a preallocated KV cache (prompt + answer, in blocks of 256 tokens)
    compile: bool = False  # torch.compile the decode step (needs cache="static"); slow to start
    # the LM's linear layers in int8 (weight-only, torchao): half the bytes per decode step, which pays
    # with compile=True (1.26x bfloat16's tokens/s); eager, the int8 kernels' call overhead makes it slower
    int8_weights: bool = False
    max_context: int | None = 2048  # prompt + answer, in tokens; None: the LM's max_position_embeddings
    seed: int = 0  # of sampling (temperature > 0); replies are reproducible
    guided_tool_calls: bool = True  # offered tools, a tool call is decoded under their schemas
    # option scoring asks with the images after the question (`Engine.question`): for a model trained to
    # read that order too (TrainConfig.image_last), 1.5-2x the images/s at a small cost in macro-F1
    image_last: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.cache not in CACHES:
            raise ValueError(f"cache must be one of {list(CACHES)}, got {self.cache!r}")
        if self.compile and self.cache != "static":
            raise ValueError('compile=True needs cache="static": a compiled step needs fixed shapes')
        if self.max_context is not None and self.max_context < 16:
            raise ValueError(f"max_context must be at least 16 tokens, got {self.max_context}")


# ----------------------------------------------------------------------------- replies


@dataclass
class Reply:
    """One answer. Iterating yields its text pieces as they are generated (again from the start if
    iterated twice); `finish()` generates the rest. The other fields are final once it is finished."""

    prompt_tokens: int
    dropped_messages: int = 0  # oldest messages left out to fit the context
    notice: str | None = None  # why, for the user: set whenever the conversation was shortened
    pieces: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    finish_reason: str | None = None  # "stop": the model ended its turn; "length": max_new_tokens reached
    _stream: Iterator[str] | None = field(default=None, repr=False)
    _on_finish: Callable[[Reply], None] | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def __iter__(self) -> Iterator[str]:
        i = 0
        while True:
            if i < len(self.pieces):
                yield self.pieces[i]
                i += 1
            elif self._stream is None:
                return
            else:
                try:
                    self.pieces.append(next(self._stream))
                except StopIteration:
                    self._stream = None
                    if self._on_finish is not None:
                        self._on_finish(self)
                except BaseException:  # a failed reply is not finished: no on_finish, no retry
                    self._stream = None
                    raise

    def finish(self) -> Reply:
        for _ in self:
            pass
        return self

    def close(self) -> None:
        """Stop generating (frees the engine for the next reply); the text so far stays."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class Conversation:
    """A chat that keeps its history: each ask() adds the user turn and, once the reply is finished,
    the assistant's. The history keeps every image; the engine shortens what the model reads."""

    def __init__(self, engine: Engine, system_prompt: str | None = None):
        self.engine = engine
        self.messages: list[dict] = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def ask(self, text: str, images: list | tuple = (), **options) -> Reply:
        parts = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": text}]
        self.messages.append({"role": "user", "content": parts})
        try:
            return self.engine.chat(self.messages, on_finish=self._record, **options)
        except Exception:
            self.messages.pop()  # a refused question leaves no trace
            raise

    def _record(self, reply: Reply) -> None:
        self.messages.append({"role": "assistant", "content": reply.text})


# ----------------------------------------------------------------------------- images


def load_image(source, size: int) -> np.ndarray:
    """A file path (PNG/JPEG/TIFF/FITS/NPY) or an AstroImage -> (size, size, 3) uint8, rendered as the
    models see images: 1 plane as radio (three stretches of the same data), 3 planes as optical (Lupton
    g,r,z, or passed through when already 8-bit RGB). The whole field is kept (no crop to a source).
    Unreadable files raise ImageReadError (a ValueError) naming the file and the reason."""
    from vlm.lvm.data import prepare_image  # imported here: it pulls in the simulators, ~1 s

    image = source if isinstance(source, AstroImage) else read_image(source)
    domain = "radio" if image.data.shape[0] == 1 else "optical"
    return prepare_image(image.data, domain, image.bands, size, crop=False)


def _compiled_step(lm: torch.nn.Module) -> Callable:
    """lm.forward compiled for fixed shapes (one token, a static cache). The weights never change here,
    so inductor may fold them into the graph (freezing: oneDNN's prepacked layouts) and time its matmul
    kernels to pick the fastest (max-autotune): on 2 cores 58.6 tokens/s instead of ~25 plain compiled
    in bfloat16, 73.8 instead of 46.5 with int8 weights (benchmarks/perf/decode.py)."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(lm.forward, fullgraph=True, dynamic=False, mode="max-autotune-no-cudagraphs")

    def step(**inputs):
        # freezing is read where the graph is compiled, at the first call (and on a recompile), outside
        # what torch.compile's options= patches
        with inductor_config.patch(freezing=True):
            return compiled(**inputs)

    return step


def _quantize_int8(lm: torch.nn.Module) -> None:
    """The LM's linear layers (LM head included; the embedding stays) in int8, one scale per output
    channel; activations keep their dtype. A decode step then reads half the bytes."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(lm, Int8WeightOnlyConfig())


class _Float32Matmuls(TorchFunctionMode):
    """Inside, a linear layer on bfloat16 inputs of several rows computes in float32 (weights upcast on the
    fly, result cast back). Without native bfloat16 instructions that is ~10x faster than the bfloat16
    kernel; a decode step (one row) keeps the bfloat16 kernel, which reads half the bytes."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and args[0].dtype == torch.bfloat16 and args[0].shape[:-1].numel() > 1:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            out = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
            return out.to(x.dtype)
        return func(*args, **kwargs)


# ----------------------------------------------------------------------------- the engine


class Engine:
    def __init__(self, model: AstroVLM, processor: AstroVLMProcessor, config: EngineConfig | None = None):
        """Wrap a built model; its LM and projector are cast to config.dtype (the tower stays float32)."""
        self.config = config or EngineConfig()
        dtype = DTYPES[self.config.dtype]
        self.model = model.eval()
        self.model.language_model.to(dtype)
        self.model.projector.to(dtype)
        self.lm = self.model.language_model
        if self.config.int8_weights:
            _quantize_int8(self.lm)
        self.processor = processor
        tokenizer = processor.tokenizer
        self.stop_ids = {tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.eos_token_id}
        eos = self.model.generation_config.eos_token_id
        self.stop_ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.stop_ids.discard(None)
        self.stop_ids.discard(tokenizer.unk_token_id)  # an END_OF_TURN the tokenizer does not know
        limit = self.lm.config.max_position_embeddings
        self.max_context = min(self.config.max_context or limit, limit)
        self._busy = threading.Lock()  # one reply at a time: a reply holds the (static) KV cache
        self._static_cache: StaticCache | None = None
        self._shared_prefix: tuple[tuple[int, ...], DynamicCache] | None = None  # see _prefix_cache
        self._tool_grammar: ToolCallGrammar | None = None  # built on the first reply offered tools
        on_cpu = self.lm.device.type == "cpu"
        slow_bf16 = dtype == torch.bfloat16 and on_cpu and not native_bf16_cpu()
        self._many_rows = _Float32Matmuls if slow_bf16 else contextlib.nullcontext
        self._step = self.lm.forward
        if self.config.compile:
            self._step = _compiled_step(self.lm)

    @classmethod
    def load(
        cls,
        adapter_dir: str | Path | None = None,
        config: EngineConfig | None = None,
        language_model: str | Path | None = None,
        vision_tower: LVM | None = None,
    ) -> Engine:
        """The default model: the shipped LVM (or `vision_tower`), SmolLM2-135M-Instruct (or any causal
        LM by name or path) and the trained projector + LoRA from `adapter_dir` (None: the shipped one,
        vlm/weights/vlm-adapter). LoRA is merged into the LM: no adapter cost per token. An adapter from
        full fine-tuning carries its own LM (language_model/), used unless `language_model` is given."""
        config = config or EngineConfig()
        adapter = Path(adapter_dir) if adapter_dir is not None else DEFAULT_ADAPTER_DIR
        if language_model is None and (adapter / FULL_LM_DIR).is_dir():  # after full fine-tuning
            language_model = adapter / FULL_LM_DIR
        if vision_tower is None and (adapter / VISION_DIR).is_dir():  # after training the tower
            vision_tower = LVM.load(adapter / VISION_DIR)
        lora = (adapter / PROJECTOR_FILE).is_file() and (adapter / LORA_DIR).is_dir()
        # LoRA is merged in float32 and the sum cast once: merging into bfloat16 weights rounds twice
        dtype = torch.float32 if lora else DTYPES[config.dtype]
        model, processor = build_astrovlm(language_model, vision_tower, dtype=dtype)
        if (adapter / PROJECTOR_FILE).is_file():
            model.restore_adapter(adapter)
            if lora:
                model.merge_lora()
        elif adapter_dir is not None:
            raise FileNotFoundError(f"{adapter}: no {PROJECTOR_FILE}, not an adapter saved by save_adapter")
        else:
            warnings.warn(
                f"NO TRAINED ADAPTER: {adapter} is missing, so the projector is untrained and the model "
                "cannot see images (answers ignore them). Train one (vlm/train.py) or pass adapter_dir.",
                stacklevel=2,
            )
        return cls(model, processor, config)

    def conversation(self, system_prompt: str | None = None) -> Conversation:
        return Conversation(self, system_prompt)

    # ------------------------------------------------------------------------- chat

    def chat(
        self,
        messages: list[dict],
        images: list | None = None,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stream: bool = True,
        tools: list[dict] | None = None,
        guided_tools: list[dict] | None = None,
        on_finish: Callable[[Reply], None] | None = None,
    ) -> Reply:
        """Answer the last turn of `messages` (the processor's message forms; images as parts, or as
        `images=` for "<image>" markers). temperature 0 is greedy. The prompt is prepared here, so bad
        input raises at once; generation starts on the first iteration (stream=False: before returning).
        Too long a conversation loses its oldest turns (never the system prompt or the last user turn),
        with a ContextTruncatedWarning and `reply.notice`. `tools` (OpenAI `tools=` dicts) are listed in
        the prompt; the calls the reply writes are decoded under the schemas of `guided_tools` (default:
        `tools`), which a model trained on its tools' calls can be given without listing them."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        messages, images = self._resolve_images(messages, images)
        inputs, dropped, max_new_tokens, notice = self._fit_context(messages, images, tools, max_new_tokens)
        if notice:
            warnings.warn(notice, ContextTruncatedWarning, stacklevel=2)
        reply = Reply(inputs["input_ids"].shape[1], dropped, notice, _on_finish=on_finish)
        guided_tools = tools if guided_tools is None else guided_tools
        guide = self._guide(guided_tools) if guided_tools and self.config.guided_tool_calls else None
        reply._stream = self._stream(reply, inputs, max_new_tokens, temperature, guide)
        return reply if stream else reply.finish()

    def _guide(self, tools: list[dict]) -> ToolCallGuide:
        if self._tool_grammar is None:
            self._tool_grammar = ToolCallGrammar(
                self.processor.tokenizer, self.lm.config.vocab_size, frozenset(self.stop_ids)
            )
        return self._tool_grammar.guide(tools)

    def _resolve_images(self, messages: list[dict], images: list | None) -> tuple[list[dict], list | None]:
        """Paths and AstroImages -> rendered pictures, in the image parts and in `images`."""

        def picture(image):
            is_source = isinstance(image, (str, Path, AstroImage))
            return load_image(image, self.processor.image_size) if is_source else image

        resolved = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):
                content = [
                    {**part, "image": picture(part["image"])} if part.get("type") == "image" else part
                    for part in content
                ]
                message = {**message, "content": content}
            resolved.append(message)
        return resolved, None if images is None else [picture(image) for image in images]

    def _fit_context(self, messages, images, tools, max_new_tokens):
        """The prompt that fits max_context with room for the answer, dropping whole turns (a user
        message and what follows it) oldest first; the answer's budget shrinks only when the last turn
        alone leaves too little room. -> (inputs, messages dropped, max_new_tokens, notice or None)."""
        head = messages[:1] if messages and parse_message(messages[0])[0] == "system" else []
        body = messages[len(head) :]
        if not body or parse_message(body[-1])[0] not in ("user", "tool"):
            raise ValueError("the conversation must end with a user (or tool) turn for the model to answer")
        user_turns = [i for i, m in enumerate(body) if parse_message(m)[0] == "user"]
        cuts = [0] + [i for i in user_turns if i > 0]
        for cut in cuts:
            kept = head + body[cut:]
            kept_images = None
            if images is not None:  # "<image>" markers consume `images` in order: drop the dropped turns'
                gone = sum(parse_message(m)[1].count(IMAGE_TOKEN) for m in body[:cut])
                kept_images = images[gone:]
            inputs = self.processor(kept, images=kept_images, tools=tools, add_generation_prompt=True)
            length = inputs["input_ids"].shape[1]
            if length + max_new_tokens <= self.max_context:
                break
        if length >= self.max_context:
            raise ValueError(
                f"the last turn alone is {length} tokens, over the context of {self.max_context} tokens; "
                "shorten it or send fewer images"
            )
        notice = None
        if cut > 0:
            notice = (
                f"the conversation is longer than the model's context of {self.max_context} tokens: its "
                f"oldest {cut} message(s) were left out"
            )
        if length + max_new_tokens > self.max_context:
            max_new_tokens = self.max_context - length
            notice = (notice + "; " if notice else "") + f"the answer is limited to {max_new_tokens} tokens"
        inputs.pop("labels")
        return inputs, cut, max_new_tokens, notice

    def _stream(
        self,
        reply: Reply,
        inputs,
        max_new_tokens: int,
        temperature: float,
        guide: ToolCallGuide | None = None,
    ) -> Iterator[str]:
        """Text pieces of the answer; updates reply's token count and finish reason as it goes."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this engine is generating another reply: finish() or close() that one first")
        try:
            ids, shown = [], ""
            for token in self._tokens(inputs, max_new_tokens, temperature, guide):
                reply.completion_tokens += 1
                if token in self.stop_ids:
                    reply.finish_reason = "stop"
                    break
                ids.append(token)
                text = self.processor.tokenizer.decode(
                    ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
                )
                # a character split over several byte-level tokens decodes as U+FFFD until it is whole
                if len(text) > len(shown) and not text.endswith("\ufffd"):
                    yield text[len(shown) :]
                    shown = text
            else:
                reply.finish_reason = "length"
            text = self.processor.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            if len(text) > len(shown):
                yield text[len(shown) :]
        finally:
            self._busy.release()

    def _prefill(self, inputs, cache):
        """The prompt, images included, run once into `cache`; only the last position's logits kept."""
        with self._many_rows():
            return self.model(
                input_ids=inputs["input_ids"],
                pixel_values=inputs["pixel_values"],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )

    @torch.inference_mode()
    def _tokens(
        self, inputs, max_new_tokens: int, temperature: float, guide: ToolCallGuide | None = None
    ) -> Iterator[int]:
        """Token ids, one per step: the prompt (with its images) runs once, then one token per step;
        with a guide, each token is picked among those the tool-call grammar allows."""
        position = inputs["input_ids"].shape[1]
        cache = self._new_cache(position + max_new_tokens)
        out = self._prefill(inputs, cache)
        generator = torch.Generator().manual_seed(self.config.seed)
        for step in range(max_new_tokens):
            logits = out.logits[0, -1] if guide is None else guide.constrain(out.logits[0, -1])
            token = _pick(logits, temperature, generator)
            if guide is not None:
                guide.accept(token)
            yield token
            if step + 1 == max_new_tokens or token in self.stop_ids:
                return
            out = self._step(
                input_ids=torch.tensor([[token]]),
                position_ids=torch.tensor([[position]]),
                cache=cache,
                use_cache=True,
            )
            position += 1

    def _new_cache(self, tokens: int):
        if self.config.cache == "dynamic":
            return DynamicCache(config=self.lm.config)
        # Every step attends over the whole static cache, so it is sized to the reply, not to max_context
        # (2048 slots would halve the speed); kept while the size holds, as the compiled step expects.
        size = min(math.ceil(tokens / STATIC_BLOCK) * STATIC_BLOCK, self.max_context)
        if self._static_cache is None or self._static_cache.get_max_length() != size:
            self._static_cache = StaticCache(config=self.lm.config, max_cache_len=size)
        self._static_cache.reset()
        return self._static_cache

    # ------------------------------------------------------------------------- option scoring

    def score_options(self, images, question: str, options: list[str]) -> dict[str, float]:
        """P(option | images, question) for fixed answers: softmax over the options of the summed
        log-probabilities of each option's tokens and the end-of-turn token after the prompt."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        return self.score_options_batch([images], question, options)[0]

    def question(self, images: list, text: str) -> list[dict]:
        """A user turn's content asking `text` of `images`: the images first (LLaVA's order, the chat's) or,
        with config.image_last, after the text, so that the system prompt and the question, the same for
        every image of a benchmark, are one cached prefix and each image adds only its own tokens (B2: 22
        + the answers' instead of 83 + the answers')."""
        images = [{"type": "image", "image": image} for image in images]
        text = [{"type": "text", "text": text}]
        return text + images if self.config.image_last else images + text

    @torch.inference_mode()
    def score_options_batch(
        self, image_sets: list, question: str, options: list[str]
    ) -> list[dict[str, float]]:
        """score_options for many images (or lists of images, the same number in each) asked the same
        question, in one forward of the prompts followed by the option tree. The prompts differ only in
        their image features, so they have the same tokens and need no padding."""
        if len(options) < 2 or len(set(options)) != len(options):
            raise ValueError(f"options must be at least two distinct answers, got {options!r}")
        if not image_sets:
            return []
        sets = [list(s) if isinstance(s, (list, tuple)) else [s] for s in image_sets]
        if len({len(s) for s in sets}) > 1:
            raise ValueError("every prompt of a batch needs the same number of images")
        prompts = []
        for pictures in sets:
            messages, _ = self._resolve_images(
                [{"role": "user", "content": self.question(pictures, question)}], None
            )
            prompts.append(self.processor(messages, add_generation_prompt=True))
        input_ids = torch.cat([p["input_ids"] for p in prompts])
        batch, prompt = input_ids.shape
        # each option tokenised as the processor tokenises an assistant answer: "{text}<|im_end|>"
        tokenizer = self.processor.tokenizer
        answers = [tokenizer(f"{o}{END_OF_TURN}", add_special_tokens=False)["input_ids"] for o in options]
        longest = max(len(a) for a in answers)
        if prompt + longest > self.max_context:
            raise ValueError(f"prompt and options take {prompt + longest} tokens, over {self.max_context}")

        tree = OptionTree.of(answers)
        cache, shared = self._prefix_cache(input_ids)
        tail = prompt - shared  # prompt tokens not in the cached prefix
        pixels = [p["pixel_values"] for p in prompts if p["pixel_values"] is not None]
        nodes = torch.tensor(tree.tokens, dtype=torch.long)[None].expand(batch, -1)
        node_positions = prompt + torch.tensor(tree.depths, dtype=torch.long)
        positions = torch.cat([torch.arange(shared, prompt), node_positions])
        read = torch.arange(tail - 1, tail + len(tree.tokens))  # the prompt's last position and the nodes
        with self._many_rows():
            logits = self.model(
                input_ids=torch.cat([input_ids[:, shared:], nodes], dim=1),
                pixel_values=torch.cat(pixels) if pixels else None,
                attention_mask=tree.attention_mask(shared, tail, self.lm.dtype).expand(batch, -1, -1, -1),
                position_ids=positions[None].expand(batch, -1),
                cache=cache,
                use_cache=True,
                logits_to_keep=read,
            ).logits  # (B, 1 + nodes, V): row 0 predicts every option's first token, row 1 + i node i's child
        logprobs = logits.float().log_softmax(-1)
        option, row, token = (torch.tensor(column, dtype=torch.long) for column in zip(*tree.reads))
        scores = torch.zeros(batch, len(options)).index_add_(1, option, logprobs[:, row, token])
        probs = scores.softmax(-1).tolist()
        return [dict(zip(options, row)) for row in probs]

    def _prefix_cache(self, input_ids: torch.Tensor) -> tuple[DynamicCache, int]:
        """(KV cache, n) for a batch of prompts: the cache holds their first n tokens, the text before the
        first image (system prompt, user header and, asked image last, the question), computed once per
        engine while that text stays the same, and copied for each batch."""
        ids = input_ids[0]
        images = (ids == self.model.config.image_token_id).nonzero()
        shared = int(images[0]) if len(images) else ids.numel() - 1  # a token is left for the logits
        cache = DynamicCache(config=self.lm.config)
        if shared == 0:
            return cache, 0
        key = tuple(ids[:shared].tolist())
        if self._shared_prefix is None or self._shared_prefix[0] != key:
            with self._many_rows():
                self.lm(input_ids=ids[None, :shared], cache=cache, use_cache=True, logits_to_keep=1)
            self._shared_prefix = (key, cache)
        cache = copy.deepcopy(self._shared_prefix[1])
        cache.batch_repeat_interleave(input_ids.shape[0])
        return cache, shared


@dataclass(frozen=True)
class OptionTree:
    """The options' tokens as a prefix tree, scored in the prompt's forward: the tokens options share
    ("FR", "-" of "FR-I" and "FR-II") are fed once, each node attends to the prompt and its own
    ancestors (a tree attention mask) at the position it would have after the prompt."""

    tokens: list[int]  # the nodes whose logits are read: every option token but the last (end of turn)
    parents: list[int]  # each node's parent node, -1 for the prompt; a parent comes before its children
    depths: list[int]  # 0 for an option's first token
    reads: list[tuple[int, int, int]]  # (option, row, token): row 0 the prompt's last position, 1 + i node i

    @classmethod
    def of(cls, answers: list[list[int]]) -> OptionTree:
        index: dict[tuple[int, ...], int] = {}
        tokens, parents, depths, reads = [], [], [], []
        for option, answer in enumerate(answers):
            row = 0
            for depth, token in enumerate(answer):
                reads.append((option, row, token))
                if depth + 1 == len(answer):
                    break  # what follows the last token is not scored
                prefix = tuple(answer[: depth + 1])
                if prefix not in index:
                    index[prefix] = len(tokens)
                    tokens.append(token)
                    parents.append(row - 1)
                    depths.append(depth)
                row = 1 + index[prefix]
        return cls(tokens, parents, depths, reads)

    def attention_mask(self, cached: int, prompt: int, dtype: torch.dtype) -> torch.Tensor:
        """(1, 1, prompt + nodes, cached + prompt + nodes) additive mask for `prompt` new prompt tokens
        after `cached` ones in the KV cache, then the nodes: causal over the prompt, tree over the nodes."""
        nodes = len(self.tokens)
        allowed = torch.zeros(prompt + nodes, cached + prompt + nodes, dtype=torch.bool)
        allowed[:prompt, : cached + prompt] = torch.ones(prompt, cached + prompt).tril(cached).bool()
        allowed[prompt:, : cached + prompt] = True
        ancestry = torch.eye(nodes, dtype=torch.bool)
        for node, parent in enumerate(self.parents):
            if parent >= 0:
                ancestry[node] |= ancestry[parent]
        allowed[prompt:, cached + prompt :] = ancestry
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[None, None]


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> int:
    if temperature == 0:
        return int(logits.argmax())
    probs = (logits.float() / temperature).softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
