r"""AstroVLMProcessor: conversations and images in, model inputs out; the one place the chat template lives.

    processor = AstroVLMProcessor.for_model(tokenizer, model.config)
    image_and_question = [{"type": "image", "image": rgb}, {"type": "text", "text": "What is this?"}]
    inputs = processor([{"role": "user", "content": image_and_question}], add_generation_prompt=True)
    inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"], inputs["labels"]
    batch = processor.collate([processor(c1), processor(c2)], padding_side="left")

Messages are OpenAI-style dicts (role system/user/assistant/tool; content a string or a list of
{"type": "text", "text"} / {"type": "image", "image"} parts; assistant `tool_calls` as {"name", "arguments"}
or OpenAI's {"function": {...}}), or the data builders' LLaVA turns ({"from": "human"|"gpt"|"tool",
"value"}, images passed as `images=` for the "<image>" markers in the text). Both render to the same
ChatML text, SmolLM2's own template:

    <|im_start|>system\n...<|im_end|>\n<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n
    <|im_start|>assistant\n<tool_call>{"name": "image_stats", "arguments": {}}</tool_call><|im_end|>\n
    <|im_start|>tool\n<tool_response>{...}</tool_response><|im_end|>\n<|im_start|>assistant\n...

Each "<image>" marker becomes `num_image_tokens` image tokens, which the model overwrites with the
projected image features. `labels` copy input_ids on what the assistant says (its content and
<|im_end|>, so it learns to stop) and are -100 everywhere else: system, user and tool turns, the
"<|im_start|>assistant\n" headers, image tokens and padding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase

# The same strings as data_builders.conversations and the tool-call format of DESIGN section 4 (not
# imported from there: that module pulls in the simulators, seconds of import time).
IMAGE_TOKEN = "<image>"
TOOL_CALL = "<tool_call>{}</tool_call>"
TOOL_RESPONSE = "<tool_response>{}</tool_response>"
IGNORE_INDEX = -100  # labels the loss skips
DEFAULT_SYSTEM_PROMPT = (
    "You are AstroVLM, a helpful assistant that looks at astronomy images and answers questions."
)
LLAVA_ROLES = {"human": "user", "gpt": "assistant", "tool": "tool", "system": "system"}
ROLES = ("system", "user", "assistant", "tool")
PROCESSOR_CONFIG = "processor_config.json"


# ----------------------------------------------------------------------------- messages -> text


def add_image_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add "<image>" to the tokenizer as a special token (once) and return its id."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def tools_prompt(tools: list[dict]) -> str:
    """The tool list for the system prompt, from OpenAI `tools=` dicts (tool_specs.openai_tools())."""
    listed = "\n".join(json.dumps(tool) for tool in tools)
    call = TOOL_CALL.format('{"name": ..., "arguments": {...}}')
    return (
        f"You can call these tools:\n<tools>\n{listed}\n</tools>\n"
        f"To call one, answer with {call}; its result comes back as {TOOL_RESPONSE.format('...')}."
    )


def format_tool_call(call: dict) -> str:
    """{"name", "arguments"} or OpenAI's {"type": "function", "function": {"name", "arguments": str}}."""
    call = call.get("function", call)
    arguments = call.get("arguments") or {}
    if isinstance(arguments, str):  # OpenAI sends the arguments as a JSON string
        arguments = json.loads(arguments)
    # json.dumps with default separators: byte for byte what the data builders write
    return TOOL_CALL.format(json.dumps({"name": call["name"], "arguments": arguments}))


def parse_message(message: dict) -> tuple[str, str, list]:
    """One message (OpenAI-style or a LLaVA turn) -> (role, text with "<image>" markers, its images)."""
    if "from" in message:  # a data builders' turn: the text is already in its final form
        if message["from"] not in LLAVA_ROLES:
            raise ValueError(f"unknown turn 'from': {message['from']!r}; valid: {sorted(LLAVA_ROLES)}")
        role, text = LLAVA_ROLES[message["from"]], message["value"]
        if role == "tool":  # the wrapper is added back below, the same way for both forms
            text = text.removeprefix("<tool_response>").removesuffix("</tool_response>")
        return role, text, []
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise ValueError(f"unknown message role {role!r}; valid: {list(ROLES)}")
    images = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, dict) and role == "tool":  # a tool result as a JSON object
        text = json.dumps(content)
    else:
        pieces = []
        for part in content:
            if part.get("type") == "text":
                pieces.append(part["text"])
            elif part.get("type") == "image":
                pieces.append(IMAGE_TOKEN)
                images.append(part["image"])
            else:
                raise ValueError(f"unknown content part type {part.get('type')!r}; valid: 'text', 'image'")
        text = "\n".join(pieces)  # "<image>\nquestion", as in the LLaVA turns
    if role == "assistant" and message.get("tool_calls"):
        calls = [format_tool_call(c) for c in message["tool_calls"]]
        text = "\n".join([text, *calls] if text else calls)
    return role, text, images


