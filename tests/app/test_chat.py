"""The chat UI: its event functions directly, its API through gradio_client, and the page itself in a
real headless Chromium (Debian's, driven by Playwright; `make test` installs it). The browser test saves
a screenshot to artifacts/chat.png."""

import os
import shutil
import time
from pathlib import Path

import pytest

from app.chat import ChatApp, Session, launch
from app.examples import EXAMPLES
from tests.app.conftest import free_port

ARTIFACTS = Path(__file__).parents[2] / "artifacts"


@pytest.fixture(scope="module")
def chat(assistant):
    app = ChatApp(assistant, max_new_tokens=24)
    port = free_port()
    demo = launch(app, port=port, prevent_thread_lock=True, quiet=True)
    app.url = f"http://127.0.0.1:{port}"
    yield app
    demo.close()


def test_an_unreadable_upload_is_answered_in_the_chat_and_not_kept(chat, tmp_path):
    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b"\x00" * 100)
    session = Session()
    box, shown, session, preview, asked = chat.add_user(
        {"text": "Hi?", "files": [str(bad)]}, [], session, "default"
    )
    assert any("Could not read broken.fits" in str(m["content"]) for m in shown)
    assert session.history[-1]["content"] == [{"type": "text", "text": "Hi?"}] and preview is None


def test_an_image_alone_is_kept_for_the_next_question_and_asks_nothing(chat):
    session = Session()
    _, shown, session, preview, asked = chat.add_user(
        {"text": "", "files": [str(EXAMPLES[4].path)]}, [], session, "default"
    )
    assert not asked and preview is not None and "Image received" in shown[-1]["content"]
    assert [m["role"] for m in session.history] == ["user", "assistant"]
    chat.add_user({"text": "And now?", "files": []}, shown, session, "default")
    assert [m["role"] for m in session.history] == ["user", "assistant", "user"]


def test_the_stretch_menu_changes_what_the_model_reads(chat):
    session = Session()
    chat.add_user({"text": "What is it?", "files": [str(EXAMPLES[0].path)]}, [], session, "default")
    before = session.history[-1]["content"][0]["image"]
    session, preview = chat.set_stretch("log", session)
    after = session.history[-1]["content"][0]["image"]
    assert (before.stretch, after.stretch) == ("default", "log") and after.image is before.image
    assert (after.model_view(64) != before.model_view(64)).any() and preview.size == after.display().size


def test_the_ask_api_answers_through_gradio_client(chat):
    from gradio_client import Client, handle_file

    client = Client(chat.url, verbose=False, download_files=False)
    answer = client.predict("What is this?", handle_file(str(EXAMPLES[4].path)), "default", api_name="/ask")
    assert isinstance(answer, str) and answer.strip()
    with pytest.raises(Exception, match="could not read the image"):
        client.predict("What is this?", handle_file(str(Path(__file__))), "default", api_name="/ask")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs Debian's chromium")
        pytest.skip("no chromium here (`make test` installs Debian's)")
    return path


def open_with_upload(playwright, url: str, path):
    """Debian's Chromium on the chat page with `path` attached to the question box."""
    from playwright.sync_api import expect

    browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.locator("#ask input[type=file]").set_input_files(str(path))
    expect(page.get_by_role("listitem", name="File thumbnail")).to_be_visible(timeout=20_000)
    return browser, page


def test_in_a_browser_a_fits_upload_streams_an_answer_and_shows_a_tool_result(chat):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser, page = open_with_upload(playwright, chat.url, EXAMPLES[0].path)
        page.locator("#ask textarea").fill("Describe this image.")
        page.keyboard.press("Enter")

        answer = page.locator("#chat .bot").last  # the streaming answer
        lengths, deadline = set(), time.monotonic() + 120
        while time.monotonic() < deadline:
            text = answer.inner_text() if answer.count() else ""
            lengths.add(len(text))
            if page.locator("#ask textarea").is_enabled() and text:
                break  # the turn is over: the box is unlocked
            time.sleep(0.05)
        assert len(lengths - {0}) >= 2, f"the answer did not arrive in pieces: {lengths}"

        page.get_by_role("button", name="Detect sources").click()
        expect(page.locator("#chat")).to_contain_text("detect_sources", timeout=60_000)
        expect(page.locator("#chat img")).to_have_count(2, timeout=60_000)  # the upload, the boxes
        expect(page.locator("#ask textarea")).to_be_enabled(timeout=120_000)  # the model has answered
        page.locator("#ask input[type=file]").set_input_files(
            files=[{"name": "corrupt.fits", "mimeType": "application/fits", "buffer": b"SIMPLE  = nonsense"}]
        )
        page.locator("#ask textarea").fill("And this one?")
        page.keyboard.press("Enter")
        expect(page.locator("#chat")).to_contain_text("Could not read corrupt.fits", timeout=30_000)
        expect(page.locator("#ask textarea")).to_be_enabled(timeout=120_000)

        # the stop button cuts a long answer short, and the next question is answered
        chat.max_new_tokens = 2000
        page.locator("#ask textarea").fill("Tell me everything about radio galaxies.")
        page.keyboard.press("Enter")
        answer = page.locator("#chat .bot").last
        expect(answer).to_contain_text("radio", ignore_case=True, timeout=60_000)
        page.get_by_role("button", name="Stop").click()
        expect(page.locator("#ask textarea")).to_be_enabled(timeout=30_000)
        time.sleep(0.5)  # the box unlocks at the click; a piece already in flight may still land
        stopped = answer.inner_text()
        time.sleep(1.5)
        assert answer.inner_text() == stopped  # nothing more arrives
        chat.max_new_tokens = 24
        page.locator("#ask textarea").fill("Thanks!")
        page.keyboard.press("Enter")
        expect(page.locator("#chat .user").last).to_contain_text("Thanks!")
        expect(page.locator("#ask textarea")).to_be_enabled(timeout=120_000)
        assert page.locator("#chat .bot").last.inner_text().strip()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "chat.png", full_page=True)
        browser.close()


def test_in_a_browser_the_hitl_tab_labels_a_round_and_exports(chat):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser, page = open_with_upload(playwright, chat.url, EXAMPLES[1].path)
        page.locator("#ask textarea").fill("Is this an FR-II?")
        page.keyboard.press("Enter")
        expect(page.locator("#chat .user").last).to_contain_text("Is this an FR-II?")
        expect(page.locator("#ask textarea")).to_be_enabled(timeout=120_000)

        page.get_by_role("tab", name="Find objects (HITL)").click()
        page.locator("#hitl-name textarea").fill("browser-fr2")
        page.locator("#hitl-start").click()
        expect(page.locator("#hitl-status")).to_contain_text("Session browser-fr2", timeout=120_000)
        page.locator("#hitl-next").click()
        boxes = page.locator("#hitl-targets input[type=checkbox]")
        expect(boxes).to_have_count(8, timeout=60_000)
        boxes.nth(0).check()
        boxes.nth(3).check()
        page.locator("#hitl-save").click()
        expect(page.locator("#hitl-status")).to_contain_text("9 labelled (3 targets)", timeout=30_000)
        page.get_by_role("button", name="Export CSV").click()
        expect(page.locator("#hitl-status")).to_contain_text("Exported 9 labels", timeout=30_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "hitl.png", full_page=True)
        browser.close()
