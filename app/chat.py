"""`astrovlm chat`: the Gradio chat on localhost, over the assistant (app/assistant.py).

    astrovlm chat                      # http://127.0.0.1:7860, the shipped model
    astrovlm chat --port 8080 --adapter runs/vlm/adapter

Upload PNG/JPEG/TIFF/FITS/NPY with a question; the answer streams in and the stop button cuts it short.
The image is shown with the stretch the model reads, and the stretch menu changes both. Tool calls (the
model's, or a button's) appear as collapsible steps with their results drawn inline: detections as boxes
on the image, class probabilities as bars, similar images as a gallery. A file that cannot be read is
answered in the chat with the reason, and the conversation goes on. The backend menu switches between
the local model and any OpenAI-compatible API (its native function calling runs the same tools).

`ask` is also an API endpoint (gradio_client: `Client(url).predict(question, image, stretch,
api_name="/ask")`): one question about one image, the final answer and the tool steps as text.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from app import compute
from app.assistant import (
    Assistant,
    OpenAIBackend,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEnd,
    conversation_images,
    user_message,
)
from app.examples import EXAMPLES
from app.images import DEFAULT_STRETCH, STRETCH_CHOICES, ChatImage
from data_builders.io import ReadLimits

FILE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".fits", ".fit", ".fz", ".npy"]
UPLOAD_LIMITS = ReadLimits(max_bytes=200 * 2**20, max_pixels=8192 * 8192)
TOOL_BUTTONS = {  # label -> (tool, arguments)
    "Detect sources": ("detect_sources", {}),
    "Image statistics": ("image_stats", {}),
    "Find similar": ("find_similar", {"k": 6}),
}
RADIO_SCHEME, OPTICAL_SCHEME = "radio-b6", "optical-morphology"


@dataclass
class Session:
    """One browser tab's conversation: the assistant's history (with ChatImages) and its backend."""

    history: list[dict] = field(default_factory=list)
    backend: OpenAIBackend | None = None  # None: the local model


class ChatApp:
    def __init__(
        self,
        assistant: Assistant,
        max_new_tokens: int = 256,
        chat_height: int = 560,
        notice: str | None = None,
    ):
        self.local, self.max_new_tokens, self.chat_height = assistant, max_new_tokens, chat_height
        self.notice = notice  # shown under the title: what the user should know about the model
        self.workdir = Path(tempfile.mkdtemp(prefix="astrovlm-chat-"))  # pictures shown in the chat

    def assistant_for(self, session: Session) -> Assistant:
        if session.backend is None:
            return self.local
        return Assistant(session.backend, self.local.runner)

    # ------------------------------------------------------------------------- pictures

    def _save(self, picture: Image.Image | np.ndarray) -> str:
        image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
        path = self.workdir / f"{len(list(self.workdir.iterdir())):06d}.png"
        image.save(path)
        return str(path)

    # ------------------------------------------------------------------------- events

    def add_user(self, message: dict, chat: list, session: Session, stretch: str):
        """Read the uploads, record the user turn, show it. Unreadable files are answered in the chat."""
        chat = list(chat or [])
        images, problems = [], []
        for file in message.get("files") or []:
            path = file if isinstance(file, str) else file.get("path")
            name = Path(path).name
            try:
                images.append(ChatImage.read(path, name=name, stretch=stretch, limits=UPLOAD_LIMITS))
            except ValueError as exc:
                problems.append(" ".join(str(exc).split()))
        text = (message.get("text") or "").strip()
        for image in images:
            chat.append({"role": "user", "content": gr.Image(self._save(image.display()), label=image.name)})
        if text:
            chat.append({"role": "user", "content": text})
        for problem in problems:
            chat.append({"role": "assistant", "content": f"⚠️ Could not read {problem}"})
        if text:
            session.history.append(user_message(*images, text))
        elif images:  # an image alone: kept for the next question; the model reads what the user read
            received = "Image received: ask a question, or use a tool on the right."
            session.history += [
                user_message(*images, "Here is an image."),
                {"role": "assistant", "content": received},
            ]
            chat.append({"role": "assistant", "content": received})
        latest = conversation_images(session.history)
        preview = latest[-1].display() if latest else None
        return gr.MultimodalTextbox(value=None), chat, session, preview, bool(text)

    def respond(self, chat: list, session: Session, asked: bool):
        if not asked:
            yield chat, session
            return
        yield from self._stream(chat, session, lambda assistant: assistant.respond(
            session.history, max_new_tokens=self.max_new_tokens))  # fmt: skip

    def run_tool(self, label: str, scheme: str, chat: list, session: Session):
        name, arguments = TOOL_BUTTONS.get(label, ("classify_morphology", {}))
        if name == "classify_morphology":
            arguments = {"scheme": scheme}
        if not conversation_images(session.history):
            chat = [*chat, {"role": "assistant", "content": "⚠️ Upload an image first."}]
            yield chat, session
            return
        session.history.append(user_message(f"Run {name} on the image."))
        chat = [*chat, {"role": "user", "content": f"▶ {label}"}]
        yield from self._stream(chat, session, lambda assistant: assistant.run_tool(
            session.history, name, arguments, max_new_tokens=self.max_new_tokens))  # fmt: skip

    def _stream(self, chat: list, session: Session, start):
        """Show a turn's events as they come; a stopped or failed turn keeps what it said."""
        chat = list(chat)
        assistant = self.assistant_for(session)
        answer = None  # index in chat of the streaming answer
        steps: dict[str, int] = {}
        events = compute.iterate(lambda: start(assistant))
        try:
            for event in events:
                if isinstance(event, TextDelta):
                    if answer is None:
                        chat.append({"role": "assistant", "content": ""})
                        answer = len(chat) - 1
                    chat[answer] = {"role": "assistant", "content": chat[answer]["content"] + event.text}
                elif isinstance(event, ToolCall):
                    chat.append(_step(event, "pending", f"```json\n{json.dumps(event.arguments)}\n```"))
                    steps[event.id] = len(chat) - 1
                    answer = None
                elif isinstance(event, ToolResult):
                    body = result_markdown(event.output.result)
                    chat[steps[event.call.id]] = _step(event.call, "done", body, event.output.seconds)
                    chat.extend(self._visual(event))
                elif isinstance(event, TurnEnd) and event.notice:
                    chat.append({"role": "assistant", "content": f"ℹ️ {event.notice}"})
                yield chat, session
        except Exception as exc:  # a backend that cannot be reached, a model error: said in the chat
            chat.append({"role": "assistant", "content": f"⚠️ {type(exc).__name__}: {exc}"})
            yield chat, session
        finally:
            events.close()
            _close_turn(session.history)

    def _visual(self, result: ToolResult) -> list[dict]:
        visual = result.output.visual
        if isinstance(visual, Image.Image):
            return [{"role": "assistant", "content": gr.Image(self._save(visual), label=result.call.name)}]
        if isinstance(visual, list) and visual:
            items = [(self._save(picture), caption) for picture, caption in visual]
            return [{"role": "assistant", "content": gr.Gallery(items, label=result.call.name, columns=3)}]
        return []

    def set_stretch(self, stretch: str, session: Session):
        """Re-render the latest image with `stretch`, for the user and for the model's next turn."""
        for message in reversed(session.history):
            parts = message.get("content")
            if isinstance(parts, list) and any(p.get("type") == "image" for p in parts):
                message["content"] = [
                    {**p, "image": p["image"].with_stretch(stretch)} if p.get("type") == "image" else p
                    for p in parts
                ]
                return session, conversation_images(session.history)[-1].display()
        return session, None

    def set_backend(self, kind: str, url: str, model: str, key: str, session: Session):
        if kind == "local":
            session.backend = None
            return session, "Backend: the local model."
        if not url.strip() or not model.strip():
            return session, "⚠️ An OpenAI-compatible backend needs a base URL and a model name."
        session.backend = OpenAIBackend(url.strip(), key.strip() or None, model.strip())
        return session, f"Backend: {model.strip()} at {url.strip()}."

    def ask(self, question: str, image: str | None, stretch: str = DEFAULT_STRETCH) -> str:
        """One question about one image (API): the tool steps as lines, then the answer."""
        if not question or not question.strip():
            raise gr.Error("the question is empty")
        parts = []
        if image:
            try:
                parts.append(
                    ChatImage.read(image, name=Path(image).name, stretch=stretch, limits=UPLOAD_LIMITS)
                )
            except ValueError as exc:
                raise gr.Error(f"could not read the image: {' '.join(str(exc).split())}") from None
        history, lines, text = [user_message(*parts, question)], [], ""
        for event in compute.iterate(lambda: self.local.respond(history, max_new_tokens=self.max_new_tokens)):
            if isinstance(event, TextDelta):
                text += event.text
            elif isinstance(event, ToolResult):
                lines.append(f"[{event.call.name}] {json.dumps(event.output.result)}")
        return "\n".join([*lines, text])

    # ------------------------------------------------------------------------- layout

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="astrovlm", analytics_enabled=False) as demo:  # no calls home
            session = gr.State(Session())
            asked = gr.State(False)
            gr.Markdown("## astrovlm: ask questions of astronomy images")
            if self.notice:
                gr.Markdown(f"*{self.notice}*", elem_id="notice")
            with gr.Tab("Chat"), gr.Row():
                with gr.Column(scale=3):
                    chat = gr.Chatbot(height=self.chat_height, label="conversation", elem_id="chat")
                    box = gr.MultimodalTextbox(
                        file_types=FILE_TYPES, file_count="multiple", stop_btn=True, elem_id="ask",
                        placeholder="Upload a PNG, JPEG or FITS image and ask about it",
                    )  # fmt: skip
                    gr.Examples(
                        [{"text": e.question, "files": [str(e.path)]} for e in EXAMPLES],
                        inputs=[box], example_labels=[e.about for e in EXAMPLES], label="examples",
                    )  # fmt: skip
                with gr.Column(scale=1):
                    preview = gr.Image(label="image (as the model reads it)", interactive=False, height=260)
                    stretch = gr.Dropdown(list(STRETCH_CHOICES), value=DEFAULT_STRETCH, label="stretch")
                    gr.Markdown("**Tools**")
                    buttons = [gr.Button(label, size="sm") for label in TOOL_BUTTONS]
                    with gr.Row():
                        scheme = gr.Dropdown([RADIO_SCHEME, "optical-gmnist", OPTICAL_SCHEME], value=RADIO_SCHEME,
                                             show_label=False, scale=2)  # fmt: skip
                        classify = gr.Button("Classify", size="sm", scale=1)
                    with gr.Accordion("Backend", open=False):
                        kind = gr.Radio(["local", "openai"], value="local", label="model")
                        url = gr.Textbox(label="base URL", placeholder="https://api.openai.com/v1")
                        model = gr.Textbox(label="model", placeholder="gpt-4o")
                        key = gr.Textbox(label="API key", type="password")
                        use = gr.Button("Use", size="sm")
                        status = gr.Markdown("Backend: the local model.")
                    clear = gr.Button("New conversation", size="sm")
            with gr.Tab("Find objects (HITL)"):
                self._hitl_tab(session)

            # One turn at a time: the box and the tool buttons are locked while the model answers, so
            # a new question never lands in the middle of a turn's history.
            controls = [box, *buttons, classify]

            def lock(interactive: bool):
                return lambda: (
                    [gr.MultimodalTextbox(interactive=interactive)]
                    + [gr.Button(interactive=interactive) for _ in controls[1:]]
                )

            submitted = box.submit(lock(False), None, controls, queue=False).then(
                self.add_user,
                [box, chat, session, stretch],
                [box, chat, session, preview, asked],
                queue=False,
            )
            reply = submitted.then(
                self.respond, [chat, session, asked], [chat, session], concurrency_id="model"
            )
            reply.then(lock(True), None, controls)
            box.stop(lock(True), None, controls, cancels=[reply])  # a cancelled turn runs no .then
            for button in [*buttons, classify]:
                run = button.click(lock(False), None, controls, queue=False).then(
                    self.run_tool, [button, scheme, chat, session], [chat, session], concurrency_id="model"
                )
                run.then(lock(True), None, controls)
            stretch.change(self.set_stretch, [stretch, session], [session, preview])
            use.click(self.set_backend, [kind, url, model, key, session], [session, status])
            clear.click(lambda: ([], Session(), None), None, [chat, session, preview])
            api_question, api_image = gr.Textbox(visible=False), gr.File(visible=False)
            api_answer = gr.Textbox(visible=False)
            gr.Button(visible=False).click(
                self.ask,
                [api_question, api_image, stretch],
                [api_answer],
                api_name="ask",
                concurrency_id="model",
            )
        return demo

    # ------------------------------------------------------------------------- the HITL tab

    def _hitl_tab(self, session: gr.State) -> None:
        gr.Markdown(
            "Search the gallery for objects like the latest image of the chat (seed 000's human-in-the-loop): "
            "each round shows the images the model wants labelled; tick the targets, save, and go on."
        )
        with gr.Row():
            name = gr.Textbox("search-1", label="session", elem_id="hitl-name")
            target = gr.Textbox("like my image", label="target")
            alpha = gr.Slider(0, 1, 0.5, step=0.1, label="alpha (high: precision, low: recall)")
            size = gr.Slider(2, 30, 8, step=1, label="images per round")
        with gr.Row():
            start = gr.Button("Start from the latest chat image", elem_id="hitl-start")
            next_round = gr.Button("Next round", elem_id="hitl-next")
        picks = gr.Gallery(label="this round", columns=4, height=380, elem_id="hitl-gallery")
        targets = gr.CheckboxGroup(
            [], label="targets among them (the others are saved as not)", elem_id="hitl-targets"
        )
        with gr.Row():
            save = gr.Button("Save labels", elem_id="hitl-save")
            export = gr.Button("Export CSV")
        status = gr.Markdown(elem_id="hitl-status")
        exported = gr.File(label="labels and scores", interactive=False)
        shown = gr.State([])  # the ids of the round on screen
        start.click(self.hitl_start, [name, target, alpha, size, session], [status])
        next_round.click(self.hitl_next, [name], [picks, targets, shown, status])
        save.click(self.hitl_save, [name, targets, shown], [targets, shown, status])
        export.click(self.hitl_export, [name], [exported, status])

    def _tool(self, name: str, arguments: dict, images=()) -> dict:
        output = compute.call(self.local.runner.run, name, arguments, list(images))
        if not output.ok:
            raise gr.Error(output.result["error"])
        return output

    def hitl_start(self, name, target, alpha, size, session: Session) -> str:
        images = conversation_images(session.history)
        if not images:
            raise gr.Error("upload an image in the chat first: it is the first example of the target")
        arguments = {"session": name, "target": target, "alpha": float(alpha), "round_size": int(size)}
        result = self._tool("hitl_start", arguments, images[-1:]).result
        return f"Session **{name}** over {result['pool']} images: press *Next round*."

    def hitl_next(self, name):
        output = self._tool("hitl_next", {"session": name})
        ids = [entry["id"] for entry in output.result["images"]]
        gallery = [(self._save(picture), caption) for picture, caption in output.visual]
        return (
            gallery,
            gr.CheckboxGroup(choices=ids, value=[]),
            ids,
            f"Round {output.result['round']}: tick the targets.",
        )

    def hitl_save(self, name, ticked: list[str], shown: list[str]):
        if not shown:
            raise gr.Error("no round on screen: press Next round")
        progress = self._tool(
            "hitl_label", {"session": name, "labels": {i: i in ticked for i in shown}}
        ).result["progress"]
        return (
            gr.CheckboxGroup(choices=[], value=[]),
            [],
            (
                f"Saved. {progress['labelled']} labelled ({progress['positives']} targets) after round {progress['round']}."
            ),
        )

    def hitl_export(self, name):
        result = self._tool("hitl_export", {"session": name, "format": "csv"}).result
        return result["path"], f"Exported {result['progress']['labelled']} labels and every score."