def render_segments(
    messages: list[dict],
    system_prompt: str | None = None,
    tools: list[dict] | None = None,
    add_generation_prompt: bool = False,
) -> tuple[list[tuple[str, bool]], list]:
    """The ChatML text as (piece, trainable) segments, and the images in order of their markers.

    The system turn is the conversation's own first system message, else `system_prompt` (None: no
    system turn); `tools` are listed after it."""
    parsed = [parse_message(m) for m in messages]
    system = system_prompt
    if parsed and parsed[0][0] == "system":
        system, parsed = parsed[0][1], parsed[1:]
    if tools:
        system = f"{system}\n\n{tools_prompt(tools)}" if system else tools_prompt(tools)
    segments, images = [], []
    if system is not None:
        segments.append((f"<|im_start|>system\n{system}<|im_end|>\n", False))
    for role, text, message_images in parsed:
        images += message_images
        if role == "assistant":
            segments += [("<|im_start|>assistant\n", False), (f"{text}<|im_end|>", True), ("\n", False)]
        else:
            if role == "tool":
                text = TOOL_RESPONSE.format(text)
            segments.append((f"<|im_start|>{role}\n{text}<|im_end|>\n", False))
    if add_generation_prompt:
        segments.append(("<|im_start|>assistant\n", False))
    return segments, images


# ----------------------------------------------------------------------------- images