ROWS_SHOWN = 15
TABLES = {  # result key -> the columns of its table
    "detections": ("label", "box", "score", "ra_deg", "dec_deg"),
    "neighbours": ("id", "label", "similarity"),
    "images": ("id", "score"),
}


def result_markdown(result: dict) -> str:
    """A tool result for people: lists of records as tables, the rest as `key: value` lines."""
    lines = []
    for key, value in result.items():
        if key in TABLES and isinstance(value, list):
            columns = [c for c in TABLES[key] if any(c in row for row in value)]
            lines += [
                f"**{key}** ({len(value)})",
                "",
                "| " + " | ".join(columns) + " |",
                "|" + "---|" * len(columns),
            ]
            lines += [
                "| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in value[:ROWS_SHOWN]
            ]
            if len(value) > ROWS_SHOWN:
                lines.append(f"\n… and {len(value) - ROWS_SHOWN} more")
            lines.append("")
        elif key == "probabilities" and isinstance(value, dict):
            lines += (
                ["| class | probability |", "|---|---|"]
                + [f"| {c} | {p:.3f} |" for c, p in value.items()]
                + [""]
            )
        else:
            lines.append(f"- **{key}**: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return "\n".join(lines)


def model_notice(adapter_dir: str | None) -> str | None:
    """What the page says about the model: that its own answers ignore images when no adapter is there."""
    from vlm.engine import DEFAULT_ADAPTER_DIR
    from vlm.model import PROJECTOR_FILE

    if adapter_dir is not None or (DEFAULT_ADAPTER_DIR / PROJECTOR_FILE).is_file():
        return None
    return (
        "No trained VLM adapter (vlm/weights/vlm-adapter is missing): the model's own answers ignore the image. "
        "The tools on the right (and the HITL tab) do read it."
    )


def _step(call: ToolCall, status: str, body: str, seconds: float | None = None) -> dict:
    metadata = {"title": f"tool: {call.name or '(unnamed)'}", "status": status}
    if seconds is not None:
        metadata["duration"] = round(seconds, 2)
    return {"role": "assistant", "content": body, "metadata": metadata}


def _close_turn(history: list[dict]) -> None:
    """A turn that was stopped (or failed) before the assistant answered gets an empty answer, so the
    history keeps alternating and the next question is a turn of its own."""
    if history and history[-1]["role"] in ("user", "tool"):
        history.append({"role": "assistant", "content": ""})


def launch(app: ChatApp, host: str = "127.0.0.1", port: int = 7860, **options):
    demo = app.build()
    demo.queue(default_concurrency_limit=1, max_size=32)
    allowed = [str(app.workdir), str(app.local.runner.resources.hitl_dir)]  # pictures shown, exports
    demo.launch(server_name=host, server_port=port, allowed_paths=allowed, **options)
    return demo