def to_rgb_uint8(image) -> np.ndarray:
    """A PIL image, a uint8 (H, W, 3) array or a float (3, H, W) array/tensor in [0, 1] -> (H, W, 3) uint8."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
            return image
        if np.issubdtype(image.dtype, np.floating) and image.ndim == 3 and image.shape[0] == 3:
            if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
                raise ValueError(
                    f"float images must be finite and in [0, 1], got values in [{image.min()}, {image.max()}]"
                )
            return np.moveaxis(np.round(image * 255).astype(np.uint8), 0, -1)
    shape = getattr(image, "shape", None)
    raise ValueError(
        "images must be PIL images, uint8 (H, W, 3) RGB arrays or float (3, H, W) arrays in [0, 1]; render "
        "astronomy data first with data_builders.stretch.render_rgb or vlm.lvm.data.prepare_image; got "
        f"{type(image).__name__} {getattr(image, 'dtype', '')} {shape if shape is not None else ''}"
    )


def preprocess_images(images: list, size: int) -> torch.Tensor:
    """-> (n, 3, size, size) float in [0, 1]; resized as vlm.lvm.data.prepare_image does (PIL bilinear on
    the uint8 picture), so the tower sees what it was trained on."""
    out = []
    for image in images:
        rgb = to_rgb_uint8(image)
        if rgb.shape[:2] != (size, size):
            rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
        out.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1))
    return torch.stack(out).float() / 255


# ----------------------------------------------------------------------------- the processor


class AstroVLMProcessor:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_size: int,
        num_image_tokens: int,
        image_token_id: int | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    ):
        self.tokenizer = tokenizer
        self.image_token_id = add_image_token(tokenizer)
        if image_token_id is not None and image_token_id != self.image_token_id:
            raise ValueError(
                f"the tokenizer's {IMAGE_TOKEN} token has id {self.image_token_id}, but the model expects "
                f"{image_token_id}: pair the model with the tokenizer it was built with"
            )
        self.image_size = image_size
        self.num_image_tokens = num_image_tokens
        self.system_prompt = system_prompt  # None: no system turn unless the conversation has one
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to its eos)")

    @classmethod
    def for_model(cls, tokenizer: PreTrainedTokenizerBase, config, **kwargs) -> AstroVLMProcessor:
        """The processor matching an AstroVLMConfig: its image size, image tokens and image token id."""
        return cls(tokenizer, config.image_size, config.num_image_tokens, config.image_token_id, **kwargs)

    def render(
        self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt=False
    ) -> str:
        """The prompt text, one "<image>" marker per image (what the model reads, before expansion)."""
        segments, _ = render_segments(messages, self.system_prompt, tools, add_generation_prompt)
        return "".join(text for text, _ in segments)

    def __call__(
        self,
        messages: list[dict],
        images: list | None = None,
        tools: list[dict] | None = None,
        add_generation_prompt: bool = False,
    ) -> BatchFeature:
        """One conversation -> input_ids, attention_mask, labels (1, T) and pixel_values (n, 3, S, S) or None.

        Images come from the messages' image parts or, for text with "<image>" markers (LLaVA turns),
        from `images`, in order of appearance; there must be exactly one per marker."""
        segments, part_images = render_segments(messages, self.system_prompt, tools, add_generation_prompt)
        if part_images and images:
            raise ValueError("give images either as message parts or as `images=`, not both")
        images = part_images or list(images or [])
        markers = sum(text.count(IMAGE_TOKEN) for text, _ in segments)
        if markers != len(images):
            raise ValueError(
                f"the conversation has {markers} {IMAGE_TOKEN} markers but {len(images)} images were given; "
                f"each image needs one {IMAGE_TOKEN} in the text where it belongs"
            )
        expanded = [text.replace(IMAGE_TOKEN, IMAGE_TOKEN * self.num_image_tokens) for text, _ in segments]
        # Tokenised piece by piece, so that the prompt up to "<|im_start|>assistant\n" gets the same ids
        # in training as it does at generation time, and labels follow the pieces exactly.
        pieces = self.tokenizer(expanded, add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([i for ids in pieces for i in ids], dtype=torch.long)
        labels = torch.tensor(
            [i if trainable else IGNORE_INDEX for ids, (_, trainable) in zip(pieces, segments) for i in ids],
            dtype=torch.long,
        )
        is_image = input_ids == self.image_token_id
        labels[is_image] = IGNORE_INDEX
        if int(is_image.sum()) != markers * self.num_image_tokens:
            raise ValueError(
                f"{markers} {IMAGE_TOKEN} markers tokenised to {int(is_image.sum())} image tokens instead of "
                f"{markers * self.num_image_tokens}: is {IMAGE_TOKEN} a special token of this tokenizer?"
            )
        return BatchFeature(
            {
                "input_ids": input_ids[None],
                "attention_mask": torch.ones_like(input_ids)[None],
                "labels": labels[None],
                "pixel_values": preprocess_images(images, self.image_size) if images else None,
            }
        )

    def collate(self, encodings: list[BatchFeature], padding_side: str = "right") -> BatchFeature:
        """Pad single conversations into one batch ("left" for generation, so all prompts end together);
        pixel_values are concatenated in batch order, the order in which the model consumes them."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        length = max(e["input_ids"].shape[1] for e in encodings)
        fills = {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        batch = {}
        for key, fill in fills.items():
            rows = []
            for e in encodings:
                pad = torch.full((length - e[key].shape[1],), fill, dtype=torch.long)
                row = e[key][0]
                rows.append(torch.cat([pad, row] if padding_side == "left" else [row, pad]))
            batch[key] = torch.stack(rows)
        pixels = [e["pixel_values"] for e in encodings if e["pixel_values"] is not None]
        batch["pixel_values"] = torch.cat(pixels) if pixels else None
        return BatchFeature(batch)

    def decode(self, ids: torch.Tensor | list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------------- save / load

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        settings = {
            "image_size": self.image_size,
            "num_image_tokens": self.num_image_tokens,
            "image_token_id": self.image_token_id,
            "system_prompt": self.system_prompt,
        }
        (directory / PROCESSOR_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> AstroVLMProcessor:
        directory = Path(directory)
        if not (directory / PROCESSOR_CONFIG).is_file():
            raise FileNotFoundError(f"no {PROCESSOR_CONFIG} in {directory}: not a saved AstroVLMProcessor")
        settings = json.loads((directory / PROCESSOR_CONFIG).read_text())
        return cls(AutoTokenizer.from_pretrained(directory), **settings)
